"""Training: `TwoPhaseTrainer`, the frozen-feature cache, checkpoints, callbacks, trackers and several devices.

>>> from transferkit.training import TwoPhaseTrainer, PhaseSummary
"""

from transferkit._internal.lazy import lazy_exports as _lazy_exports

__getattr__, __dir__, __all__ = _lazy_exports(__name__, {
    "TwoPhaseTrainer": "trainer", "TrainingResult": "trainer",
    "FrozenFeatures": "features", "split_backbone": "features", "crossing_tensors": "features",
    "BuiltModel": "recipes", "ExactRecipe": "recipes", "CachedRecipe": "recipes",
    "Recipe": "settings", "FastPath": "settings", "PRESETS": "settings",
    "RunCheckpoint": "checkpoint",
    "PhaseCallback": "callbacks", "PhaseSummary": "callbacks",
    "MlflowRun": "trackers",
    "for_devices": "distribute", "for_processes": "distribute",
})
