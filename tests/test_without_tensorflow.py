"""The tier that runs where TensorFlow is not installed (``make test-without-tensorflow`` builds such an
environment with JAX, and PyTorch where its CPU wheel is at hand): transferkit chooses a backend that is
there, every command but the TensorFlow exports works, and those say what to install. Where TensorFlow
is installed these tests skip, saying so; the backends tier (``-m backends``) runs beside them there."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_tree

pytestmark = [pytest.mark.without_tensorflow, pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is not None,
    reason="TensorFlow is installed here: make test-without-tensorflow runs this tier in an environment without it")]
HERE = Path(__file__).parent


def run(*argv, backend=None, env=None, check=True):
    environment = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(HERE.parent), **(env or {})}
    environment.pop("KERAS_BACKEND", None)
    if backend:
        environment["KERAS_BACKEND"] = backend
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=600, env=environment)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_tensorflow_is_absent_and_a_backend_that_is_here_is_chosen(tmp_path):
    with pytest.raises(ImportError):
        import tensorflow  # noqa: F401
    keras_home = tmp_path / "keras-home"
    keras_home.mkdir()
    (keras_home / "keras.json").write_text(json.dumps({"backend": "tensorflow"}))  # as Keras writes it by default
    done = run("-c", "import transferkit, keras; print(keras.backend.backend())", env={"KERAS_HOME": str(keras_home)})
    assert done.stdout.strip() == "jax"
    done = run("-c", "import transferkit, keras; print(keras.backend.backend())", backend="torch") \
        if importlib.util.find_spec("torch") else None
    assert done is None or done.stdout.strip() == "torch"


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_commands_work_and_the_tensorflow_exports_say_what_to_install(tmp_path, backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed in this environment")
    root = make_tree(tmp_path / "pets", {"cats": 10, "dogs": 10})
    cli = str(HERE / "cli_with_test_cnn.py")
    out = tmp_path / "run"
    trained = run(cli, "train", str(root), "--output", str(out), "--backbone", "test_cnn", "--weights", "none",
                  "--unfreeze-from", "block2", "--image-size", "32", "--batch-size", "4", "--epochs", "2",
                  "--fine-tune-epochs", "1", "--seed", "3", "--split", "0.6,0.2,0.2", "--json", backend=backend)
    assert json.loads(trained.stdout)
    assert (out / "model.keras").exists() and (out / "report.html").exists()
    predicted = run(cli, "predict", str(out), str(root / "cats"), "--json", backend=backend)
    lines = [json.loads(line) for line in predicted.stdout.splitlines() if line.strip()]
    assert len(lines) == 10 and all(line["class"] in ("cats", "dogs") for line in lines)
    evaluated = run(cli, "evaluate", str(out), str(root), "--json", backend=backend)
    assert 0.0 <= json.loads(evaluated.stdout)["accuracy"] <= 1.0
    exported = run(cli, "export", str(out), "--format", "keras", "--output", str(tmp_path / "copy.keras"),
                   backend=backend)
    assert (tmp_path / "copy.keras").exists(), exported.stderr
    refused = run(cli, "export", str(out), "--format", "tflite", "--output", str(tmp_path / "model.tflite"),
                  backend=backend, check=False)
    assert refused.returncode != 0 and not (tmp_path / "model.tflite").exists()
    message = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(message) == 1 and "TensorFlow" in message[0] and "transferkit[tensorflow]" in message[0], message


def test_the_gpu_benchmark_runs_on_a_tiny_kit(tmp_path):
    """benchmarks/gpu.py as it runs on the GPU machine (no TensorFlow), on the CPU with a tiny kit: every
    recipe's row has its phases' times, images/s and both accuracies."""
    source = tmp_path / "photos"
    for split in ("train", "validation"):
        make_tree(source / split, {"cats": 6, "dogs": 6}, ext=".jpg", size=(60, 48))
    web = make_tree(tmp_path / "web", {"cats": 4, "dogs": 4}, ext=".jpg")
    script = str(HERE.parent / "benchmarks" / "gpu.py")
    kit = tmp_path / "kit"
    made = run(script, "make-kit", "--out", str(kit), "--data", str(source), "--web", str(web), "--weights", "",
               "--size", "40", "--no-wheels")
    assert "32 photos at 40 px" in made.stdout
    assert len(list((kit / "data" / "train" / "cats").glob("*.jpg"))) == 6
    done = run(script, "run", "--kit", str(kit), "--weights", "none", "--image-size", "32", "--epochs", "1",
               "--fine-tune-epochs", "1", "--runs", "default", "exact", backend="jax")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [r["name"] for r in rows] == ["default (jax)", "exact (jax)"], done.stdout
    for row in rows:
        assert row["backend"] == "jax" and all(s > 0 for s in row["phase_seconds"]), row
        assert 0 <= row["val_accuracy"] <= 1 and 0 <= row["web_accuracy"] <= 1, row
    assert "| default (jax) | cpu |" in done.stdout and "| exact (jax) | cpu |" in done.stdout
