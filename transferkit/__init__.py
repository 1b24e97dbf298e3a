"""transferkit: a folder of labelled images and a pretrained backbone in, a trained classifier out.

>>> from transferkit import TwoPhaseTrainer, ImageFolder
>>> TwoPhaseTrainer().unfreeze_from, TwoPhaseTrainer().get_config()["backbone"]
('auto', 'mobilenet_v2')

The packages, each importing only those before it:

- `transferkit.data`: folders of images in, verified, decoded, split batches out
- `transferkit.models`: backbones, the head, augmentation, the trained `Classifier`
- `transferkit.training`: `TwoPhaseTrainer`, its settings and recipes, the feature cache, checkpoints,
  callbacks, devices
- `transferkit.export`: other formats and runtimes, and their parity with the Keras model
- `transferkit.evaluation`: metrics, pictures, the run folder and its HTML report
- `transferkit.tuning`: the KerasTuner search over the head and the unfreeze point
- `transferkit.audit`: label errors, near-duplicates and outliers
- `transferkit.cli`: the ``transferkit`` command

The names below are imported on first use, so ``import transferkit`` (and ``transferkit --help``)
does not load TensorFlow until something needs it. Without a backend chosen (``KERAS_BACKEND``, or ``keras.json`` naming
one that is installed), transferkit picks TensorFlow, or where it is not installed JAX, then PyTorch.
"""

import json as _json
import os as _os


def _installed(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is not None


def _backend_in_keras_json() -> str | None:
    """The backend ``keras.json`` names, as Keras finds it (Keras writes "tensorflow" there on first use)."""
    home = _os.environ.get("KERAS_HOME") or _os.path.join(_os.path.expanduser("~"), ".keras")
    try:
        with open(_os.path.join(home, "keras.json")) as f:
            return _json.load(f).get("backend") or None
    except (OSError, ValueError, AttributeError):
        return None


def _default_backend() -> str:
    """TensorFlow where it is installed (what a plain install brings); else JAX, else PyTorch."""
    for backend, package in (("tensorflow", "tensorflow"), ("jax", "jax"), ("torch", "torch")):
        if _installed(package):
            return backend
    return "tensorflow"  # Keras then says that TensorFlow is missing


if not _os.environ.get("KERAS_BACKEND"):
    _named = _backend_in_keras_json()
    if _named is None or (_named == "tensorflow" and not _installed("tensorflow")):
        _os.environ["KERAS_BACKEND"] = _default_backend()
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from transferkit._internal import legacy as _legacy  # noqa: E402
from transferkit._internal.lazy import lazy_exports as _lazy_exports  # noqa: E402

_legacy.install()

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = _lazy_exports(__name__, {
    "augmentation": "models.augment",
    "BackboneSpec": "models.backbones",
    "WeightsUnavailableError": "models.backbones",
    "get_backbone": "models.backbones",
    "get_backbone_spec": "models.backbones",
    "list_backbones": "models.backbones",
    "register_backbone": "models.backbones",
    "ClassifierHead": "models.head",
    "ClassProbabilities": "models.head",
    "Classifier": "models.classifier",
    "load_model": "models.classifier",
    "DatasetReport": "data.folder",
    "ImageFolder": "data.folder",
    "ImageTable": "data.table",
    "ImageReadError": "data.images",
    "read_image": "data.images",
    "TrainingResult": "training.trainer",
    "TwoPhaseTrainer": "training.trainer",
    "Recipe": "training.settings",
    "FastPath": "training.settings",
})
