"""The JAX tier: the same library on Keras's JAX backend, in a process of its own (marked `jax`;
skipped, saying why, where JAX is not installed). PyTorch is not supported yet (see docs)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.jax
HERE = Path(__file__).parent


def test_training_prediction_gradcam_and_save_load_on_jax(tmp_path):
    pytest.importorskip("jax", reason="JAX is not installed (pip install 'transferkit[jax]')")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, str(HERE / "jax_run.py"), str(tmp_path / "data"), str(tmp_path)],
                         capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["backend"] == "jax"
    for name in ("cached", "exact"):
        seen = report[name]
        assert seen["history_epochs"] == 5 and seen["phase_boundary"] == 4, seen
        assert seen["train_accuracy"] > 0.75 and seen["test_accuracy"] >= 0.75, seen  # it learnt
        assert seen["reload_difference"] < 1e-5, seen  # .keras round trip
        assert seen["cam_shape"] == [4, 32, 32] and seen["cam_finite"] and seen["cam_max"] > 0.5, seen
        assert seen["probabilities_sum"] < 1e-5, seen
        assert seen["features_computed"] == (1 if name == "cached" else 0), seen  # the path it names
