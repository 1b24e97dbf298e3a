"""Keras callbacks for two-phase runs, and how user callbacks are shown the run.

`TwoPhaseTrainer.fit` hands every user callback the full training model (images in, logits out) in
both phases and on both paths, and shows it the two phases as one training run, as one
``model.fit`` of that model would be: ``on_train_begin`` before the first epoch of phase 1 and
``on_train_end`` after the last of phase 2, epochs numbered on across the boundary. So
``ModelCheckpoint`` saves the full model (``keras.saving.load_model`` reads it; ``{phase:.0f}``
may appear in its file name), ``CSVLogger`` and ``TensorBoard`` write one log for the whole run,
and ``ReduceLROnPlateau`` changes the learning rate of the optimizer that is training.

Between the phases, patience starts again: ``EarlyStopping`` ends the *phase* that is running
(phase 2 still runs after an early stop in phase 1) and ``ReduceLROnPlateau`` starts counting
afresh at phase 2's own learning rate; with ``restore_best_weights``, the weights of the best
epoch of the whole run are restored at the end. Epoch logs carry ``"phase"`` (1 or 2), and a
callback with ``on_phase_begin(phase)`` / ``on_phase_end(phase, logs)`` methods (such as
`PhaseCallback`) is told when each phase starts and ends.
"""

from __future__ import annotations

import math
import time

import keras

__all__ = ["PhaseCallback", "PhaseSummary", "ShowFullModel", "ValidateOnAverage", "cosine_schedule"]


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


class ValidateOnAverage(keras.callbacks.Callback):
    """With an optimizer that keeps a moving average of the weights (``use_ema``), the model holds the
    averaged weights from the epoch's validation to the end of its ``on_epoch_end``: validation
    measures the weights the model will end with, and callbacks that keep an epoch's weights by its
    metrics (``EarlyStopping(restore_best_weights=True)``, ``ModelCheckpoint``) keep the ones that were
    measured. `restore` (the trainer calls it after the other callbacks) puts the raw weights back, and
    training goes on from them; `raw_value` is what a checkpoint saves, so a resumed run goes on alike.
    """

    def __init__(self):
        super().__init__()
        self._raw: dict[int, object] = {}

    def on_test_begin(self, logs=None):
        optimizer = self.model.optimizer
        averaging = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer's (float16) inside
        if self._raw or not (getattr(averaging, "use_ema", False) and optimizer.built):
            return
        variables = self.model.trainable_variables
        self._raw = {id(v): keras.ops.copy(v.value) for v in variables}
        optimizer.finalize_variable_values(variables)
        for variable in variables:  # own copies: on JAX the average's buffer would be donated with the model's
            variable.assign(keras.ops.copy(variable.value))

    def raw_value(self, variable):
        """``variable``'s training value (not the average that it may hold now)."""
        return self._raw.get(id(variable), variable)

    def restore(self) -> None:
        for variable in self.model.trainable_variables:
            if id(variable) in self._raw:
                variable.assign(self._raw[id(variable)])
        self._raw = {}


def cosine_schedule(learning_rate: float, first_epoch: int, epochs: int) -> keras.callbacks.LearningRateScheduler:
    """A callback that sets the rate of epoch ``first_epoch + i`` to ``learning_rate`` times
    ``(1 + cos(pi * i / epochs)) / 2``: the full rate first, then down along a half cosine.

    >>> schedule = cosine_schedule(1e-3, 10, 4)
    >>> [round(schedule.schedule(e, 0.0), 6) for e in range(10, 14)]
    [0.001, 0.000854, 0.0005, 0.000146]
    """

    def rate(epoch, current=None):
        return learning_rate * (1 + math.cos(math.pi * (epoch - first_epoch) / max(1, epochs))) / 2

    return keras.callbacks.LearningRateScheduler(rate)


class ShowFullModel(keras.callbacks.Callback):
    """Runs user ``callbacks`` inside the ``fit`` of whatever model trains a phase, showing them
    ``full_model`` instead (the layers are shared, so its weights are the ones that train).

    ``stop_training`` set on the full model stops the phase; the full model's ``optimizer`` is the
    one that trains, so learning-rate callbacks act on it.
    """

    def __init__(self, callbacks: keras.callbacks.CallbackList, full_model: keras.Model, phase: int,
                 begins_run: bool = True, ends_run: bool = True):
        super().__init__()
        self.callbacks = callbacks
        self.full_model = full_model
        self.phase = phase
        self.begins_run, self.ends_run = begins_run, ends_run
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
        if self.begins_run:
            self.callbacks.on_train_begin(logs)
        else:
            for callback in self.callbacks.callbacks:
                _restart_patience(callback)
        for callback in self.callbacks.callbacks:
            if hasattr(callback, "on_phase_begin"):
                callback.on_phase_begin(self.phase, logs)

    def on_train_end(self, logs=None):
        for callback in self.callbacks.callbacks:
            if hasattr(callback, "on_phase_end"):
                callback.on_phase_end(self.phase, self._last_logs)
        if self.ends_run:
            self.callbacks.on_train_end(logs)

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


def _restart_patience(callback) -> None:
    """A new phase: an early stop or plateau in the last one says nothing about this one."""
    if isinstance(callback, keras.callbacks.EarlyStopping):
        callback.wait, callback.stopped_epoch = 0, 0
    elif isinstance(callback, keras.callbacks.ReduceLROnPlateau):
        callback._reset()  # what its own on_train_begin does


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
