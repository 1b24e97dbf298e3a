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

import logging
import os
import time
from dataclasses import dataclass, field

import keras
import numpy as np

from transferkit.augment import augmentation as make_augmentation
from transferkit.backbones import get_backbone, get_backbone_spec
from transferkit.features import FrozenFeatures, split_backbone
from transferkit.head import ClassifierHead, ClassProbabilities
from transferkit.model import Classifier

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
        phase_seconds: wall time of phase 1 and phase 2.
        histories: the two Keras ``History`` objects.
    """

    history: dict[str, list[float]]
    phase_boundary: int
    classifier: Classifier
    phase_seconds: tuple[float, float] = (0.0, 0.0)
    histories: tuple = field(default=(), repr=False)

    @property
    def epoch(self) -> list[int]:
        return list(range(len(next(iter(self.history.values()), []))))

    def final(self, metric: str = "val_accuracy", phase: int = 2) -> float | None:
        """The metric's value at the end of phase 1 or phase 2 (None if that phase did not run)."""
        values = self.history.get(metric, [])
        end = self.phase_boundary if phase == 1 else len(values)
        start = 0 if phase == 1 else self.phase_boundary
        return float(values[end - 1]) if end > start else None

    def evaluate(self, data, split: str = "validation"):
        """`transferkit.evaluate.evaluate` with this run's classifier."""
        from transferkit.evaluate import evaluate

        return evaluate(self.classifier, data, split=split)

    def plot(self, directory) -> list:
        """Write ``training_curves.png`` (both phases, boundary marked) into ``directory``."""
        from pathlib import Path

        from transferkit.plots import plot_history

        return [plot_history(self.history, self.phase_boundary, Path(directory) / "training_curves.png")]


def _merge_histories(first: dict, second: dict) -> dict[str, list[float]]:
    n1 = len(next(iter(first.values()), []))
    n2 = len(next(iter(second.values()), []))
    merged = {}
    for key in list(first) + [k for k in second if k not in first]:
        merged[key] = [float(v) for v in first.get(key, [float("nan")] * n1)]
        merged[key] += [float(v) for v in second.get(key, [float("nan")] * n2)]
    return merged


class TwoPhaseTrainer:
    """The two-phase transfer-learning recipe around a registered backbone.

    Phase 1 trains the head with the backbone frozen. Phase 2 makes the backbone's layers from
    ``unfreeze_from`` on trainable, recompiles with a fresh optimizer at
    ``learning_rate * fine_tune_lr_factor`` and continues the epoch count where phase 1 stopped.
    BatchNormalization layers stay in inference mode in phase 2 (their moving statistics do not
    change) unless ``freeze_batchnorm=False``.

    Args:
        backbone: registered backbone name (see `list_backbones`).
        weights: ``"imagenet"``, ``None`` or a weights file path.
        head: a `ClassifierHead`, or a dict of its arguments; ``num_classes`` comes from the data.
        augmentation: a preset name, a dict (``{"preset": ..., **overrides}``), a Keras layer, or None.
        unfreeze_from: backbone layer index, block name (``"block_11"``: its first layer) or layer name.
        learning_rate: phase-1 learning rate.
        fine_tune_lr_factor: phase-2 learning rate = ``learning_rate * fine_tune_lr_factor``.
        freeze_batchnorm: keep BatchNormalization frozen in phase 2.
        optimizer: ``"adam"``, ``"rmsprop"``, ``"sgd"`` or ``"adamw"``, a fresh one per phase.
        image_size: (height, width); by default the data's.
        backbone_options: passed to the backbone constructor (e.g. ``{"alpha": 0.35}``).
        label_smoothing: for two-class heads.
        seed: seeds Keras, NumPy and TensorFlow at ``fit`` so a run can be repeated exactly.
        cache_features: run the frozen layers once over ``views`` augmented variants of each
            training image (view 0 unaugmented) and once over the validation images, then train the
            head (phase 1) and the unfrozen top (phase 2) on those cached outputs; see
            `transferkit.features`. ``False`` runs the exact recipe: fresh augmentation every epoch,
            the whole network every step. Needs an `ImageFolder`-like ``data`` (``dataset``,
            ``labels``); other data trains the exact way.
        views: augmented variants per training image for ``cache_features``.
        feature_dtype: storage type of cached features (``"float16"`` halves memory).
        cache_dir: keep cached features in files here, read a batch at a time (for data larger
            than memory), reused by later runs on the same files, weights and settings; by default
            they are kept in memory for one ``fit`` (in a temporary folder, removed after it, when
            they would take more than half the available memory).
    """

    def __init__(
        self,
        backbone: str = "mobilenet_v2",
        weights: str | os.PathLike | None = "imagenet",
        head: ClassifierHead | dict | None = None,
        augmentation: str | dict | keras.layers.Layer | None = "default",
        unfreeze_from: int | str = 100,
        learning_rate: float = 1e-4,
        fine_tune_lr_factor: float = 0.1,
        freeze_batchnorm: bool = True,
        optimizer: str = "adam",
        image_size: tuple[int, int] | None = None,
        backbone_options: dict | None = None,
        label_smoothing: float = 0.0,
        seed: int | None = None,
        cache_features: bool = True,
        views: int = 3,
        feature_dtype: str = "float16",
        cache_dir: str | os.PathLike | None = None,
    ):
        self.spec = get_backbone_spec(backbone)
        if isinstance(head, dict):
            head = ClassifierHead(**head)
        self.head = head if head is not None else ClassifierHead()
        if not isinstance(self.head, ClassifierHead):
            raise TypeError(f"head must be a ClassifierHead or a dict of its arguments, got {type(head).__name__}.")
        if learning_rate <= 0 or fine_tune_lr_factor <= 0:
            raise ValueError(
                f"learning_rate={learning_rate!r} and fine_tune_lr_factor={fine_tune_lr_factor!r} must be positive."
            )
        if optimizer not in ("adam", "adamw", "rmsprop", "sgd"):
            raise ValueError(f"optimizer={optimizer!r}: use 'adam', 'adamw', 'rmsprop' or 'sgd'.")
        self.backbone = backbone
        self.weights = None if weights is None else str(weights)
        self.augmentation = augmentation
        self.unfreeze_from = unfreeze_from
        self.learning_rate = float(learning_rate)
        self.fine_tune_lr_factor = float(fine_tune_lr_factor)
        self.freeze_batchnorm = freeze_batchnorm
        self.optimizer = optimizer
        self.image_size = None if image_size is None else tuple(image_size)
        self.backbone_options = dict(backbone_options or {})
        self.label_smoothing = label_smoothing
        self.seed = seed
        self.cache_features = cache_features
        self.views = int(views)
        self.feature_dtype = feature_dtype
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        self.model: keras.Model | None = None
        self.backbone_model: keras.Model | None = None
        self.classifier: Classifier | None = None

    def get_config(self) -> dict:
        """The constructor arguments (JSON-friendly), so a run can be recorded and repeated."""
        augmentation = self.augmentation
        if isinstance(augmentation, keras.layers.Layer):
            augmentation = keras.saving.serialize_keras_object(augmentation)
        return {
            "backbone": self.backbone,
            "weights": self.weights,
            "head": self.head.get_config(),
            "augmentation": augmentation,
            "unfreeze_from": self.unfreeze_from,
            "learning_rate": self.learning_rate,
            "fine_tune_lr_factor": self.fine_tune_lr_factor,
            "freeze_batchnorm": self.freeze_batchnorm,
            "optimizer": self.optimizer,
            "image_size": self.image_size,
            "backbone_options": self.backbone_options,
            "label_smoothing": self.label_smoothing,
            "seed": self.seed,
            "cache_features": self.cache_features,
            "views": self.views,
            "feature_dtype": self.feature_dtype,
            "cache_dir": self.cache_dir,
        }

    # -- model --------------------------------------------------------------------------------

    def _augmentation_layer(self):
        aug = self.augmentation
        if aug is None or isinstance(aug, keras.layers.Layer):
            return aug
        if isinstance(aug, str):
            return make_augmentation(aug, seed=self.seed)
        if isinstance(aug, dict):
            options = dict(aug)
            return make_augmentation(options.pop("preset", "default"), seed=self.seed, **options)
        raise TypeError(f"augmentation={aug!r}: give a preset name, a dict of options, a Keras layer or None.")

    def build(self, class_names, image_size) -> keras.Model:
        """Build a fresh training model (logits out) and its `Classifier` (probabilities out)."""
        image_size = tuple(int(s) for s in image_size)
        if self.image_size is not None and self.image_size != image_size:
            raise ValueError(f"The trainer was set to image_size={self.image_size} but the data is {image_size}.")
        head = self.head.with_num_classes(len(class_names))
        inputs = keras.Input((*image_size, 3), name="image")
        preprocessing = self.spec.preprocessing_layer()
        self.backbone_model = get_backbone(
            self.backbone, input_shape=(*image_size, 3), weights=self.weights, **self.backbone_options
        )

        def features(x):
            if preprocessing is not None:
                x = preprocessing(x)
            return self.backbone_model(x)

        augment = self._augmentation_layer()
        logits = head(features(augment(inputs) if augment is not None else inputs))
        self.model = keras.Model(inputs, logits, name=f"{self.backbone}_classifier")
        probabilities = ClassProbabilities(class_names, image_size, name="probabilities")(head(features(inputs)))
        self.classifier = Classifier(keras.Model(inputs, probabilities, name=f"{self.backbone}_classifier"))
        self._head, self._augment, self._preprocessing = head, augment, preprocessing
        return self.model

    def unfreeze_index(self) -> int:
        """``unfreeze_from`` as an index into the backbone's layers."""
        layers = self.backbone_model.layers
        point = self.unfreeze_from
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

    def compile(self, learning_rate: float, model: keras.Model | None = None) -> None:
        """(Re)compile the training model (or ``model``) with a fresh optimizer, and the head's loss
        and metrics."""
        optimizer = keras.optimizers.get({"class_name": self.optimizer, "config": {"learning_rate": learning_rate}})
        (model or self.model).compile(
            optimizer=optimizer,
            loss=self._head.make_loss(self.label_smoothing),
            metrics=self._head.make_metrics(),
        )

    # -- training -----------------------------------------------------------------------------

    def fit(
        self,
        data,
        epochs: int = 10,
        fine_tune_epochs: int = 10,
        callbacks: list | None = None,
        class_weight: dict | None = None,
        verbose="auto",
    ) -> TrainingResult:
        """Build a fresh model and run both phases on ``data``.

        ``data`` is an `ImageFolder`, or any object with ``train`` and ``validation`` datasets of
        ``(images 0-255, integer labels)`` batches, ``class_names`` and ``image_size``.
        ``fine_tune_epochs=0`` stops after phase 1. With ``cache_features`` (the default) and an
        `ImageFolder`, the frozen layers run once and the phases train on their cached outputs; user
        callbacks then see the model that trains (the head, then the unfrozen top), not ``self.model``.
        """
        if epochs < 0 or fine_tune_epochs < 0 or epochs + fine_tune_epochs == 0:
            raise ValueError(f"epochs={epochs}, fine_tune_epochs={fine_tune_epochs}: train for at least one epoch.")
        if self.seed is not None:
            keras.utils.set_random_seed(self.seed)
        self.build(data.class_names, data.image_size)
        callbacks = list(callbacks or [])
        run = dict(callbacks=callbacks, class_weight=class_weight, verbose=verbose,
                   shuffle=False)  # the training datasets reshuffle themselves every pass
        index = self.unfreeze_index() if fine_tune_epochs else len(self.backbone_model.layers)
        cached = self.cache_features and index > 1 and hasattr(data, "dataset") and hasattr(data, "labels")

        start = time.perf_counter()
        self.freeze_backbone()
        if cached:
            frozen, top = split_backbone(self.backbone_model, index)
            features = FrozenFeatures(
                data, frozen, self._head.pool, self._preprocessing, self._augment, views=self.views,
                dtype=self.feature_dtype, cache_dir=self.cache_dir, seed=self.seed,
                augmentation_config=self.get_config()["augmentation"], verbose=1 if verbose == 1 else 0,
            )
            pooled = keras.Input(features.shapes[-1], name="pooled_features")
            model = keras.Model(pooled, self._head(pooled), name="head_on_cached_features")
            train, validation = features.phase_dataset("train", 1), features.phase_dataset("validation", 1)
        else:
            model, train, validation = self.model, data.train, data.validation
        self.compile(self.learning_rate, model)
        first = model.fit(train, validation_data=validation, epochs=epochs, **run) if epochs else None
        phase1 = time.perf_counter() - start
        boundary = len(first.epoch) if first else 0

        second, phase2 = None, 0.0
        if fine_tune_epochs:
            start = time.perf_counter()
            self.unfreeze_top()
            log.info("Fine-tuning %s from layer %d (%s)", self.backbone, index, self.backbone_model.layers[index].name)
            if cached:
                model = keras.Model(top.inputs, self._head(top.output), name="top_on_cached_features")
                train, validation = features.phase_dataset("train", 2), features.phase_dataset("validation", 2)
            self.compile(self.learning_rate * self.fine_tune_lr_factor, model)
            second = model.fit(train, validation_data=validation, initial_epoch=boundary,
                               epochs=boundary + fine_tune_epochs, **run)
            phase2 = time.perf_counter() - start
        if cached:  # leave the full model compiled as the last phase left it, for model.evaluate()
            features.close()
            self.compile(self.learning_rate * (self.fine_tune_lr_factor if fine_tune_epochs else 1.0))

        history = _merge_histories(first.history if first else {}, second.history if second else {})
        return TrainingResult(
            history=history,
            phase_boundary=boundary,
            classifier=self.classifier,
            phase_seconds=(phase1, phase2),
            histories=tuple(h for h in (first, second) if h is not None),
        )

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
