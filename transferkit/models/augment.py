"""The augmentation block: Keras preprocessing layers, active only while training.

>>> block = augmentation("default")
>>> [layer.__class__.__name__ for layer in block.layers]
['RandomFlip', 'RandomRotation']
>>> [layer.__class__.__name__ for layer in augmentation("default", rotation=None, zoom=0.1).layers]
['RandomFlip', 'RandomZoom']
>>> [layer.__class__.__name__ for layer in augmentation("default", plain_fraction=0.25).layers]
['PartlyAugmented']
"""

from __future__ import annotations

import keras

__all__ = ["augmentation", "PartlyAugmented", "PRESETS"]

#: Named settings; ``augmentation(name, **overrides)`` starts from one of these.
PRESETS: dict[str, dict] = {
    "none": {},
    "default": {"flip": "horizontal", "rotation": 0.2},
    "light": {"flip": "horizontal", "rotation": 0.1},
    "strong": {"flip": "horizontal", "rotation": 0.2, "zoom": 0.2, "translation": 0.1, "contrast": 0.2},
}

# (option, layer) in the order the layers are applied.
_LAYERS = (
    ("flip", lambda v, seed: keras.layers.RandomFlip(v, seed=seed, name="random_flip")),
    ("rotation", lambda v, seed: keras.layers.RandomRotation(v, seed=seed, name="random_rotation")),
    ("zoom", lambda v, seed: keras.layers.RandomZoom(v, seed=seed, name="random_zoom")),
    ("translation", lambda v, seed: keras.layers.RandomTranslation(v, v, seed=seed, name="random_translation")),
    ("contrast", lambda v, seed: keras.layers.RandomContrast(v, seed=seed, name="random_contrast")),
    (
        "brightness",
        lambda v, seed: keras.layers.RandomBrightness(v, value_range=(0, 255), seed=seed, name="random_brightness"),
    ),
)


@keras.saving.register_keras_serializable(package="transferkit")
class PartlyAugmented(keras.layers.Layer):
    """Augments each image of a batch with probability ``1 - plain_fraction`` and passes the rest
    through as they are (while training; at inference every image passes as it is).

    Args:
        block: the augmentation layers (a ``keras.Sequential``).
        plain_fraction: the share of images left unaugmented, drawn per image and per call.
        seed: seeds the per-image draw.
    """

    def __init__(self, block: keras.layers.Layer, plain_fraction: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(plain_fraction) <= 1.0:
            raise ValueError(f"plain_fraction={plain_fraction!r}: use a share from 0 to 1.")
        self.block = block
        self.plain_fraction = float(plain_fraction)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        if not self.block.built:
            self.block.build(input_shape)

    def call(self, images, training=None):
        if not training:
            return images
        augmented = self.block(images, training=True)
        draw = keras.random.uniform(keras.ops.shape(images)[:1], seed=self.seed_generator)
        plain = keras.ops.reshape(draw < self.plain_fraction, (-1, 1, 1, 1))
        return keras.ops.where(plain, keras.ops.cast(images, augmented.dtype), augmented)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "block": keras.saving.serialize_keras_object(self.block),
                "plain_fraction": self.plain_fraction, "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["block"] = keras.saving.deserialize_keras_object(config["block"])
        return cls(**config)


def augmentation(preset: str = "default", seed: int | None = None, plain_fraction: float = 0.0,
                 **overrides: float | str | None) -> keras.Sequential:
    """A ``keras.Sequential`` named ``"augmentation"`` of random preprocessing layers.

    Args:
        preset: one of ``PRESETS`` (``"none"``, ``"default"``: horizontal flip + rotation 0.2,
            ``"light"``, ``"strong"``).
        seed: seed for the random layers.
        **overrides: ``flip`` (``"horizontal"``, ``"vertical"``, ``"horizontal_and_vertical"``),
            ``rotation``, ``zoom``, ``translation``, ``contrast``, ``brightness`` (fractions, as the
            Keras layers take them); ``None`` or ``0`` removes that layer.
        plain_fraction: the share of images (drawn per image) that pass unaugmented (`PartlyAugmented`).

    The layers expect pixels in 0-255 and do nothing at inference, so the block sits inside the
    model before the backbone's preprocessing.
    """
    if preset not in PRESETS:
        raise ValueError(f"Unknown augmentation preset {preset!r}; choose one of {sorted(PRESETS)}.")
    known = {name for name, _ in _LAYERS}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"Unknown augmentation option(s) {sorted(unknown)}; known: {sorted(known)}.")
    settings = {**PRESETS[preset], **overrides}
    layers = [make(settings[name], seed) for name, make in _LAYERS if settings.get(name)]
    if plain_fraction and layers:
        block = keras.Sequential(layers, name="augmentation_layers")
        layers = [PartlyAugmented(block, plain_fraction, seed=seed, name="partly_augmented")]
    return keras.Sequential(layers, name="augmentation")
