"""Export: the trained classifier as SavedModel, TFLite or ONNX, a runtime for each, and parity checks.

>>> from transferkit.export import export, load_exported, check_parity
"""

from transferkit._internal.lazy import lazy_exports as _lazy_exports

__getattr__, __dir__, __all__ = _lazy_exports(__name__, {
    **{name: "formats" for name in ("export", "read_description", "EXPORTERS", "FORMATS", "QUANTIZATIONS",
                                    "INTEGER_IO", "METADATA_FILE")},
    **{name: "runtimes" for name in ("ExportedClassifier", "TFLiteClassifier", "SavedModelClassifier",
                                     "ONNXClassifier", "load_exported")},
    **{name: "parity" for name in ("Parity", "check_parity", "parity_table", "parity_cells", "PARITY_COLUMNS",
                                   "PARITY_SUFFIX")},
    "write_metadata": "tflite_metadata",
})
