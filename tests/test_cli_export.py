import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from transferkit import load_model
from transferkit.cli import main
from transferkit.export import TFLiteClassifier, export

from conftest import make_tree


@pytest.fixture(scope="module")
def saved_model(trained, tmp_path_factory):
    trainer, _ = trained
    return trainer.save(tmp_path_factory.mktemp("model") / "model.keras")


def test_train_command_writes_a_complete_run(tmp_path, capsys):
    root = make_tree(tmp_path / "pets", {"cats": 10, "dogs": 10})
    out = tmp_path / "run"
    argv = ["train", str(root), "--output", str(out), "--weights", "none", "--image-size", "32",
            "--batch-size", "8", "--epochs", "1", "--fine-tune-epochs", "1", "--unfreeze-from", "block_16",
            "--backbone-option", "alpha=0.35", "--split", "0.6,0.2,0.2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Phase 1" in printed and "Phase 2" in printed and "test accuracy" in printed
    assert "Training on CPU" in printed or "Training on GPU" in printed
    for name in ("model.keras", "metrics.json", "training_curves.png", "confusion_matrix.png", "top_losses.png",
                 "predictions.png", "gradcam.png"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["evaluation"]["count"] == 4
    assert metrics["trainer"]["backbone_options"] == {"alpha": 0.35}
    assert load_model(out / "model.keras").class_names == ["cats", "dogs"]
    assert main(argv) == 1  # a second run refuses to overwrite the first
    assert "--overwrite" in capsys.readouterr().err


def test_evaluate_uses_the_split_the_model_was_trained_with(tmp_path, capsys):
    root = make_tree(tmp_path / "pets", {"cats": 20, "dogs": 20})
    out = tmp_path / "run"
    assert main(["train", str(root), "--output", str(out), "--weights", "none", "--image-size", "32",
                 "--batch-size", "8", "--epochs", "1", "--fine-tune-epochs", "0", "--backbone-option", "alpha=0.35",
                 "--split", "0.7,0.15,0.15", "--seed", "5"]) == 0
    capsys.readouterr()
    model = load_model(out / "model.keras")
    recorded = model.split["files"]["test"]
    assert len(recorded) == 6 and model.split["fractions"] == [0.7, 0.15, 0.15]
    make_tree(tmp_path / "more", {"cats": 3})  # files added later are not in the run's test split
    for f in (tmp_path / "more" / "cats").iterdir():
        f.rename(root / "cats" / f"later_{f.name}")
    assert main(["evaluate", str(out / "model.keras"), str(root), "--split", "test", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["count"] == 6
    assert sorted(Path(t["file"]).relative_to(root).as_posix() for t in summary["top_losses"]) == sorted(recorded)
    (root / recorded[0]).unlink()
    assert main(["evaluate", str(out / "model.keras"), str(root), "--split", "test"]) == 1
    assert "no longer match" in capsys.readouterr().err


def test_evaluate_command(saved_model, tiny_data, tmp_path, capsys):
    assert main(["evaluate", str(saved_model), str(tiny_data.root), "--json", "--output", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    from transferkit.evaluation.metrics import evaluate

    expected = evaluate(load_model(saved_model), tiny_data, split="all")
    assert summary["count"] == 32 and summary["accuracy"] == pytest.approx(expected.accuracy)
    assert summary["accuracy"] > 0.9  # the colours are learnt: the number is not a placeholder
    assert (tmp_path / "confusion_matrix.png").exists() and (tmp_path / "metrics.json").exists()
    assert main(["evaluate", str(saved_model), str(tiny_data.root), "--split", "test"]) == 0
    assert "precision" in capsys.readouterr().out


def test_predict_command_table_json_and_bad_files(saved_model, tiny_data, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really")
    good = tiny_data.files("test")[:2]
    code = main(["predict", str(saved_model), str(good[0]), str(good[1]), str(bad)])
    out = capsys.readouterr().out
    assert code == 1  # one file failed, the others were still classified
    assert "broken.jpg  error:" in out.replace("  ", "  ") and out.count("cats") + out.count("dogs") >= 2
    assert main(["predict", str(saved_model), str(tiny_data.root / "cats"), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 16 and all(set(r["probabilities"]) == {"cats", "dogs"} for r in rows)
    assert main(["predict", str(saved_model), str(good[0]), "--json", "--tta"]) == 0
    row = json.loads(capsys.readouterr().out)
    model = load_model(saved_model)
    expected = model.predict([good[0]], tta=True)[0]
    assert row["probabilities"]["dogs"] == pytest.approx(float(expected[1]), abs=1e-6)
    expected = load_model(saved_model).predict([rows[0]["file"]])[0]
    assert rows[0]["probabilities"]["dogs"] == pytest.approx(float(expected[1]), abs=1e-6)


def test_predict_prints_each_batch_as_it_goes(saved_model, tiny_data, capsys, monkeypatch):
    from transferkit.models.classifier import Classifier

    printed_before_each_batch, lines = [], []
    real = Classifier.predict

    def predict(self, *args, **kwargs):
        lines.extend(capsys.readouterr().out.splitlines())
        printed_before_each_batch.append(len(lines))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Classifier, "predict", predict)
    assert main(["predict", str(saved_model), str(tiny_data.root / "cats"), "--json", "--batch-size", "4"]) == 0
    lines.extend(capsys.readouterr().out.splitlines())
    assert printed_before_each_batch == [0, 4, 8, 12] and len(lines) == 16


def test_backbones_command(capsys):
    assert main(["backbones"]) == 0
    out = capsys.readouterr().out
    assert "mobilenet_v2" in out and "efficientnet_b0" in out and "224x224" in out
    assert main(["backbones", "--json"]) == 0
    listed = {b["name"]: b for b in json.loads(capsys.readouterr().out)}
    assert listed["mobilenet_v2"]["default_unfreeze"] == "block_13" and listed["mobilenet_v2"]["preprocessing"]


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "export", "backbones", "tune", "audit"])
def test_every_command_explains_its_options(command):
    out = subprocess.run([sys.executable, "-m", "transferkit.cli", command, "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "usage: transferkit" in out
    if command == "train":
        assert "(default: 10)" in out and "--unfreeze-from" in out and "(default: auto)" in out


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "none.keras"), str(tmp_path)]) == 1  # a failure
    err = capsys.readouterr().err
    assert "Model file not found" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert main(["predict", str(tmp_path / "none.keras"), str(tmp_path), "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "Model file not found" in err.strip().splitlines()[-1]


def test_usage_errors_exit_2_and_help_loads_no_tensorflow(tmp_path, capsys):
    import subprocess
    import sys

    assert main(["tune", str(tmp_path), "--backbone", "nope"]) == 2  # found before looking at any image
    assert "--backbone 'nope' is not registered; choose one of: " in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["train"])  # argparse: DATA_DIR missing
    assert exit_.value.code == 2
    probe = ("import sys; from transferkit.cli import build_parser; import transferkit\n"
             "try:\n    build_parser().parse_args(['--help'])\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in ('tensorflow', 'keras', 'keras_tuner') if m in sys.modules))")
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert shown.stdout.strip().splitlines()[-1] == "[]", shown.stdout + shown.stderr
    version = subprocess.run([sys.executable, "-m", "transferkit.cli", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("transferkit ")


def test_tensorflow_start_up_lines_are_hidden_unless_verbose():
    import subprocess
    import sys

    quiet = subprocess.run([sys.executable, "-m", "transferkit.cli", "backbones"], capture_output=True, text=True,
                           timeout=120, env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert quiet.returncode == 0 and "mobilenet_v2" in quiet.stdout
    assert "oneDNN" not in quiet.stderr and "absl" not in quiet.stderr, quiet.stderr


def test_export_keras_and_savedmodel(saved_model, tiny_data, tmp_path):
    import tensorflow as tf

    classifier = load_model(saved_model)
    images = tiny_data.images("test").astype("float32")
    expected = classifier.predict(images)
    keras_path = export(classifier, tmp_path / "copy.keras", format="keras")
    np.testing.assert_allclose(load_model(keras_path).predict(images), expected, atol=1e-6)
    folder = export(classifier, tmp_path / "sm", format="savedmodel")
    assert (folder / "labels.txt").read_text().split() == ["cats", "dogs"]
    assert json.loads((folder / "transferkit.json").read_text())["image_size"] == [32, 32]
    reloaded = tf.saved_model.load(str(folder))  # keep a reference: its variables live on it
    served = reloaded.serve(tf.constant(images))
    np.testing.assert_allclose(np.asarray(served), expected, atol=1e-5)
    with pytest.raises(FileExistsError):
        export(classifier, folder, format="savedmodel")


# Stated tolerances: float32 TFLite matches Keras to 1e-4; float16 weights to 0.02; int8 to 0.1
# in probability, with the same predicted class wherever Keras's margin exceeds the tolerance.
@pytest.mark.parametrize("quantize, tolerance", [(None, 1e-4), ("float16", 0.02), ("int8", 0.1)])
def test_tflite_agrees_with_keras(saved_model, tiny_data, tmp_path, quantize, tolerance):
    classifier = load_model(saved_model)
    images = tiny_data.images("test")  # raw uint8 pixels
    expected = classifier.predict(images)
    path = export(classifier, tmp_path / "m.tflite", format="tflite", quantize=quantize,
                  representative_images=tiny_data.images("train"))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        lite = TFLiteClassifier(path)
    # TensorFlow's "tf.lite.Interpreter is deprecated" is not the user's business (found by the mutation sample)
    assert not [w for w in seen if "deprecated" in str(w.message)], [str(w.message) for w in seen]
    assert lite.class_names == ["cats", "dogs"] and lite.image_size == (32, 32)
    got = lite.predict(images)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=tolerance)
    sure = expected.max(axis=1) > 0.5 + tolerance
    assert sure.sum() >= len(images) // 2
    assert (got.argmax(1)[sure] == expected.argmax(1)[sure]).all()
    np.testing.assert_allclose(lite.predict(tiny_data.files("test")), got, atol=1e-6)  # files read as training did
    assert lite.predict_classes(images[:3]) == [lite.class_names[i] for i in got[:3].argmax(1)]


def test_quantized_tflite_files_hold_the_types_they_name_at_their_size(tmp_path):
    """float16 stores the weights as float16 (about half the float32 file), int8 as int8 (about a quarter);
    a float32 file passed off as either fails here, whatever its accuracy. A model with 38,000 weights,
    so that they, not the file's fixed parts, make its size."""
    import keras

    from transferkit import ClassProbabilities, Classifier
    from transferkit.export.runtimes import _interpreter_class

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(64, 3, activation="relu")(keras.layers.Rescaling(1 / 255)(inputs))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(64, 3, activation="relu")(x))
    classifier = Classifier(keras.Model(inputs, ClassProbabilities(["a", "b"], (16, 16))(keras.layers.Dense(1)(x))))
    images = np.random.default_rng(0).integers(0, 256, (32, 16, 16, 3)).astype(np.uint8)
    sizes, weight_types = {}, {}
    for quantize in (None, "float16", "int8"):
        path = export(classifier, tmp_path / f"m_{quantize}.tflite", format="tflite", quantize=quantize,
                      representative_images=images)
        sizes[quantize] = path.stat().st_size
        interpreter = _interpreter_class()(model_path=str(path))
        kernels = [t for t in interpreter.get_tensor_details() if np.prod(t["shape"]) >= 1728]  # the conv kernels
        weight_types[quantize] = {np.dtype(t["dtype"]).name for t in kernels}
    assert "float16" not in weight_types[None] and "int8" not in weight_types[None]
    assert "float16" in weight_types["float16"] and "int8" in weight_types["int8"]
    assert 0.4 < sizes["float16"] / sizes[None] < 0.6
    assert 0.2 < sizes["int8"] / sizes[None] < 0.35


def test_export_command_int8_needs_data(saved_model, tiny_data, tmp_path, capsys):
    assert main(["export", str(saved_model), "--format", "tflite", "--quantize", "int8"]) == 2
    assert "--data-dir" in capsys.readouterr().err
    out = tmp_path / "q.tflite"
    assert main(["export", str(saved_model), "--quantize", "int8", "--data-dir", str(tiny_data.root),
                 "--output", str(out)]) == 0
    assert out.exists() and (tmp_path / "q.labels.txt").exists()
    assert main(["predict", str(out), str(tiny_data.files("test")[0])]) == 0
