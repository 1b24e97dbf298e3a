"""The augmentation block: Keras preprocessing layers, active only while training.

>>> block = augmentation("default")
>>> [layer.__class__.__name__ for layer in block.layers]
['RandomFlip', 'RandomRotation']
>>> [layer.__class__.__name__ for layer in augmentation("default", rotation=None, zoom=0.1).layers]
['RandomFlip', 'RandomZoom']
"""

from __future__ import annotations

import keras

__all__ = ["augmentation", "PRESETS"]

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


def augmentation(preset: str = "default", seed: int | None = None, **overrides: float | str | None) -> keras.Sequential:
    """A ``keras.Sequential`` named ``"augmentation"`` of random preprocessing layers.

    Args:
        preset: one of ``PRESETS`` (``"none"``, ``"default"``: horizontal flip + rotation 0.2,
            ``"light"``, ``"strong"``).
        seed: seed for the random layers.
        **overrides: ``flip`` (``"horizontal"``, ``"vertical"``, ``"horizontal_and_vertical"``),
            ``rotation``, ``zoom``, ``translation``, ``contrast``, ``brightness`` (fractions, as the
            Keras layers take them); ``None`` or ``0`` removes that layer.

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
    return keras.Sequential(layers, name="augmentation")
