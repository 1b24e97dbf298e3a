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
does not load TensorFlow until something needs it.
"""

import json as _json
import os as _os


def _backend_chosen() -> bool:
    """Whether the environment or ``keras.json`` (as Keras finds it) names a backend."""
    if _os.environ.get("KERAS_BACKEND"):
        return True
    home = _os.environ.get("KERAS_HOME") or _os.path.join(_os.path.expanduser("~"), ".keras")
    try:
        with open(_os.path.join(home, "keras.json")) as f:
            return bool(_json.load(f).get("backend"))
    except (OSError, ValueError, AttributeError):
        return False


if not _backend_chosen():
    _os.environ["KERAS_BACKEND"] = "tensorflow"
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
