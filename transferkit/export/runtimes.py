"""Runtimes for exported classifiers (TFLite, SavedModel, ONNX): each a `Predictor`, so ``predict``,
test-time augmentation and ``predict_classes`` work as on the Keras `Classifier`; `load_exported`
picks one by the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from transferkit._internal.quiet import native_stderr_quiet
from transferkit.export.formats import export, read_description  # noqa: F401  (export: the docstring example)
from transferkit.models.inference import Predictor

__all__ = ["ExportedClassifier", "TFLiteClassifier", "SavedModelClassifier", "ONNXClassifier", "load_exported"]


def _interpreter_class():
    """LiteRT's interpreter where installed (``pip install ai-edge-litert``), else TensorFlow's."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import warnings

        import tensorflow as tf

        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        Interpreter = tf.lite.Interpreter
    return Interpreter


class ExportedClassifier(Predictor):
    """An exported model: its class names and image size read from inside it (or its sidecar file)."""

    def __init__(self, path: os.PathLike | str):
        self.path = Path(path)
        description = read_description(self.path)
        super().__init__(description["class_names"], description["image_size"],
                         multi_label=description.get("multi_label", False), thresholds=description.get("thresholds"))


class TFLiteClassifier(ExportedClassifier):
    """Run an exported ``.tflite`` classifier like `Classifier`; its class names come from inside the
    file (or, for files exported without metadata, from the sidecar ``transferkit.json``).

    >>> import keras, numpy as np, tempfile, pathlib
    >>> from transferkit import Classifier, ClassProbabilities
    >>> inputs = keras.Input((8, 8, 3))
    >>> logits = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(inputs))
    >>> classifier = Classifier(keras.Model(inputs, ClassProbabilities(["cats", "dogs"], (8, 8))(logits)))
    >>> path = export(classifier, pathlib.Path(tempfile.mkdtemp()) / "model.tflite", format="tflite")
    >>> tflite = TFLiteClassifier(path)
    >>> images = np.random.default_rng(0).uniform(0, 255, (3, 8, 8, 3)).astype("float32")
    >>> bool(np.allclose(tflite.predict(images), classifier.predict(images), atol=1e-5))
    True
    >>> tflite.predict_classes(images) == classifier.predict_classes(images)
    True
    """

    def __init__(self, path: os.PathLike | str, num_threads: int | None = None):
        super().__init__(path)
        with native_stderr_quiet():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
            self.interpreter = _interpreter_class()(model_path=str(self.path), num_threads=num_threads)
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self._batch = None

    @property
    def integer_io(self) -> str | None:
        """``"uint8"`` / ``"int8"`` for a full-integer model, else None."""
        kind = np.dtype(self._input["dtype"])
        return kind.name if kind.kind in "iu" else None

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        if self._batch != len(batch):
            self.interpreter.resize_tensor_input(self._input["index"], batch.shape)
            with native_stderr_quiet():
                self.interpreter.allocate_tensors()
            self._batch = len(batch)
        kind = np.dtype(self._input["dtype"])
        if kind.kind in "iu":  # full-integer input: quantize the pixels with the tensor's own parameters
            scale, zero_point = self._input["quantization"]
            info = np.iinfo(kind)
            batch = np.clip(np.round(batch / scale + zero_point), info.min, info.max).astype(kind)
        self.interpreter.set_tensor(self._input["index"], batch)
        self.interpreter.invoke()
        output = self.interpreter.get_tensor(self._output["index"]).copy()
        if output.dtype.kind in "iu":
            scale, zero_point = self._output["quantization"]
            output = (output.astype(np.float32) - zero_point) * scale
        return output


class SavedModelClassifier(ExportedClassifier):
    """Run an exported SavedModel folder like `Classifier` (its ``serve`` endpoint; class names from
    the folder's ``transferkit.json``)."""

    def __init__(self, path: os.PathLike | str):
        import tensorflow as tf

        super().__init__(path)
        self._loaded = tf.saved_model.load(str(self.path))  # the variables live on it: keep it

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._loaded.serve(batch))


class ONNXClassifier(ExportedClassifier):
    """Run an exported ``.onnx`` classifier with ONNX Runtime, like `Classifier` (class names from the
    model's metadata)."""

    def __init__(self, path: os.PathLike | str):
        try:
            import onnxruntime
        except ImportError as exc:
            raise ImportError('Running an ONNX model needs onnxruntime: pip install "transferkit[onnx]".') from exc
        super().__init__(path)
        self.session = onnxruntime.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        self._input_name = self.session.get_inputs()[0].name

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input_name: batch})[0]


def load_exported(path: os.PathLike | str):
    """The exported model at ``path`` as an object with ``predict`` and ``class_names``: a
    `TFLiteClassifier`, an `ONNXClassifier`, a `SavedModelClassifier` or (``.keras``) a `Classifier`."""
    path = Path(path)
    if path.suffix == ".tflite":
        return TFLiteClassifier(path)
    if path.suffix == ".onnx":
        return ONNXClassifier(path)
    if path.is_dir() and (path / "saved_model.pb").exists():
        return SavedModelClassifier(path)
    from transferkit.models.classifier import load_model  # a .keras file, or a run folder holding one

    return load_model(path)
