import numpy as np
import pytest

import transferkit.data.folder as data_module
from conftest import make_image, make_tree
from transferkit import ImageFolder, ImageReadError


def batches(dataset):
    return [(np.asarray(x), np.asarray(y)) for x, y in dataset]


def test_class_folders_are_split_and_reported(two_class_tree):
    data = ImageFolder(two_class_tree, image_size=(16, 16), batch_size=4, split=(0.5, 0.25, 0.25), seed=0)
    assert data.class_names == ["cats", "dogs"]
    assert data.report.counts == {
        "train": {"cats": 6, "dogs": 6},
        "validation": {"cats": 3, "dogs": 3},
        "test": {"cats": 3, "dogs": 3},
    }
    x, y = next(iter(data.train))
    assert x.shape == (4, 16, 16, 3) and x.dtype.name == "float32" and y.dtype.name == "int32"
    assert "cats" in str(data.report) and "skipped: 0" in str(data.report)


def test_presplit_layout_is_used_as_given(tmp_path):
    make_tree(tmp_path / "train", {"a": 5, "b": 4})
    make_tree(tmp_path / "validation", {"a": 2, "b": 3})
    data = ImageFolder(tmp_path, image_size=(8, 8), batch_size=2)
    assert data.report.counts == {"train": {"a": 5, "b": 4}, "validation": {"a": 2, "b": 3}}
    assert data.test is None
    assert [p.parent.parent.name for p in data.files("validation")] == ["validation"] * 5


def test_presplit_layout_with_test_folder(tmp_path):
    for split in ("train", "val", "test"):
        make_tree(tmp_path / split, {"a": 2, "b": 2})
    data = ImageFolder(tmp_path, image_size=(8, 8), batch_size=2)
    assert sum(len(y) for _, y in data.test) == 4


def test_same_files_and_seed_give_the_same_split(two_class_tree):
    a = ImageFolder(two_class_tree, image_size=(8, 8), seed=7)
    b = ImageFolder(two_class_tree, image_size=(8, 8), seed=7)
    c = ImageFolder(two_class_tree, image_size=(8, 8), seed=8)
    assert a.files("test") == b.files("test")
    assert a.files("test") != c.files("test")


def test_files_labels_and_images_follow_dataset_order(two_class_tree):
    data = ImageFolder(two_class_tree, image_size=(8, 8), batch_size=5, split=(0.5, 0.5))
    xs, ys = zip(*batches(data.validation))
    assert np.array_equal(np.concatenate(ys), data.labels("validation"))
    assert np.array_equal(np.concatenate(xs), data.images("validation").astype("float32"))
    assert [p.parent.name for p in data.files("validation")] == [data.class_names[i] for i in data.labels("validation")]


def test_only_training_data_is_reshuffled(two_class_tree):
    data = ImageFolder(two_class_tree, image_size=(8, 8), batch_size=24, split=(0.5, 0.5), seed=1)
    first, second = batches(data.train)[0][0], batches(data.train)[0][0]
    assert not np.array_equal(first, second)
    assert sorted(first.reshape(len(first), -1).sum(1)) == sorted(second.reshape(len(second), -1).sum(1))
    v1, v2 = batches(data.validation), batches(data.validation)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(v1, v2))


def test_images_are_decoded_once_not_every_epoch(two_class_tree, monkeypatch):
    calls = []
    real = data_module.read_image
    monkeypatch.setattr(data_module, "read_image", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    data = ImageFolder(two_class_tree, image_size=(8, 8), batch_size=4)
    assert len(calls) == 24
    for _ in range(3):
        batches(data.train), batches(data.validation)
    assert len(calls) == 24


def test_bad_files_are_skipped_reported_and_left_alone(tmp_path):
    root = make_tree(tmp_path, {"cats": 6, "dogs": 6})
    (root / "cats" / "empty.jpg").write_bytes(b"")
    (root / "dogs" / "notes.txt").write_text("not an image")
    good = make_image(root / "dogs" / "whole.jpg", (0, 0, 255), size=(64, 64), fmt="JPEG")
    (root / "dogs" / "cut.jpg").write_bytes(good.read_bytes()[:300])
    make_image(root / "cats" / "grey.png", (9, 9, 9), mode="L")
    make_image(root / "cats" / "cmyk.jpg", (200, 0, 0), mode="CMYK", fmt="JPEG")
    make_image(root / "cats" / "alpha.png", (200, 0, 0), mode="RGBA")
    before = sorted(p.name for p in root.rglob("*"))

    data = ImageFolder(root, image_size=(8, 8), split=(0.5, 0.5))

    reasons = {s.path.name: s.reason for s in data.report.skipped}
    assert set(reasons) == {"empty.jpg", "notes.txt", "cut.jpg"}
    assert "0 bytes" in reasons["empty.jpg"] and "not an image" in reasons["notes.txt"]
    assert "truncated" in reasons["cut.jpg"]
    assert "cut.jpg" in str(data.report)
    used = set(data.files("train") + data.files("validation"))
    assert {root / "cats" / n for n in ("grey.png", "cmyk.jpg", "alpha.png")} <= used
    assert len(used) == 6 + 6 + 3 + 1
    assert sorted(p.name for p in root.rglob("*")) == before  # nothing deleted or moved


def test_bad_file_can_raise_instead(tmp_path):
    root = make_tree(tmp_path, {"a": 3, "b": 3})
    (root / "a" / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.png"):
        ImageFolder(root, image_size=(8, 8), split=(0.5, 0.5), on_bad_file="raise")


@pytest.mark.parametrize(
    "layout, message",
    [
        ({"only": 3}, "at least two class folders"),
        ({}, "at least two class folders"),
    ],
)
def test_too_few_classes_name_the_folder(tmp_path, layout, message):
    make_tree(tmp_path, layout)
    with pytest.raises(ValueError, match=message) as info:
        ImageFolder(tmp_path, image_size=(8, 8))
    assert str(tmp_path) in str(info.value)


def test_missing_folder_and_empty_class_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolder(tmp_path / "nowhere")
    make_tree(tmp_path, {"a": 3})
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match=r"b is empty"):
        ImageFolder(tmp_path, image_size=(8, 8))


def test_class_with_only_bad_files_is_an_error(tmp_path):
    make_tree(tmp_path, {"a": 3})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.jpg").write_bytes(b"junk")
    with pytest.raises(ValueError, match="No readable images"):
        ImageFolder(tmp_path, image_size=(8, 8), split=(0.5, 0.5))


def test_mismatched_presplit_classes_are_an_error(tmp_path):
    make_tree(tmp_path / "train", {"a": 2, "b": 2})
    make_tree(tmp_path / "validation", {"a": 2, "c": 2})
    with pytest.raises(ValueError, match="differ between splits"):
        ImageFolder(tmp_path, image_size=(8, 8))


@pytest.mark.parametrize("split", [(0.8, 0.3), (1.0,), (0.0, 0.5, 0.5), (0.5, 0.0, 0.5)])
def test_bad_split_fractions(two_class_tree, split):
    with pytest.raises(ValueError, match="split="):
        ImageFolder(two_class_tree, image_size=(8, 8), split=split)


def test_class_weights_balance_the_training_counts(tmp_path):
    make_tree(tmp_path, {"few": 4, "many": 12})
    data = ImageFolder(tmp_path, image_size=(8, 8), split=(0.5, 0.5))
    weights = data.class_weights
    assert weights == pytest.approx({0: 8 / (2 * 2), 1: 8 / (2 * 6)})  # total / (classes * count)
    counts = data.report.counts["train"]
    assert weights[0] * counts["few"] == pytest.approx(weights[1] * counts["many"])


def test_cache_dir_reuses_decoded_images_and_notices_changes(two_class_tree, tmp_path, monkeypatch):
    calls = []
    real = data_module.read_image
    monkeypatch.setattr(data_module, "read_image", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    cache = tmp_path / "cache"
    first = ImageFolder(two_class_tree, image_size=(8, 8), cache_dir=cache)
    second = ImageFolder(two_class_tree, image_size=(8, 8), cache_dir=cache)
    assert len(calls) == 24  # the second one decoded nothing
    assert np.array_equal(first.images("train"), second.images("train"))
    ImageFolder(two_class_tree, image_size=(12, 12), cache_dir=cache)  # other size: decoded again
    assert len(calls) == 48
    make_image(two_class_tree / "cats" / "cats_000.png", (0, 255, 0), seed=99)  # a file changed
    changed = ImageFolder(two_class_tree, image_size=(8, 8), cache_dir=cache)
    assert len(calls) == 72
    splits = ("train", "validation", "test")
    old, new = (np.concatenate([d.images(s) for s in splits]) for d in (first, changed))
    assert not np.array_equal(old, new)


def test_decoding_keeps_a_bounded_number_of_calls_pending():
    """Executor.map submits every call first: 100,000 pending decodes held 290 MiB (benchmarks/scale.py).
    bounded_map keeps at most a window of them submitted and not yet taken, in order."""
    from transferkit.data.folder import bounded_map

    class Pool:  # runs each call at once; counts the submitted results not yet taken
        def __init__(self):
            self.pending = self.most = 0

        def submit(self, function, i):
            pool = self
            self.pending += 1
            self.most = max(self.most, self.pending)

            class Done:
                def result(self):
                    pool.pending -= 1
                    return function(i)

            return Done()

    pool = Pool()
    assert list(bounded_map(pool, lambda i: -i, 1000, window=8)) == [-i for i in range(1000)]
    assert pool.most == 8


def test_files_are_listed_in_path_order_without_hidden_ones(tmp_path):
    """Listing by strings keeps the order Path objects sort in (``x/1.png`` before ``x.png``, though ``/``
    sorts after ``.`` as a character), which every split and cache depends on; hidden files and folders
    are left out, a symbolic link to an image is kept."""
    from pathlib import Path

    cats = tmp_path / "pets" / "cats"
    for name in ("x/1.png", "x.png", "x-y.png", "b/a/2.png", "B.png", ".hidden/3.png", "._x.png"):
        (cats / name).parent.mkdir(parents=True, exist_ok=True)
        make_image(cats / name, (200, 30, 30))
    (cats / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (cats / "link.png").symlink_to(cats / "B.png")
    (cats / "dangling.png").symlink_to(cats / "gone.png")
    listed = data_module._files_in(cats)
    visible = [p for p in cats.rglob("*") if p.is_file() and not any(s.startswith(".") for s in
                                                                      p.relative_to(cats).parts)]
    assert [Path(p) for p in listed] == sorted(visible)
    assert [Path(p).relative_to(cats).as_posix() for p in listed] == [
        "B.png", "b/a/2.png", "link.png", "x/1.png", "x-y.png", "x.png"]
