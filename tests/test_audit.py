"""The audit: planted label flips, duplicates and outliers are found, and clean data flags little."""

import json
import shutil

import keras
import numpy as np
import pytest
from PIL import Image

from conftest import COLOURS
from transferkit import ImageFolder, TwoPhaseTrainer, register_backbone
from transferkit.audit import audit, label_issues, near_duplicates, out_of_fold_probabilities, outlier_scores
from transferkit.cli import main


def clusters(n_per_class=150, classes=3, dims=32, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (classes, dims))
    labels = np.repeat(np.arange(classes), n_per_class)
    return centres[labels] + rng.normal(0, 1, (len(labels), dims)), labels


def test_near_duplicates_are_the_pairs_above_the_threshold_block_by_block():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(300, 64))
    for source, copy in ((3, 150), (10, 299), (200, 201)):
        features[copy] = features[source] + rng.normal(0, 0.05, 64)  # a re-encoded copy, say
    found = near_duplicates(features, threshold=0.95, block=64)
    assert {(i, j) for i, j, _ in found} == {(3, 150), (10, 299), (200, 201)}
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    brute = unit @ unit.T
    for i, j, similarity in found:
        assert similarity == pytest.approx(brute[i, j], abs=1e-4)
    assert np.sort(brute[np.triu_indices(300, 1)])[-4] < 0.95  # nothing else comes close


def test_a_changed_copy_below_the_threshold_is_found_by_its_margin_over_the_next_best():
    rng = np.random.default_rng(5)
    features = rng.normal(size=(300, 64))
    features[120] = features[7] + rng.normal(0, 0.6, 64)  # cropped and re-encoded: similarity about 0.85
    unit = (features - features.mean(0)) / np.linalg.norm(features - features.mean(0), axis=1, keepdims=True)
    assert 0.6 < unit[7] @ unit[120] < 0.95
    assert [(i, j) for i, j, _ in near_duplicates(features, block=50)] == [(7, 120)]
    assert near_duplicates(features, margin=None) == []  # the threshold alone misses it
    assert near_duplicates(features[:2]) == []  # two images are each other's nearest; that proves nothing


def test_flipped_labels_are_found_and_clean_labels_are_not():
    features, labels = clusters()
    assert len(label_issues(labels, out_of_fold_probabilities(features, labels))) <= 2  # clean: (almost) nothing
    flipped = np.random.default_rng(2).choice(len(labels), 9, replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + 1) % 3
    issues = label_issues(noisy, out_of_fold_probabilities(features, noisy))
    found = {row for row, _, _ in issues}
    assert len(found & set(flipped)) >= 8 and len(found & set(flipped)) >= len(found) / 2  # recall, precision
    suggested = {row: label for row, label, _ in issues}
    assert all(suggested[row] == labels[row] for row in found & set(flipped))  # the right label, too


def test_outliers_are_the_points_far_from_everything():
    features, _ = clusters(seed=3)
    features[[5, 77, 400]] = np.random.default_rng(4).normal(0, 3, (3, features.shape[1])) + 25.0
    scores = outlier_scores(features)
    assert set(np.argsort(scores)[:3]) == {5, 77, 400}


def textured(path, colour, seed):
    """A photo-like test image: the class colour under random shapes, so images differ from each other."""
    rng = np.random.default_rng(seed)
    pixels = np.empty((48, 48, 3))
    pixels[:] = colour
    for _ in range(6):
        y, x = rng.integers(0, 40, 2)
        h, w = rng.integers(4, 16, 2)
        pixels[y : y + h, x : x + w] = rng.integers(0, 256, 3)
    pixels += rng.normal(0, 10, pixels.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    return path


@register_backbone("thumbnail", default_image_size=(32, 32), override=True)
def thumbnail(input_shape, weights, **options):
    """A backbone without weights whose features are a 4x4 colour thumbnail: what a trained backbone
    gives the audit (features that tell images apart and carry the class), which random weights do
    not reliably give."""
    inputs = keras.Input(input_shape)
    pooled = keras.layers.AveragePooling2D(pool_size=(input_shape[0] // 4, input_shape[1] // 4))(inputs)
    return keras.Model(inputs, keras.layers.Reshape((1, 1, 48))(pooled), name="thumbnail")


def thumbnails():
    return TwoPhaseTrainer(backbone="thumbnail", weights=None, seed=0)


@pytest.fixture
def planted(tmp_path):
    """train/ and validation/ folders of two colours, one red image filed under dogs, and one training
    image copied into validation."""
    root = tmp_path / "pets"
    for s, (split, n) in enumerate((("train", 14), ("validation", 6))):
        for c, name in enumerate(("cats", "dogs")):
            for i in range(n):
                textured(root / split / name / f"{name}_{i:02d}.png", COLOURS[c], seed=1000 * s + 100 * c + i)
    textured(root / "train" / "dogs" / "flipped.png", COLOURS[0], seed=999)
    shutil.copy(root / "train" / "cats" / "cats_03.png", root / "validation" / "cats" / "copy_of_cats_03.png")
    return root


def test_the_least_typical_image_comes_first_and_the_list_runs_from_there(planted):
    odd = np.zeros((48, 48, 3), np.uint8)
    odd[:, :, 1] = 255  # pure green among red and blue photos
    Image.fromarray(odd).save(planted / "train" / "cats" / "green.png")
    data = ImageFolder(planted, image_size=(32, 32), batch_size=8)
    report = audit(data, thumbnails(), folds=3, outliers=6)
    assert report.outliers[0]["file"] == "train/cats/green.png"
    scores = [o["score"] for o in report.outliers]
    assert len(scores) == 6 and scores == sorted(scores)  # least typical (lowest score) first


def test_the_audit_finds_a_planted_flip_and_a_leaked_duplicate(planted, tmp_path):
    data = ImageFolder(planted, image_size=(32, 32), batch_size=8)
    report = audit(data, thumbnails(), folds=3, outliers=5)
    assert [i["file"] for i in report.label_issues] == ["train/dogs/flipped.png"]
    assert report.label_issues[0]["given"] == "dogs" and report.label_issues[0]["suggested"] == "cats"
    assert [(p["file_a"], p["file_b"]) for p in report.duplicates] == [
        ("train/cats/cats_03.png", "validation/cats/copy_of_cats_03.png")]
    assert len(report.leaks) == 1 and report.duplicates[0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert report.flagged == ["train/dogs/flipped.png", "validation/cats/copy_of_cats_03.png"]
    assert report.counts == data.report.counts and report.image_sizes["width"]["median"] == 48

    files = report.save(tmp_path / "out", data)
    assert [f.name for f in files] == ["audit.json", "label_issues.png", "duplicates.png", "outliers.png"]
    saved = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert saved["schema"] == "transferkit.audit/1" and saved["leaks_across_splits"] == 1
    assert saved["flagged"] == report.flagged

    # Acting on it: the flagged files are left out, and nothing is moved or deleted.
    again = ImageFolder(planted, image_size=(32, 32), batch_size=8, exclude=report.flagged)
    assert len(again.files("train")) == len(data.files("train")) - 1
    assert len(again.files("validation")) == len(data.files("validation")) - 1
    assert sorted(p.name for p in again.report.excluded) == ["copy_of_cats_03.png", "flipped.png"]
    assert (planted / "train" / "dogs" / "flipped.png").exists()


def test_clean_data_flags_little(planted):
    (planted / "train" / "dogs" / "flipped.png").unlink()
    (planted / "validation" / "cats" / "copy_of_cats_03.png").unlink()
    data = ImageFolder(planted, image_size=(32, 32), batch_size=8)
    report = audit(data, thumbnails(), folds=3)
    assert report.label_issues == [] and report.duplicates == [] and report.flagged == []


def test_audit_command_and_train_exclude(planted, tmp_path, capsys):
    out = tmp_path / "audit"
    argv = ["audit", str(planted), "--output", str(out), "--backbone", "thumbnail", "--weights", "none",
            "--image-size", "32", "--batch-size", "8", "--folds", "3", "--json"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["flagged"] == ["train/dogs/flipped.png", "validation/cats/copy_of_cats_03.png"]
    assert main(["train", str(planted), "--output", str(tmp_path / "run"), "--backbone", "test_cnn", "--weights",
                 "none", "--image-size", "32", "--batch-size", "8", "--epochs", "1", "--fine-tune-epochs", "0",
                 "--exclude", str(out / "audit.json"), "--json", "--log-dir", str(tmp_path / "logs")]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # --json: the metrics, one line
    assert last["data"]["excluded"] and "evaluation" in last
    assert list((tmp_path / "logs").rglob("events.out.tfevents.*"))  # --log-dir: TensorBoard's files
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert sorted(metrics["data"]["excluded"]) == ["train/dogs/flipped.png", "validation/cats/copy_of_cats_03.png"]
    (tmp_path / "other.txt").write_text("train/cats/nope.png\n")
    assert main(["train", str(planted), "--output", str(tmp_path / "run2"), "--weights", "none", "--image-size",
                 "32", "--exclude", str(tmp_path / "other.txt")]) == 1
    assert "not images of" in capsys.readouterr().err
