"""Keras callbacks for two-phase runs."""

from __future__ import annotations

import time

import keras

__all__ = ["PhaseSummary"]


class PhaseSummary(keras.callbacks.Callback):
    """Prints, when each phase ends, its validation accuracy and wall time (like Keras's progress bar,
    this callback is for scripts; add it to ``callbacks`` when you want the lines).

    A phase's time runs from the end of the previous phase (for phase 1: from when this callback was
    made), so it includes what happens before Keras's own training starts, such as computing cached
    frozen features. Make it just before ``fit``.

    Attributes:
        phases: ``[(final logs, seconds), ...]``, one entry per phase run so far.
    """

    NAMES = ("transfer learning, backbone frozen", "fine-tuning")

    def __init__(self, print_fn=None):
        super().__init__()
        self.print_fn = print_fn or (lambda line: print(line, flush=True))
        self.phases: list[tuple[dict, float]] = []
        self._last: dict = {}
        self._start = time.perf_counter()

    def on_train_begin(self, logs=None):
        self._last = {}

    def on_epoch_end(self, epoch, logs=None):
        self._last = dict(logs or {})

    def on_train_end(self, logs=None):
        seconds = time.perf_counter() - self._start
        self._start = time.perf_counter()
        self.phases.append((self._last, seconds))
        n = len(self.phases)
        name = self.NAMES[n - 1] if n <= len(self.NAMES) else "training"
        accuracy = self._last.get("val_accuracy", float("nan"))
        self.print_fn(f"\n== Phase {n} ({name}): val_accuracy {accuracy:.4f} in {seconds:.0f} s\n")
