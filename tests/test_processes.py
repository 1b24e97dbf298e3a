"""Several processes train one model (JAX, ``jax.distributed`` through ``keras.distribution``): two
processes on 127.0.0.1 against a one-process run with the same global batch, through the Python API
and through ``transferkit train``: the same weights, and each process given only its half of every
global batch, the halves making up the one-process run's batch (tests/work_probe.py). Each process is a real OS process; all are killed if a test ends
early, and every wait is bounded (marked `processes`)."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import work_probe

pytestmark = pytest.mark.processes
HERE = Path(__file__).parent
LIMIT_S = 420


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environment(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERAS_DISTRIBUTION_")}
    return {**env, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
            "XLA_FLAGS": "", **extra}


def _run_together(commands: list[tuple[list[str], dict]], tmp_path) -> list[str]:
    """Start every command at once, wait for all (bounded), and kill the whole lot if any fails or hangs."""
    logs = [tmp_path / f"process-{i}.log" for i in range(len(commands))]
    running = [subprocess.Popen(argv, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                start_new_session=True) for (argv, env), log in zip(commands, logs)]
    try:
        for process in running:
            process.wait(timeout=LIMIT_S)
    finally:
        for process in running:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    outputs = [log.read_text() for log in logs]
    for process, output in zip(running, outputs):
        assert process.returncode == 0, output[-4000:]
    return outputs


def test_two_processes_train_to_the_one_process_weights(tmp_path):
    pytest.importorskip("jax", reason="JAX is not installed (pip install 'transferkit[jax]')")
    script = [sys.executable, str(HERE / "processes_run.py"), str(tmp_path)]
    address = f"127.0.0.1:{_free_port()}"
    _run_together([(script + [address, "1", "0"], _environment())], tmp_path)
    _run_together([(script + [address, "2", str(i)], _environment()) for i in range(2)], tmp_path)
    alone, first, second = (np.load(tmp_path / name) for name in
                            ("process-0-of-1.npz", "process-0-of-2.npz", "process-1-of-2.npz"))
    assert [(int(r["replicas"]), int(r["processes"]), int(r["process_index"])) for r in (alone, first, second)] == \
        [(1, 1, 0), (2, 2, 0), (2, 2, 1)]
    for path in ("cached", "exact"):
        names = [k for k in alone.files if k.startswith(f"{path}/weight")]
        assert len(names) > 4
        # the two processes hold one model: the same weights, to the bit
        assert all(np.array_equal(first[k], second[k]) for k in names), path
        # against one process: the same arithmetic, only summed in another order across the devices
        largest = max(float(np.abs(alone[k]).max()) for k in names)
        difference = max(float(np.abs(first[k] - alone[k]).max()) for k in names)
        assert difference < 1e-5 * max(1.0, largest), (path, difference)
        np.testing.assert_array_equal(first[f"{path}/val_accuracy"], alone[f"{path}/val_accuracy"])
        np.testing.assert_allclose(first[f"{path}/predictions"], alone[f"{path}/predictions"], atol=1e-4)
        assert_each_process_given_its_half(*(work_probe.read(tmp_path / f"work-{path}-{name}.jsonl")
                                             for name in ("0-of-1", "0-of-2", "1-of-2")))
        assert [list(r[f"{path}/variable_devices"]) for r in (alone, first, second)] == [[1], [2], [2]]


def assert_each_process_given_its_half(alone: list, first: list, second: list) -> None:
    """Every global batch of the two-process run was read half by each process, on its own device, and
    the two halves are the one-process run's batch."""
    assert len(alone) == len(first) == len(second) > 0
    for whole, half0, half1 in zip(alone, first, second):
        assert (half0["process"], half1["process"]) == (0, 1)
        size = whole["global_size"]
        assert half0["global_size"] == half1["global_size"] == size == len(whole["local"])
        assert len(half0["local"]) == len(half1["local"]) == size // 2 and size % 2 == 0, (size, half0, half1)
        assert [s["sums"] for s in half0["shards"]] == [half0["local"]]  # this process's device holds its half
        assert half0["shards"][0]["device"] != half1["shards"][0]["device"]
        np.testing.assert_allclose(sorted(half0["local"] + half1["local"]), sorted(whole["local"]), rtol=1e-6)


def test_train_command_in_two_processes_one_by_flags_one_by_environment(tiny_data, tmp_path):
    pytest.importorskip("jax", reason="JAX is not installed (pip install 'transferkit[jax]')")
    address = f"127.0.0.1:{_free_port()}"
    command = [sys.executable, str(HERE / "cli_with_test_cnn.py"), "train", str(tiny_data.root), "--backbone",
               "test_cnn", "--weights", "none", "--image-size", "32", "--batch-size", "2", "--epochs", "1",
               "--fine-tune-epochs", "1", "--unfreeze-from", "block2", "--output", str(tmp_path / "run")]
    by_flags = command + ["--coordinator", address, "--num-processes", "2", "--process-id", "0"]
    by_environment = _environment(KERAS_DISTRIBUTION_JOB_ADDRESSES=address, KERAS_DISTRIBUTION_NUM_PROCESSES="2",
                                  KERAS_DISTRIBUTION_PROCESS_ID="1")
    chief, other = _run_together([(by_flags, _environment()), (command, by_environment)], tmp_path)
    assert "of 2 processes; this is process 0" in chief and "of 2 processes; this is process 1" in other
    assert (tmp_path / "run" / "model.keras").exists() and (tmp_path / "run" / "report.html").exists()
    assert "Process 1 of 2: trained; process 0 writes the run" in other
    assert not (tmp_path / "run" / "checkpoint").exists()  # nothing to resume from: --resume is refused


def test_several_processes_are_refused_where_they_cannot_work(tiny_data):
    import keras

    from transferkit.training import distribute

    if keras.backend.backend() == "tensorflow":
        with pytest.raises(ValueError, match="need the JAX backend.*keras-team/keras#20585"):
            distribute.for_processes("127.0.0.1:1234", 2, 0)
    run = subprocess.run([sys.executable, "-m", "transferkit.cli", "train", str(tiny_data.root), "--num-processes", "2",
                          "--process-id", "0", "--coordinator", "nowhere"], capture_output=True, text=True,
                         timeout=120, env=_environment())
    assert run.returncode == 2 and "coordinator='nowhere': give HOST:PORT" in run.stderr, run.stderr
    run = subprocess.run([sys.executable, "-m", "transferkit.cli", "train", str(tiny_data.root), "--num-processes", "2",
                          "--coordinator", "127.0.0.1:1234"], capture_output=True, text=True, timeout=120,
                         env=_environment())
    assert run.returncode == 2 and "process_id (or KERAS_DISTRIBUTION_PROCESS_ID)" in run.stderr, run.stderr
    run = subprocess.run([sys.executable, "-m", "transferkit.cli", "train", str(tiny_data.root), "--num-processes", "2",
                          "--process-id", "0", "--coordinator", "127.0.0.1:1234", "--devices", "2"],
                         capture_output=True, text=True, timeout=120, env=_environment())
    assert run.returncode == 2 and "leave --devices out" in run.stderr, run.stderr
    run = subprocess.run([sys.executable, "-m", "transferkit.cli", "train", str(tiny_data.root), "--num-processes",
                          "2", "--process-id", "0", "--coordinator", "127.0.0.1:1234", "--resume"],
                         capture_output=True, text=True, timeout=120, env=_environment())
    assert run.returncode == 2 and "cannot be resumed yet" in run.stderr, run.stderr


def test_batches_that_do_not_split_over_the_processes():
    import tensorflow as tf

    from transferkit.training import distribute

    class TwoProcesses:  # what even_batches reads of a keras.distribution.DataParallel over two processes
        num_processes, device_mesh, distribute_dataset, scope = 2, None, None, None

    dataset = tf.data.Dataset.range(22).batch(8)
    assert [len(b) for b in distribute.even_batches(dataset, TwoProcesses(), 8)] == [8, 8]  # 6 left out
    assert distribute.even_batches(dataset, None, 8) is dataset
    with pytest.raises(ValueError, match="multiple of 2"):
        distribute.even_batches(tf.data.Dataset.range(21).batch(7), TwoProcesses(), 7)
