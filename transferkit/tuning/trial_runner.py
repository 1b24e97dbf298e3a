"""How a search runs one trial: in this process or in a reused worker process, reporting every epoch to the oracle.

This is the one module that relies on KerasTuner's private API (``keras_tuner.src``, the tuner's
``_build_and_fit_model``, ``_run_and_update_trial`` and checkpoint file names); `private_api`
checks that it is there and says what to do when a KerasTuner release has changed it.

Trials run in worker processes (``isolate_trials``), which give their memory back when they end:
TensorFlow keeps every traced training graph alive after ``clear_session()`` (tensorflow#61791,
tf-keras#286), about 30 MiB per ``fit`` for MobileNetV2, whatever the tuner does. A worker runs
trial after trial (importing TensorFlow and receiving the data once) and is replaced by a fresh one
after ``trials_per_process`` trials, or sooner when it has grown by ``process_growth_mb``, so memory
stays bounded without paying a process start per trial. A worker sends each epoch's logs through a
pipe; this process reports them to the oracle (which may live in another process, in a distributed
search) and answers whether the trial goes on: the oracle decides, as KerasTuner intends (see
`transferkit.tuning.oracles`).
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import traceback
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import keras_tuner as kt

from transferkit._internal.memory import peak_rss_mb, rss_mb

__all__ = ["TrialRunning", "WorkerProcess", "private_api", "TrialStopped", "EpochReporter", "update_trial"]

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
        return {**metrics, "trial_peak_rss_mb": peak_rss_mb(), "trial_pid": os.getpid(), "last_step": reporter.last_step}


def _serve(connection, data) -> None:
    """A worker: trials arrive one after another (None: stop); each runs on ``data``, sent once."""
    def report(step, logs):
        connection.send(("epoch", step, logs))
        return connection.recv()

    try:
        while (trial := connection.recv()) is not None:
            keras.backend.clear_session()
            gc.collect()
            try:
                result = replace(trial, data=data).run(report)
            except BaseException:  # noqa: BLE001 - the parent raises it with this text, then replaces us
                connection.send(("error", traceback.format_exc()))
                return
            connection.send(("done", {**result, "worker_rss_mb": rss_mb()}))
    except EOFError:  # the search went away
        pass
    finally:
        connection.close()


def _converse(connection, process, trial_id: str, report) -> dict:
    """Answer a trial's epoch reports until it sends its result (or fails, or its process dies)."""
    while True:
        try:
            message = connection.recv()
        except EOFError:
            process.join()
            raise RuntimeError(f"Trial {trial_id}'s process ended without a result: {_ending(process.exitcode)}.") \
                from None
        if message[0] == "epoch":
            connection.send(bool(report(message[1], message[2])))
        elif message[0] == "done":
            return message[1]
        else:
            raise RuntimeError(f"Trial {trial_id} failed in its process:\n{message[1]}")


def _ending(exitcode: int | None) -> str:
    """How a process ended, in words: a SIGKILL is what the kernel's out-of-memory killer sends."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"killed by {name}" + (" (out of memory, most likely)" if -exitcode == signal.SIGKILL else "")
    return f"exit code {exitcode}; its error, if it printed one, is above on stderr"


def check_main_module_is_guarded() -> None:
    """Refuse to start trial processes from the top level of a script that has no
    ``if __name__ == "__main__":`` guard around the call: each spawned process imports the script
    again, which would start the search again inside it."""
    import ast
    import inspect

    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    name = getattr(getattr(main, "__spec__", None), "name", None) or ""
    if path is None or not os.path.isfile(path) or name == "__main__" or name.endswith(".__main__"):
        return  # an interactive session, python -c, a notebook; a package's __main__ is not imported again
    frame = inspect.currentframe()
    while frame is not None and not (frame.f_globals is vars(main) and frame.f_code.co_name == "<module>"):
        frame = frame.f_back
    if frame is None:
        return
    line = frame.f_lineno
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return

    def is_main_guard(node) -> bool:
        return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                and "__name__" in ast.unparse(node.test) and "__main__" in ast.unparse(node.test))

    if not any(is_main_guard(node) and node.lineno <= line <= node.end_lineno for node in ast.walk(tree)):
        raise RuntimeError(
            f"{path}, line {line}: the search runs its trials in new processes, which import this script again "
            "and would start the search again in each. Put the call under if __name__ == \"__main__\": (see "
            "docs/tuning.md), or pass isolate_trials=False to run the trials in this process.")


def _stop(process, connection, wait: float) -> None:
    process.join(timeout=wait)
    if process.is_alive():
        process.kill()
        process.join()
    connection.close()


class WorkerProcess:
    """A spawned process that runs trials one after another on the same data.

    It starts (imports TensorFlow, receives ``data``) once; `run` sends it a trial and answers its
    epoch reports. `worn_out` says when to replace it: after ``trials_per_process`` trials, or once
    it holds ``process_growth_mb`` more memory than after its first trial.
    """

    def __init__(self, data, trials_per_process: int = 5, process_growth_mb: float = 512.0):
        from multiprocessing import get_context

        context = get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, data), name="trial-worker")
        self.process.start()
        child.close()
        self.trials_per_process, self.process_growth_mb = int(trials_per_process), float(process_growth_mb)
        self.trials_run = 0
        self.first_rss: float | None = None
        self.rss: float | None = None
        self.failed = False

    def run(self, trial: _Trial, report) -> dict:
        self.connection.send(replace(trial, data=None))  # the worker has the data
        try:
            result = _converse(self.connection, self.process, trial.trial_id, report)
        except BaseException:
            self.failed = True
            raise
        self.trials_run += 1
        self.rss = result.pop("worker_rss_mb")
        self.first_rss = self.rss if self.first_rss is None else self.first_rss
        return result

    @property
    def worn_out(self) -> bool:
        grown = self.rss is not None and self.rss - self.first_rss > self.process_growth_mb
        return self.failed or self.trials_run >= self.trials_per_process or grown

    def close(self) -> None:
        """Stop the worker: let it finish after a trial, kill it in the middle of one."""
        if not self.failed and self.process.is_alive():
            try:
                self.connection.send(None)
            except (BrokenPipeError, OSError):
                pass
        _stop(self.process, self.connection, 0 if self.failed else 60)


class TrialRunning:
    """What transferkit's tuners add to a KerasTuner tuner: trials run through `_Trial` (here, or in
    `WorkerProcess`-es that are reused and replaced), every epoch reported to the oracle with
    ``self.report_epoch(trial, step, logs) -> stop``, the final metrics once, one step after the last
    epoch. The oracle's answer ("STOPPED") stops a trial; the rule that gives it lives in the oracle.

    Mixed in before a KerasTuner tuner class, whose constructor gets everything but the options here.
    """

    def __init__(self, *args, isolate_trials: bool = True, trials_per_process: int = 5,
                 process_growth_mb: float = 512.0, **kwargs):
        private_api()
        self.isolate_trials = bool(isolate_trials)
        self.trials_per_process, self.process_growth_mb = int(trials_per_process), float(process_growth_mb)
        self._worker: WorkerProcess | None = None
        self._worker_data = None
        super().__init__(*args, **kwargs)

    def report_epoch(self, trial, step: int, logs: dict) -> bool:
        """Send an epoch's logs to the oracle (the objective NaN until the end); True if it stops the trial."""
        objective = self.oracle.objective.name
        updated = update_trial(self.oracle, trial.trial_id, {**logs, objective: float("nan")}, step=step)
        return getattr(updated, "status", None) == "STOPPED"

    def search(self, *fit_args, **fit_kwargs):
        if self.isolate_trials:
            # Once, before any worker starts; inside a trial KerasTuner would log it as a failure and go on.
            check_main_module_is_guarded()
        try:
            return super().search(*fit_args, **fit_kwargs)
        finally:
            self.close_worker()

    def close_worker(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def _worker_for(self, data) -> WorkerProcess:
        if self._worker is not None and (self._worker.worn_out or self._worker_data is not data):
            self.close_worker()
        if self._worker is None:
            self._worker = WorkerProcess(data, self.trials_per_process, self.process_growth_mb)
            self._worker_data = data
        return self._worker

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
        if self.isolate_trials:
            worker = self._worker_for(args[0])
            try:
                return worker.run(job, report)
            except BaseException:
                self.close_worker()  # a failed or interrupted trial leaves no worker behind
                raise
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
