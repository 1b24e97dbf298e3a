"""The example `make demo` runs, run end to end in a small mode: a few generated images, random weights,
one epoch a phase at 32 px; it writes its run folder, and a second call finds the run finished."""

import json
import os
import subprocess
import sys

from conftest import REPO, make_tree


def test_the_cats_vs_dogs_example_trains_and_writes_its_run(tmp_path):
    root = make_tree(tmp_path / "pets", {"cats": 12, "dogs": 12})
    out = tmp_path / "run"
    command = [sys.executable, str(REPO / "examples" / "cats_vs_dogs.py"), "--data-dir", str(root), "--weights",
               "none", "--epochs", "1", "--fine-tune-epochs", "1", "--image-size", "32", "--batch-size", "4",
               "--output", str(out)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(figures) >= {"val_accuracy_phase1", "val_accuracy_phase2", "phase_seconds"}
    assert "Summary" in done.stdout and "frozen features computed once" in done.stdout
    for name in ("model.keras", "metrics.json", "report.html", "training_curves.png", "confusion_matrix.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val_accuracy_phase2"] == figures["val_accuracy_phase2"]
    assert metrics["run"]["epochs"] == 1 and metrics["run"]["fine_tune_epochs"] == 1
    again = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert again.returncode == 0 and "has finished all its epochs" in again.stdout


def test_the_example_trains_the_library_epochs_and_the_seed_recipe_its_own(monkeypatch):
    import importlib

    from transferkit.training.settings import EPOCHS, FINE_TUNE_EPOCHS, SEED_PROJECT_EPOCHS

    monkeypatch.syspath_prepend(str(REPO / "examples"))
    example = importlib.import_module("cats_vs_dogs")
    epochs = lambda *argv: (lambda a: (a.epochs, a.fine_tune_epochs))(example.parse_args(list(argv)))  # noqa: E731
    assert epochs() == (EPOCHS, FINE_TUNE_EPOCHS) == (10, 5)
    assert epochs("--seed-recipe") == SEED_PROJECT_EPOCHS == (10, 10)
    assert epochs("--seed-recipe", "--fine-tune-epochs", "3") == (10, 3) and epochs("--epochs", "0") == (0, 5)
