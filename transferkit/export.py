"""Export a trained classifier as ``.keras``, TensorFlow SavedModel or TFLite (float32, float16, int8).

Every format takes raw RGB pixels (float32, 0-255, ``(N, height, width, 3)``) and returns one
probability per class; a full-integer int8 TFLite model (``integer_io="uint8"`` or ``"int8"``) takes
and returns integers instead. The class names and image size travel with each: inside the ``.keras``
file; inside the ``.tflite`` file as TFLite model metadata (the labels file MediaPipe's image
classifier reads, `transferkit.tflite_metadata`); and beside the SavedModel / TFLite file as
``labels.txt`` and ``transferkit.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from transferkit.progress import progress
from transferkit.tflite_metadata import DESCRIPTION_FILE, read_packed_files, write_metadata

__all__ = ["export", "TFLiteClassifier", "SavedModelClassifier", "ONNXClassifier", "load_exported", "FORMATS",
           "QUANTIZATIONS",
           "INTEGER_IO"]

FORMATS = ("keras", "savedmodel", "tflite", "onnx")
QUANTIZATIONS = (None, "float16", "int8")
INTEGER_IO = (None, "uint8", "int8")
METADATA_FILE = DESCRIPTION_FILE


def _metadata(classifier, format: str, quantize: str | None, integer_io: str | None = None) -> dict:
    kind = integer_io or "float32"
    return {
        "class_names": list(classifier.class_names),
        "image_size": list(classifier.image_size),
        "input": f"{kind} RGB pixels" + (" (quantized, see the input tensor's scale and zero point)" if integer_io
                                        else " in 0-255") + ", shape (N, height, width, 3)",
        "output": f"{kind} probabilities" + (" (quantized)" if integer_io else "") + ", one column per class name",
        "format": format,
        "quantize": quantize,
        "integer_io": integer_io,
    }


def _write_sidecars(folder: Path, metadata: dict, stem: str = "") -> None:
    prefix = f"{stem}." if stem else ""
    (folder / f"{prefix}labels.txt").write_text("\n".join(metadata["class_names"]) + "\n")
    (folder / f"{prefix}{METADATA_FILE}").write_text(json.dumps(metadata, indent=2))


def _refuse_to_overwrite(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it.")


def export(
    classifier,
    path: os.PathLike | str,
    format: str = "keras",
    quantize: str | None = None,
    representative_images: np.ndarray | None = None,
    overwrite: bool = False,
    integer_io: str | None = None,
    metadata: bool = True,
    verbose: int = 0,
) -> Path:
    """Write ``classifier`` to ``path`` in ``format``; returns the path written.

    Args:
        format: ``"keras"`` (a ``.keras`` file), ``"savedmodel"`` (a folder), ``"tflite"`` or ``"onnx"``
            (through Keras's ``model.export``; needs ``transferkit[onnx]``).
        quantize: TFLite only: ``None`` (float32), ``"float16"`` (weights) or ``"int8"``
            (weights and activations, calibrated on ``representative_images``).
        representative_images: ``(N, H, W, 3)`` training images (0-255) for int8 calibration;
            a hundred or so is plenty.
        integer_io: int8 only: ``"uint8"`` or ``"int8"`` makes the model full-integer, input and
            output included (Edge TPU, microcontrollers); `TFLiteClassifier` converts to and from them.
        metadata: TFLite only: pack the class names inside the file as TFLite metadata (needs
            ``transferkit[export]``); the sidecar files are written either way.
        verbose: ``1`` shows int8 calibration's progress on stderr.
    """
    path = Path(path)
    if format not in FORMATS:
        raise ValueError(f"format={format!r}: choose one of {', '.join(FORMATS)}.")
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize={quantize!r}: choose float16 or int8 (TFLite only), or None.")
    if quantize and format != "tflite":
        raise ValueError(f"quantize={quantize!r} applies to format='tflite' only.")
    if quantize == "int8" and (representative_images is None or len(representative_images) == 0):
        raise ValueError("int8 quantization needs representative_images (e.g. --data-dir with training images).")
    if integer_io not in INTEGER_IO:
        raise ValueError(f"integer_io={integer_io!r}: choose uint8 or int8, or None for float input and output.")
    if integer_io and quantize != "int8":
        raise ValueError(f"integer_io={integer_io!r} needs quantize='int8' (a full-integer model).")
    _refuse_to_overwrite(path, overwrite)
    description = _metadata(classifier, format, quantize, integer_io)

    if format == "keras":
        return classifier.save(path, overwrite=overwrite)
    if format == "onnx":
        return _export_onnx(classifier, path, description)
    if format == "savedmodel":
        if path.exists():
            shutil.rmtree(path)
        classifier.model.export(str(path), format="tf_saved_model", verbose=False)
        _write_sidecars(path, description)
        return path

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        classifier.model.export(tmp, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            images = np.asarray(representative_images, dtype=np.float32)

            def representative():
                with progress(len(images), "Calibrating int8", verbose=verbose) as bar:
                    for image in images:
                        yield [image[None]]
                        bar.update(1)

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if integer_io:
                converter.inference_input_type = converter.inference_output_type = getattr(tf, integer_io)
        flatbuffer = converter.convert()
    if metadata:
        flatbuffer = write_metadata(flatbuffer, description, integer_input=bool(integer_io))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(flatbuffer)
    _write_sidecars(path.parent, description, stem=path.stem)
    return path


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


def _export_onnx(classifier, path: Path, description: dict) -> Path:
    """ONNX through Keras's own ``model.export`` (tf2onnx), the description in the model's metadata."""
    try:
        import onnx
    except ImportError as exc:
        raise ImportError('ONNX export needs tf2onnx and onnx: pip install "transferkit[onnx]".') from exc
    model = classifier.model
    model(np.zeros((1, *classifier.image_size, 3), dtype=np.float32))  # Keras exports only a called model
    path.parent.mkdir(parents=True, exist_ok=True)
    model.export(str(path), format="onnx", verbose=False)
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = DESCRIPTION_FILE, json.dumps(description)
    onnx.save(proto, str(path))
    _write_sidecars(path.parent, description, stem=path.stem)
    return path


def read_description(path: Path) -> dict:
    """The class names and image size of an exported file: packed inside it, else in its sidecar file."""
    packed = read_packed_files(path) if path.is_file() and path.suffix == ".tflite" else {}
    if DESCRIPTION_FILE in packed:
        return json.loads(packed[DESCRIPTION_FILE])
    if path.suffix == ".onnx" and path.is_file():
        import onnx

        inside = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        if DESCRIPTION_FILE in inside:
            return json.loads(inside[DESCRIPTION_FILE])
    sidecar = path / METADATA_FILE if path.is_dir() else path.parent / f"{path.stem}.{METADATA_FILE}"
    if not sidecar.exists():
        raise FileNotFoundError(f"{path} carries no class names inside, and {sidecar} is missing: "
                                "export the model again with transferkit export.")
    return json.loads(sidecar.read_text())


class TFLiteClassifier:
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
        self.path = Path(path)
        description = read_description(self.path)
        self.class_names = description["class_names"]
        self.image_size = tuple(description["image_size"])
        self.interpreter = _interpreter_class()(model_path=str(self.path), num_threads=num_threads)
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self._batch = None

    @property
    def integer_io(self) -> str | None:
        """``"uint8"`` / ``"int8"`` for a full-integer model, else None."""
        kind = np.dtype(self._input["dtype"])
        return kind.name if kind.kind in "iu" else None

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self._batch != len(batch):
            self.interpreter.resize_tensor_input(self._input["index"], batch.shape)
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

    def predict(self, x, batch_size: int = 32, tta: bool = False) -> np.ndarray:
        """Probabilities ``(N, num_classes)`` for an image array or a list of file paths; with ``tta``,
        the mean over each image and its mirror image."""
        from transferkit.images import read_image

        if isinstance(x, (list, tuple)) and x and isinstance(x[0], (str, os.PathLike)):
            x = np.stack([read_image(p, self.image_size) for p in x])
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        probabilities = np.concatenate([self._run(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
        if tta:
            probabilities = (probabilities + self.predict(x[:, :, ::-1], batch_size)) / 2
        return probabilities

    def predict_classes(self, x, batch_size: int = 32) -> list[str]:
        return [self.class_names[i] for i in np.argmax(self.predict(x, batch_size), axis=-1)]


class SavedModelClassifier(TFLiteClassifier):
    """Run an exported SavedModel folder like `Classifier` (its ``serve`` endpoint; class names from
    the folder's ``transferkit.json``)."""

    def __init__(self, path: os.PathLike | str):
        import tensorflow as tf

        self.path = Path(path)
        description = read_description(self.path)
        self.class_names = description["class_names"]
        self.image_size = tuple(description["image_size"])
        self._loaded = tf.saved_model.load(str(self.path))  # the variables live on it: keep it

    @property
    def _serve(self):
        return self._loaded.serve

    integer_io = None

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._serve(batch))


class ONNXClassifier(TFLiteClassifier):
    """Run an exported ``.onnx`` classifier with ONNX Runtime, like `Classifier` (class names from the
    model's metadata)."""

    def __init__(self, path: os.PathLike | str):
        try:
            import onnxruntime
        except ImportError as exc:
            raise ImportError('Running an ONNX model needs onnxruntime: pip install "transferkit[onnx]".') from exc
        self.path = Path(path)
        description = read_description(self.path)
        self.class_names = description["class_names"]
        self.image_size = tuple(description["image_size"])
        self.session = onnxruntime.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        self._input_name = self.session.get_inputs()[0].name

    integer_io = None

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input_name: batch})[0]


def load_exported(path: os.PathLike | str):
    """The exported model at ``path`` as an object with ``predict`` and ``class_names``: a
    `TFLiteClassifier`, an `ONNXClassifier`, a `SavedModelClassifier` or (``.keras``) a `Classifier`."""
    path = Path(path)
    if path.suffix == ".tflite":
        return TFLiteClassifier(path)
    if path.suffix == ".onnx":
        return ONNXClassifier(path)
    if path.is_dir():
        return SavedModelClassifier(path)
    from transferkit.model import load_model

    return load_model(path)
