"""A learning-rate finder for both phases: the loss over an exponential sweep of learning rates, and a
suggested rate with the rule that chose it.

Phase 1 sweeps the head's learning rate from its fresh initialisation; phase 2, after phase 1 has trained
at the suggested rate, sweeps the fine-tuning rate at the unfreeze point. On the fast path (the default)
both sweeps run on cached features, so a sweep costs seconds once the features exist. The sweeps train
copies of nothing: they change the trainer's model, which `lr_find` rebuilds afresh before it returns.

The rule: the suggestion is a tenth of the last rate before the smoothed loss, past its lowest point,
first rises to twice that lowest value. On a falling curve (phase 1, from a fresh head) that is about the
lowest point, as in Smith (2017) and fastai's first ``lr_find``; on a curve that is flat before it rises
(phase 2, from a trained head, where the lowest point is wherever the noise put it) it is where training
starts to break what phase 1 learnt. "A tenth of the lowest point" alone suggested almost the sweep's
first rate for phase 2 on the shared photos (benchmarks/README.md). The sweep stops early once the
smoothed loss exceeds four times its lowest.

>>> import numpy as np
>>> rates = np.geomspace(1e-5, 1, 51)
>>> falling = 1 + (np.log10(rates) + 2) ** 2         # lowest at 1e-2, twice that at 1e-1
>>> float(round(LRSweep.of(1, rates, falling, smoothing=0.0).suggestion, 6))
0.01
>>> flat = np.where(rates < 1e-3, 0.1, 0.1 * (1 + 1e3 * (rates - 1e-3)))   # breaks from 1e-3 on
>>> sweep = LRSweep.of(2, rates, flat, smoothing=0.0)
>>> float(round(sweep.suggestion, 6)), sweep.rule
(0.0002, 'a tenth of the last rate (0.002) before the smoothed loss doubled its lowest (0.1)')
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np

from transferkit.data.pipeline import batch_size_of, full_batches_forever

__all__ = ["LRSweep", "LRFinding", "lr_find", "SMOOTHING", "DIVERGENCE"]

#: Weight of the previous smoothed loss in the exponential moving average (bias-corrected).
SMOOTHING = 0.98
#: The sweep stops once the smoothed loss exceeds this multiple of its lowest value.
DIVERGENCE = 4.0


@dataclass
class LRSweep:
    """One phase's sweep: the rates tried, the loss at each step (raw and smoothed), the suggestion."""

    phase: int
    learning_rates: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    suggestion: float
    rule: str
    usable: bool = True  # False: the loss rose from the sweep's first rates on, so it suggests nothing

    @classmethod
    def of(cls, phase: int, learning_rates, losses, smoothing: float = SMOOTHING) -> "LRSweep":
        """The sweep of these rates and losses, smoothed, with its suggestion."""
        learning_rates, losses = np.asarray(learning_rates, float), np.asarray(losses, float)
        smoothed = _smoothed(losses, smoothing)
        finite = np.isfinite(smoothed)
        if not finite.any():
            raise ValueError(f"The phase-{phase} sweep gave no finite loss: lower min_lr.")
        best = int(np.nanargmin(np.where(finite, smoothed, np.nan)))
        lowest = float(smoothed[best])
        risen = np.flatnonzero(~(smoothed[best:] <= lowest + max(abs(lowest), 1e-8)))  # NaN, inf: risen
        if len(risen):
            position = best + risen[0] - 1
            at = float(learning_rates[position])
            rule = f"a tenth of the last rate ({at:.3g}) before the smoothed loss doubled its lowest ({lowest:.3g})"
            if position < len(learning_rates) // 10:
                rule += ("; that is among the sweep's first rates: the loss only rose, so the sweep suggests "
                         "nothing (keep the default, or sweep from a lower min_lr)")
                return cls(phase, learning_rates, losses, smoothed, at / 10, rule, usable=False)
        else:
            at = float(learning_rates[-1])
            rule = (f"a tenth of the sweep's last rate ({at:.3g}): the smoothed loss never doubled its lowest "
                    f"({lowest:.3g}); a higher max_lr shows more")
        return cls(phase, learning_rates, losses, smoothed, at / 10, rule)

    def to_dict(self) -> dict:
        return {"phase": self.phase, "suggestion": self.suggestion, "rule": self.rule, "usable": self.usable,
                "learning_rates": self.learning_rates.tolist(), "losses": self.losses.tolist(),
                "smoothed": [None if not math.isfinite(v) else v for v in self.smoothed.tolist()]}


@dataclass
class LRFinding:
    """The sweeps of `lr_find` and what they suggest for `TwoPhaseTrainer`: ``learning_rate`` (phase 1)
    and ``fine_tune_lr_factor`` (phase 2's suggested rate over phase 1's), None for a phase not swept."""

    sweeps: dict[int, LRSweep]
    learning_rate: float | None
    fine_tune_lr_factor: float | None

    def __str__(self) -> str:
        lines = []
        for phase, sweep in self.sweeps.items():
            lines.append(f"phase {phase}: {len(sweep.learning_rates)} steps from {sweep.learning_rates[0]:.3g} to "
                         f"{sweep.learning_rates[-1]:.3g}; {'suggested' if sweep.usable else 'NOT USABLE:'} "
                         f"{sweep.suggestion:.3g}, {sweep.rule}")
        settings = [f"learning_rate={self.learning_rate:.3g}"] if self.learning_rate is not None else []
        if self.fine_tune_lr_factor is not None:
            settings.append(f"fine_tune_lr_factor={self.fine_tune_lr_factor:.3g}")
        lines.append("suggested: TwoPhaseTrainer(" + ", ".join(settings) + ")")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"learning_rate": self.learning_rate, "fine_tune_lr_factor": self.fine_tune_lr_factor,
                "sweeps": [s.to_dict() for s in self.sweeps.values()]}


def _smoothed(losses: np.ndarray, smoothing: float) -> np.ndarray:
    average, out = 0.0, np.empty_like(losses)
    for step, loss in enumerate(losses, start=1):
        average = smoothing * average + (1 - smoothing) * loss
        out[step - 1] = average / (1 - smoothing ** step)
    return out


class _Sweep(keras.callbacks.Callback):
    """Sets the rate before each step and records each step's own loss (Keras logs the epoch's running
    mean, from which each step's loss follows)."""

    def __init__(self, rates: np.ndarray):
        super().__init__()
        self.rates, self.losses = rates, []
        self._total, self._best = 0.0, math.inf

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate = float(self.rates[batch])

    def on_train_batch_end(self, batch, logs=None):
        mean = float(logs["loss"])
        loss = mean * (batch + 1) - self._total  # whole batches: the running mean weighs them alike
        self._total = mean * (batch + 1)
        self.losses.append(loss)
        smoothed = _smoothed(np.asarray(self.losses), SMOOTHING)[-1]
        self._best = min(self._best, smoothed)
        if not math.isfinite(loss) or (batch >= 10 and smoothed > DIVERGENCE * self._best):
            self.model.stop_training = True


def _sweep(trainer, model: keras.Model, train, phase: int, min_lr: float, max_lr: float, steps: int) -> LRSweep:
    rates = np.geomspace(min_lr, max_lr, steps)
    trainer.compile(min_lr, model, phase=phase)
    recorder = _Sweep(rates)
    whole = full_batches_forever(train, batch_size_of(train))
    model.fit(whole, epochs=1, steps_per_epoch=steps, callbacks=[recorder], verbose=0, shuffle=False)
    return LRSweep.of(phase, rates[:len(recorder.losses)], recorder.losses)


def lr_find(trainer, data, min_lr: float = 1e-7, max_lr: float = 1.0, steps: int = 100, phases=(1, 2),
            epochs: int | None = None) -> LRFinding:
    """Sweep the learning rate of phase 1 (and of phase 2) of ``trainer`` on ``data``; see the module.

    Phase 2's sweep starts from a head trained for ``epochs`` (the trainer's default phase-1 epochs) at
    phase 1's suggested rate (or, when phase 1 is not swept, at the trainer's ``learning_rate``). The
    trainer's model is built afresh at the start and again at the end, so `fit` afterwards starts clean.
    """
    from transferkit.training.settings import EPOCHS

    phases = tuple(sorted(set(phases)))
    if not phases or not set(phases) <= {1, 2}:
        raise ValueError(f"phases={phases!r}: sweep phase 1, phase 2, or both.")
    if not 0 < min_lr < max_lr:
        raise ValueError(f"min_lr={min_lr!r}, max_lr={max_lr!r}: give 0 < min_lr < max_lr.")
    if steps < 20:
        raise ValueError(f"steps={steps!r}: give at least 20 steps, enough to see where the loss turns.")
    if trainer.seed is not None:
        keras.utils.set_random_seed(trainer.seed)
    trainer.build(data.class_names, data.image_size, multi_label=getattr(data, "multi_label", False))
    index = trainer.unfreeze_index()
    recipe = trainer._recipe(data, index, [1, 2] if 2 in phases else [1], verbose=0)
    sweeps: dict[int, LRSweep] = {}
    try:
        trainer.freeze_backbone()
        head_model = recipe.model(1)
        train1, _ = recipe.datasets(1, 0)
        start = [np.array(w) for w in head_model.get_weights()]
        if 1 in phases:
            sweeps[1] = _sweep(trainer, head_model, train1, 1, min_lr, max_lr, steps)
            head_model.set_weights(start)
        learning_rate = sweeps[1].suggestion if 1 in phases else trainer.learning_rate
        if 2 in phases:
            trainer.compile(learning_rate, head_model)
            head_model.fit(train1, epochs=EPOCHS if epochs is None else epochs, verbose=0, shuffle=False)
            trainer.unfreeze_top()
            sweeps[2] = _sweep(trainer, recipe.model(2), recipe.datasets(2, 0)[0], 2, min_lr, max_lr, steps)
    finally:
        recipe.close()
    if trainer.seed is not None:
        keras.utils.set_random_seed(trainer.seed)
    trainer.build(data.class_names, data.image_size, multi_label=getattr(data, "multi_label", False))  # the sweeps' weights are not a model to keep
    return LRFinding(sweeps, sweeps[1].suggestion if 1 in sweeps else None,
                     sweeps[2].suggestion / learning_rate if 2 in sweeps else None)
