"""`Classifier`: a trained model that takes raw pixels and gives class probabilities; `load_model`.

A saved classifier is an ordinary ``.keras`` file whose last layer, `ClassProbabilities`, carries
the class names and image size, so ``load_model(path)`` needs nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from transferkit.data.pipeline import ArrayBatches, images_only
from transferkit.models import tokens  # noqa: F401  (registers TokensAsMap, a transformer backbone's layer)
from transferkit.models.head import ClassProbabilities
from transferkit.models.inference import Predictor

__all__ = ["Classifier", "load_model", "model_file", "RUN_MODEL_FILES"]

#: The model files a run folder holds, in the order `model_file` looks for them: ``transferkit train``'s,
#: then a search's best.
RUN_MODEL_FILES = ("model.keras", "best.keras")


class Classifier(Predictor):
    """A Keras model from raw RGB pixels (0-255) to one probability per class, with its class names.

    ``predict`` takes what every `Predictor` takes (an image array, one image, a list of image file
    paths) and also a dataset (``tf.data`` or `ArrayBatches`, as `ImageFolder` gives) of images or of
    ``(images, labels)``.
    """

    _output_layer = None

    def __init__(self, model: keras.Model):
        layers = [layer for layer in model.layers if isinstance(layer, ClassProbabilities)]
        if not layers:
            raise ValueError(
                f"Model {model.name!r} has no ClassProbabilities output layer; it was not made by transferkit."
            )
        super().__init__(layers[-1].class_names, (model.input_shape[1], model.input_shape[2]),
                         multi_label=layers[-1].multi_label)
        self.model = model
        self._output_layer = layers[-1]

    @property
    def thresholds(self) -> list[float] | None:
        """Several labels per image: each class's decision threshold on its probability, chosen on the
        validation images after training and saved inside the ``.keras`` file; None otherwise."""
        return None if self._output_layer is None else self._output_layer.thresholds

    @thresholds.setter
    def thresholds(self, values) -> None:
        if getattr(self, "_output_layer", None) is None:
            return  # Predictor.__init__ sets it before the layer is known
        if values is not None and (not self.multi_label or len(values) != len(self.class_names)):
            raise ValueError(f"thresholds={values!r}: give one per class, for a model of several labels per image.")
        self._output_layer.thresholds = None if values is None else [float(v) for v in values]

    @property
    def split(self) -> dict | None:
        """How the training data was split (``ImageFolder.split_record()``: seed, fractions, and the
        files of each split, relative to the data folder), saved inside the ``.keras`` file; None if
        unknown."""
        return self._output_layer.split

    @split.setter
    def split(self, record: dict | None) -> None:
        self._output_layer.split = record

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(batch))

    def predict_array(self, images: np.ndarray, batch_size: int, verbose: int = 0) -> np.ndarray:
        return self.model.predict(images, batch_size=batch_size, verbose=verbose)  # Keras batches by itself

    def predict(self, x, batch_size: int = 32, verbose: int = 0, tta: bool = False) -> np.ndarray:
        if not (hasattr(x, "element_spec") or isinstance(x, ArrayBatches)):
            return super().predict(x, batch_size, verbose, tta)
        probabilities = self.model.predict(images_only(x), verbose=verbose)
        if tta:
            probabilities = (probabilities + self.model.predict(images_only(x, mirror=True), verbose=verbose)) / 2
        return probabilities

    def save(self, path: os.PathLike | str, overwrite: bool = False) -> Path:
        """Write a ``.keras`` file; an existing file is only replaced with ``overwrite=True``."""
        path = Path(path)
        if path.suffix != ".keras":
            raise ValueError(f"{path}: the file name must end in .keras (the Keras 3 format).")
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it, or choose another "
                                  "name.")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.model.save(path)
        return path


def load_model(path: os.PathLike | str) -> Classifier:
    """Load a classifier saved by transferkit (``trainer.save`` or ``Classifier.save``).

    No Python code is unpickled: only Keras layers registered by Keras and transferkit are rebuilt.
    """
    path = model_file(path)
    _register_layers_of(path)
    model = keras.saving.load_model(path, compile=False, safe_mode=True)
    return Classifier(model)


def _register_layers_of(path: Path) -> None:
    """Import the transferkit layers that need keras-hub (an unrolled ViT's) when the saved model has one."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            config = archive.read("config.json").decode("utf-8", "replace")
    except (OSError, KeyError, zipfile.BadZipFile):
        return  # Keras says what is wrong with the file
    if "transferkit>ViTPatchEmbedding" in config or "transferkit>ViTBlock" in config:
        import transferkit.models.hub_layers  # noqa: F401


def model_file(path: os.PathLike | str) -> Path:
    """The ``.keras`` file that ``path`` means: the file itself, or the model of the run folder
    ``path`` names (its ``model.keras``, or a search's ``best.keras``); ``FileNotFoundError`` saying
    what is there otherwise.

    >>> import tempfile
    >>> run = Path(tempfile.mkdtemp()); (run / "model.keras").touch()
    >>> model_file(run) == run / "model.keras"
    True
    """
    path = Path(path)
    if path.is_dir():
        for name in RUN_MODEL_FILES:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path} is a folder without a model: give a .keras file, or a run folder holding "
                                f"{' or '.join(RUN_MODEL_FILES)}.")
    if not path.is_file():
        hint = next((f" (did you mean {path.parent / name}?)" for name in RUN_MODEL_FILES
                     if path.name != name and (path.parent / name).is_file()), "")
        raise FileNotFoundError(f"Model file not found: {path}{hint}")
    return path
