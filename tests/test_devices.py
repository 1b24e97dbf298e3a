"""Several devices of one machine, on the CPU: TensorFlow split into two logical devices under
MirroredStrategy, and JAX with two host devices under DataParallel. The same run on one device and on
two, same global batch (an uneven last batch included), ends with the same weights on both paths, and
the work was really shared: each device was given half of every batch, the halves together being the
one-device run's batch, and the trained variables are held on both devices (tests/work_probe.py).
Each run is a process of its own (marked `devices`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.devices
HERE = Path(__file__).parent


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_two_devices_train_to_the_one_device_weights(backend, tmp_path):
    if backend == "jax":
        pytest.importorskip("jax", reason="JAX is not installed (pip install 'transferkit[jax]')")
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    run = subprocess.run([sys.executable, str(HERE / "devices_run.py"), str(tmp_path)], capture_output=True,
                         text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend
    for path in ("cached", "exact"):
        seen = report[path]
        assert seen["replicas"] == 2, seen
        # summation order across devices differs; anything beyond float32 rounding would be a real difference
        assert seen["largest_weight_difference"] < 1e-5 * max(1.0, seen["largest_weight"]), seen
        assert seen["val_accuracy"][0] == seen["val_accuracy"][1], seen
        assert seen["prediction_shapes"][0] == seen["prediction_shapes"][1], seen  # the model predicts as usual
        assert seen["largest_prediction_difference"] < 1e-4, seen
        (assert_steps_shared if backend == "tensorflow" else assert_batches_sharded)(*seen["work"])
        assert seen["variable_devices"] == [[1], [2]], seen["variable_devices"]  # mirrored / replicated


def _steps(records: list) -> list[dict]:
    """TensorFlow's per-replica step lines, grouped by step in the order they ran: {replica: (size, sums)}."""
    steps: dict[str, dict] = {}
    for key, replica, size, sums in records:
        assert replica not in steps.setdefault(key, {}), (key, replica)  # one line per replica and step
        steps[key][replica] = (size, sums)
    return list(steps.values())


def assert_steps_shared(one_device: list, two_devices: list) -> None:
    """Every training step ran on both replicas, each on half the batch, the halves making up the batch
    that the one-device run trained on at that step."""
    alone, shared = _steps(one_device), _steps(two_devices)
    assert len(alone) == len(shared) > 0
    for whole, halves in zip(alone, shared):
        assert set(whole) == {0} and set(halves) == {0, 1}, (whole.keys(), halves.keys())
        (size, sums), (size0, sums0), (size1, sums1) = whole[0], halves[0], halves[1]
        assert size0 == size1 == size // 2 and size % 2 == 0, (size, size0, size1)
        np.testing.assert_allclose(sorted(sums0 + sums1), sorted(sums), rtol=1e-6)


def assert_batches_sharded(one_device: list, two_devices: list) -> None:
    """Every batch was split over the two devices, one half each, the halves making up the batch."""
    assert one_device == [] and len(two_devices) > 0  # no distribution, nothing handed to one
    for record in two_devices:
        shards = record["shards"]
        assert [s["device"] for s in shards] == [0, 1], shards
        assert [s["size"] for s in shards] == [record["global_size"] // 2] * 2 == [len(record["local"]) // 2] * 2
        np.testing.assert_allclose(shards[0]["sums"] + shards[1]["sums"], record["local"], rtol=1e-6)


def test_a_distribution_that_does_not_fit_the_backend_is_refused():
    from conftest import tiny_trainer

    class Mesh:
        device_mesh = distribute_dataset = scope = None

    with pytest.raises(ValueError, match="needs the JAX backend"):
        tiny_trainer(distribution=Mesh())
    with pytest.raises(TypeError, match="tf.distribute strategy"):
        tiny_trainer(distribution="two GPUs")


def test_train_command_on_two_devices(tiny_data, tmp_path):
    script = HERE / "cli_with_test_cnn.py"
    run = subprocess.run([sys.executable, str(script), "train", str(tiny_data.root), "--backbone", "test_cnn",
                          "--weights", "none", "--image-size", "32", "--epochs", "1", "--fine-tune-epochs", "1",
                          "--unfreeze-from", "block2", "--devices", "2", "--output", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Training on 2 logical CPU devices" in run.stdout
    assert (tmp_path / "run" / "report.html").exists()
    bad = subprocess.run([sys.executable, str(script), "train", str(tiny_data.root), "--devices", "0"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--devices" in bad.stderr
