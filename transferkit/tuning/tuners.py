"""transferkit's KerasTuner tuners: a `kt.Tuner` whose trials are two-phase runs in reused worker
processes (`TrialRunning`), and its Hyperband form. The search algorithm is the oracle's
(`transferkit.tuning.oracles`); subclass `TwoPhaseTuner` to add to a trial (override ``run_trial``),
as KerasTuner's own hooks allow.

>>> issubclass(TwoPhaseHyperband, TwoPhaseTuner) and issubclass(TwoPhaseTuner, kt.Tuner)
True
"""

from __future__ import annotations

import keras_tuner as kt

from transferkit.tuning.trial_runner import TrialRunning

__all__ = ["TwoPhaseTuner", "TwoPhaseHyperband"]


class TwoPhaseTuner(TrialRunning, kt.Tuner):
    """``kt.Tuner(oracle, hypermodel, ...)`` for a `TwoPhaseHyperModel`, with ``isolate_trials``,
    ``trials_per_process`` and ``process_growth_mb`` (see `TrialRunning`)."""


class TwoPhaseHyperband(TwoPhaseTuner):
    """`TwoPhaseTuner` for a Hyperband oracle: each trial's epoch budget comes from its bracket, as in
    ``kt.Hyperband.run_trial`` (the trial runner loads the weights a continued trial starts from)."""

    def run_trial(self, trial, *fit_args, **fit_kwargs):
        hp = trial.hyperparameters
        if "tuner/epochs" in hp.values:
            fit_kwargs["epochs"] = hp.values["tuner/epochs"]
            fit_kwargs["initial_epoch"] = hp.values["tuner/initial_epoch"]
        return super().run_trial(trial, *fit_args, **fit_kwargs)
