"""Models: the backbone registry, the classification head, augmentation, the trained `Classifier`, and
`Predictor`, the inference base every runtime shares.

>>> from transferkit.models import ClassifierHead, list_backbones
>>> "mobilenet_v2" in list_backbones()
True
"""

from transferkit._internal.lazy import lazy_exports as _lazy_exports

__getattr__, __dir__, __all__ = _lazy_exports(__name__, {
    "BackboneSpec": "backbones", "WeightsUnavailableError": "backbones", "get_backbone": "backbones",
    "get_backbone_spec": "backbones", "list_backbones": "backbones", "register_backbone": "backbones",
    "ClassifierHead": "head", "ClassProbabilities": "head",
    "augmentation": "augment", "PRESETS": "augment",
    "Classifier": "classifier", "load_model": "classifier", "Predictor": "inference",
})
