"""How a search runs one trial: in this process or in a fresh one, reporting every epoch to the oracle.

This is the one module that relies on KerasTuner's private API (``keras_tuner.src``, the tuner's
``_build_and_fit_model``, ``_run_and_update_trial`` and checkpoint file names); `private_api`
checks that it is there and says what to do when a KerasTuner release has changed it.

A trial in a fresh process (``isolate=True``) returns all its memory when it ends: TensorFlow keeps
every traced training graph alive after ``clear_session()`` (tensorflow#61791, tf-keras#286), about
30 MiB per ``fit`` for MobileNetV2, whatever the tuner does. The child sends each epoch's logs
through a pipe; this process reports them to the oracle (which may live in another process, in a
distributed search) and answers whether the trial goes on.
"""

from __future__ import annotations

import os
import traceback
import warnings
from dataclasses import dataclass

import keras
import keras_tuner as kt

from transferkit.memory import peak_rss_mb

__all__ = ["trial_runner", "private_api", "TrialStopped", "EpochReporter", "update_trial"]

TESTED_WITH = "keras-tuner>=1.4,<1.5"


def private_api():
    """KerasTuner's private pieces this module uses, or a `RuntimeError` that says what to install."""
    try:
        from keras_tuner.src import utils as kt_utils
        from keras_tuner.src.engine import tuner_utils

        for owner, name in ((kt.Tuner, "_build_and_fit_model"), (kt.Tuner, "_get_checkpoint_fname"),
                            (kt.Tuner, "_get_build_config_fname"), (kt.Tuner, "_run_and_update_trial"),
                            (tuner_utils, "TunerCallback"), (tuner_utils, "SaveBestEpoch"),
                            (tuner_utils, "convert_to_metrics_dict"), (kt_utils, "save_json")):
            getattr(owner, name)
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(
            f"keras-tuner {kt.__version__} has changed the internal API that transferkit's trial runner uses "
            f"({exc}). transferkit is tested with {TESTED_WITH}: pip install '{TESTED_WITH}'."
        ) from exc
    return kt_utils, tuner_utils


def update_trial(oracle, trial_id: str, metrics: dict, step: int):
    """``oracle.update_trial``, without the warning that the oracle's best-so-far of a trial whose
    objective is still NaN (its epochs' reports) gives."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="All-NaN", category=RuntimeWarning)
        return oracle.update_trial(trial_id, metrics, step=step)


class TrialStopped(Exception):
    """Raised by `EpochReporter` when the search stops a trial; carries the last epoch's logs."""

    def __init__(self, step: int, logs: dict):
        super().__init__(f"stopped by the search after step {step}")
        self.step, self.logs = step, logs


class EpochReporter(keras.callbacks.Callback):
    """Sends each epoch's numeric logs to ``report(step, logs) -> stop`` (step = ``first_step`` +
    epoch) and raises `TrialStopped` when told to stop."""

    def __init__(self, report, first_step: int = 0):
        super().__init__()
        self.report, self.first_step = report, first_step
        self.last_step = first_step - 1

    def on_epoch_end(self, epoch, logs=None):
        numbers = {k: float(v) for k, v in (logs or {}).items() if k != "phase"}
        self.last_step = self.first_step + epoch
        if self.report(self.last_step, numbers):
            raise TrialStopped(self.last_step, numbers)


@dataclass
class _Trial:
    """Everything one trial needs, picklable for a spawned process."""

    hypermodel: object
    hp_config: dict
    trial_id: str
    data: object
    fit_kwargs: dict
    checkpoint: str
    build_config: str
    load_from: str | None

    def run(self, report) -> dict:
        """Build, (load the trial this one continues), fit with per-epoch reports, save the weights."""
        kt_utils, _ = private_api()
        hp = kt.HyperParameters.from_config(self.hp_config)
        self.hypermodel.trial_id = self.trial_id
        model = self.hypermodel.build(hp)
        if self.load_from:
            model.load_weights(self.load_from)
        reporter = EpochReporter(report, first_step=self.fit_kwargs.get("initial_epoch", 0))
        kwargs = {**self.fit_kwargs, "callbacks": [*self.fit_kwargs.get("callbacks", []), reporter]}
        metrics = self.hypermodel.fit(hp, model, self.data, **kwargs)
        model.save_weights(self.checkpoint)
        kt_utils.save_json(self.build_config, model.get_build_config())
        return {**metrics, "trial_peak_rss_mb": peak_rss_mb(), "last_step": reporter.last_step}


def _child(trial: _Trial, connection) -> None:
    def report(step, logs):
        connection.send(("epoch", step, logs))
        return connection.recv()

    try:
        connection.send(("done", trial.run(report)))
    except BaseException:  # noqa: BLE001 - whatever it was, the parent raises it with this text
        connection.send(("error", traceback.format_exc()))
    finally:
        connection.close()


def _run_in_new_process(trial: _Trial, report) -> dict:
    from multiprocessing import get_context

    context = get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_child, args=(trial, child), name=f"trial-{trial.trial_id}")
    process.start()
    child.close()
    finished = False
    try:
        while True:
            try:
                message = parent.recv()
            except EOFError:
                process.join()
                raise RuntimeError(f"Trial {trial.trial_id}'s process ended without a result "
                                   f"(exit code {process.exitcode}; out of memory?).") from None
            if message[0] == "epoch":
                parent.send(bool(report(message[1], message[2])))
            elif message[0] == "done":
                finished = True
                return message[1]
            else:
                raise RuntimeError(f"Trial {trial.trial_id} failed in its process:\n{message[1]}")
    finally:  # a finished child exits by itself; an interrupted search does not wait for its trial
        process.join(timeout=60 if finished else 0)
        if process.is_alive():
            process.kill()
            process.join()
        parent.close()


def trial_runner(tuner_class: type, isolate: bool = True) -> type:
    """A subclass of ``tuner_class`` whose trials run through `_Trial` (here, or with ``isolate`` in a
    fresh process each), report every epoch with ``self.report_epoch(trial, step, logs) -> stop``,
    and report their final metrics once, one step after the last epoch."""
    private_api()

    def _build_and_fit_model(self, trial, *args, **kwargs):
        _, tuner_utils = private_api()
        internal = (tuner_utils.TunerCallback, tuner_utils.SaveBestEpoch)  # replaced by the reports and the save
        kwargs["callbacks"] = [c for c in kwargs.get("callbacks", []) if not isinstance(c, internal)]
        hp = trial.hyperparameters
        previous = hp.values.get("tuner/trial_id")
        job = _Trial(self.hypermodel, hp.get_config(), trial.trial_id, args[0], kwargs,
                     self._get_checkpoint_fname(trial.trial_id), self._get_build_config_fname(trial.trial_id),
                     self._get_checkpoint_fname(previous) if previous else None)
        os.makedirs(os.path.dirname(job.checkpoint), exist_ok=True)
        report = lambda step, logs: self.report_epoch(trial, step, logs)  # noqa: E731
        if isolate:
            return _run_in_new_process(job, report)
        keras.backend.clear_session()
        return job.run(report)

    def _run_and_update_trial(self, trial, *args, **kwargs):
        _, tuner_utils = private_api()
        results = self.run_trial(trial, *args, **kwargs)
        tuner_utils.validate_trial_results(results, self.oracle.objective, "Tuner.run_trial()")
        metrics = tuner_utils.convert_to_metrics_dict(results, self.oracle.objective)
        last = [r.get("last_step", -1) for r in (results if isinstance(results, list) else [results])
                if isinstance(r, dict)]
        metrics.pop("last_step", None)
        update_trial(self.oracle, trial.trial_id, metrics, step=max(last, default=-1) + 1)

    name = f"{'Isolated' if isolate else 'Reporting'}{tuner_class.__name__}"
    return type(name, (tuner_class,), {"_build_and_fit_model": _build_and_fit_model,
                                       "_run_and_update_trial": _run_and_update_trial})
