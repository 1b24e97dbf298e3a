"""The model's defaults, in one place that loads no Keras (the command line reads them before
TensorFlow starts): the backbone, its weights, the augmentation preset and the head's settings.

>>> BACKBONE, HEAD["dropout"]
('mobilenet_v2', 0.2)
"""

BACKBONE = "mobilenet_v2"
WEIGHTS = "imagenet"
AUGMENTATION = "default"
#: `ClassifierHead`'s defaults.
HEAD = {"pooling": "avg", "dropout": 0.2, "hidden_units": None, "hidden_activation": "relu"}
