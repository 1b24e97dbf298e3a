"""Checkpoints after every epoch, and resuming: in the right phase, without repeating epochs, and
ending exactly as an uninterrupted run would."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import REPO, Interrupt, make_tree, tiny_trainer
from transferkit import ImageFolder, load_model

CNN = dict(backbone="test_cnn", backbone_options={}, unfreeze_from="block2", learning_rate=2e-2)


class Epochs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append(epoch)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_tree(tmp_path_factory.mktemp("resume") / "pets", {"cats": 12, "dogs": 12})
    return ImageFolder(root, image_size=(32, 32), batch_size=4, split=(0.5, 0.5), seed=0)


@pytest.mark.parametrize("cache_features", [True, False])
@pytest.mark.parametrize("stop_at", [0, 2, 3])  # inside phase 1 (its optimizer state resumed too); at its end; phase 2
def test_a_resumed_run_ends_as_the_uninterrupted_one(data, tmp_path, cache_features, stop_at):
    settings = dict(**CNN, seed=5, cache_features=cache_features)
    whole = tiny_trainer(**settings)
    expected = whole.fit(data, epochs=3, fine_tune_epochs=2, verbose=0, checkpoint_dir=tmp_path / "whole")
    images = data.images("validation")

    with pytest.raises(KeyboardInterrupt):
        tiny_trainer(**settings).fit(data, epochs=3, fine_tune_epochs=2, verbose=0,
                                     callbacks=[Interrupt(stop_at)], checkpoint_dir=tmp_path / "ckpt")
    state = json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())
    assert state["epochs_done"] == stop_at + 1 and state["phase"] == (1 if stop_at < 3 else 2)

    epochs = Epochs()
    resumed = tiny_trainer(**settings)
    result = resumed.fit(data, epochs=3, fine_tune_epochs=2, verbose=0, callbacks=[epochs],
                         checkpoint_dir=tmp_path / "ckpt")
    assert epochs.seen == list(range(stop_at + 1, 5))  # no finished epoch runs again
    assert result.phase_boundary == 3
    np.testing.assert_allclose(resumed.predict(images), whole.predict(images), atol=1e-5)
    for key in ("loss", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(result.history[key], expected.history[key], rtol=1e-4, atol=1e-6)
    assert np.ptp(whole.predict(images)[:, 1]) > 0.05  # the model's outputs depend on its input


@pytest.mark.parametrize("crash_in", ["arrays", "state"])
def test_a_crash_while_a_checkpoint_is_written_resumes_from_the_one_before(data, tmp_path, monkeypatch, crash_in):
    """The third epoch's checkpoint dies half-written (in its arrays, or in its state file after the arrays):
    the second epoch's checkpoint is whole, and the resumed run ends as the uninterrupted one."""
    from transferkit.training import checkpoint

    settings = dict(**CNN, seed=5)
    whole = tiny_trainer(**settings)
    whole.fit(data, epochs=2, fine_tune_epochs=2, verbose=0)
    writes = {"count": 0}
    real_savez, real_write = checkpoint.np.savez, checkpoint.write_atomically

    class Crash(Exception):
        pass

    def savez(handle, **arrays):
        writes["count"] += 1
        if crash_in == "arrays" and writes["count"] == 3:
            handle.write(b"PK\x03\x04 half a zip")  # the bytes a killed process leaves behind
            raise Crash
        return real_savez(handle, **arrays)

    def write_atomically(path, text):
        if crash_in == "state" and writes["count"] == 3:
            with open(path.with_name(path.name + ".tmp-crash"), "w") as handle:
                handle.write(text[: len(text) // 2])
            raise Crash
        return real_write(path, text)

    monkeypatch.setattr(checkpoint.np, "savez", savez)
    monkeypatch.setattr(checkpoint, "write_atomically", write_atomically)
    with pytest.raises(Crash):
        tiny_trainer(**settings).fit(data, epochs=2, fine_tune_epochs=2, verbose=0, checkpoint_dir=tmp_path)
    monkeypatch.undo()
    assert json.loads((tmp_path / "checkpoint.json").read_text())["epochs_done"] == 2
    epochs = Epochs()
    resumed = tiny_trainer(**settings)
    resumed.fit(data, epochs=2, fine_tune_epochs=2, verbose=0, callbacks=[epochs], checkpoint_dir=tmp_path)
    assert epochs.seen == [2, 3]
    images = data.images("validation")
    np.testing.assert_allclose(resumed.predict(images), whole.predict(images), atol=1e-5)


def test_a_finished_run_is_not_trained_again(data, tmp_path):
    trainer = tiny_trainer(**CNN, seed=1)
    first = trainer.fit(data, epochs=1, fine_tune_epochs=1, verbose=0, checkpoint_dir=tmp_path)
    epochs = Epochs()
    again = tiny_trainer(**CNN, seed=1)
    second = again.fit(data, epochs=1, fine_tune_epochs=1, verbose=0, callbacks=[epochs], checkpoint_dir=tmp_path)
    assert epochs.seen == [] and second.history == first.history
    np.testing.assert_allclose(again.predict(data.images()), trainer.predict(data.images()), atol=1e-6)


def test_a_checkpoint_of_other_settings_or_data_is_refused(data, tmp_path):
    tiny_trainer(**CNN, seed=1).fit(data, epochs=1, fine_tune_epochs=1, verbose=0, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"learning_rate: 0.02 there, 0.01 now"):
        tiny_trainer(**{**CNN, "learning_rate": 1e-2}, seed=1).fit(data, epochs=1, fine_tune_epochs=1,
                                                                   verbose=0, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"fine_tune_epochs: 1 there, 2 now"):
        tiny_trainer(**CNN, seed=1).fit(data, epochs=1, fine_tune_epochs=2, verbose=0, checkpoint_dir=tmp_path)
    other = ImageFolder(data.root, image_size=(32, 32), batch_size=4, split=(0.5, 0.5), seed=1)
    with pytest.raises(ValueError, match=r"train image cats/cats_\d+.png: (added|gone)"):  # another split
        tiny_trainer(**CNN, seed=1).fit(other, epochs=1, fine_tune_epochs=1, verbose=0, checkpoint_dir=tmp_path)


def test_a_training_image_replaced_by_another_of_the_same_size_is_named(tmp_path):
    """Path and size alone would let this resume silently on other pixels: the checkpoint uses the
    same fingerprint as the caches (size and modification time) and names the file."""
    root = make_tree(tmp_path / "pets", {"cats": 6, "dogs": 6}, ext=".bmp")  # uncompressed: sizes equal
    data = ImageFolder(root, image_size=(32, 32), batch_size=4, split=(0.5, 0.5), seed=0)
    tiny_trainer(**CNN, seed=1).fit(data, epochs=1, fine_tune_epochs=1, verbose=0, checkpoint_dir=tmp_path / "ck")
    same = ImageFolder(root, image_size=(32, 32), batch_size=4, split=(0.5, 0.5), seed=0)
    tiny_trainer(**CNN, seed=1).fit(same, epochs=1, fine_tune_epochs=1, verbose=0,  # control: unchanged files resume
                                    checkpoint_dir=tmp_path / "ck")
    replaced = data.files("train")[0]
    other = next(p for p in data.files("train") if p.parent != replaced.parent)
    size = replaced.stat().st_size
    replaced.write_bytes(other.read_bytes())
    os.utime(replaced, ns=(replaced.stat().st_atime_ns, replaced.stat().st_mtime_ns + 10**9))
    assert replaced.stat().st_size == size
    again = ImageFolder(root, image_size=(32, 32), batch_size=4, split=(0.5, 0.5), seed=0)
    assert again.files("train") == data.files("train")  # the same file list: only the pixels differ
    name = replaced.relative_to(root).as_posix()
    with pytest.raises(ValueError, match=rf"train image {name}: changed \({size} bytes, modified at another time"):
        tiny_trainer(**CNN, seed=1).fit(again, epochs=1, fine_tune_epochs=1, verbose=0,
                                        checkpoint_dir=tmp_path / "ck")


# -- the command line, killed for real --------------------------------------------------------------


def _train(root, output, *extra):
    script = Path(__file__).with_name("cli_with_test_cnn.py")
    argv = [sys.executable, str(script), "train", str(root), "--output", str(output), "--backbone", "test_cnn",
            "--weights", "none", "--unfreeze-from", "block2", "--image-size", "32", "--batch-size", "4",
            "--epochs", "2", "--fine-tune-epochs", "40", "--learning-rate", "0.01", "--seed", "3",
            "--split", "0.6,0.2,0.2", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return argv, env


@pytest.mark.killresume
@pytest.mark.parametrize("exact", [False, True], ids=["fast", "exact"])
def test_sigkill_in_phase_two_then_resume(tmp_path, exact):
    root = make_tree(tmp_path / "pets", {"cats": 30, "dogs": 30})
    extra = ["--exact"] if exact else []
    argv, env = _train(root, tmp_path / "whole", *extra)
    subprocess.run(argv, env=env, check=True, capture_output=True, timeout=600)

    argv, env = _train(root, tmp_path / "killed", *extra)
    state_file = tmp_path / "killed" / "checkpoint" / "checkpoint.json"
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                state = json.loads(state_file.read_text())
            except (OSError, ValueError):
                state = {}
            if state.get("phase") == 2 and state.get("epochs_done", 0) >= 4:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed in phase 2"
    killed_at = json.loads(state_file.read_text())["epochs_done"]
    assert 4 <= killed_at < 42 and not (tmp_path / "killed" / "model.keras").exists()

    resumed = subprocess.run([*argv, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    epochs_run = [int(line.split()[1].split("/")[0]) for line in resumed.stdout.splitlines()
                  if line.startswith("Epoch ")]
    assert epochs_run and epochs_run[0] == killed_at + 1 and epochs_run[-1] == 42  # Keras counts from 1

    whole, again = load_model(tmp_path / "whole" / "model.keras"), load_model(tmp_path / "killed" / "model.keras")
    files = sorted((root / "cats").iterdir())[:10] + sorted((root / "dogs").iterdir())[:10]
    expected, got = whole.predict(files), again.predict(files)
    print(f"\n[{'exact' if exact else 'fast'}] killed after epoch {killed_at} of 42 (phase 2 from epoch 3); resumed "
          f"at epoch {epochs_run[0]}; largest probability difference {np.abs(got - expected).max():.2e}")
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert np.ptp(expected[:, 1]) > 0.05
