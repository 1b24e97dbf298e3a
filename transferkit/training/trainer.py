"""`TwoPhaseTrainer`: train a new head on a frozen backbone, then fine-tune the top of the backbone.

>>> import numpy as np, tempfile, pathlib
>>> from PIL import Image
>>> from transferkit import ImageFolder
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> for name, colour in [("cats", "red"), ("dogs", "blue")]:
...     (root / name).mkdir()
...     for i in range(8):
...         Image.new("RGB", (40, 40), colour).save(root / name / f"{i}.png")
>>> data = ImageFolder(root, image_size=(32, 32), batch_size=8, split=(0.75, 0.25), seed=0)
>>> trainer = TwoPhaseTrainer(weights=None, backbone_options={"alpha": 0.35},
...                           unfreeze_from="block_16", seed=0)
>>> result = trainer.fit(data, epochs=1, fine_tune_epochs=1, verbose=0)
>>> result.phase_boundary, len(result.history["loss"])
(1, 2)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from transferkit.training import distribute
from transferkit.models.augment import PRESETS, PartlyAugmented
from transferkit.models.thresholds import choose_thresholds
from transferkit.models.augment import augmentation as make_augmentation
from transferkit.models import defaults
from transferkit.models.backbones import BackboneSpec, get_backbone, get_backbone_spec
from transferkit.training.callbacks import ShowFullModel, ValidateOnAverage, cosine_schedule
from transferkit.training.checkpoint import RunCheckpoint
from transferkit.data.fingerprint import file_list_of
from transferkit.data.pipeline import PassClock
from transferkit.training.recipes import BuiltModel, CachedRecipe, ExactRecipe
from transferkit.training.settings import EPOCHS, FINE_TUNE_EPOCHS, UNKNOWN_LENGTH_MOMENTUM, FastPath, Recipe, preset
from transferkit.models.head import ClassifierHead, ClassProbabilities
from transferkit.models.classifier import Classifier

__all__ = ["TwoPhaseTrainer", "TrainingResult"]

log = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    """What `TwoPhaseTrainer.fit` returns.

    Attributes:
        history: both phases' Keras logs merged, ``{"loss": [...], "val_accuracy": [...], ...}``,
            one entry per epoch.
        phase_boundary: index of the first fine-tuning epoch (the number of phase-1 epochs run).
        classifier: the trained `Classifier` (raw pixels in, probabilities out).
        phase_seconds: wall time of phase 1 (with computing cached features) and phase 2; a resumed
            run adds the time its checkpoint recorded before the interruption.
        histories: the two Keras ``History`` objects.
        run: what was run, JSON-friendly: the trainer's settings, the epochs asked for and the data
            (class names, image and batch size, a fingerprint of each split's files); the same record
            a checkpoint must match to be resumed.
        epochs_trained: the epochs this ``fit`` trained: fewer than asked for when it resumed a
            checkpoint, 0 when that run had already finished.
    """

    history: dict[str, list[float]]
    phase_boundary: int
    classifier: Classifier
    phase_seconds: tuple[float, float] = (0.0, 0.0)
    histories: tuple = field(default=(), repr=False)
    run: dict = field(default_factory=dict, repr=False)
    epochs_trained: int | None = None

    @property
    def epoch(self) -> list[int]:
        return list(range(len(next(iter(self.history.values()), []))))

    def final(self, metric: str = "val_accuracy", phase: int = 2) -> float | None:
        """The metric's value at the end of phase 1 or phase 2 (None if that phase did not run)."""
        values = self.history.get(metric, [])
        end = self.phase_boundary if phase == 1 else len(values)
        start = 0 if phase == 1 else self.phase_boundary
        return float(values[end - 1]) if end > start else None

    def __getattr__(self, name):
        moved = {"evaluate": "transferkit.evaluation.metrics.evaluate(result.classifier, data, split)",
                 "plot": "transferkit.evaluation.plots.plot_history(result.history, result.phase_boundary, path)"}
        if name in moved:
            raise AttributeError(f"TrainingResult.{name} is gone (training knows nothing of reports): "
                                 f"use {moved[name]}.")
        raise AttributeError(f"'TrainingResult' object has no attribute {name!r}")


def _settings(kind, given, arguments: dict, argument: str):
    """A `Recipe` or `FastPath` from ``given`` (an instance or a dict, the trainer's ``argument``) or from
    the trainer's other arguments; both at once only where those keep their defaults."""
    if given is None:
        return kind(**arguments)
    if isinstance(given, dict):
        given = kind.from_config(given)
    if not isinstance(given, kind):
        raise TypeError(f"{argument}= takes a {kind.__name__} or a dict of its settings, got {type(given).__name__}.")
    same = lambda a, b: (tuple(a) if isinstance(a, list) else a) == (tuple(b) if isinstance(b, list) else b)  # noqa: E731
    defaults = kind()
    clash = [name for name, value in arguments.items() if not same(value, getattr(defaults, name))
             and not same(value, getattr(given, name))]
    if clash:
        raise ValueError(f"{', '.join(clash)} given both as an argument and in the {kind.__name__}: give it once.")
    return given


def _setting(part: str, name: str) -> property:
    def get(self):
        return getattr(getattr(self, part), name)

    def set_(self, value):
        setattr(self, part, getattr(self, part).replace(**{name: value}))

    return property(get, set_, doc=f"``{part}.{name}``")


class TwoPhaseTrainer:
    """The two-phase transfer-learning recipe around a registered backbone.

    Phase 1 trains the head with the backbone frozen. Phase 2 makes the backbone's layers from
    ``unfreeze_from`` on trainable, recompiles with a fresh optimizer at
    ``learning_rate * fine_tune_lr_factor`` and continues the epoch count where phase 1 stopped.
    BatchNormalization layers stay in inference mode in phase 2 (their moving statistics do not
    change) unless ``freeze_batchnorm=False``.

    Args:
        backbone: registered backbone name (see `list_backbones`), a `BackboneSpec`, or your own Keras
            model (image in, feature map out; see `backbone_from_model`), which is copied, never changed.
        weights: ``"imagenet"``, ``None`` or a weights file path. For your own model: ``"imagenet"`` (the
            default) keeps the weights it came with, ``None`` initialises it afresh.
        head: a `ClassifierHead`, or a dict of its arguments; ``num_classes`` comes from the data.
        augmentation: a preset name, a dict (``{"preset": ..., **overrides}``), a Keras layer, or None.
        unfreeze_from: backbone layer index, block name (``"block_11"``: its first layer) or layer name;
            ``"auto"``: the backbone's own default (`BackboneSpec.default_unfreeze`; MobileNetV2: 100).
        learning_rate: phase-1 learning rate.
        fine_tune_lr_factor: phase-2 learning rate = ``learning_rate * fine_tune_lr_factor``.
        freeze_batchnorm: keep BatchNormalization frozen in phase 2.
        optimizer: ``"adam"``, ``"rmsprop"``, ``"sgd"`` or ``"adamw"``, a fresh one per phase.
        fine_tune_optimizer: phase 2's optimizer when it differs from phase 1's; ``None``: ``optimizer``.
        image_size: (height, width); by default the data's.
        backbone_options: passed to the backbone constructor (e.g. ``{"alpha": 0.35}``).
        label_smoothing: for two-class heads.
        ema_window: each phase ends on an exponential moving average of its weights (Keras's
            ``use_ema``) over about this fraction of its steps; validation sees the average too.
            None: on the last step's weights.
        fine_tune_schedule: phase 2's learning rate over its epochs, ``"constant"`` or ``"cosine"``.
        seed: seeds Keras, NumPy and TensorFlow at ``fit`` so a run can be repeated exactly.
        cache_features: run the frozen layers once over ``views`` augmented variants of each
            training image (view 0 unaugmented) and once over the validation images, then train the
            head (phase 1) and the unfrozen top (phase 2) on those cached outputs; see
            `transferkit.training.features`. ``False`` runs the exact recipe: fresh augmentation every epoch
            (each image left as it is with probability ``1 / views``, as the fast path's view 0 is), the
            whole network every step. Needs an `ImageFolder`-like ``data`` (``dataset``,
            ``labels``); other data trains the exact way.
        views: variants per training image for ``cache_features`` (view 0 as it is); the exact recipe
            leaves an image unaugmented with probability ``1 / views`` (``augmentation={...,
            "plain_fraction": 0}``: every image augmented, as the tutorial does).
        feature_dtype: storage type of cached features (``"float16"`` halves memory).
        cache_dir: keep cached features in files here, read a batch at a time (for data larger
            than memory), reused by later runs on the same files, weights and settings; by default
            they are kept in memory for one ``fit`` (in a temporary folder, removed after it, when
            they would take more than half the available memory).
        random_views: on the fast path, each image gets one of its cached views drawn at random in
            every epoch (instead of view ``epoch % views`` for all images).
        mirror_features: on the fast path, phase 2 mirrors each sample's cached activation maps
            left-right with probability 1/2 (a cheap extra augmentation of what crosses the cut;
            off when ``augmentation`` is None).
        augmentation_seed: seeds the augmentation (and so the cached views) apart from the rest of
            the run; by default ``seed``. Runs that differ only in ``seed`` share cached features when
            they share this (a search does: one set of views, one seed per trial).
        cache_unfreeze_points: with ``cache_dir``, more unfreeze points whose phase-2 inputs are
            computed in the same pass over the images, for later runs (a search passes every point it
            may try). Results do not depend on it.
        mixed_precision: ``True`` computes in float16 on a GPU and bfloat16 elsewhere (or name the
            policy, ``"mixed_float16"`` / ``"mixed_bfloat16"``); variables, logits and probabilities
            stay float32.
        distribution: several devices: a ``tf.distribute`` strategy (``MirroredStrategy``) on
            TensorFlow, a ``keras.distribution.DataParallel`` on JAX (`transferkit.training.distribute.for_devices`
            makes either; `transferkit.training.distribute.for_processes` one over several processes or
            machines). Both phases and the feature extraction run over its devices, each batch split
            between them; the result equals a one-device run with the same batch size, and the
            classifier returned is a one-device model. With several processes, each needs the same
            ``seed``, and a last batch that would not split evenly between them is left out.
        recipe: the recipe settings at once, a `Recipe` (or a dict of it) instead of ``unfreeze_from``,
            ``learning_rate``, ``fine_tune_lr_factor``, ``freeze_batchnorm``, ``optimizer``,
            ``fine_tune_optimizer``, ``label_smoothing``, ``ema_window`` and ``fine_tune_schedule``; the defaults of all of them
            are the `Recipe`'s.
        fast_path: the fast path's settings at once, a `FastPath` (or a dict) instead of
            ``cache_features``, ``views``, ``feature_dtype``, ``cache_dir``, ``random_views``,
            ``mirror_features`` and ``cache_unfreeze_points``.

    ``get_config()`` mirrors the constructor and `from_config` reads it back; `from_preset` starts from
    a named preset (``"default"``, ``"seed_project"``).
    """

    def __init__(
        self,
        backbone: str | BackboneSpec | keras.Model = defaults.BACKBONE,
        weights: str | os.PathLike | None = defaults.WEIGHTS,
        head: ClassifierHead | dict | None = None,
        augmentation: str | dict | keras.layers.Layer | None = defaults.AUGMENTATION,
        unfreeze_from: int | str = Recipe.unfreeze_from,
        learning_rate: float = Recipe.learning_rate,
        fine_tune_lr_factor: float = Recipe.fine_tune_lr_factor,
        freeze_batchnorm: bool = Recipe.freeze_batchnorm,
        optimizer: str = Recipe.optimizer,
        fine_tune_optimizer: str | None = Recipe.fine_tune_optimizer,
        image_size: tuple[int, int] | None = None,
        backbone_options: dict | None = None,
        label_smoothing: float = Recipe.label_smoothing,
        ema_window: float | None = Recipe.ema_window,
        fine_tune_schedule: str = Recipe.fine_tune_schedule,
        seed: int | None = None,
        cache_features: bool = FastPath.cache_features,
        views: int = FastPath.views,
        feature_dtype: str = FastPath.feature_dtype,
        cache_dir: str | os.PathLike | None = FastPath.cache_dir,
        random_views: bool = FastPath.random_views,
        mirror_features: bool = FastPath.mirror_features,
        augmentation_seed: int | None = None,
        cache_unfreeze_points: tuple | list = FastPath.cache_unfreeze_points,
        mixed_precision: bool | str = False,
        distribution: object | None = None,
        recipe: Recipe | dict | None = None,
        fast_path: FastPath | dict | None = None,
    ):
        self.spec = get_backbone_spec(backbone)
        if isinstance(head, dict):
            head = ClassifierHead(**head)
        self.head = head if head is not None else ClassifierHead()
        if not isinstance(self.head, ClassifierHead):
            raise TypeError(f"head must be a ClassifierHead or a dict of its arguments, got {type(head).__name__}.")
        arguments = locals()  # by name, for the groups below
        self.recipe = _settings(Recipe, recipe, {name: arguments[name] for name in Recipe.names()}, "recipe")
        self.fast_path = _settings(FastPath, fast_path, {name: arguments[name] for name in FastPath.names()}, "fast_path")
        if isinstance(augmentation, str) and augmentation not in PRESETS:
            raise ValueError(f"augmentation={augmentation!r}: choose one of {', '.join(PRESETS)}, a dict, "
                             "a Keras layer, or None.")
        self.backbone = self.spec.name  # in messages and model names; get_config says what was given
        self._backbone_given = backbone
        self.weights = None if weights is None else str(weights)
        self.augmentation = augmentation
        self.image_size = None if image_size is None else tuple(image_size)
        self.backbone_options = dict(backbone_options or {})
        self.seed = seed
        self.augmentation_seed = augmentation_seed
        if mixed_precision not in (False, True, "mixed_float16", "mixed_bfloat16"):
            raise ValueError(f"mixed_precision={mixed_precision!r}: use True (float16 on a GPU, bfloat16 elsewhere), "
                             "'mixed_float16', 'mixed_bfloat16' or False.")
        self.mixed_precision = mixed_precision
        distribute.check(distribution)
        if distribute.processes(distribution) > 1 and seed is None:
            raise ValueError("Several processes train one model: give them all the same seed= so that they shuffle "
                             "and augment alike.")
        self.distribution = distribution  # how many devices is how, not what: not in get_config
        self.model: keras.Model | None = None
        self.backbone_model: keras.Model | None = None
        self.classifier: Classifier | None = None
        self.parts: BuiltModel | None = None  # what build() made, as the recipes receive it

    @classmethod
    def from_preset(cls, name: str, **overrides) -> TwoPhaseTrainer:
        """A trainer with a named preset's settings (`transferkit.training.settings.PRESETS`), and ``overrides``.

        >>> TwoPhaseTrainer.from_preset("seed_project", weights=None).fine_tune_lr_factor
        0.1
        """
        return cls(**{**preset(name), **overrides})

    @classmethod
    def from_config(cls, config: dict) -> TwoPhaseTrainer:
        """The trainer that `get_config` describes (an augmentation layer is deserialized).

        >>> t = TwoPhaseTrainer(weights=None, head={"dropout": 0.3}, unfreeze_from="block_13")
        >>> TwoPhaseTrainer.from_config(t.get_config()).get_config() == t.get_config()
        True
        """
        config = dict(config)
        if isinstance(config.get("backbone"), dict):
            raise ValueError(f"This config describes a trainer around an unregistered backbone "
                             f"({config['backbone']['name']!r}); its network is not in the config: pass it again, "
                             "TwoPhaseTrainer(backbone=model or spec, ...), or register it (register_backbone).")
        augmentation = config.get("augmentation")
        if isinstance(augmentation, dict) and "class_name" in augmentation and "config" in augmentation:
            config["augmentation"] = keras.saving.deserialize_keras_object(augmentation)
        return cls(**config)

    def get_config(self) -> dict:
        """The constructor arguments (JSON-friendly), so a run can be recorded and repeated."""
        augmentation = self.augmentation
        if isinstance(augmentation, keras.layers.Layer):
            augmentation = keras.saving.serialize_keras_object(augmentation)
        return {
            "backbone": self._backbone_config(),
            "weights": self.weights,
            "head": self.head.get_config(),
            "augmentation": augmentation,
            "image_size": self.image_size,
            "backbone_options": self.backbone_options,
            **self.recipe.get_config(),
            "seed": self.seed,
            **self.fast_path.get_config(),
            "augmentation_seed": self.augmentation_seed,
            "mixed_precision": self.mixed_precision,
        }

    def _backbone_config(self):
        """A registered backbone by name; another one as what identifies it (`from_config` cannot
        rebuild it: the network and its weights are not in the config)."""
        if isinstance(self._backbone_given, str) or not self.spec.digest:  # registered
            return self.spec.name
        return {"name": self.spec.name, "digest": self.spec.digest, "preprocessing": self.spec.preprocessing,
                "block_pattern": self.spec.block_pattern}

    # -- model --------------------------------------------------------------------------------

    @property
    def precision_policy(self) -> str:
        """The Keras dtype policy the model is built with: ``"float32"`` unless ``mixed_precision``;
        ``True`` picks ``"mixed_float16"`` where a GPU is visible and ``"mixed_bfloat16"`` elsewhere."""
        if self.mixed_precision is False:
            return "float32"
        if self.mixed_precision is True:
            return "mixed_float16" if distribute.gpu_visible() else "mixed_bfloat16"
        return self.mixed_precision

    @contextlib.contextmanager
    def _precision(self):
        """Layers made inside use the precision policy (the logits and probabilities stay float32)."""
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.precision_policy)
        try:
            yield
        finally:
            keras.config.set_dtype_policy(previous)

    @contextlib.contextmanager
    def _model_scope(self):
        """The precision policy, and variables, models and optimizers that belong to the distribution."""
        with self._precision(), distribute.scope(self.distribution):
            yield

    @property
    def _augmentation_seed(self):
        return self.seed if self.augmentation_seed is None else self.augmentation_seed

    def _augmentation_layer(self):
        aug = self.augmentation
        if aug is None or isinstance(aug, keras.layers.Layer):
            return aug
        if isinstance(aug, str):
            return make_augmentation(aug, seed=self._augmentation_seed)
        if isinstance(aug, dict):
            options = dict(aug)
            return make_augmentation(options.pop("preset", "default"), seed=self._augmentation_seed, **options)
        raise TypeError(f"augmentation={aug!r}: give a preset name, a dict of options, a Keras layer or None.")

    def _exact_mix(self, augment):
        """What the training model augments with: ``augment`` inside `PartlyAugmented`, so that the exact
        recipe serves each image as it is with probability ``1 / views``, the share the fast path's view 0
        has (measured over three seeds: benchmarks/README.md). An augmentation that names its own
        ``plain_fraction`` (``0``: every image augmented, as the tutorial does) is used as it is."""
        named = isinstance(self.augmentation, dict) and "plain_fraction" in self.augmentation
        if augment is None or named or self.views == 1:
            return augment
        return PartlyAugmented(augment, plain_fraction=1.0 / self.views, seed=self._augmentation_seed,
                               name="view_mix")

    def build(self, class_names, image_size, multi_label: bool = False) -> keras.Model:
        """Build a fresh training model (logits out) and its `Classifier` (probabilities out); with
        ``multi_label``, for several labels per image (a sigmoid per class)."""
        image_size = tuple(int(s) for s in image_size)
        if self.image_size is not None and self.image_size != image_size:
            raise ValueError(f"The trainer was set to image_size={self.image_size} but the data is {image_size}.")
        with self._model_scope():
            return self._build(class_names, image_size, multi_label)

    def _build(self, class_names, image_size, multi_label: bool = False) -> keras.Model:
        head = self.head.with_num_classes(len(class_names), multi_label=multi_label or self.head.multi_label)
        inputs = keras.Input((*image_size, 3), name="image")
        preprocessing = self.spec.preprocessing_layer()
        self.backbone_model = get_backbone(
            self.spec, input_shape=(*image_size, 3), weights=self.weights, **self.backbone_options
        )

        def features(x):
            if preprocessing is not None:
                x = preprocessing(x)
            return self.backbone_model(x)

        augment = self._augmentation_layer()
        in_model = self._exact_mix(augment)
        logits = head(features(in_model(inputs) if in_model is not None else inputs))
        name = re.sub(r"\W+", "_", Path(self.backbone.rstrip("/")).name) + "_classifier"  # a preset: its folder
        self.model = keras.Model(inputs, logits, name=name)
        probabilities = ClassProbabilities(class_names, image_size, name="probabilities", dtype="float32",
                                           multi_label=head.multi_label)(head(features(inputs)))
        self.classifier = Classifier(keras.Model(inputs, probabilities, name=name))
        self.parts = BuiltModel(self.model, self.classifier, self.backbone_model, head, preprocessing, augment)
        return self.model

    def check(self, image_size) -> int:
        """Check the settings that need the backbone's layers (the unfreeze point) without loading
        weights or touching data, so bad settings fail before any image is decoded. Returns the
        unfreeze index."""
        image_size = tuple(int(s) for s in image_size)
        saved = self.backbone_model
        try:
            self.backbone_model = get_backbone(self.spec, input_shape=(*image_size, 3), weights=None,
                                               **self.backbone_options)
            return self.unfreeze_index()
        finally:
            self.backbone_model = saved

    def unfreeze_index(self, point=None) -> int:
        """``unfreeze_from`` (or ``point``) as an index into the backbone's layers."""
        layers = self.backbone_model.layers
        point = self.unfreeze_from if point is None else point
        if point == "auto":
            point = self.spec.unfreeze_point(self.backbone_model)
        if isinstance(point, (int, np.integer)) and not isinstance(point, bool):
            if not 0 <= point < len(layers):
                raise ValueError(
                    f"unfreeze_from={point} is outside the {self.backbone} backbone's layers 0..{len(layers) - 1}."
                )
            return int(point)
        if isinstance(point, str):
            blocks = self.spec.blocks(self.backbone_model)
            if point in blocks:
                return blocks[point]
            names = [layer.name for layer in layers]
            if point in names:
                return names.index(point)
            raise ValueError(
                f"unfreeze_from={point!r} is neither a block nor a layer of {self.backbone}; "
                f"blocks: {', '.join(blocks) or 'none'}."
            )
        raise TypeError(f"unfreeze_from={point!r}: give a layer index or a block/layer name.")

    def freeze_backbone(self) -> None:
        """Phase 1: nothing in the backbone trains (BatchNormalization included)."""
        self.backbone_model.trainable = False

    def unfreeze_top(self) -> int:
        """Phase 2: layers from the unfreeze point on train; returns that index."""
        index = self.unfreeze_index()
        self.backbone_model.trainable = True
        for layer in self.backbone_model.layers[:index]:
            layer.trainable = False
        if self.freeze_batchnorm:
            for layer in self.backbone_model.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
        return index

    def compile(self, learning_rate: float, model: keras.Model | None = None,
                ema_momentum: float | None = None, phase: int = 1) -> None:
        """(Re)compile the training model (or ``model``) with a fresh optimizer of ``phase``, and the
        head's loss and metrics; with ``ema_momentum``, the optimizer keeps a moving average of the weights."""
        config = {"learning_rate": learning_rate}
        if ema_momentum is not None:
            config.update(use_ema=True, ema_momentum=ema_momentum)
        optimizer = keras.optimizers.get({"class_name": self.recipe.optimizer_of(phase), "config": config})
        (model or self.model).compile(
            optimizer=optimizer,
            loss=self.parts.head.make_loss(self.label_smoothing),
            metrics=self.parts.head.make_metrics(),
        )

    # -- training -----------------------------------------------------------------------------

    def fit(
        self,
        data,
        epochs: int = EPOCHS,
        fine_tune_epochs: int = FINE_TUNE_EPOCHS,
        callbacks: list | None = None,
        class_weight: dict | None = None,
        verbose="auto",
        checkpoint_dir: str | os.PathLike | None = None,
        rebuild: bool = True,
        initial_model=None,
    ) -> TrainingResult:
        """Build a fresh model and run both phases on ``data``.

        ``data`` is an `ImageFolder`, or any object with ``train`` and ``validation`` datasets of
        ``(images 0-255, integer labels)`` batches, ``class_names`` and ``image_size``.
        ``fine_tune_epochs=0`` stops after phase 1; ``epochs=0`` goes straight to phase 2. With
        ``cache_features`` (the default) and an `ImageFolder`, the frozen layers run once and the
        phases train on their cached outputs.

        Callbacks see the full training model (images in, logits out) and both phases as one run, as
        in one ``model.fit``; their epoch logs carry ``"phase"``. ``EarlyStopping`` ends the running
        phase, its patience restarts at phase 2, and ``restore_best_weights`` restores the best epoch
        of the whole run at the end (see `transferkit.training.callbacks`).

        With ``checkpoint_dir``, a checkpoint is written after every epoch (weights, optimizer and
        random states, phase, epoch, history, and a fingerprint of the settings and data); a later
        ``fit`` with the same directory, settings and data continues after the last finished epoch,
        in the right phase, and one with other settings or data is refused, naming what differs.
        With an `ImageFolder` and a ``seed``, the resumed run ends as the uninterrupted one would.

        ``rebuild=False`` trains the model the last `build` made, with the weights it has now (loaded
        from an earlier run, say), instead of a fresh one; the seed is then not set again.

        ``initial_model`` (a `Classifier`, a ``.keras`` file or a run folder) starts from that trained
        classifier's weights instead of the backbone's pretrained ones: to continue it on more images, or
        on more classes (its classes keep their logits; see `transferkit.training.warm_start`). To keep
        its recorded validation and test images where they were, make the data with
        ``ImageFolder(..., recorded_split=classifier.split)``.
        """
        if epochs < 0 or fine_tune_epochs < 0 or epochs + fine_tune_epochs == 0:
            raise ValueError(f"epochs={epochs}, fine_tune_epochs={fine_tune_epochs}: train for at least one epoch.")
        missing = [name for name in ("train", "validation") if getattr(data, name, None) is None]
        if missing:
            raise ValueError(f"The data has no {' and no '.join(missing)} split: training needs both.")
        self._check_whole_batches(data)
        if rebuild:
            if self.seed is not None:
                keras.utils.set_random_seed(self.seed)
            self.build(data.class_names, data.image_size, multi_label=getattr(data, "multi_label", False))
        elif self.model is None:
            raise RuntimeError("fit(rebuild=False) trains the model build() made: call build() first.")
        self._initial = None
        if initial_model is not None:
            from transferkit.training.warm_start import start_from

            self._initial = start_from(self, initial_model)
        if hasattr(data, "split_record"):
            self.classifier.split = data.split_record()
        checkpoint = None
        described, files = self._fingerprint(data, epochs, fine_tune_epochs)
        if checkpoint_dir is not None:
            checkpoint = RunCheckpoint(checkpoint_dir, described, files)
        progress = _Progress(self, checkpoint, checkpoint.load() if checkpoint is not None else None)
        index = self.unfreeze_index() if fine_tune_epochs else len(self.backbone_model.layers)
        phases = [p for p, n in ((1, epochs), (2, fine_tune_epochs)) if n and not progress.phase_done(p)]
        start = time.perf_counter()
        recipe = self._recipe(data, index, phases, verbose)
        preparation = time.perf_counter() - start
        loop = _PhaseLoop(self, recipe, progress, keras.callbacks.CallbackList(
            list(callbacks or []), add_history=False, add_progbar=False), phases,
            dict(class_weight=class_weight, verbose=verbose, shuffle=False))  # datasets reshuffle themselves
        try:
            self.freeze_backbone()
            loop.run(1, 0, epochs, self.learning_rate)
            boundary = progress.boundary(epochs)
            if fine_tune_epochs:
                self.unfreeze_top()
                log.info("Fine-tuning %s from layer %d (%s)", self.backbone, index,
                         self.backbone_model.layers[index].name)
                loop.run(2, boundary, boundary + fine_tune_epochs, self.learning_rate * self.fine_tune_lr_factor)
        finally:
            recipe.close()
        progress.restore_variables()  # a run that was already finished trains nothing
        if not recipe.trains_full_model:  # leave the full model compiled as the last phase left it
            self.compile(self.learning_rate * (self.fine_tune_lr_factor if fine_tune_epochs else 1.0),
                         phase=2 if fine_tune_epochs else 1)
        if self.distribution is not None:
            self.classifier = self._one_device_copy(self.classifier)
        if self.classifier.multi_label:
            self.set_thresholds(data)
        seconds = progress.seconds
        return TrainingResult(history=progress.history, phase_boundary=boundary, classifier=self.classifier,
                              phase_seconds=(seconds[0] + (preparation if 1 in phases else 0.0), seconds[1]),
                              histories=tuple(loop.histories), run=described,
                              epochs_trained=progress.epochs_done - progress.epochs_at_start)

    def lr_find(self, data, min_lr: float = 1e-7, max_lr: float = 1.0, steps: int = 100, phases=(1, 2),
                epochs: int | None = None):
        """The loss over a sweep of learning rates for phase 1 and phase 2 (at the unfreeze point), with a
        suggested ``learning_rate`` and ``fine_tune_lr_factor``: see `transferkit.training.lr_find`.
        On the fast path (the default) each sweep runs on cached features."""
        from transferkit.training.lr_find import lr_find

        return lr_find(self, data, min_lr=min_lr, max_lr=max_lr, steps=steps, phases=phases, epochs=epochs)

    def set_thresholds(self, data) -> list[float]:
        """Several labels per image: give each class of the trained classifier the threshold with the best F1
        on ``data``'s validation images (`choose_thresholds`; ``fit`` does this at its end). Returns them."""
        labels, probabilities = [], []
        for images, batch_labels in data.validation:
            probabilities.append(np.asarray(self._trained().model.predict_on_batch(np.asarray(images))))
            labels.append(np.asarray(batch_labels))
        self.classifier.thresholds = choose_thresholds(np.concatenate(labels), np.concatenate(probabilities))
        return self.classifier.thresholds

    def _check_whole_batches(self, data) -> None:
        """Several processes train on whole batches only (each process takes its share of each): a
        split smaller than one batch would leave nothing."""
        count = distribute.processes(self.distribution)
        batch_size = getattr(data, "batch_size", None)
        if count == 1 or batch_size is None or not hasattr(data, "labels"):
            return
        for split in ("train", "validation"):
            if len(data.labels(split)) < batch_size:
                raise ValueError(f"With {count} processes every batch is whole, but the {split} split holds "
                                 f"{len(data.labels(split))} images, fewer than one batch of {batch_size}: give a "
                                 "smaller batch size or more images.")

    def _one_device_copy(self, classifier: Classifier) -> Classifier:
        """The trained classifier made again outside the distribution, with its weights: a model made
        under a strategy gives every replica the whole of a ``predict_on_batch`` batch."""
        with self._precision():
            model = keras.models.clone_model(classifier.model)
        model.set_weights([np.asarray(w) for w in classifier.model.get_weights()])
        copy = Classifier(model)
        copy.split = classifier.split
        return copy

    def _recipe(self, data, index: int, phases: list[int], verbose):
        """How the phases run: on cached features (`CachedRecipe`) when asked and the data can give
        them (an `ImageFolder`), else the whole network on the images (`ExactRecipe`). The exact recipe
        in place of the asked-for fast path is announced with the reason, never silent."""
        exact = ExactRecipe(self.parts, data, seed=self.seed)
        if not self.cache_features:
            return exact
        why = CachedRecipe.cannot_serve(data, index)
        if why is not None:
            warnings.warn(f"cache_features=True, but {why}: training the exact way (cache_features=False says so "
                          "and silences this).", UserWarning, stacklevel=3)
            return exact
        return CachedRecipe(
            self.parts, data, cut=index, phases=phases, fast_path=self.fast_path,
            also_cuts=[self.unfreeze_index(point) for point in self.cache_unfreeze_points],
            augmentation_seed=self._augmentation_seed, shuffle_seed=self.seed,
            augmentation_config=self.get_config()["augmentation"], verbose=0 if verbose == 0 else 1,
            identity={"backbone": self._backbone_config(), "backbone_options": self.backbone_options,
                      "weights": getattr(self, "_initial", None) or self.weights,
                      "precision": self.precision_policy},
            distribution=self.distribution)

    def run_settings(self, epochs: int = EPOCHS, fine_tune_epochs: int = FINE_TUNE_EPOCHS) -> dict:
        """The settings and epochs of a run, as its checkpoint and ``TrainingResult.run`` record them
        (without the data)."""
        settings = {k: v for k, v in self.get_config().items() if k not in ("cache_dir", "cache_unfreeze_points")}
        settings["head"] = {k: v for k, v in settings["head"].items() if k != "name"}  # generated, not chosen
        return json.loads(json.dumps({"settings": settings, "epochs": epochs, "fine_tune_epochs": fine_tune_epochs},
                                     default=str))

    def _fingerprint(self, data, epochs: int, fine_tune_epochs: int) -> tuple[dict, dict]:
        """What a checkpoint must match: the settings, the epochs, and the data's files (`FileList`
        per split, also returned to name a changed file) and shape."""
        files = {}
        if hasattr(data, "files"):
            files = {split: file_list_of(data, split) for split in ("train", "validation")}
        described = {"class_names": list(data.class_names), "image_size": list(data.image_size),
                     "batch_size": getattr(data, "batch_size", None),
                     "files": {split: f.digest()[:16] for split, f in files.items()} or None}
        if getattr(self, "_initial", None):  # a warm start: the weights it started from
            described["initial_model"] = self._initial
        if hasattr(data, "label_digest"):  # a table's labels are not its file paths
            described["labels"] = data.label_digest()
        return {**self.run_settings(epochs, fine_tune_epochs), "data": described}, files

    # -- using the trained model --------------------------------------------------------------

    def _trained(self) -> Classifier:
        if self.classifier is None:
            raise RuntimeError("The trainer has no model yet: call fit(data) first.")
        return self.classifier

    def predict(self, x, batch_size: int = 32) -> np.ndarray:
        """Class probabilities, ``(N, num_classes)``; see `Classifier.predict`."""
        return self._trained().predict(x, batch_size)

    def predict_classes(self, x, batch_size: int = 32) -> list[str]:
        return self._trained().predict_classes(x, batch_size)

    def save(self, path, overwrite: bool = False):
        """Save the trained classifier as a ``.keras`` file (raw pixels in, probabilities out)."""
        return self._trained().save(path, overwrite=overwrite)


# Each setting of the recipe and of the fast path reads (and sets) as an attribute of the trainer too:
# trainer.learning_rate is trainer.recipe.learning_rate, trainer.views is trainer.fast_path.views.
for _part, _kind in (("recipe", Recipe), ("fast_path", FastPath)):
    for _name in _kind.names():
        setattr(TwoPhaseTrainer, _name, _setting(_part, _name))


class _PhaseLoop:
    """Runs each phase as one Keras ``fit`` of the model its recipe trains, with the run's callbacks,
    and times it."""

    def __init__(self, trainer: TwoPhaseTrainer, recipe, progress, callbacks, phases: list[int], run: dict):
        self.trainer, self.recipe, self.progress, self.callbacks = trainer, recipe, progress, callbacks
        self.phases, self.run_options = phases, run
        self.histories: list = []

    def run(self, phase: int, first_epoch: int, last_epoch: int, learning_rate: float) -> None:
        """Phase ``phase`` from ``first_epoch`` (or where the checkpoint left it) to ``last_epoch``."""
        if phase not in self.phases:
            return
        self.progress.start_phase(phase)
        phase_start, first_epoch = first_epoch, max(first_epoch, self.progress.epochs_done)
        # The training order of epoch e is pass e of the data, told by the epoch's start rather than counted
        # from the iterators made: JAX's trainer and tf.distribute strategies make one they do not use.
        first_pass = PassClock(first_epoch)
        clock = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs=None: setattr(first_pass, "value",
                                                                                            epoch))
        datasets = self.recipe.datasets(phase, first_pass)
        # Counted before the distribution splits the batches: every process steps once per global batch.
        momentum = self.trainer.recipe.ema_momentum(_steps(datasets[0], last_epoch - phase_start))
        train, validation = (distribute.even_batches(d, self.trainer.distribution, self.recipe.batch_size)
                             for d in datasets)
        with self.trainer._model_scope():  # as the full model (float16 then gets loss scaling)
            model = self.recipe.model(phase)
            self.trainer.compile(learning_rate, model, ema_momentum=momentum, phase=phase)
        self.progress.restore(model, phase)
        record_epoch, record_phase = self.progress.callbacks(model, phase)
        steering, after = [], []  # steering runs before the user's callbacks (which then set rates last)
        self.progress.averaging = ValidateOnAverage() if momentum is not None else None
        if self.progress.averaging is not None:
            steering.append(self.progress.averaging)
            after.append(keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs=None: self.progress.averaging.restore()))
        if phase == 2 and self.trainer.recipe.fine_tune_schedule == "cosine":
            steering.append(cosine_schedule(learning_rate, phase_start, last_epoch - phase_start))
        user = ShowFullModel(self.callbacks, self.trainer.model, phase, begins_run=phase == self.phases[0],
                             ends_run=phase == self.phases[-1])
        with distribute.scope(self.trainer.distribution), warnings.catch_warnings():
            if distribute.processes(self.trainer.distribution) > 1:  # shards of unknown length: Keras counts them
                warnings.filterwarnings("ignore", message="Your input ran out of data")
            self.histories.append(model.fit(train, validation_data=validation, initial_epoch=first_epoch,
                                            epochs=last_epoch, callbacks=[clock, *steering, record_epoch, user, *after,
                                                                           record_phase],
                                            **self.run_options))


def _steps(dataset, epochs: int) -> int | None:
    """Training steps in ``epochs`` passes over ``dataset`` (None when its length is unknown)."""
    try:
        batches = int(dataset.cardinality()) if hasattr(dataset, "cardinality") else len(dataset)
    except TypeError:
        return None
    if batches <= 0:  # tf.data's UNKNOWN (-2) and INFINITE (-1)
        warnings.warn(f"ema_window: the training data's length is unknown, so the moving average uses momentum "
                      f"{UNKNOWN_LENGTH_MOMENTUM}.", UserWarning, stacklevel=4)
        return None
    return batches * epochs


class _Progress:
    """The run's merged history and epoch count, saved to and restored from a `RunCheckpoint`."""

    def __init__(self, trainer: TwoPhaseTrainer, checkpoint: RunCheckpoint | None, state: dict | None):
        self.trainer, self.checkpoint, self.state = trainer, checkpoint, state
        self.history: dict[str, list[float]] = {k: list(v) for k, v in (state or {}).get("history", {}).items()}
        self.epochs_done = self.epochs_at_start = int((state or {}).get("epochs_done", 0))
        self.seconds = list((state or {}).get("phase_seconds", [0.0, 0.0]))  # as saved after the last epoch
        self._phase, self._phase_start, self._seconds_before = 0, 0.0, 0.0
        self.phases_done = set((state or {}).get("phases_done", []))
        self._boundary = (state or {}).get("boundary")
        self._restored = False
        self.averaging = None  # the running phase's ValidateOnAverage, if it averages

    def start_phase(self, phase: int) -> None:
        """Time ``phase`` from now on, after what the checkpoint recorded of it."""
        self._phase, self._phase_start, self._seconds_before = phase, time.perf_counter(), self.seconds[phase - 1]

    def phase_done(self, phase: int) -> bool:
        return phase in self.phases_done

    def boundary(self, epochs: int) -> int:
        return self._boundary if self._boundary is not None else min(epochs, self.epochs_done)

    def restore(self, model: keras.Model, phase: int) -> None:
        """Put back the saved variables, and the optimizer's when the checkpoint is inside this phase."""
        if self.state is None:
            return
        self.restore_variables()
        if self.state.get("phase") == phase and self.state["optimizer_variables"]:
            model.optimizer.build(model.trainable_variables)
            saved = self.state["optimizer_variables"]
            if len(saved) != len(model.optimizer.variables):
                raise ValueError(f"The checkpoint in {self.checkpoint.directory} holds {len(saved)} optimizer "
                                 f"variables, this phase has {len(model.optimizer.variables)}.")
            for variable, value in zip(model.optimizer.variables, saved):
                variable.assign(value)

    def restore_variables(self) -> None:
        if self.state is None or self._restored:
            return
        variables = self.trainer.model.variables
        saved = self.state["variables"]
        if len(saved) != len(variables) or any(tuple(v.shape) != a.shape for v, a in zip(variables, saved)):
            raise ValueError(f"The checkpoint in {self.checkpoint.directory} does not fit this model's variables.")
        for variable, value in zip(variables, saved):
            variable.assign(value)
        self._restored = True

    def callbacks(self, model: keras.Model, phase: int) -> tuple[keras.callbacks.Callback, keras.callbacks.Callback]:
        """Two callbacks: one to run before the user's (saves each finished epoch), one after them
        (marks the phase done, with the weights that the user's callbacks may have restored)."""
        progress = self

        class RecordEpoch(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                n = progress.epochs_done
                for key, value in (logs or {}).items():
                    progress.history.setdefault(key, [float("nan")] * n).append(float(value))
                progress.epochs_done = epoch + 1
                for values in progress.history.values():
                    values.extend([float("nan")] * (progress.epochs_done - len(values)))
                progress.save(model, phase)

        class RecordPhase(keras.callbacks.Callback):
            def on_train_end(self, logs=None):
                progress.phases_done.add(phase)
                if phase == 1:
                    progress._boundary = progress.epochs_done
                progress.save(model, phase)

        return RecordEpoch(), RecordPhase()

    def save(self, model: keras.Model, phase: int) -> None:
        self._restored = True  # what is in memory is now newer than the checkpoint read at the start
        if phase == self._phase:
            self.seconds[phase - 1] = self._seconds_before + time.perf_counter() - self._phase_start
        if self.checkpoint is None:
            return
        state = {"phase": phase, "epochs_done": self.epochs_done, "phases_done": sorted(self.phases_done),
                 "boundary": self._boundary, "history": self.history, "phase_seconds": self.seconds}
        optimizer = model.optimizer.variables if model.optimizer is not None and model.optimizer.built else []
        value = self.averaging.raw_value if self.averaging is not None else (lambda v: v)
        self.checkpoint.save(state, [keras.ops.convert_to_numpy(value(v)) for v in self.trainer.model.variables],
                             [keras.ops.convert_to_numpy(v) for v in optimizer])
