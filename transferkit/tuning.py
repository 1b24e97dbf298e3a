"""Hyperparameter search over the head, the learning rate and the unfreeze point, with KerasTuner.

KerasTuner builds one model per trial and calls ``HyperModel.fit`` once; it cannot recompile between
phases by itself (keras-team/keras-tuner#629). `TwoPhaseHyperModel.fit` runs both phases of the
recipe inside that one call, so any KerasTuner tuner works with it (`tune` adds per-epoch reports,
per-trial seeds and a process per trial):

>>> import keras_tuner as kt, numpy as np, tensorflow as tf
>>> from types import SimpleNamespace
>>> images = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)).astype("float32")
>>> batches = tf.data.Dataset.from_tensor_slices((images, np.arange(16) % 2)).batch(8)
>>> data = SimpleNamespace(train=batches, validation=batches, class_names=["cats", "dogs"], image_size=(32, 32))
>>> hypermodel = TwoPhaseHyperModel(data.class_names, data.image_size, weights=None,
...                                 backbone_options={"alpha": 0.35}, epochs=1, fine_tune_epochs=1,
...                                 unfreeze_points=["block_15", "block_16"], seed=0)
>>> tuner = kt.RandomSearch(hypermodel, objective=final_objective("val_accuracy"), max_trials=2,
...                         directory=tempfile.mkdtemp(), project_name="demo", seed=0)
>>> tuner.search(data, verbose=0)
>>> sorted(trial.status for trial in tuner.oracle.trials.values())
['COMPLETED', 'COMPLETED']

A trial *is* a `TwoPhaseTrainer` run with the trial's settings (`TwoPhaseHyperModel.trainer_for`),
seeded from the search's seed and the trial id, so the same search run twice gives the same scores.
On the fast path (the default) trials share cached features through ``cache_dir``: the pooled
backbone output once per search, and each unfreeze point's activations once per point; the first
pass over the images computes them for every point in the search space.

The score of a trial is its metric at the end of phase 2 (``final_val_accuracy`` by default), not
the best epoch: the model a search picks is the one fine-tuning ends with. Every epoch's metrics also
reach the oracle (with the objective NaN until the end, so scoring ignores them), and
``stop_below_median_after=k`` stops a trial whose metric after epoch ``k`` is below the median of the
finished trials' at the same epoch (the median stopping rule).

Epoch budget. A trial trains ``epochs`` frozen and ``fine_tune_epochs`` fine-tuning epochs. When the
tuner passes its own budget ``E`` (Hyperband does, as ``epochs``; so does ``search(..., epochs=E)``),
it is split in the same proportion: ``round(E * epochs / (epochs + fine_tune_epochs))`` frozen epochs
(at least one), the rest fine-tuning. A Hyperband trial that continues an earlier one
(``initial_epoch > 0``) starts from that trial's final, already fine-tuned weights and spends its
``E - initial_epoch`` epochs fine-tuning.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import tempfile  # noqa: F401  (used by the docstring example)
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import keras
import keras_tuner as kt
import numpy as np

from transferkit.backbones import get_backbone, get_backbone_spec
from transferkit.head import ClassifierHead
from transferkit.memory import rss_mb
from transferkit.trainer import TwoPhaseTrainer
from transferkit.trial_runner import TrialStopped, trial_runner, update_trial

__all__ = ["TwoPhaseHyperModel", "final_objective", "split_budget", "trial_seed", "tune", "TuningResult",
           "MemoryLog"]

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


def trial_seed(search_seed: int | None, trial_id: str) -> int | None:
    """The seed of one trial: a hash of the search's seed and the trial id (None: unseeded).

    >>> trial_seed(42, "00") == trial_seed(42, "00") != trial_seed(42, "01")
    True
    """
    if search_seed is None:
        return None
    return zlib.crc32(f"{search_seed}/{trial_id}".encode()) & 0x7FFFFFFF


class TwoPhaseHyperModel(kt.HyperModel):
    """A KerasTuner ``HyperModel`` for the two-phase recipe: each trial is a `TwoPhaseTrainer` run.

    Searched (each can be narrowed or fixed through the arguments):

    - ``dropout`` in ``dropout_range`` (step 0.1);
    - ``hidden_units`` among ``hidden_units`` (0: no hidden layer);
    - ``learning_rate`` in ``learning_rate_range`` (log scale);
    - ``unfreeze_from`` among ``unfreeze_points`` — by default the backbone's blocks in its upper half;
    - ``fine_tune_lr_factor`` among ``fine_tune_lr_factors``.

    ``search(data)`` takes an `ImageFolder` (or anything with ``train``, ``validation``, ``class_names``
    and ``image_size``). ``trainer_options`` go to every trial's `TwoPhaseTrainer` (``views``,
    ``random_views``, ``optimizer``...). With ``cache_features`` (the default) trials train on cached
    features kept in ``cache_dir`` and shared by all of them; their augmentation uses the search's
    ``seed`` (one set of views), the rest of each trial its own `trial_seed`.
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
        cache_features: bool = True,
        cache_dir: str | os.PathLike | None = None,
        trainer_options: dict | None = None,
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
        # One set of cached views for the whole search, also when it is not seeded.
        self.augmentation_seed = seed if seed is not None else int(np.random.default_rng().integers(2**31))
        self.cache_features = cache_features
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        self.trainer_options = dict(trainer_options or {})
        self.unfreeze_points = list(unfreeze_points) if unfreeze_points else self.default_unfreeze_points()
        self.trial_id: str | None = None  # set by the tuner before each build
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

    def trainer_for(self, hp: kt.HyperParameters, seed: int | None = None) -> TwoPhaseTrainer:
        """The `TwoPhaseTrainer` of a trial with these hyperparameter values (and ``seed``)."""
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
            seed=seed,
            augmentation_seed=self.augmentation_seed,
            cache_features=self.cache_features,
            cache_dir=self.cache_dir,
            cache_unfreeze_points=self.unfreeze_points if self.cache_dir is not None else (),
            **self.trainer_options,
        )

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        """The trial's phase-1 model (backbone frozen, compiled), built as `TwoPhaseTrainer.fit` builds
        it, seeded with `trial_seed`; the trainer is kept as ``self.trainer``."""
        self.trainer = None
        gc.collect()  # KerasTuner has just cleared the Keras session; drop the last trial's objects too
        trainer = self.trainer_for(hp, seed=trial_seed(self.seed, self.trial_id or "0"))
        if trainer.seed is not None:
            keras.utils.set_random_seed(trainer.seed)
        trainer.build(self.class_names, self.image_size)
        trainer.freeze_backbone()
        trainer.compile(trainer.learning_rate)
        self.trainer = trainer
        return trainer.model

    def fit(self, hp, model, data, *args, callbacks=None, epochs=None, initial_epoch=0, verbose="auto", **kwargs):
        """The trial: `TwoPhaseTrainer.fit` on ``data`` with the model `build` returned; returns the last
        epoch's metrics as ``final_<name>``.

        A trial that continues an earlier one (``initial_epoch > 0``, Hyperband) starts from the
        weights loaded into ``model`` and spends its ``epochs - initial_epoch`` epochs fine-tuning."""
        trainer = self.trainer
        if trainer is None or trainer.model is not model:
            raise RuntimeError("TwoPhaseHyperModel.fit needs the model its own build() returned.")
        total = epochs if epochs is not None else self.epochs + self.fine_tune_epochs
        if initial_epoch:
            first, second = 0, total - initial_epoch
        else:
            first, second = split_budget(total, self.epochs, self.fine_tune_epochs)
        if first + second <= 0:
            raise ValueError(f"A trial from epoch {initial_epoch} to {total} has no epochs to train.")
        try:
            history = trainer.fit(data, epochs=first, fine_tune_epochs=second, callbacks=callbacks, verbose=verbose,
                                  class_weight=kwargs.get("class_weight"), rebuild=False).history
            logs = {k: v[-1] for k, v in history.items() if k != "phase"}
        except TrialStopped as stopped:
            logs = stopped.logs
        return {f"final_{k}": float(v) for k, v in logs.items()}


class MemoryLog(keras.callbacks.Callback):
    """Records resident memory (MiB, after garbage collection) at the start of every training run:
    one entry per trial (callbacks see both phases as one run)."""

    def __init__(self):
        super().__init__()
        self.rss: list[float] = []

    def __deepcopy__(self, memo):  # KerasTuner copies callbacks per trial; this log is shared
        return self

    def on_train_begin(self, logs=None):
        gc.collect()
        self.rss.append(rss_mb())


class _Search:
    """What `tune` adds to a KerasTuner tuner class: the per-epoch reports, and the median stopping
    rule on them (with ``stop_below_median_after``; where the oracle's trials are at hand, that is,
    not on the workers of a distributed search)."""

    stop_below_median_after: int | None = None
    min_trials_for_median: int = 3

    def report_epoch(self, trial, step: int, logs: dict) -> bool:
        """Send an epoch's logs to the oracle; True if the trial should stop."""
        objective = self.oracle.objective.name
        updated = update_trial(self.oracle, trial.trial_id, {**logs, objective: math.nan}, step=step)
        if getattr(updated, "status", None) == "STOPPED":
            return True
        return self.below_median(trial.trial_id, step, logs)

    def below_median(self, trial_id: str, step: int, logs: dict) -> bool:
        """Is this epoch's metric worse than the median of the finished trials' at the same step?"""
        after = self.stop_below_median_after
        metric = self.oracle.objective.name.removeprefix("final_")
        trials = getattr(self.oracle, "trials", None)
        if after is None or step < after or metric not in logs or not isinstance(trials, dict):
            return False
        others = []
        for other in trials.values():
            if other.trial_id == trial_id or other.status != "COMPLETED":
                continue
            if other.metrics.exists(metric):
                values = [o.mean() for o in other.metrics.get_history(metric) if o.step == step]
                others += values[:1]
        if len(others) < self.min_trials_for_median:
            return False
        median = float(np.median(others))
        worse = logs[metric] < median if self.oracle.objective.direction == "max" else logs[metric] > median
        if worse:
            log.info("Stopping trial %s after step %d: %s %.4f is worse than the median %.4f of %d trials",
                     trial_id, step, metric, logs[metric], median, len(others))
        return worse


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
    stop_below_median_after: int | None = None,
    **hypermodel_options,
) -> TuningResult:
    """Run (or resume) a search and return its trials, best hyperparameters and best classifier.

    ``tuner`` is ``"random"``, ``"bayesian"`` or ``"hyperband"`` (``max_epochs`` is Hyperband's
    budget per trial), or a KerasTuner tuner class (a subclass of one of those, say). With
    ``overwrite=False`` an interrupted search in ``directory/project_name`` continues where it
    stopped. With ``isolate_trials`` (the default) each trial trains in a fresh process, so memory
    stays flat however many trials run (callbacks must then be picklable). Cached features go to
    ``directory/project_name/features`` unless ``cache_dir`` says otherwise; the workers of a
    distributed search on one machine share them. ``stop_below_median_after=k``: see the module
    docstring. With ``output``, the best model (``best.keras``), ``trials.json`` and ``tuning.png``
    are written there. In distributed mode (``KERASTUNER_TUNER_ID`` etc. set) workers run trials and
    return an empty result; the chief serves the oracle and, at the end, returns the trials and
    writes the outputs. Other keyword arguments go to `TwoPhaseHyperModel`.
    """
    tuner_class = TUNERS.get(tuner) if isinstance(tuner, str) else tuner
    if not (isinstance(tuner_class, type) and issubclass(tuner_class, kt.Tuner)):
        raise ValueError(f"tuner={tuner!r}: choose one of {', '.join(TUNERS)}, or pass a KerasTuner tuner class.")
    searching = type(f"TwoPhase{tuner_class.__name__}", (_Search, tuner_class),
                     {"stop_below_median_after": stop_below_median_after})
    tuner_class = trial_runner(searching, isolate=isolate_trials)
    if hypermodel_options.get("cache_features", True) and hypermodel_options.get("cache_dir") is None:
        hypermodel_options["cache_dir"] = Path(directory) / project_name / "features"
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
    hypermodel.trial_id = best[0].trial_id
    with warnings.catch_warnings():  # the checkpoint holds phase 2's optimizer state, which is not needed
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        search.load_model(best[0])  # rebuilds the best trial's model and loads its final weights
    result.classifier = hypermodel.trainer.classifier
    if output is not None:
        from transferkit.run import save_search

        result.files = tuple(save_search(result, objective.name, output))
    return result
