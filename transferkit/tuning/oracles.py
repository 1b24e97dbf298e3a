"""The oracles of transferkit's searches: KerasTuner's own, with the median stopping rule added.

In KerasTuner the oracle decides about trials, and it lives on the chief of a distributed search, so
a rule written there holds for every worker: a trial is told to stop when its ``update_trial``
returns it with status ``"STOPPED"``. `MedianStopping` stops a running trial whose metric after
step ``stop_below_median_after`` (or later) is worse than the median of the completed trials' at the
same step, once ``min_trials_for_median`` trials have completed (Golovin et al., "Google Vizier",
2017). Without ``stop_below_median_after`` nothing is stopped.

>>> import keras_tuner as kt
>>> oracle = MedianStoppingRandomSearchOracle(objective=kt.Objective("final_val_accuracy", "max"),
...                                           max_trials=3, stop_below_median_after=1)
>>> oracle.stop_below_median_after, isinstance(oracle, kt.oracles.RandomSearchOracle)
(1, True)
"""

from __future__ import annotations

import logging

import keras_tuner as kt
import numpy as np

__all__ = ["MedianStopping", "MedianStoppingRandomSearchOracle", "MedianStoppingBayesianOptimizationOracle",
           "MedianStoppingHyperbandOracle", "ORACLES"]

log = logging.getLogger(__name__)


class MedianStopping:
    """Mixed in before a KerasTuner oracle class: the median stopping rule in ``update_trial``."""

    def __init__(self, *args, stop_below_median_after: int | None = None, min_trials_for_median: int = 3,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.stop_below_median_after = stop_below_median_after
        self.min_trials_for_median = int(min_trials_for_median)

    @kt.synchronized
    def update_trial(self, trial_id, metrics, step=0):
        trial = super().update_trial(trial_id, metrics, step=step)
        if trial.status == "RUNNING" and self.below_median(trial_id, step, metrics):
            trial.status = "STOPPED"  # the tuner ends it after this epoch; it is scored as it stands
            self._save_trial(trial)
        return trial

    def below_median(self, trial_id: str, step: int, logs: dict) -> bool:
        """Is this epoch's metric worse than the median of the completed trials' at the same step?"""
        after = self.stop_below_median_after
        metric = self.objective.name.removeprefix("final_")
        if after is None or step < after or metric not in logs:
            return False
        others = []
        for other in self.trials.values():
            if other.trial_id == trial_id or other.status != "COMPLETED":
                continue
            if other.metrics.exists(metric):
                values = [o.mean() for o in other.metrics.get_history(metric) if o.step == step]
                others += values[:1]
        if len(others) < self.min_trials_for_median:
            return False
        median = float(np.median(others))
        worse = logs[metric] < median if self.objective.direction == "max" else logs[metric] > median
        if worse:
            log.info("Stopping trial %s after step %d: %s %.4f is worse than the median %.4f of %d trials",
                     trial_id, step, metric, logs[metric], median, len(others))
        return worse


class MedianStoppingRandomSearchOracle(MedianStopping, kt.oracles.RandomSearchOracle):
    """KerasTuner's random search, with the median stopping rule."""


class MedianStoppingBayesianOptimizationOracle(MedianStopping, kt.oracles.BayesianOptimizationOracle):
    """KerasTuner's Bayesian optimization (Gaussian process), with the median stopping rule."""


class MedianStoppingHyperbandOracle(MedianStopping, kt.oracles.HyperbandOracle):
    """KerasTuner's Hyperband, with the median stopping rule inside each bracket's trials."""


#: ``tune(tuner=...)``'s names.
ORACLES = {"random": MedianStoppingRandomSearchOracle, "bayesian": MedianStoppingBayesianOptimizationOracle,
           "hyperband": MedianStoppingHyperbandOracle}
