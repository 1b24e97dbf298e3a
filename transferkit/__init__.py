"""transferkit: a folder of labelled images and a pretrained backbone in, a trained classifier out.

>>> from transferkit import TwoPhaseTrainer, ImageFolder
>>> TwoPhaseTrainer().unfreeze_from, TwoPhaseTrainer().get_config()["backbone"]
('auto', 'mobilenet_v2')

The names below are imported on first use, so ``import transferkit`` (and ``transferkit --help``)
does not load TensorFlow until something needs it.
"""

import importlib as _importlib
import os as _os

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

_EXPORTS = {
    "augmentation": "augment",
    "BackboneSpec": "backbones",
    "WeightsUnavailableError": "backbones",
    "get_backbone": "backbones",
    "get_backbone_spec": "backbones",
    "list_backbones": "backbones",
    "register_backbone": "backbones",
    "DatasetReport": "data",
    "ImageFolder": "data",
    "ClassifierHead": "head",
    "ClassProbabilities": "head",
    "ImageReadError": "images",
    "read_image": "images",
    "Classifier": "model",
    "load_model": "model",
    "TrainingResult": "trainer",
    "TwoPhaseTrainer": "trainer",
}

__all__ = sorted(_EXPORTS, key=str.lower)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(_importlib.import_module(f"transferkit.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'transferkit' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])
