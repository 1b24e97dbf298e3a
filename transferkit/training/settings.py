"""The trainer's settings in small groups, each the one home of its defaults: the `Recipe` (how the
two phases train) and the `FastPath` (training on frozen features computed once). Named `PRESETS`
bundle whole runs (today's default, the seed project's settings).

Nothing here loads Keras, so the command line reads its defaults from here before TensorFlow starts.

>>> Recipe().learning_rate, Recipe.from_config(Recipe(unfreeze_from=100).get_config()).unfreeze_from
(0.003, 100)
>>> Recipe(optimizer="lion")
Traceback (most recent call last):
...
ValueError: optimizer='lion': use 'adam', 'adamw', 'rmsprop' or 'sgd'.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

__all__ = ["Recipe", "FastPath", "PRESETS", "preset", "EPOCHS", "FINE_TUNE_EPOCHS", "SEED_PROJECT_EPOCHS"]

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
SCHEDULES = ("constant", "cosine")
#: The moving average's momentum when a phase's length is unknown (a dataset of unknown cardinality).
UNKNOWN_LENGTH_MOMENTUM = 0.99
#: ``fit``'s phase-1 (backbone frozen) and phase-2 (top of the backbone trains) epochs. Phase 2 starts
#: from a converged head, so 5 epochs do what 10 did (benchmarks/README.md, "seeds.py"); the seed
#: project trained 10 + 10 (`SEED_PROJECT_EPOCHS`).
EPOCHS = 10
FINE_TUNE_EPOCHS = 5
SEED_PROJECT_EPOCHS = (10, 10)


class _Settings:
    """``get_config`` / ``from_config`` / ``replace`` for a frozen dataclass of JSON-friendly values."""

    def get_config(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class Recipe(_Settings):
    """How the two phases train.

    Args:
        unfreeze_from: backbone layer index, block name or layer name where phase 2 starts training;
            ``"auto"``: the backbone's own default (`BackboneSpec.default_unfreeze`).
        learning_rate: phase-1 learning rate. 3e-3 brings the head nearer convergence in its 10 epochs
            than 1e-3 did, which over five seeds left validation level and raised web photos by a
            quarter point (benchmarks/README.md, "A head nearer convergence").
        fine_tune_lr_factor: phase-2 learning rate = ``learning_rate * fine_tune_lr_factor`` (3e-5).
        freeze_batchnorm: keep BatchNormalization in inference mode in phase 2.
        optimizer: ``"adam"``, ``"adamw"``, ``"rmsprop"`` or ``"sgd"``, a fresh one per phase.
        fine_tune_optimizer: phase 2's optimizer when it differs from phase 1's (the tutorial runs
            Adam, then RMSprop); ``None``: ``optimizer``.
        label_smoothing: for two-class heads.
        ema_window: each phase ends on an exponential moving average of its weights (Keras's
            ``use_ema``) whose window is this fraction of the phase's steps: the momentum is
            ``1 - 1 / (ema_window * steps)``; validation during the phase sees the average too.
            ``None``: each phase ends on its last step's weights.
        fine_tune_schedule: phase 2's learning rate over its epochs: ``"constant"``, or ``"cosine"``
            (from the phase-2 rate down along a half cosine, one value per epoch).
    """

    unfreeze_from: int | str = "auto"
    learning_rate: float = 3e-3
    fine_tune_lr_factor: float = 0.01
    freeze_batchnorm: bool = True
    optimizer: str = "adam"
    fine_tune_optimizer: str | None = None
    label_smoothing: float = 0.0
    ema_window: float | None = 0.33
    fine_tune_schedule: str = "constant"

    def optimizer_of(self, phase: int) -> str:
        """The optimizer's name in ``phase`` (1 or 2).

        >>> Recipe(fine_tune_optimizer="rmsprop").optimizer_of(1), Recipe(fine_tune_optimizer="rmsprop").optimizer_of(2)
        ('adam', 'rmsprop')
        """
        return (self.fine_tune_optimizer or self.optimizer) if phase == 2 else self.optimizer

    def ema_momentum(self, steps: int | None) -> float | None:
        """The moving average's momentum in a phase of ``steps`` training steps; None: no average.

        >>> Recipe().ema_momentum(630), Recipe().ema_momentum(3), Recipe(ema_window=None).ema_momentum(630)
        (0.9951899951899952, 0.0, None)
        """
        if self.ema_window is None:
            return None
        if not steps:
            return UNKNOWN_LENGTH_MOMENTUM
        return 1.0 - 1.0 / max(1.0, self.ema_window * steps)

    def __post_init__(self):
        if self.learning_rate <= 0 or self.fine_tune_lr_factor <= 0:
            raise ValueError(f"learning_rate={self.learning_rate!r} and fine_tune_lr_factor="
                             f"{self.fine_tune_lr_factor!r} must be positive.")
        for name in ("optimizer", "fine_tune_optimizer"):
            value = getattr(self, name)
            if value not in OPTIMIZERS and not (name == "fine_tune_optimizer" and value is None):
                raise ValueError(f"{name}={value!r}: use 'adam', 'adamw', 'rmsprop' or 'sgd'.")
        if self.ema_window is not None and not 0.0 < float(self.ema_window) <= 1.0:
            raise ValueError(f"ema_window={self.ema_window!r}: use a fraction of the phase, over 0 and at most 1, "
                             "or None.")
        if self.fine_tune_schedule not in SCHEDULES:
            choices = " or ".join(map(repr, SCHEDULES))
            raise ValueError(f"fine_tune_schedule={self.fine_tune_schedule!r}: use {choices}.")
        object.__setattr__(self, "learning_rate", float(self.learning_rate))
        object.__setattr__(self, "fine_tune_lr_factor", float(self.fine_tune_lr_factor))


@dataclass(frozen=True)
class FastPath(_Settings):
    """Training on the frozen layers' outputs, computed once (`transferkit.training.features`).

    Args:
        cache_features: use the fast path; ``False`` runs the exact recipe (fresh augmentation every
            epoch, each image unaugmented with probability ``1 / views``; the whole network every step).
        views: variants per training image (view 0 unaugmented, the others augmented); the exact
            recipe's share of unaugmented images is ``1 / views`` too. Over five seeds two views scored
            as three on validation and 0.3 points lower on web photos, with half the spread between
            seeds, in four fifths of the time (benchmarks/README.md, "Two views").
        feature_dtype: storage type of cached features (``"float16"`` halves memory).
        cache_dir: keep cached features in files here, reused by later runs on the same files,
            weights and settings; by default in memory for one ``fit``.
        random_views: each image gets one of its views drawn at random every epoch (instead of view
            ``epoch % views`` for all images).
        mirror_features: phase 2 mirrors each sample's cached activation maps left-right with
            probability 1/2 (off when there is no augmentation).
        cache_unfreeze_points: with ``cache_dir``, more unfreeze points whose phase-2 inputs are
            computed in the same pass, for later runs (a search passes every point it may try).
    """

    cache_features: bool = True
    views: int = 2
    feature_dtype: str = "float16"
    cache_dir: str | None = None
    random_views: bool = True
    mirror_features: bool = True
    cache_unfreeze_points: tuple = field(default=())

    def __post_init__(self):
        if int(self.views) < 1:
            raise ValueError(f"views={self.views!r}: the fast path needs at least one view per training image.")
        object.__setattr__(self, "views", int(self.views))
        object.__setattr__(self, "cache_dir", None if self.cache_dir is None else os.fspath(self.cache_dir))
        object.__setattr__(self, "cache_unfreeze_points", tuple(self.cache_unfreeze_points))
        object.__setattr__(self, "random_views", bool(self.random_views))
        object.__setattr__(self, "mirror_features", bool(self.mirror_features))


#: Named trainer settings. ``"default"``: transferkit's own (224 px from the data, the fast path,
#: the backbone's unfreeze point); ``"seed_project"``: the tutorial project transferkit grew out of
#: (160 px, the exact recipe with every image augmented, layers from 100 on, 1e-4 and a tenth of it in
#: phase 2 with RMSprop, its BatchNorm layers training in phase 2 as they do in its Keras 3 code, no
#: weight averaging; with `SEED_PROJECT_EPOCHS`).
PRESETS: dict[str, dict] = {
    "default": {},
    "seed_project": {"image_size": (160, 160), "unfreeze_from": 100, "learning_rate": 1e-4,
                     "fine_tune_lr_factor": 0.1, "ema_window": None, "cache_features": False,
                     "freeze_batchnorm": False, "fine_tune_optimizer": "rmsprop",
                     "augmentation": {"preset": "default", "plain_fraction": 0}},
}


def preset(name: str) -> dict:
    """The trainer arguments of a named preset (a copy).

    >>> preset("seed_project")["unfreeze_from"]
    100
    """
    if name not in PRESETS:
        raise ValueError(f"preset={name!r}: choose one of {', '.join(PRESETS)}.")
    return dict(PRESETS[name])
