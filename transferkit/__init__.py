"""transferkit: a folder of labelled images and a pretrained backbone in, a trained classifier out.

>>> from transferkit import TwoPhaseTrainer, ImageFolder
>>> TwoPhaseTrainer().unfreeze_from, TwoPhaseTrainer().get_config()["backbone"]
('auto', 'mobilenet_v2')
"""

import os as _os

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from transferkit.augment import augmentation  # noqa: E402
from transferkit.backbones import (  # noqa: E402
    BackboneSpec,
    WeightsUnavailableError,
    get_backbone,
    get_backbone_spec,
    list_backbones,
    register_backbone,
)
from transferkit.data import DatasetReport, ImageFolder  # noqa: E402
from transferkit.head import ClassifierHead, ClassProbabilities  # noqa: E402
from transferkit.images import ImageReadError, read_image  # noqa: E402
from transferkit.model import Classifier, load_model  # noqa: E402
from transferkit.trainer import TrainingResult, TwoPhaseTrainer  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "augmentation",
    "BackboneSpec",
    "Classifier",
    "ClassifierHead",
    "ClassProbabilities",
    "DatasetReport",
    "get_backbone",
    "get_backbone_spec",
    "ImageFolder",
    "ImageReadError",
    "list_backbones",
    "load_model",
    "read_image",
    "register_backbone",
    "TrainingResult",
    "TwoPhaseTrainer",
    "WeightsUnavailableError",
]
