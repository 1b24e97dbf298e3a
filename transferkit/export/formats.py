"""Export a trained classifier as ``.keras``, TensorFlow SavedModel or TFLite (float32, float16, int8).

Every format takes raw RGB pixels (float32, 0-255, ``(N, height, width, 3)``) and returns one
probability per class; a full-integer int8 TFLite model (``integer_io="uint8"`` or ``"int8"``) takes
and returns integers instead. The class names and image size travel with each: inside the ``.keras``
file; inside the ``.tflite`` file as TFLite model metadata (the labels file MediaPipe's image
classifier reads, `transferkit.export.tflite_metadata`); and beside the SavedModel / TFLite file as
``labels.txt`` and ``transferkit.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from transferkit._internal.progress import progress
from transferkit._internal.quiet import native_stderr_quiet
from transferkit.export.on_tensorflow import TENSORFLOW_FORMATS, export_on_tensorflow
from transferkit.export.tflite_metadata import DESCRIPTION_FILE, read_packed_files, write_metadata

__all__ = ["export", "read_description", "EXPORTERS", "FORMATS", "QUANTIZATIONS", "INTEGER_IO"]

QUANTIZATIONS = (None, "float16", "int8")
INTEGER_IO = (None, "uint8", "int8")
METADATA_FILE = DESCRIPTION_FILE


def _metadata(classifier, format: str, quantize: str | None, integer_io: str | None = None) -> dict:
    kind = integer_io or "float32"
    several = {"multi_label": True, "thresholds": list(classifier.thresholds or [0.5] * len(classifier.class_names)),
               "decision": "several labels per image: one sigmoid probability per class; a class holds when its "
                           "probability reaches its threshold"} if getattr(classifier, "multi_label", False) else {}
    return {
        "class_names": list(classifier.class_names),
        "image_size": list(classifier.image_size),
        "input": f"{kind} RGB pixels" + (" (quantized, see the input tensor's scale and zero point)" if integer_io
                                        else " in 0-255") + ", shape (N, height, width, 3)",
        "output": f"{kind} probabilities" + (" (quantized)" if integer_io else "") + ", one column per class name",
        "format": format,
        "quantize": quantize,
        "integer_io": integer_io,
        **several,
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
            (through Keras's ``model.export``; needs ``transferkit[onnx]``). On the JAX and PyTorch
            backends these three convert in a process on the TensorFlow backend, which must be installed.
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
    if format not in EXPORTERS:
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
    options = dict(overwrite=overwrite, quantize=quantize, representative_images=representative_images,
                   integer_io=integer_io, metadata=metadata, verbose=verbose)
    import keras

    if format in TENSORFLOW_FORMATS and keras.backend.backend() != "tensorflow":
        return export_on_tensorflow(classifier, path, format, **options)
    description = _metadata(classifier, format, quantize, integer_io)
    return EXPORTERS[format](classifier, path, description, **options)


def _export_keras(classifier, path: Path, description: dict, overwrite: bool, **_) -> Path:
    """The ``.keras`` file (class names and image size inside its last layer)."""
    return classifier.save(path, overwrite=overwrite)


def _export_savedmodel(classifier, path: Path, description: dict, **_) -> Path:
    """A TensorFlow SavedModel folder (its ``serve`` endpoint), the description beside it."""
    if path.exists():
        shutil.rmtree(path)  # asked for: export() refused it without overwrite
    classifier.model.export(str(path), format="tf_saved_model", verbose=False)
    _write_sidecars(path, description)
    return path


def _export_tflite(classifier, path: Path, description: dict, quantize, representative_images, integer_io,
                   metadata, verbose, **_) -> Path:
    """A ``.tflite`` file converted from a SavedModel (float32, float16 or int8), its labels packed inside."""
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
        with native_stderr_quiet():  # the converter's "fully_quantize: 0, inference_type: 6..." lines
            flatbuffer = converter.convert()
    if metadata:
        flatbuffer = write_metadata(flatbuffer, description, integer_input=bool(integer_io))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(flatbuffer)
    _write_sidecars(path.parent, description, stem=path.stem)
    return path


def _export_onnx(classifier, path: Path, description: dict, **_) -> Path:
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


#: Format -> the function that writes it: ``(classifier, path, description, **options) -> path``.
EXPORTERS = {"keras": _export_keras, "savedmodel": _export_savedmodel, "tflite": _export_tflite,
             "onnx": _export_onnx}
FORMATS = tuple(EXPORTERS)


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
