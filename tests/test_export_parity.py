"""Exports that prove themselves: labels inside the .tflite file (read back by MediaPipe), full-integer
int8, and the parity check of an export against its Keras model."""

import json

import numpy as np
import pytest

from transferkit import load_model
from transferkit.cli import main
from transferkit.export import TFLiteClassifier, export
from transferkit.export.parity import PARITY_SUFFIX, Parity, check_parity, parity_table
from transferkit.export.tflite_metadata import read_packed_files


@pytest.fixture(scope="module")
def classifier(trained, tmp_path_factory):
    trainer, _ = trained
    return load_model(trainer.save(tmp_path_factory.mktemp("model") / "model.keras"))


def _mediapipe_scores(path, images):
    """MediaPipe's image classifier on ``path``: it must find the class names inside the file."""
    vision = pytest.importorskip("mediapipe.tasks.python.vision",
                                 reason="MediaPipe is not installed (pip install 'transferkit[export]')")
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)), max_results=5)
    rows = []
    with vision.ImageClassifier.create_from_options(options) as mediapipe_classifier:
        for image in images:
            result = mediapipe_classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB,
                                                            data=np.ascontiguousarray(image, dtype=np.uint8)))
            rows.append({c.category_name: c.score for c in result.classifications[0].categories})
    return rows


@pytest.mark.parametrize("quantize, integer_io, tolerance", [(None, None, 1e-4), ("int8", "uint8", 0.05)])
def test_mediapipe_reads_the_labels_inside_the_tflite_file(classifier, tiny_data, tmp_path, quantize, integer_io,
                                                          tolerance):
    path = export(classifier, tmp_path / "m.tflite", format="tflite", quantize=quantize, integer_io=integer_io,
                  representative_images=tiny_data.images("train"))
    packed = read_packed_files(path)
    assert packed["labels.txt"].decode().split() == ["cats", "dogs"]
    images = tiny_data.images("test")[:6]
    ours = TFLiteClassifier(path).predict(images)
    rows = _mediapipe_scores(path, images)
    assert [sorted(row) for row in rows] == [["cats", "dogs"]] * len(images)  # names, not indices
    mediapipe = np.array([[row["cats"], row["dogs"]] for row in rows])
    np.testing.assert_allclose(mediapipe, ours, atol=tolerance)
    assert np.ptp(mediapipe[:, 0]) > 0.01  # the scores depend on the image (a broken input would not)


def test_mediapipe_gives_our_scores_on_our_pixels_not_on_a_full_size_photo(classifier, tmp_path):
    """MediaPipe shrinks a large photo its own way; given the pixels transferkit resized, it scores as
    transferkit does (docs/howto/export-edge.md says so and shows how)."""
    from PIL import Image

    from transferkit.data.images import read_image

    path = export(classifier, tmp_path / "m.tflite", format="tflite")
    rng = np.random.default_rng(0)
    files = []
    for i in range(6):  # photos ten times the model's input, with fine detail: how they shrink matters
        coarse = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        photo = np.asarray(Image.fromarray(coarse).resize((320, 240), Image.Resampling.NEAREST), dtype=np.int16)
        photo = np.clip(photo + rng.integers(-60, 61, photo.shape), 0, 255).astype(np.uint8)
        files.append(tmp_path / f"photo{i}.png")
        Image.fromarray(photo).save(files[-1])
    ours = TFLiteClassifier(path).predict(files)
    pixels = [read_image(f, classifier.image_size) for f in files]
    full_size = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    on_our_pixels, on_photos = (np.array([[r["cats"], r["dogs"]] for r in _mediapipe_scores(path, images)])
                                for images in (pixels, full_size))
    np.testing.assert_allclose(on_our_pixels, ours, atol=1e-4)
    assert np.abs(on_photos - ours).max() > 1e-3  # the difference users see is the resize


def test_class_names_come_from_inside_the_file(classifier, tmp_path):
    path = export(classifier, tmp_path / "m.tflite", format="tflite")
    for sidecar in ("m.labels.txt", "m.transferkit.json"):
        (tmp_path / sidecar).unlink()
    assert TFLiteClassifier(path).class_names == ["cats", "dogs"]
    bare = export(classifier, tmp_path / "bare.tflite", format="tflite", metadata=False)
    assert read_packed_files(bare) == {}
    (tmp_path / "bare.transferkit.json").unlink()
    with pytest.raises(FileNotFoundError, match="bare.transferkit.json"):
        TFLiteClassifier(bare)


def test_full_integer_int8_takes_and_returns_integers(classifier, tiny_data, tmp_path):
    path = export(classifier, tmp_path / "q.tflite", format="tflite", quantize="int8", integer_io="int8",
                  representative_images=tiny_data.images("train"))
    lite = TFLiteClassifier(path)
    details = lite.interpreter.get_input_details()[0], lite.interpreter.get_output_details()[0]
    assert [np.dtype(d["dtype"]).name for d in details] == ["int8", "int8"]
    assert lite.integer_io == "int8"
    images = tiny_data.images("test")
    np.testing.assert_allclose(lite.predict(images), classifier.predict(images), atol=0.05)
    with pytest.raises(ValueError, match="quantize='int8'"):
        export(classifier, tmp_path / "x.tflite", format="tflite", quantize="float16", integer_io="uint8")


def test_parity_agrees_with_itself_and_catches_a_different_model(classifier, tiny_data, trained, tmp_path):
    import keras

    path = export(classifier, tmp_path / "m.tflite", format="tflite")
    same = check_parity(classifier, path, tiny_data, split="validation", verbose=0)
    assert same.agreement == 1.0 and same.max_probability_difference < 1e-4
    assert same.exported_accuracy == same.keras_accuracy and len(same.labels) == len(tiny_data.files("validation"))
    assert same.format == "tflite" and same.quantize is None

    broken = keras.models.clone_model(classifier.model)  # same classes, untrained weights: must not pass
    from transferkit import Classifier

    broken_path = export(Classifier(broken), tmp_path / "broken.tflite", format="tflite")
    differs = check_parity(classifier, broken_path, tiny_data, split="validation", verbose=0)
    assert differs.max_probability_difference > 0.05
    assert "| tflite |" in parity_table([same.to_dict(), differs.to_dict()])


def test_parity_arithmetic():
    labels = np.array([0, 1, 1, 0])
    keras_probs = np.array([[.9, .1], [.2, .8], [.6, .4], [.3, .7]])
    exported = np.array([[.8, .2], [.3, .7], [.4, .6], [.6, .4]])
    p = Parity("tflite", "float16", None, labels, keras_probs, exported)
    assert (p.keras_accuracy, p.exported_accuracy, p.agreement) == (0.5, 1.0, 0.5)
    assert p.to_dict()["accuracy_difference"] == 0.5
    assert abs(p.max_probability_difference - 0.3) < 1e-9


def test_export_command_compares_and_records(classifier, tiny_data, trained, tmp_path, capsys):
    model = tmp_path / "model.keras"
    classifier.save(model)
    assert main(["export", str(model), "--quantize", "int8", "--integer-io", "uint8",
                 "--data-dir", str(tiny_data.root)]) == 0
    out = capsys.readouterr()
    exported = tmp_path / "model_int8_uint8io.tflite"
    record = json.loads((tmp_path / (exported.name + PARITY_SUFFIX)).read_text())
    assert exported.exists() and "agree on" in out.out
    assert record["quantize"] == "int8" and record["integer_io"] == "uint8"
    assert record["count"] == len(tiny_data.files("test")) and 0.5 <= record["agreement"] <= 1.0
    assert "Calibrating int8" in out.err and "Comparing" in out.err  # progress lines, on stderr
    assert "\x1b[" not in out.err and "\r" not in out.err  # plain lines when not on a terminal
    assert main(["export", str(model), "--format", "keras", "--integer-io", "uint8"]) == 2


def test_onnx_export_agrees_with_keras_and_carries_its_names(classifier, tiny_data, tmp_path):
    pytest.importorskip("tf2onnx", reason="tf2onnx is not installed (pip install 'transferkit[onnx]')")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'transferkit[onnx]')")
    from transferkit.export import ONNXClassifier, load_exported

    path = export(classifier, tmp_path / "m.onnx", format="onnx")
    for sidecar in ("m.labels.txt", "m.transferkit.json"):
        (tmp_path / sidecar).unlink()  # the names must come from inside the file
    onnx_model = load_exported(path)
    assert isinstance(onnx_model, ONNXClassifier) and onnx_model.class_names == ["cats", "dogs"]
    images = tiny_data.images("test")
    np.testing.assert_allclose(onnx_model.predict(images), classifier.predict(images), atol=1e-5)
    parity = check_parity(classifier, path, tiny_data, split="test", verbose=0)
    assert parity.format == "onnx" and parity.agreement == 1.0


def test_savedmodel_parity(classifier, tiny_data, tmp_path):
    folder = export(classifier, tmp_path / "sm", format="savedmodel")
    parity = check_parity(classifier, folder, tiny_data, split="test", verbose=0)
    assert parity.format == "savedmodel" and parity.agreement == 1.0 and parity.max_probability_difference < 1e-5
