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
...                                 unfreeze_points=["block_15", "block_16"], seed=0,
...                                 cache_features=False)  # plain datasets: the exact recipe
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
import json
import logging
import os
import tempfile  # noqa: F401  (used by the docstring example)
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import keras
import keras_tuner as kt
import numpy as np

from transferkit._internal.files import write_atomically
from transferkit._internal.memory import rss_mb
from transferkit.data.fingerprint import file_list_of
from transferkit.models.backbones import BackboneSpec, get_backbone, get_backbone_spec
from transferkit.training.checkpoint import differences
from transferkit.training.trainer import TwoPhaseTrainer
from transferkit.tuning import defaults
from transferkit.tuning.oracles import ORACLES
from transferkit.tuning.trial_runner import TrialRunning, TrialStopped
from transferkit.tuning.tuners import TwoPhaseHyperband, TwoPhaseTuner

__all__ = ["TwoPhaseHyperModel", "final_objective", "split_budget", "trial_seed", "tune", "TuningResult",
           "MemoryLog"]

log = logging.getLogger(__name__)



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

    Each trial's trainer is the base ``trainer`` (a `TwoPhaseTrainer`, or its `get_config`; by default
    ``TwoPhaseTrainer(**trainer_options)``) with only what is searched replaced, so every other setting
    and default is the trainer's own. Searched (each can be narrowed or fixed through the arguments):

    - ``dropout`` in ``dropout_range`` (step 0.1);
    - ``hidden_units`` among ``hidden_units`` (0: no hidden layer);
    - ``learning_rate`` in ``learning_rate_range`` (log scale);
    - ``unfreeze_from`` among ``unfreeze_points`` — by default the backbone's blocks in its upper half;
    - ``fine_tune_lr_factor`` among ``fine_tune_lr_factors``;
    - with ``backbones=[...]`` (registered names or keras-hub presets), the ``backbone`` too, each with its own
      unfreeze points (hyperparameter ``unfreeze_from_<backbone>``, active when that backbone is;
      ``unfreeze_points`` may then be ``{backbone: [points]}``). The base trainer's ``backbone_options`` go
      to its own backbone only; the others are built with their defaults.

    The first trial tries the base trainer's values where the search space holds them.
    ``search(data)`` takes an `ImageFolder` (or anything with ``train``, ``validation``, ``class_names``
    and ``image_size``). On the fast path (the base trainer's ``cache_features``) trials train on cached
    features kept in its ``cache_dir`` and shared by all of them; their augmentation uses the search's
    ``seed`` (one set of views), the rest of each trial its own `trial_seed`.
    """

    def __init__(
        self,
        class_names,
        image_size,
        trainer: TwoPhaseTrainer | dict | None = None,
        epochs: int = defaults.TRIAL_EPOCHS,
        fine_tune_epochs: int = defaults.TRIAL_FINE_TUNE_EPOCHS,
        metric: str | None = None,
        dropout_range: tuple[float, float] = defaults.DROPOUT_RANGE,
        hidden_units: tuple[int, ...] = defaults.HIDDEN_UNITS,
        learning_rate_range: tuple[float, float] = defaults.LEARNING_RATE_RANGE,
        unfreeze_points: list | dict | None = None,
        fine_tune_lr_factors: tuple[float, ...] = defaults.FINE_TUNE_LR_FACTORS,
        seed: int | None = None,
        trainer_options: dict | None = None,
        name: str | None = None,
        backbones: list[str] | None = None,
        multi_label: bool = False,
        **options,
    ):
        super().__init__(name=name, tunable=True)
        options = {**(trainer_options or {}), **options}  # TwoPhaseTrainer arguments
        if trainer is not None and options:
            raise ValueError(f"Give the base trainer's settings in trainer= or as arguments, not both: "
                             f"{', '.join(sorted(options))}.")
        if isinstance(trainer, TwoPhaseTrainer):
            trainer = trainer.get_config()
        if isinstance((trainer or options).get("backbone"), (dict, keras.Model, BackboneSpec)):
            raise ValueError("A search builds its trials from settings, in processes of their own: give it a "
                             "registered backbone by name. To search over your own network, register it "
                             "(register_backbone, at the top level of a module the trials import).")
        #: The base trainer's config; each trial replaces only what it searches.
        self.base = TwoPhaseTrainer.from_config(trainer).get_config() if trainer else TwoPhaseTrainer(
            **options).get_config()
        self.class_names = list(class_names)
        self.image_size = tuple(image_size)
        self.epochs = epochs
        self.fine_tune_epochs = fine_tune_epochs
        self.multi_label = bool(multi_label)
        #: The score of a trial: by default validation accuracy, or mAP for several labels per image.
        self.metric = metric or (defaults.MULTI_LABEL_METRIC if self.multi_label else defaults.METRIC)
        self.dropout_range = dropout_range
        self.hidden_units = tuple(hidden_units)
        self.learning_rate_range = learning_rate_range
        self.fine_tune_lr_factors = tuple(fine_tune_lr_factors)
        self.seed = seed
        # One set of cached views for the whole search, also when it is not seeded.
        self.augmentation_seed = seed if seed is not None else int(np.random.default_rng().integers(2**31))
        #: The backbones searched over: the base trainer's alone unless ``backbones`` names several.
        self.backbones = self._checked_backbones(backbones)
        if len(self.backbones) == 1:
            if isinstance(unfreeze_points, dict):
                unfreeze_points = unfreeze_points.get(self.backbones[0])
            self.unfreeze_points = list(unfreeze_points) if unfreeze_points else self.default_unfreeze_points()
        else:
            given = unfreeze_points if isinstance(unfreeze_points, dict) else {}
            if unfreeze_points is not None and not isinstance(unfreeze_points, dict):
                raise ValueError("With several backbones, give unfreeze_points per backbone: {backbone: [points]}.")
            unknown = sorted(set(given) - set(self.backbones))
            if unknown:
                raise ValueError(f"unfreeze_points names backbones that are not searched: {', '.join(unknown)}.")
            self.unfreeze_points = {name: list(given[name]) if given.get(name) else self.default_unfreeze_points(name)
                                    for name in self.backbones}
        self.trial_id: str | None = None  # set by the tuner before each build
        self.trainer: TwoPhaseTrainer | None = None

    @property
    def backbone(self) -> str:
        return self.base["backbone"]

    @property
    def cache_features(self) -> bool:
        return self.base["cache_features"]

    @property
    def cache_dir(self) -> str | None:
        return self.base["cache_dir"]

    def __getstate__(self):  # sent to trial processes without the last trial's model
        return {**self.__dict__, "trainer": None}

    def _checked_backbones(self, backbones) -> list[str]:
        if not backbones:
            return [self.backbone]
        if isinstance(backbones, str) or not all(isinstance(name, str) for name in backbones):
            raise ValueError(f"backbones={backbones!r}: give a list of registered backbone names or keras-hub presets.")
        backbones = list(dict.fromkeys(backbones))
        for name in backbones:
            get_backbone_spec(name)  # an unknown name says which are registered
        weights = self.base["weights"]
        if len(backbones) > 1 and weights not in ("imagenet", None):
            raise ValueError(f"weights={weights!r} is one backbone's file; a search over several backbones needs "
                             "weights='imagenet' (or None).")
        return backbones

    def backbone_options_of(self, backbone: str) -> dict:
        """The base trainer's ``backbone_options`` for its own backbone; none for the others searched."""
        return dict(self.base["backbone_options"]) if backbone == self.backbone else {}

    def default_unfreeze_points(self, backbone: str | None = None) -> list[str]:
        """The blocks that start in the upper half of ``backbone``'s layers (the base trainer's by default)."""
        backbone = backbone or self.backbone
        spec = get_backbone_spec(backbone)
        model = get_backbone(backbone, (*self.image_size, 3), weights=None, **self.backbone_options_of(backbone))
        half = len(model.layers) // 2
        points = [name for name, index in spec.blocks(model).items() if index >= half]
        del model
        keras.backend.clear_session()
        if not points:
            raise ValueError(f"Backbone {backbone!r} names no blocks; pass unfreeze_points=[layer indices].")
        return points

    def _first(self, name: str, choices: list):
        """The base trainer's value of ``name`` where ``choices`` holds it, else the middle choice."""
        value = self.base["head"][name] if name in ("dropout", "hidden_units") else self.base[name]
        value = 0 if name == "hidden_units" and value is None else value
        return value if value in choices else choices[len(choices) // 2]

    def trainer_for(self, hp: kt.HyperParameters, seed: int | None = None) -> TwoPhaseTrainer:
        """The `TwoPhaseTrainer` of a trial with these hyperparameter values (and ``seed``): the base
        trainer with the searched settings replaced."""
        low, high = self.dropout_range
        head = self.base["head"]
        dropout = hp.Float("dropout", low, high, step=0.1, default=min(max(head["dropout"], low), high))
        hidden = hp.Choice("hidden_units", list(self.hidden_units),
                           default=self._first("hidden_units", list(self.hidden_units)))
        lr_low, lr_high = self.learning_rate_range
        learning_rate = hp.Float("learning_rate", lr_low, lr_high, sampling="log",
                                 default=min(max(self.base["learning_rate"], lr_low), lr_high))
        backbone, points = self.backbone, self.unfreeze_points
        if len(self.backbones) == 1:
            unfreeze = hp.Choice("unfreeze_from", points, default=self._first("unfreeze_from", points))
        else:
            backbone = hp.Choice("backbone", self.backbones,
                                 default=self.backbone if self.backbone in self.backbones else self.backbones[0])
            for name in self.backbones:  # every scope entered, so that KerasTuner sees those not active yet
                with hp.conditional_scope("backbone", [name]):
                    choice = hp.Choice(f"unfreeze_from_{name}", self.unfreeze_points[name],
                                       default=self._first("unfreeze_from", self.unfreeze_points[name]))
                if name == backbone:
                    unfreeze, points = choice, self.unfreeze_points[name]
        factor = hp.Choice("fine_tune_lr_factor", list(self.fine_tune_lr_factors),
                           default=self._first("fine_tune_lr_factor", list(self.fine_tune_lr_factors)))
        return TwoPhaseTrainer.from_config({
            **self.base,
            "head": {"pooling": head["pooling"], "hidden_activation": head["hidden_activation"],
                     "dropout": dropout, "hidden_units": hidden or None},
            "backbone": backbone, "backbone_options": self.backbone_options_of(backbone),
            "unfreeze_from": unfreeze, "learning_rate": learning_rate, "fine_tune_lr_factor": factor,
            "image_size": self.image_size, "seed": seed, "augmentation_seed": self.augmentation_seed,
            "cache_unfreeze_points": points if self.cache_dir is not None else (),
        })

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        """The trial's phase-1 model (backbone frozen, compiled), built as `TwoPhaseTrainer.fit` builds
        it, seeded with `trial_seed`; the trainer is kept as ``self.trainer``."""
        self.trainer = None
        gc.collect()  # KerasTuner has just cleared the Keras session; drop the last trial's objects too
        trainer = self.trainer_for(hp, seed=trial_seed(self.seed, self.trial_id or "0"))
        if trainer.seed is not None:
            keras.utils.set_random_seed(trainer.seed)
        trainer.build(self.class_names, self.image_size, multi_label=self.multi_label)
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


@dataclass
class TuningResult:
    tuner: kt.Tuner
    best_hyperparameters: dict
    best_score: float | None
    trials: list[dict]
    classifier: object | None = None
    files: tuple = ()
    #: With ``tune(..., soup=True)``: the best trials' weights averaged (a `transferkit.tuning.Soup`).
    soup: object | None = None

    def table(self) -> str:
        """The trials, best first: id, score and hyperparameters."""
        keys = ["learning_rate", "dropout", "hidden_units", "unfreeze_from", "fine_tune_lr_factor"]
        several = any("backbone" in t["hyperparameters"] for t in self.trials)
        keys = ["backbone", *keys] if several else keys
        header = f"{'trial':<6} {'score':>8}  " + "  ".join(f"{k:>19}" for k in keys)
        lines = [header]
        for t in self.trials:
            score = "-" if t["score"] is None else f"{t['score']:.4f}"
            values = [_unfreeze_point(t["hyperparameters"]) if k == "unfreeze_from" else t["hyperparameters"].get(k, "")
                      for k in keys]
            shown = [f"{v:>19.3g}" if isinstance(v, float) else f"{str(v):>19}" for v in values]
            lines.append(f"{t['trial_id']:<6} {score:>8}  " + "  ".join(shown))
        return "\n".join(lines)


def _unfreeze_point(values: dict):
    """A trial's unfreeze point: ``unfreeze_from``, or with several backbones ``unfreeze_from_<its backbone>``."""
    return values.get("unfreeze_from", values.get(f"unfreeze_from_{values.get('backbone')}", ""))


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
    project_name: str = defaults.PROJECT_NAME,
    tuner=defaults.TUNER,
    max_trials: int = defaults.MAX_TRIALS,
    max_epochs: int | None = None,
    overwrite: bool = False,
    output: os.PathLike | str | None = None,
    isolate_trials: bool = True,
    verbose="auto",
    callbacks: list | None = None,
    stop_below_median_after: int | None = None,
    tuner_class: type | None = None,
    trials_per_process: int = 5,
    soup: bool = False,
    **hypermodel_options,
) -> TuningResult:
    """Run (or resume) a search and return its trials, best hyperparameters and best classifier.

    ``tuner`` names the search algorithm, ``"random"``, ``"bayesian"`` or ``"hyperband"``
    (``max_epochs`` is Hyperband's budget per trial): the oracle (`transferkit.tuning.oracles`), which
    also applies ``stop_below_median_after=k`` (see the module docstring), on every worker of a
    distributed search too. ``tuner_class`` is the tuner that runs the trials, `TwoPhaseTuner` (for
    Hyperband `TwoPhaseHyperband`) or a subclass of it (one whose ``run_trial`` logs each trial, say).
    With ``overwrite=False`` an interrupted search in ``directory/project_name`` continues where it
    stopped. With ``isolate_trials`` (the default) trials train in worker processes, each replaced by
    a fresh one after ``trials_per_process`` trials, so memory stays bounded however many trials
    run (callbacks must then be picklable). Cached features go to ``directory/project_name/features``
    unless the trainer's ``cache_dir`` says otherwise; the workers of a distributed search on one
    machine share them. With ``soup``, the best trials' weights are then averaged into one model
    (`greedy_soup`, as ``result.soup``). With ``output``, the best model (``best.keras``), ``trials.json``
    and ``tuning.png`` are written there, and with ``soup`` also ``soup.keras`` and ``soup.json``. In
    distributed mode (``KERASTUNER_TUNER_ID`` etc. set) workers run trials and return an empty result;
    the chief serves the oracle and, at the end, returns the trials and writes the outputs. Other
    keyword arguments go to `TwoPhaseHyperModel` (a base ``trainer=``, or `TwoPhaseTrainer` arguments).
    """
    if isinstance(tuner, type) and issubclass(tuner, kt.Tuner):
        return _tune_with_a_keras_tuner_class(data, directory, project_name, tuner, max_trials, max_epochs,
                                              overwrite, output, isolate_trials, verbose, callbacks,
                                              stop_below_median_after, soup, **hypermodel_options)
    if tuner not in ORACLES:
        raise ValueError(f"tuner={tuner!r}: choose one of {', '.join(ORACLES)}.")
    hyperband = tuner == "hyperband"
    tuner_class = tuner_class or (TwoPhaseHyperband if hyperband else TwoPhaseTuner)
    if not (isinstance(tuner_class, type) and issubclass(tuner_class, TwoPhaseTuner)):
        raise TypeError(f"tuner_class={tuner_class!r}: give TwoPhaseTuner or a subclass of it.")
    if hyperband and not issubclass(tuner_class, TwoPhaseHyperband):
        raise TypeError(f"tuner='hyperband' runs its trials with TwoPhaseHyperband (or a subclass), not "
                        f"{tuner_class.__name__}.")
    hypermodel = _hypermodel(data, directory, project_name, hypermodel_options)
    described = _described(hypermodel, data, tuner=tuner, stop_below_median_after=stop_below_median_after,
                           max_epochs=max_epochs if hyperband else None)
    record = _check_same_search(Path(directory) / project_name, described, hypermodel, overwrite)
    oracle = ORACLES[tuner](objective=final_objective(hypermodel.metric), seed=hypermodel.seed,
                            stop_below_median_after=stop_below_median_after,
                            **_budget(hyperband, hypermodel, max_trials, max_epochs))
    search = tuner_class(oracle, hypermodel, directory=str(directory), project_name=project_name,
                         overwrite=overwrite, isolate_trials=isolate_trials, trials_per_process=trials_per_process)
    _write_record(record, described, hypermodel)
    return _search(search, hypermodel, data, callbacks, verbose, output, soup)


#: The file in ``directory/project_name`` that says which search runs there (settings and data).
SEARCH_RECORD = "transferkit_search.json"


_SEARCHED_SETTINGS = ("class_names", "image_size", "epochs", "fine_tune_epochs", "metric", "dropout_range",
                      "hidden_units", "learning_rate_range", "unfreeze_points", "fine_tune_lr_factors", "seed")


def _described(hypermodel: TwoPhaseHyperModel, data, **search) -> dict:
    """What a search must keep to be continued: the search's and the hypermodel's settings (the
    trial count aside: raising it continues the search) and the data's files."""
    settings = {name: getattr(hypermodel, name) for name in _SEARCHED_SETTINGS}
    if len(hypermodel.backbones) > 1:
        settings["backbones"] = hypermodel.backbones
    settings["base"] = {k: v for k, v in hypermodel.base.items() if k != "cache_dir"}
    settings["base"]["head"] = {k: v for k, v in settings["base"]["head"].items() if k != "name"}  # generated
    files = {split: file_list_of(data, split).digest()[:16] for split in ("train", "validation")} \
        if hasattr(data, "files") else None
    return json.loads(json.dumps({"search": search, "hypermodel": settings,
                                  "data": {"batch_size": getattr(data, "batch_size", None), "files": files}},
                                 default=str))


def _write_record(record: Path, described: dict, hypermodel: TwoPhaseHyperModel) -> None:
    record.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(record, json.dumps({**described, "augmentation_seed": hypermodel.augmentation_seed}, indent=2))


def _check_same_search(folder: Path, described: dict, hypermodel: TwoPhaseHyperModel, overwrite: bool) -> Path:
    """Refuse to continue, in ``folder``, a search started with other settings or data (naming each
    difference); an unseeded search continues with the augmentation seed it started with."""
    record = folder / SEARCH_RECORD
    if overwrite or not record.is_file():
        return record
    saved = json.loads(record.read_text())
    changed = differences({k: v for k, v in saved.items() if k != "augmentation_seed"}, described)
    if changed:
        raise ValueError(f"The search in {folder} was started with other settings: {'; '.join(changed)}. Run it "
                         "again with those to continue it, pass overwrite=True (--overwrite) to start a new search "
                         "there, or give another project name (--project-name).")
    if hypermodel.seed is None:
        hypermodel.augmentation_seed = saved["augmentation_seed"]
    return record


def _budget(hyperband: bool, hypermodel: TwoPhaseHyperModel, max_trials: int, max_epochs: int | None) -> dict:
    """Hyperband's epochs per trial (by default a trial's own), or the other searches' trial count."""
    if hyperband:
        return dict(max_epochs=max_epochs or hypermodel.epochs + hypermodel.fine_tune_epochs, factor=3)
    return dict(max_trials=max_trials)


def _hypermodel(data, directory, project_name, options: dict) -> TwoPhaseHyperModel:
    hypermodel = TwoPhaseHyperModel(data.class_names, data.image_size,
                                    multi_label=getattr(data, "multi_label", False), **options)
    if hypermodel.cache_features and hypermodel.cache_dir is None:
        hypermodel.base["cache_dir"] = str(Path(directory) / project_name / "features")
    return hypermodel


def _tune_with_a_keras_tuner_class(data, directory, project_name, tuner, max_trials, max_epochs, overwrite, output,
                                   isolate_trials, verbose, callbacks, stop_below_median_after, soup, **options):
    """The search with a KerasTuner tuner class (deprecated: its oracle is its own, so the median
    rule cannot be added; give ``tuner=`` a name and ``tuner_class=`` a `TwoPhaseTuner` subclass)."""
    warnings.warn(f"tune(tuner={tuner.__name__}): a KerasTuner tuner class is deprecated; pass tuner='random', "
                  "'bayesian' or 'hyperband' and, to change how trials run, tuner_class= a subclass of "
                  "transferkit.tuning.TwoPhaseTuner.", DeprecationWarning, stacklevel=3)
    if stop_below_median_after is not None:
        raise ValueError("stop_below_median_after needs tuner= a name ('random', 'bayesian', 'hyperband'): the "
                         "rule lives in transferkit's oracles, not in a KerasTuner tuner class.")

    class Running(TrialRunning, tuner):
        pass

    hypermodel = _hypermodel(data, directory, project_name, options)
    described = _described(hypermodel, data, tuner=tuner.__name__, stop_below_median_after=None,
                           max_epochs=max_epochs)
    record = _check_same_search(Path(directory) / project_name, described, hypermodel, overwrite)
    common = dict(objective=final_objective(hypermodel.metric), directory=str(directory), project_name=project_name,
                  overwrite=overwrite, seed=hypermodel.seed, isolate_trials=isolate_trials)
    budget = _budget(issubclass(tuner, kt.Hyperband), hypermodel, max_trials, max_epochs)
    search = Running(hypermodel, **budget, **common)
    _write_record(record, described, hypermodel)
    return _search(search, hypermodel, data, callbacks, verbose, output, soup)


def _search(search, hypermodel: TwoPhaseHyperModel, data, callbacks, verbose, output, soup=False) -> TuningResult:
    objective = search.oracle.objective
    search.search(data, callbacks=list(callbacks or []), verbose=verbose)

    if "KERASTUNER_TUNER_ID" in os.environ and "chief" not in os.environ["KERASTUNER_TUNER_ID"]:
        return TuningResult(tuner=search, best_hyperparameters={}, best_score=None, trials=[])  # a worker
    trials = _trials(search)
    finished = [t for t in search.oracle.trials.values() if t.status == kt.engine.trial.TrialStatus.COMPLETED]
    failed = [t for t in search.oracle.trials.values() if t.status == kt.engine.trial.TrialStatus.FAILED]
    if failed and not finished:  # KerasTuner logs each failure and goes on: say the first, not a missing file
        raise RuntimeError(f"Every trial of the search failed ({len(failed)}); trial {failed[0].trial_id}'s error: "
                           f"{(failed[0].message or 'not recorded').strip().splitlines()[-1]}")
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
    if result.classifier.multi_label:
        hypermodel.trainer.set_thresholds(data)
    if output is not None:
        from transferkit.evaluation.run import save_search

        result.files = tuple(save_search(result, objective.name, output))
    if soup:
        from transferkit.tuning.soup import greedy_soup

        result.soup = greedy_soup(result, data)
        if output is not None:
            result.files += tuple(result.soup.save(output))
    return result
