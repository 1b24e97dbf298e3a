"""Keras callbacks for two-phase runs, and how user callbacks are shown the run.

`TwoPhaseTrainer.fit` hands every user callback the full training model (images in, logits out) in
both phases and on both paths, as ``model.fit`` of that model would: ``ModelCheckpoint`` saves it,
``EarlyStopping`` stops the phase that is running and restores weights into it,
``ReduceLROnPlateau`` changes the learning rate of the optimizer that is training. Epoch logs carry
``"phase"`` (1 or 2), and a callback with ``on_phase_begin(phase)`` / ``on_phase_end(phase, logs)``
methods (such as `PhaseCallback`) is told when each phase starts and ends.
"""

from __future__ import annotations

import time

import keras

__all__ = ["PhaseCallback", "PhaseSummary", "ShowFullModel"]


class PhaseCallback(keras.callbacks.Callback):
    """A Keras callback that is also told when each phase begins and ends.

    >>> class Phases(PhaseCallback):
    ...     def on_phase_begin(self, phase, logs=None):
    ...         print("phase", phase)
    """

    def on_phase_begin(self, phase: int, logs=None):
        """Called before the first epoch of ``phase`` (1: backbone frozen; 2: fine-tuning)."""

    def on_phase_end(self, phase: int, logs=None):
        """Called after the last epoch of ``phase``, with that epoch's logs."""


class ShowFullModel(keras.callbacks.Callback):
    """Runs user ``callbacks`` inside the ``fit`` of whatever model trains a phase, showing them
    ``full_model`` instead (the layers are shared, so its weights are the ones that train).

    ``stop_training`` set on the full model stops the phase; the full model's ``optimizer`` is the
    one that trains, so learning-rate callbacks act on it.
    """

    def __init__(self, callbacks, full_model: keras.Model, phase: int):
        super().__init__()
        self.callbacks = keras.callbacks.CallbackList(list(callbacks), add_history=False, add_progbar=False)
        self.full_model = full_model
        self.phase = phase
        self._last_logs: dict = {}

    def set_model(self, model):
        super().set_model(model)
        if model is not self.full_model:
            self.full_model.optimizer = model.optimizer
        self.full_model.stop_training = False
        self.callbacks.set_model(self.full_model)

    def set_params(self, params):
        super().set_params(params)
        self.callbacks.set_params(params)

    def _logs(self, logs):
        return {**(logs or {}), "phase": self.phase}

    def _pass_stop(self):
        if self.full_model.stop_training and self.model is not self.full_model:
            self.model.stop_training = True

    def on_train_begin(self, logs=None):
        for callback in self.callbacks.callbacks:
            if hasattr(callback, "on_phase_begin"):
                callback.on_phase_begin(self.phase, logs)
        self.callbacks.on_train_begin(logs)

    def on_train_end(self, logs=None):
        self.callbacks.on_train_end(logs)
        for callback in self.callbacks.callbacks:
            if hasattr(callback, "on_phase_end"):
                callback.on_phase_end(self.phase, self._last_logs)

    def on_epoch_begin(self, epoch, logs=None):
        self.callbacks.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        logs = self._logs(logs)
        self.callbacks.on_epoch_end(epoch, logs)
        self._last_logs = logs
        self._pass_stop()

    def on_train_batch_begin(self, batch, logs=None):
        self.callbacks.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self.callbacks.on_train_batch_end(batch, logs)
        self._pass_stop()

    def on_test_begin(self, logs=None):
        self.callbacks.on_test_begin(logs)

    def on_test_end(self, logs=None):
        self.callbacks.on_test_end(logs)

    def on_test_batch_begin(self, batch, logs=None):
        self.callbacks.on_test_batch_begin(batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        self.callbacks.on_test_batch_end(batch, logs)

    def on_predict_begin(self, logs=None):
        self.callbacks.on_predict_begin(logs)

    def on_predict_end(self, logs=None):
        self.callbacks.on_predict_end(logs)


class PhaseSummary(PhaseCallback):
    """Prints, when each phase ends, its validation accuracy and wall time (like Keras's progress bar,
    this callback is for scripts; add it to ``callbacks`` when you want the lines).

    A phase's time runs from the end of the previous phase (for phase 1: from when this callback was
    made), so it includes what happens before Keras's own training starts, such as computing cached
    frozen features. Make it just before ``fit``.

    Attributes:
        phases: ``[(final logs, seconds), ...]``, one entry per phase run so far.
    """

    NAMES = {1: "transfer learning, backbone frozen", 2: "fine-tuning"}

    def __init__(self, print_fn=None):
        super().__init__()
        self.print_fn = print_fn or (lambda line: print(line, flush=True))
        self.phases: list[tuple[dict, float]] = []
        self._start = time.perf_counter()

    def on_phase_end(self, phase, logs=None):
        seconds = time.perf_counter() - self._start
        self._start = time.perf_counter()
        logs = {k: v for k, v in (logs or {}).items() if k != "phase"}
        self.phases.append((logs, seconds))
        accuracy = logs.get("val_accuracy", float("nan"))
        self.print_fn(f"\n== Phase {phase} ({self.NAMES.get(phase, 'training')}): "
                      f"val_accuracy {accuracy:.4f} in {seconds:.0f} s\n")
