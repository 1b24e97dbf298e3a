"""Data: a folder of class folders (or a table of paths and labels) in; verified, decoded, split,
fingerprinted batches out.

>>> from transferkit.data import ImageFolder, ImageTable, stratified_split, FileList
"""

from transferkit._internal.lazy import lazy_exports as _lazy_exports

__getattr__, __dir__, __all__ = _lazy_exports(__name__, {
    "ImageFolder": "folder", "DatasetReport": "folder", "SkippedFile": "folder", "SPLITS": "folder",
    "ImageTable": "table", "TableError": "table",
    "ImageReadError": "images", "read_image": "images", "IMAGE_EXTENSIONS": "images",
    "stratified_split": "split", "validate_fractions": "split",
    "PassClock": "pipeline", "array_dataset": "pipeline", "pass_rng": "pipeline", "ArrayBatches": "pipeline",
    "pipeline_kind": "pipeline",
    "FileList": "fingerprint", "file_list_of": "fingerprint",
}, deprecated={"unique_partial": "transferkit._internal.files", "write_atomically": "transferkit._internal.files",
               "display_path": "transferkit._internal.files"})
