"""`Classifier`: a trained model that takes raw pixels and gives class probabilities; `load_model`.

A saved classifier is an ordinary ``.keras`` file whose last layer, `ClassProbabilities`, carries
the class names and image size, so ``load_model(path)`` needs nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import keras
import numpy as np

from transferkit.head import ClassProbabilities
from transferkit.images import read_image

__all__ = ["Classifier", "load_model"]


class Classifier:
    """A Keras model from raw RGB pixels (0-255) to one probability per class, with its class names.

    ``predict`` takes a ``(N, H, W, 3)`` array, one ``(H, W, 3)`` image, a ``tf.data.Dataset``
    (of images, or of ``(images, labels)``), or a list of image file paths.
    """

    def __init__(self, model: keras.Model):
        layers = [layer for layer in model.layers if isinstance(layer, ClassProbabilities)]
        if not layers:
            raise ValueError(
                f"Model {model.name!r} has no ClassProbabilities output layer; it was not made by transferkit."
            )
        self.model = model
        self._output_layer = layers[-1]
        self.class_names: list[str] = list(layers[-1].class_names)
        self.image_size: tuple[int, int] = (int(model.input_shape[1]), int(model.input_shape[2]))

    @property
    def split(self) -> dict | None:
        """How the training data was split (``ImageFolder.split_record()``: seed, fractions, and the
        files of each split, relative to the data folder), saved inside the ``.keras`` file; None if
        unknown."""
        return self._output_layer.split

    @split.setter
    def split(self, record: dict | None) -> None:
        self._output_layer.split = record

    def read_images(self, paths: Iterable[os.PathLike | str]) -> np.ndarray:
        """Files to a uint8 batch at this model's image size, read exactly as training read them."""
        return np.stack([read_image(p, self.image_size) for p in paths])

    def _as_batch(self, x):
        if isinstance(x, (str, os.PathLike)):
            x = [x]
        if isinstance(x, (list, tuple)) and x and isinstance(x[0], (str, os.PathLike)):
            return self.read_images(x)
        if hasattr(x, "element_spec"):  # tf.data.Dataset
            return x.map(lambda *batch: batch[0]) if isinstance(x.element_spec, tuple) else x
        x = np.asarray(x)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"Expected images shaped (N, height, width, 3), got an array of shape {x.shape}.")
        if tuple(x.shape[1:3]) != self.image_size:
            raise ValueError(
                f"Images are {x.shape[1]}x{x.shape[2]} but this model takes {self.image_size[0]}x{self.image_size[1]}; "
                "pass file paths to have them resized, or resize first."
            )
        return x.astype("float32")

    def predict(self, x, batch_size: int = 32, verbose: int = 0, tta: bool = False) -> np.ndarray:
        """Probabilities, shape ``(N, num_classes)``; column ``i`` is ``class_names[i]``. With ``tta``
        (test-time augmentation), the mean of the probabilities of each image and its mirror image."""
        batch = self._as_batch(x)
        if hasattr(batch, "element_spec"):
            probabilities = self.model.predict(batch, verbose=verbose)
            if tta:
                mirrored = batch.map(lambda images: images[:, :, ::-1])
                probabilities = (probabilities + self.model.predict(mirrored, verbose=verbose)) / 2
            return probabilities
        probabilities = self.model.predict(batch, batch_size=batch_size, verbose=verbose)
        if tta:
            mirrored = self.model.predict(batch[:, :, ::-1], batch_size=batch_size, verbose=verbose)
            probabilities = (probabilities + mirrored) / 2
        return probabilities

    def predict_classes(self, x, batch_size: int = 32) -> list[str]:
        """The most probable class name of each image."""
        return [self.class_names[i] for i in np.argmax(self.predict(x, batch_size), axis=-1)]

    def save(self, path: os.PathLike | str, overwrite: bool = False) -> Path:
        """Write a ``.keras`` file; an existing file is only replaced with ``overwrite=True``."""
        path = Path(path)
        if path.suffix != ".keras":
            raise ValueError(f"{path}: the file name must end in .keras (the Keras 3 format).")
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it, or choose another name.")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.model.save(path)
        return path

    def __repr__(self) -> str:
        return f"Classifier(classes={self.class_names}, image_size={self.image_size})"


def load_model(path: os.PathLike | str) -> Classifier:
    """Load a classifier saved by transferkit (``trainer.save`` or ``Classifier.save``).

    No Python code is unpickled: only Keras layers registered by Keras and transferkit are rebuilt.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Model file not found: {path}")
    model = keras.saving.load_model(path, compile=False, safe_mode=True)
    return Classifier(model)
