"""Hyperparameter search over the head, the learning rate and the unfreeze point, with KerasTuner.

KerasTuner builds one model per trial and calls ``HyperModel.fit`` once; it cannot recompile between
phases by itself (keras-team/keras-tuner#629). `TwoPhaseHyperModel.fit` runs both phases of the
recipe inside that one call, so any KerasTuner tuner works with it:

>>> import keras_tuner as kt
>>> hypermodel = TwoPhaseHyperModel(["cats", "dogs"], (32, 32), weights=None,
...                                 backbone_options={"alpha": 0.35}, epochs=1, fine_tune_epochs=1)
>>> tuner = kt.RandomSearch(hypermodel, objective=final_objective("val_accuracy"), max_trials=2,
...                         directory=tempfile.mkdtemp(), project_name="demo")  # doctest: +SKIP
>>> tuner.search(image_folder)  # doctest: +SKIP

The score of a trial is its metric at the end of phase 2 (``final_val_accuracy`` by default), not
the best epoch: the model a search picks is the one fine-tuning ends with.

Epoch budget. A trial trains ``epochs`` frozen and ``fine_tune_epochs`` fine-tuning epochs. When the
tuner passes its own budget ``E`` (Hyperband does, as ``epochs``; so does ``search(..., epochs=E)``),
it is split in the same proportion: ``round(E * epochs / (epochs + fine_tune_epochs))`` frozen epochs
(at least one), the rest fine-tuning. A Hyperband trial that continues an earlier one
(``initial_epoch > 0``) starts from that trial's final, already fine-tuned weights and spends its
``E - initial_epoch`` epochs fine-tuning.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import tempfile  # noqa: F401  (used by the docstring example)
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import keras_tuner as kt
from keras_tuner.src.engine import tuner_utils as kt_tuner_utils

from transferkit.backbones import get_backbone, get_backbone_spec
from transferkit.head import ClassifierHead
from transferkit.trainer import TwoPhaseTrainer

__all__ = ["TwoPhaseHyperModel", "final_objective", "split_budget", "tune", "TuningResult", "isolated",
           "MemoryLog", "add_tune_parser"]

log = logging.getLogger(__name__)

TUNERS = {"random": kt.RandomSearch, "bayesian": kt.BayesianOptimization, "hyperband": kt.Hyperband}


def final_objective(metric: str = "val_accuracy") -> kt.Objective:
    """The KerasTuner objective for ``metric`` at the end of phase 2 (``final_<metric>``)."""
    direction = "min" if "loss" in metric else "max"
    return kt.Objective(f"final_{metric}", direction=direction)


def split_budget(total: int, epochs: int, fine_tune_epochs: int) -> tuple[int, int]:
    """Split ``total`` epochs between the phases in the ratio ``epochs : fine_tune_epochs``.

    >>> split_budget(10, 5, 5), split_budget(3, 5, 5), split_budget(4, 4, 0), split_budget(1, 1, 1)
    ((5, 5), (2, 1), (4, 0), (1, 0))
    """
    if fine_tune_epochs == 0:
        return total, 0
    first = max(1, round(total * epochs / (epochs + fine_tune_epochs)))
    first = min(first, total)
    return first, total - first


class TwoPhaseHyperModel(kt.HyperModel):
    """A KerasTuner ``HyperModel`` for the two-phase recipe.

    Searched (each can be narrowed or fixed through the arguments):

    - ``dropout`` in ``dropout_range`` (step 0.1);
    - ``hidden_units`` among ``hidden_units`` (0: no hidden layer);
    - ``learning_rate`` in ``learning_rate_range`` (log scale);
    - ``unfreeze_from`` among ``unfreeze_points`` — by default the backbone's blocks in its upper half;
    - ``fine_tune_lr_factor`` among ``fine_tune_lr_factors``.

    ``search(data)`` takes an `ImageFolder` (or anything with ``train``, ``validation``, ``class_names``
    and ``image_size``).
    """

    def __init__(
        self,
        class_names,
        image_size,
        backbone: str = "mobilenet_v2",
        weights="imagenet",
        backbone_options: dict | None = None,
        augmentation="default",
        epochs: int = 5,
        fine_tune_epochs: int = 5,
        metric: str = "val_accuracy",
        dropout_range: tuple[float, float] = (0.0, 0.5),
        hidden_units: tuple[int, ...] = (0, 128, 256),
        learning_rate_range: tuple[float, float] = (3e-5, 3e-3),
        unfreeze_points: list | None = None,
        fine_tune_lr_factors: tuple[float, ...] = (0.01, 0.1, 0.3),
        freeze_batchnorm: bool = True,
        seed: int | None = None,
        name: str | None = None,
    ):
        super().__init__(name=name, tunable=True)
        self.class_names = list(class_names)
        self.image_size = tuple(image_size)
        self.backbone = backbone
        self.weights = weights
        self.backbone_options = dict(backbone_options or {})
        self.augmentation = augmentation
        self.epochs = epochs
        self.fine_tune_epochs = fine_tune_epochs
        self.metric = metric
        self.dropout_range = dropout_range
        self.hidden_units = tuple(hidden_units)
        self.learning_rate_range = learning_rate_range
        self.fine_tune_lr_factors = tuple(fine_tune_lr_factors)
        self.freeze_batchnorm = freeze_batchnorm
        self.seed = seed
        self.unfreeze_points = list(unfreeze_points) if unfreeze_points else self.default_unfreeze_points()
        self.trainer: TwoPhaseTrainer | None = None

    def __getstate__(self):  # sent to trial processes without the last trial's model
        return {**self.__dict__, "trainer": None}

    def default_unfreeze_points(self) -> list[str]:
        """The blocks that start in the upper half of the backbone's layers."""
        spec = get_backbone_spec(self.backbone)
        model = get_backbone(self.backbone, (*self.image_size, 3), weights=None, **self.backbone_options)
        half = len(model.layers) // 2
        points = [name for name, index in spec.blocks(model).items() if index >= half]
        del model
        keras.backend.clear_session()
        if not points:
            raise ValueError(f"Backbone {self.backbone!r} names no blocks; pass unfreeze_points=[layer indices].")
        return points

    def _default_point(self):
        return self.unfreeze_points[len(self.unfreeze_points) // 2]

    def trainer_for(self, hp: kt.HyperParameters) -> TwoPhaseTrainer:
        """A `TwoPhaseTrainer` set up with this trial's hyperparameter values."""
        low, high = self.dropout_range
        dropout = hp.Float("dropout", low, high, step=0.1, default=min(max(0.2, low), high))
        hidden = hp.Choice("hidden_units", list(self.hidden_units), default=self.hidden_units[0])
        lr_low, lr_high = self.learning_rate_range
        learning_rate = hp.Float("learning_rate", lr_low, lr_high, sampling="log",
                                 default=min(max(1e-4, lr_low), lr_high))
        unfreeze = hp.Choice("unfreeze_from", self.unfreeze_points, default=self._default_point())
        factor = hp.Choice("fine_tune_lr_factor", list(self.fine_tune_lr_factors),
                           default=0.1 if 0.1 in self.fine_tune_lr_factors else self.fine_tune_lr_factors[0])
        return TwoPhaseTrainer(
            backbone=self.backbone,
            weights=self.weights,
            head=ClassifierHead(dropout=dropout, hidden_units=hidden or None),
            augmentation=self.augmentation,
            unfreeze_from=unfreeze,
            learning_rate=learning_rate,
            fine_tune_lr_factor=factor,
            freeze_batchnorm=self.freeze_batchnorm,
            image_size=self.image_size,
            backbone_options=self.backbone_options,
            seed=self.seed,
        )

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        """The phase-1 model (backbone frozen, compiled); the trial's trainer is kept as ``self.trainer``."""
        self.trainer = None
        gc.collect()  # KerasTuner has just cleared the Keras session; drop the last trial's objects too
        trainer = self.trainer_for(hp)
        trainer.build(self.class_names, self.image_size)
        trainer.freeze_backbone()
        trainer.compile(trainer.learning_rate)
        self.trainer = trainer
        return trainer.model

    def fit(self, hp, model, data, *args, callbacks=None, epochs=None, initial_epoch=0, verbose="auto", **kwargs):
        """Both phases on ``data``; returns the last epoch's metrics as ``final_<name>``."""
        trainer = self.trainer
        if trainer is None or trainer.model is not model:
            raise RuntimeError("TwoPhaseHyperModel.fit needs the model its own build() returned.")
        callbacks = list(callbacks or [])
        total = epochs if epochs is not None else self.epochs + self.fine_tune_epochs
        common = dict(validation_data=data.validation, callbacks=callbacks, verbose=verbose, shuffle=False)
        logs: dict = {}
        if initial_epoch == 0:
            first, _ = split_budget(total, self.epochs, self.fine_tune_epochs)
            history = model.fit(data.train, epochs=first, **common)
            logs = {k: v[-1] for k, v in history.history.items()}
            initial_epoch = len(history.epoch)
        if total > initial_epoch:
            trainer.unfreeze_top()
            trainer.compile(trainer.learning_rate * trainer.fine_tune_lr_factor)
            history = model.fit(data.train, initial_epoch=initial_epoch, epochs=total, **common)
            logs = {k: v[-1] for k, v in history.history.items()}
        return {f"final_{k}": float(v) for k, v in logs.items()}


def _proc_status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """This process's peak resident memory, in MiB (Linux: VmHWM, which, unlike ``ru_maxrss``, a
    spawned process does not inherit from its parent)."""
    peak = _proc_status_mb("VmHWM")
    if peak is not None:
        return peak
    try:
        import resource  # POSIX only
    except ImportError:
        return float("nan")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb() -> float:
    """This process's resident memory now, in MiB (Linux; elsewhere the peak)."""
    now = _proc_status_mb("VmRSS")
    return now if now is not None else peak_rss_mb()


class MemoryLog(keras.callbacks.Callback):
    """Records resident memory (MiB, after garbage collection) at the start of every training run:
    two entries per two-phase trial."""

    def __init__(self):
        super().__init__()
        self.rss: list[float] = []

    def __deepcopy__(self, memo):  # KerasTuner copies callbacks per trial; this log is shared
        return self

    def on_train_begin(self, logs=None):
        gc.collect()
        self.rss.append(rss_mb())


def _run_trial(hypermodel, hp_config, data, fit_kwargs, checkpoint, build_config, load_from) -> dict:
    """One trial, in a fresh process: build, (load), fit both phases, save the final weights."""
    from keras_tuner.src import utils as kt_utils

    hp = kt.HyperParameters.from_config(hp_config)
    model = hypermodel.build(hp)
    if load_from:
        model.load_weights(load_from)
    metrics = hypermodel.fit(hp, model, data, **fit_kwargs)
    model.save_weights(checkpoint)
    kt_utils.save_json(build_config, model.get_build_config())
    metrics["trial_peak_rss_mb"] = peak_rss_mb()
    return metrics


def _build_and_fit_in_a_new_process(self, trial, *args, **kwargs):
    """``Tuner._build_and_fit_model`` that runs the trial in a spawned process.

    TensorFlow keeps every traced training graph alive after ``clear_session()`` (tensorflow#61791,
    tf-keras#286): about 30 MiB per ``fit`` for MobileNetV2 here, whatever the tuner does. A process
    per trial returns all of it. KerasTuner's own per-epoch callbacks stay behind (the trial's score
    is its final metrics); the trial's checkpoint is written by the child.
    """
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    hp = trial.hyperparameters
    internal = (kt_tuner_utils.TunerCallback, kt_tuner_utils.SaveBestEpoch)
    kwargs["callbacks"] = [c for c in kwargs.get("callbacks", []) if not isinstance(c, internal)]
    previous = hp.values.get("tuner/trial_id")
    load_from = self._get_checkpoint_fname(previous) if previous else None
    Path(self._get_checkpoint_fname(trial.trial_id)).parent.mkdir(parents=True, exist_ok=True)
    payload = (self.hypermodel, hp.get_config(), args[0], {**kwargs}, self._get_checkpoint_fname(trial.trial_id),
               self._get_build_config_fname(trial.trial_id), load_from)
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_run_trial, *payload).result()


def isolated(tuner_class: type) -> type:
    """A subclass of ``tuner_class`` that runs every trial in its own process (see
    `_build_and_fit_in_a_new_process`); its ``run_trial`` and the rest are unchanged."""
    return type(f"Isolated{tuner_class.__name__}", (tuner_class,),
                {"_build_and_fit_model": _build_and_fit_in_a_new_process})


@dataclass
class TuningResult:
    tuner: kt.Tuner
    best_hyperparameters: dict
    best_score: float | None
    trials: list[dict]
    classifier: object | None = None
    files: tuple = ()

    def table(self) -> str:
        """The trials, best first: id, score and hyperparameters."""
        keys = ["learning_rate", "dropout", "hidden_units", "unfreeze_from", "fine_tune_lr_factor"]
        header = f"{'trial':<6} {'score':>8}  " + "  ".join(f"{k:>19}" for k in keys)
        lines = [header]
        for t in self.trials:
            score = "-" if t["score"] is None else f"{t['score']:.4f}"
            values = [t["hyperparameters"].get(k, "") for k in keys]
            shown = [f"{v:>19.3g}" if isinstance(v, float) else f"{str(v):>19}" for v in values]
            lines.append(f"{t['trial_id']:<6} {score:>8}  " + "  ".join(shown))
        return "\n".join(lines)


def _trials(tuner: kt.Tuner) -> list[dict]:
    rows = []
    for trial in tuner.oracle.trials.values():
        values = {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}
        rows.append({"trial_id": trial.trial_id, "status": str(trial.status), "score": trial.score,
                     "hyperparameters": values})
    direction = tuner.oracle.objective.direction
    missing = float("-inf") if direction == "max" else float("inf")
    rows.sort(key=lambda r: r["score"] if r["score"] is not None else missing, reverse=direction == "max")
    return rows


def tune(
    data,
    directory: os.PathLike | str,
    project_name: str = "transferkit",
    tuner="random",
    max_trials: int = 10,
    max_epochs: int | None = None,
    overwrite: bool = False,
    output: os.PathLike | str | None = None,
    isolate_trials: bool = True,
    verbose="auto",
    callbacks: list | None = None,
    **hypermodel_options,
) -> TuningResult:
    """Run (or resume) a search and return its trials, best hyperparameters and best classifier.

    ``tuner`` is ``"random"``, ``"bayesian"`` or ``"hyperband"`` (``max_epochs`` is Hyperband's
    budget per trial), or a KerasTuner tuner class (a subclass of one of those, say). With ``overwrite=False`` an interrupted search in ``directory/project_name``
    continues where it stopped. With ``isolate_trials`` (the default) each trial trains in a fresh
    process, so memory stays flat however many trials run; callbacks must then be picklable and
    KerasTuner sees each trial's final metrics only. With ``output``, the best model (``best.keras``), ``trials.json``
    and ``tuning.png`` are written there. In distributed mode (``KERASTUNER_TUNER_ID`` etc. set)
    workers run trials and return an empty result; the chief serves the oracle and, at the end,
    returns the trials and writes the outputs.
    """
    tuner_class = TUNERS.get(tuner) if isinstance(tuner, str) else tuner
    if not (isinstance(tuner_class, type) and issubclass(tuner_class, kt.Tuner)):
        raise ValueError(f"tuner={tuner!r}: choose one of {', '.join(TUNERS)}, or pass a KerasTuner tuner class.")
    if isolate_trials:
        tuner_class = isolated(tuner_class)
    hypermodel = TwoPhaseHyperModel(data.class_names, data.image_size, **hypermodel_options)
    objective = final_objective(hypermodel.metric)
    common = dict(objective=objective, directory=str(directory), project_name=project_name, overwrite=overwrite,
                  seed=hypermodel.seed)
    if issubclass(tuner_class, kt.Hyperband):
        budget = max_epochs or hypermodel.epochs + hypermodel.fine_tune_epochs
        search = tuner_class(hypermodel, max_epochs=budget, factor=3, **common)
    else:
        search = tuner_class(hypermodel, max_trials=max_trials, **common)
    search.search(data, callbacks=list(callbacks or []), verbose=verbose)

    if "KERASTUNER_TUNER_ID" in os.environ and "chief" not in os.environ["KERASTUNER_TUNER_ID"]:
        return TuningResult(tuner=search, best_hyperparameters={}, best_score=None, trials=[])  # a worker
    trials = _trials(search)
    best = search.oracle.get_best_trials(1)
    result = TuningResult(
        tuner=search,
        best_hyperparameters=trials[0]["hyperparameters"] if best else {},
        best_score=best[0].score if best else None,
        trials=trials,
    )
    if not best:
        return result
    with warnings.catch_warnings():  # the checkpoint holds phase 2's optimizer state, which is not needed
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        search.load_model(best[0])  # rebuilds the best trial's model and loads its final weights
    result.classifier = hypermodel.trainer.classifier
    if output is not None:
        from transferkit.plots import plot_tuning

        output = Path(output)
        output.mkdir(parents=True, exist_ok=True)
        files = [result.classifier.save(output / "best.keras", overwrite=True)]
        (output / "trials.json").write_text(json.dumps(trials, indent=2, default=str))
        files += [output / "trials.json", plot_tuning(trials, objective.name, output / "tuning.png")]
        result.files = tuple(files)
    return result
