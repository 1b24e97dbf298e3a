"""The classifier head (features to logits) and the output layer that turns logits into probabilities.

>>> import numpy as np
>>> head = ClassifierHead(num_classes=2, dropout=0.2)
>>> tuple(head(np.zeros((4, 5, 5, 8), "float32")).shape)
(4, 1)
>>> ClassifierHead.from_config(head.get_config()).units
1
"""

from __future__ import annotations

import random

import keras
from keras import ops

from transferkit.models.defaults import HEAD

__all__ = ["ClassifierHead", "ClassProbabilities"]


@keras.saving.register_keras_serializable(package="transferkit")
class ClassifierHead(keras.layers.Layer):
    """Pooling, dropout, an optional hidden Dense layer, and the logits.

    Two classes get one logit (class 1 versus class 0), more classes one logit each; with
    ``multi_label`` (several labels per image) every class gets a logit of its own, read through a
    sigmoid. The head also says how it should be trained: `make_loss()` and `make_metrics()` match its
    logits.

    Args:
        num_classes: number of classes; ``None`` until the trainer fills it in from the data.
        pooling: ``"avg"`` or ``"max"`` global pooling over a 4-D feature map (2-D input passes).
        dropout: dropout rate before the logits (and after the hidden layer).
        hidden_units: size of an optional hidden Dense layer; ``None`` for none.
        hidden_activation: activation of that hidden layer.
        multi_label: an image may have any number of the classes (one sigmoid per class, binary
            cross-entropy) instead of exactly one.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        pooling: str = HEAD["pooling"],
        dropout: float = HEAD["dropout"],
        hidden_units: int | None = HEAD["hidden_units"],
        hidden_activation: str = HEAD["hidden_activation"],
        multi_label: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if pooling not in ("avg", "max"):
            raise ValueError(f"pooling={pooling!r}: use 'avg' or 'max'.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r} must be in [0, 1).")
        if num_classes is not None and num_classes < 2:
            raise ValueError(f"num_classes={num_classes!r}: a classifier needs at least 2 classes.")
        self.num_classes = num_classes
        self.pooling = pooling
        self.dropout = dropout
        self.hidden_units = hidden_units
        self.hidden_activation = hidden_activation
        self.multi_label = bool(multi_label)
        pool = keras.layers.GlobalAveragePooling2D if pooling == "avg" else keras.layers.GlobalMaxPooling2D
        self.pool = pool(name="pool")
        self.hidden = (
            keras.layers.Dense(hidden_units, activation=hidden_activation, name="hidden") if hidden_units else None
        )
        # The seed Keras would draw itself, given explicitly: PyTorch's dropout then draws from the layer's
        # own seed state (which checkpoints keep) instead of torch's global generator, so a resumed run repeats.
        seed = random.randint(1, int(1e9)) if dropout > 0 else None
        self.drop = keras.layers.Dropout(dropout, seed=seed, name="dropout")
        # float32 logits whatever the policy: a mixed-precision loss and sigmoid stay exact
        self.logits = keras.layers.Dense(self.units, name="logits", dtype="float32") if num_classes else None

    @property
    def units(self) -> int | None:
        """Logit count: 1 for two classes of one label per image, ``num_classes`` otherwise."""
        if self.num_classes is None:
            return None
        return 1 if self.binary else self.num_classes

    @property
    def binary(self) -> bool:
        return self.num_classes == 2 and not self.multi_label

    def with_num_classes(self, num_classes: int, multi_label: bool | None = None) -> "ClassifierHead":
        """A fresh, unbuilt head with these settings and ``num_classes`` (and, when given, ``multi_label``:
        what the data is) filled in."""
        if self.num_classes not in (None, num_classes):
            raise ValueError(f"The head was made for {self.num_classes} classes but the data has {num_classes}.")
        config = {**self.get_config(), "num_classes": num_classes}
        if multi_label is not None:
            config["multi_label"] = bool(multi_label)
        return ClassifierHead.from_config(config)

    def build(self, input_shape):
        if self.logits is None:
            raise ValueError("ClassifierHead needs num_classes before it is built; the trainer sets it from the data.")
        shape = tuple(input_shape)
        if len(shape) == 4:
            self.pool.build(shape)
            shape = (shape[0], shape[-1])
        if self.hidden is not None:
            self.hidden.build(shape)
            shape = (shape[0], self.hidden_units)
        self.logits.build(shape)

    def call(self, inputs, training=None):
        x = self.pool(inputs) if len(inputs.shape) == 4 else inputs
        if self.hidden is not None:
            x = self.drop(self.hidden(x), training=training)
        return self.logits(self.drop(x, training=training))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def make_loss(self, label_smoothing: float = 0.0) -> keras.losses.Loss:
        """The loss that matches these logits."""
        if self.binary or self.multi_label:
            return keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=label_smoothing)
        if label_smoothing:
            raise ValueError("label_smoothing needs one-hot labels; it is supported for two-class heads only.")
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def make_metrics(self) -> list[keras.metrics.Metric]:
        """Accuracy on logits: threshold 0 for one logit (sigmoid 0.5), argmax otherwise. Several labels
        per image: ``accuracy`` is the share of (image, class) decisions right at sigmoid 0.5, ``map`` the
        mean over classes of the area under the precision-recall curve (average precision), and
        ``macro_f1`` the mean of the classes' F1 at sigmoid 0.5 (a search may optimise either)."""
        if self.multi_label:
            return [keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0),
                    keras.metrics.AUC(curve="PR", multi_label=True, num_labels=self.num_classes, from_logits=True,
                                      name="map"),
                    MacroF1OnLogits(name="macro_f1")]
        if self.binary:
            return [keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)]
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "pooling": self.pooling,
            "dropout": self.dropout,
            "hidden_units": self.hidden_units,
            "hidden_activation": self.hidden_activation,
            **({"multi_label": True} if self.multi_label else {}),  # a single-label head's config stays as it was
        }


@keras.saving.register_keras_serializable(package="transferkit")
class MacroF1OnLogits(keras.metrics.F1Score):
    """Keras's macro-averaged ``F1Score`` at sigmoid 0.5, read from logits (one per class)."""

    def __init__(self, name="macro_f1", dtype=None):
        super().__init__(average="macro", threshold=0.5, name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        super().update_state(y_true, ops.sigmoid(y_pred), sample_weight)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="transferkit")
class ClassProbabilities(keras.layers.Layer):
    """Logits to one probability per class; carries the class names inside a saved model.

    One logit ``z`` becomes ``[1 - sigmoid(z), sigmoid(z)]``; several become ``softmax``. With
    ``multi_label`` every logit becomes its own ``sigmoid`` (the columns need not sum to 1), and
    ``thresholds`` holds each class's decision threshold, chosen on the validation images after training
    (`transferkit.evaluation.multilabel.choose_thresholds`). ``split`` records which files the model was
    trained, validated and tested on (`ImageFolder.split_record`).

    >>> import numpy as np
    >>> layer = ClassProbabilities(["cat", "dog"])
    >>> np.round(np.asarray(layer(np.array([[0.0], [100.0]], "float32"))), 3).tolist()
    [[0.5, 0.5], [0.0, 1.0]]
    """

    def __init__(self, class_names, image_size=None, split=None, multi_label=False, thresholds=None, **kwargs):
        super().__init__(**kwargs)
        self.class_names = [str(c) for c in class_names]
        self.image_size = None if image_size is None else [int(s) for s in image_size]
        self.split = split  # how the training data was split (ImageFolder.split_record()), or None
        self.multi_label = bool(multi_label)
        if thresholds is not None and (not self.multi_label or len(thresholds) != len(self.class_names)):
            raise ValueError(f"thresholds={thresholds!r}: give one per class, for a model of several labels per image.")
        self.thresholds = None if thresholds is None else [float(t) for t in thresholds]

    def call(self, logits):
        if self.multi_label:
            return ops.sigmoid(logits)
        if len(self.class_names) == 2:
            p = ops.sigmoid(logits[:, :1])
            return ops.concatenate([1.0 - p, p], axis=-1)
        return ops.softmax(logits, axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], len(self.class_names))

    def get_config(self):
        config = {**super().get_config(), "class_names": self.class_names, "image_size": self.image_size,
                  "split": self.split}
        if self.multi_label:  # a single-label model's config stays as it was
            config.update(multi_label=True, thresholds=self.thresholds)
        return config
