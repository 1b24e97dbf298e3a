"""`Predictor`: what every trained classifier offers, whatever runs it (Keras, TFLite, SavedModel, ONNX):
class names, image size, and ``predict`` / ``predict_classes`` on arrays or image files, with test-time
augmentation. A runtime says only how to run one batch (`Predictor.run_batch`).

>>> import numpy as np
>>> class Brightness(Predictor):  # a toy runtime: brighter images are "day"
...     def run_batch(self, batch):
...         day = batch.mean(axis=(1, 2, 3)) / 255.0
...         return np.stack([1 - day, day], axis=-1)
>>> model = Brightness(["night", "day"], (4, 4))
>>> model.predict_classes(np.stack([np.zeros((4, 4, 3)), np.full((4, 4, 3), 250.0)]))
['night', 'day']
"""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np

from transferkit.data.images import read_image

__all__ = ["Predictor"]


class Predictor:
    """Class probabilities from raw RGB pixels (0-255), batch by batch.

    ``predict`` takes a ``(N, H, W, 3)`` array, one ``(H, W, 3)`` image, or a list of image file paths
    (read exactly as training read them, at ``image_size``). Subclasses implement `run_batch`, and may
    replace `predict_array` where their runtime batches by itself.
    """

    #: ``"uint8"`` / ``"int8"`` for a full-integer model, else None.
    integer_io: str | None = None

    def __init__(self, class_names, image_size, multi_label: bool = False, thresholds=None):
        self.class_names: list[str] = [str(c) for c in class_names]
        self.image_size: tuple[int, int] = (int(image_size[0]), int(image_size[1]))
        #: Several labels per image: one sigmoid probability per class, each decided at its threshold.
        self.multi_label = bool(multi_label)
        self.thresholds: list[float] | None = None if thresholds is None else [float(t) for t in thresholds]

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, num_classes)`` for one float32 batch ``(n, H, W, 3)``."""
        raise NotImplementedError(f"{type(self).__name__} does not say how to run a batch.")

    def read_images(self, paths: Iterable[os.PathLike | str]) -> np.ndarray:
        """Files to a uint8 batch at this model's image size, read exactly as training read them."""
        return np.stack([read_image(p, self.image_size) for p in paths])

    def as_batch(self, x) -> np.ndarray:
        """``x`` (paths, one image, or images) as a float32 ``(N, H, W, 3)`` array at this model's size."""
        if isinstance(x, (str, os.PathLike)):
            x = [x]
        if isinstance(x, (list, tuple)) and x and isinstance(x[0], (str, os.PathLike)):
            return self.read_images(x).astype("float32")
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

    def predict_array(self, images: np.ndarray, batch_size: int, verbose: int = 0) -> np.ndarray:
        """Probabilities of a float32 image array, `run_batch` over ``batch_size`` at a time."""
        return np.concatenate([self.run_batch(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])

    def predict(self, x, batch_size: int = 32, verbose: int = 0, tta: bool = False) -> np.ndarray:
        """Probabilities, shape ``(N, num_classes)``; column ``i`` is ``class_names[i]``. With ``tta``
        (test-time augmentation), the mean of the probabilities of each image and its mirror image.
        ``verbose=1`` shows the runtime's progress where it has one (Keras)."""
        images = self.as_batch(x)
        probabilities = self.predict_array(images, batch_size, verbose)
        if tta:
            probabilities = (probabilities + self.predict_array(images[:, :, ::-1], batch_size, verbose)) / 2
        return probabilities

    def decide(self, probabilities: np.ndarray) -> np.ndarray:
        """The decision of each row of probabilities: the class index (one label per image), or a
        True/False row of the classes at or above their thresholds (several labels per image)."""
        probabilities = np.asarray(probabilities)
        if self.multi_label:
            thresholds = self.thresholds or [0.5] * len(self.class_names)
            return probabilities >= np.asarray(thresholds)[None, :]
        return np.argmax(probabilities, axis=-1)

    def predict_classes(self, x, batch_size: int = 32) -> list:
        """The most probable class name of each image; for several labels per image, the list of class
        names at or above their thresholds."""
        decisions = self.decide(self.predict(x, batch_size))
        if self.multi_label:
            return [[self.class_names[c] for c in np.flatnonzero(row)] for row in decisions]
        return [self.class_names[i] for i in decisions]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(classes={self.class_names}, image_size={self.image_size})"
