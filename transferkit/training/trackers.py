"""Experiment trackers: a two-phase run as one MLflow run.

Keras's own callbacks already see both phases as one training run (`transferkit.training.callbacks`),
so MLflow's Keras callback (``mlflow.keras.MlflowCallback``) logs every epoch of both phases into one
run, epochs numbered on across the boundary, with a ``phase`` metric (1 or 2) that shows where phase 2
begins. `MlflowRun` adds what a run of transferkit knows beyond Keras: the trainer's settings as
parameters, the phase boundary, and the finished run's metrics and files. ``mlflow.keras.autolog()``
instead logs each phase's ``fit`` as a run of its own (tested): use the callback.

    with MlflowRun(trainer, run_name="pets") as tracking:
        result = trainer.fit(data, callbacks=tracking.callbacks)
        tracking.finish(result)
"""

from __future__ import annotations

import json
import re

__all__ = ["MlflowRun", "flat_params"]

_NOT_IN_A_NAME = re.compile(r"[^\w\-. /]")  # what MLflow refuses in a metric's name
_LONGEST = 6000  # characters in a parameter's value (MLflow's limit since 2.x)
MISSING = "MLflow is not installed: pip install 'transferkit[mlflow]' (or mlflow itself)."


def _mlflow():
    try:
        import mlflow
        import mlflow.keras
    except ImportError:
        raise ImportError(MISSING) from None
    return mlflow


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    """``config`` as MLflow parameters: nested dicts as dotted names, other values as text (cut at
    MLflow's 6,000 characters).

    >>> flat_params({"learning_rate": 0.001, "head": {"dropout": 0.2}, "image_size": None})
    {'learning_rate': '0.001', 'head.dropout': '0.2', 'image_size': 'None'}
    """
    params = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            params.update(flat_params(value, f"{prefix}{key}."))
        else:
            text = json.dumps(value, default=str) if isinstance(value, (list, tuple, dict)) else str(value)
            params[f"{prefix}{key}"] = text if len(text) <= _LONGEST else text[: _LONGEST - 3] + "..."
    return params


class MlflowRun:
    """An MLflow run around ``trainer.fit``: the active run, or one it starts (and ends) with
    ``run_name``, in the tracking store MLflow is set to (``MLFLOW_TRACKING_URI``, ``mlflow.set_tracking_uri``).

    On entering it logs ``trainer.get_config()`` as parameters; ``callbacks`` holds MLflow's Keras
    callback, to pass to ``fit``; `finish` logs the phase boundary (``phase_2_first_epoch``, the step of
    phase 2's first epoch), ``metrics`` (numbers only, such as `transferkit.evaluation.run.save_run`'s)
    and ``files`` as artifacts.
    """

    def __init__(self, trainer, run_name: str | None = None):
        self.mlflow = _mlflow()
        self.trainer, self.run_name = trainer, run_name
        self.callbacks = [self.mlflow.keras.MlflowCallback()]
        self._started = False
        self.run_id: str | None = None

    def __enter__(self) -> "MlflowRun":
        run = self.mlflow.active_run()
        if run is None:
            run = self.mlflow.start_run(run_name=self.run_name)
            self._started = True
        self.run_id = run.info.run_id
        self.mlflow.log_params(flat_params(self.trainer.get_config()))
        return self

    def finish(self, result, metrics: dict | None = None, files=()) -> None:
        """Log what the finished ``result`` (a `TwoPhaseResult`) and the run's evaluation say."""
        self.mlflow.flush_async_logging()  # the callback's epoch metrics first
        self.mlflow.log_param("phase_2_first_epoch", result.phase_boundary)
        numbers = {name: float(value) for name, value in _numbers(metrics or {}).items()}
        if numbers:
            self.mlflow.log_metrics(numbers, step=len(result.history.get("loss", [])))
        for path in files:
            self.mlflow.log_artifact(str(path))

    def __exit__(self, kind, error, traceback) -> None:
        self.mlflow.flush_async_logging()
        if self._started:
            self.mlflow.end_run(status="FINISHED" if kind is None else "FAILED")


def _numbers(metrics: dict, prefix: str = "") -> dict:
    """The numbers of a nested metrics dict, under dotted names (lists and text left out)."""
    numbers = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            numbers.update(_numbers(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
            numbers[_NOT_IN_A_NAME.sub("_", f"{prefix}{key}")] = value
    return numbers
