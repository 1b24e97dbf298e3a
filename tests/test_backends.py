"""The other backends' tier: the same library on Keras's JAX and PyTorch backends, each in a process of
its own (marked `backends`; skipped, saying why, where the backend's package is not installed): both
training paths, a resume inside phase 1, predict, evaluate, Grad-CAM, the .keras round trip and a search.
CI runs it twice: beside TensorFlow (`make test-slow`, JAX from the dev extra) and in an environment
without TensorFlow (`make test-without-tensorflow`, JAX and PyTorch's CPU wheel)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.backends
HERE = Path(__file__).parent


@pytest.mark.parametrize("backend, package", [("jax", "jax"), ("torch", "torch")])
def test_training_prediction_gradcam_and_save_load(backend, package, tmp_path):
    pytest.importorskip(package, reason=f"{package} is not installed: the {backend} backend cannot be tested here")
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, str(HERE / "backend_run.py"), str(tmp_path / "data"), str(tmp_path)],
                         capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend
    for name in ("cached", "exact"):
        seen = report[name]
        assert seen["history_epochs"] == 5 and seen["phase_boundary"] == 4, seen
        assert seen["last_loss"] < 0.9 * seen["first_loss"] and seen["test_accuracy"] >= 0.75, seen  # it learnt
        assert seen["reload_difference"] < 1e-5, seen  # .keras round trip
        assert seen["cam_shape"] == [4, 32, 32] and seen["cam_finite"] and seen["cam_max"] > 0.5, seen
        assert seen["probabilities_sum"] < 1e-5, seen
        assert seen["features_computed"] == (1 if name == "cached" else 0), seen  # the path it names
    assert report["resume_difference"] < 1e-5 < report["resume_spread"], report  # resumed inside phase 1
    assert report["search_trials"] == 2 and report["search_best_loads"], report
    if report["tflite_difference"] is not None:  # exported through a TensorFlow process, not a raw converter error
        assert report["tflite_difference"] < 1e-4, report
