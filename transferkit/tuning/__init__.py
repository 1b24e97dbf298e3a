"""Tuning: a KerasTuner search over the head and the unfreeze point, each trial a two-phase run.

>>> from transferkit.tuning import tune, TwoPhaseHyperModel, TwoPhaseTuner
"""

from transferkit._internal.lazy import lazy_exports as _lazy_exports

__getattr__, __dir__, __all__ = _lazy_exports(__name__, {
    **{name: "search" for name in ("TwoPhaseHyperModel", "final_objective", "split_budget", "trial_seed", "tune",
                                   "TuningResult", "MemoryLog")},
    "Soup": "soup", "greedy_soup": "soup",
    "TwoPhaseTuner": "tuners", "TwoPhaseHyperband": "tuners",
    **{name: "oracles" for name in ("MedianStopping", "MedianStoppingRandomSearchOracle",
                                    "MedianStoppingBayesianOptimizationOracle", "MedianStoppingHyperbandOracle",
                                    "ORACLES")},
})
