"""Labels inside a ``.tflite`` file, as TFLite model metadata that MediaPipe's image classifier reads.

The metadata is the TFLite metadata flatbuffer (``TFLITE_METADATA``) with the class names packed as the
output tensor's ``TENSOR_AXIS_LABELS`` file, and transferkit's own description (``transferkit.json``)
packed beside it; both files are a zip archive appended to the model, as the TFLite metadata
populator does. It needs the schemas that ship with MediaPipe: ``pip install "transferkit[export]"``.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

__all__ = ["write_metadata", "read_packed_files", "LABELS_FILE", "DESCRIPTION_FILE", "MIN_PARSER_VERSION"]

LABELS_FILE = "labels.txt"
DESCRIPTION_FILE = "transferkit.json"
#: Every field written here (image properties, normalization, axis labels) is in metadata 1.0.0.
MIN_PARSER_VERSION = "1.0.0"


def _schemas():
    try:
        from mediapipe.tasks.metadata import metadata_schema_py_generated as meta
        from mediapipe.tasks.metadata import schema_py_generated as model
    except ImportError as exc:
        raise ImportError(
            "Writing labels into a .tflite file needs MediaPipe's metadata schemas: "
            'pip install "transferkit[export]" (or pip install mediapipe).'
        ) from exc
    return meta, model


def _model_metadata(meta, description: dict, integer_input: bool) -> bytes:
    import flatbuffers

    def tensor(name, text, kind, properties, low, high):
        entry = meta.TensorMetadataT()
        entry.name, entry.description = name, text
        entry.content = meta.ContentT()
        entry.content.contentPropertiesType, entry.content.contentProperties = kind, properties
        entry.stats = meta.StatsT()
        entry.stats.min, entry.stats.max = [low], [high]
        return entry

    rgb = meta.ImagePropertiesT()
    rgb.colorSpace = meta.ColorSpaceType.RGB
    image = tensor("image", f"RGB pixels, {description['input']}", meta.ContentProperties.ImageProperties, rgb,
                   0.0, 255.0)
    if not integer_input:  # the model takes 0-255 floats: MediaPipe's normalisation must leave them alone
        normalization = meta.ProcessUnitT()
        normalization.optionsType = meta.ProcessUnitOptions.NormalizationOptions
        normalization.options = meta.NormalizationOptionsT()
        normalization.options.mean, normalization.options.std = [0.0], [1.0]
        image.processUnits = [normalization]

    labels = meta.AssociatedFileT()
    labels.name = LABELS_FILE
    labels.description = "Class names, one per line, in the order of the output's columns."
    labels.type = meta.AssociatedFileType.TENSOR_AXIS_LABELS
    scores = tensor("probability", description["output"], meta.ContentProperties.FeatureProperties,
                    meta.FeaturePropertiesT(), 0.0, 1.0)
    scores.associatedFiles = [labels]

    about = meta.AssociatedFileT()
    about.name = DESCRIPTION_FILE
    about.description = "transferkit's description of the model: class names, image size, input, output."
    about.type = meta.AssociatedFileType.DESCRIPTIONS

    subgraph = meta.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [image]
    subgraph.outputTensorMetadata = [scores]
    model = meta.ModelMetadataT()
    model.name = "transferkit image classifier"
    model.description = f"Classifies {'x'.join(map(str, description['image_size']))} RGB images into: " + ", ".join(
        description["class_names"])
    model.author = "transferkit"
    model.minParserVersion = MIN_PARSER_VERSION
    model.subgraphMetadata = [subgraph]
    model.associatedFiles = [about]
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), b"M001")
    return bytes(builder.Output())


def write_metadata(flatbuffer: bytes, description: dict, integer_input: bool = False) -> bytes:
    """``flatbuffer`` (a converted TFLite model) with ``description``'s class names packed inside.

    ``description`` is `transferkit.export`'s metadata dict (``class_names``, ``image_size``,
    ``input``, ``output``); it is packed too, as ``transferkit.json``.
    """
    import flatbuffers

    meta, schema = _schemas()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    buffer = schema.BufferT()
    buffer.data = _model_metadata(meta, description, integer_input)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = "TFLITE_METADATA"
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != b"TFLITE_METADATA"] + [entry]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), b"TFL3")
    packed = io.BytesIO(bytes(builder.Output()))
    packed.seek(0, io.SEEK_END)
    with zipfile.ZipFile(packed, "a") as archive:
        archive.writestr(LABELS_FILE, "\n".join(description["class_names"]) + "\n")
        archive.writestr(DESCRIPTION_FILE, json.dumps(description, indent=2))
    return packed.getvalue()


def read_packed_files(path: Path | str) -> dict[str, bytes]:
    """The files packed into a ``.tflite`` model (empty if it carries none).

    >>> read_packed_files(__file__)
    {}
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return {}
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}
