import pickle
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transferkit import ImageFolder
from transferkit._internal.npyfile import NpyFile


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(1, 40),
    row_shape=st.lists(st.integers(1, 5), max_size=3).map(tuple),
    dtype=st.sampled_from(["uint8", "float16", "float32", "int64"]),
    seed=st.integers(0, 2**16),
)
def test_reads_and_writes_like_the_array_it_stores(tmp_path_factory, rows, row_shape, dtype, seed):
    rng = np.random.default_rng(seed)
    expected = (rng.uniform(0, 100, (rows, *row_shape))).astype(dtype)
    path = tmp_path_factory.mktemp("npy") / "a.npy"
    stored = NpyFile.create(path, expected.shape, dtype)
    cut = int(rng.integers(0, rows + 1))
    stored[:cut] = expected[:cut]  # a block, then single rows
    for i in range(cut, rows):
        stored[i] = expected[i]
    assert stored.shape == expected.shape and len(stored) == rows and stored.dtype == expected.dtype
    assert np.array_equal(np.load(path), expected)  # an ordinary .npy file

    again = NpyFile(path)
    picks = rng.integers(-rows, rows, size=int(rng.integers(0, 50)))
    assert np.array_equal(again[picks], expected[picks])
    assert np.array_equal(again[1::2], expected[1::2])
    assert np.array_equal(again[-1], expected[-1])
    assert np.array_equal(np.asarray(again), expected)
    assert np.array_equal(pickle.loads(pickle.dumps(again))[picks], expected[picks])
    assert again[picks].flags.writeable  # a copy the caller owns


def test_bad_use_says_what_is_wrong(tmp_path):
    stored = NpyFile.create(tmp_path / "a.npy", (3, 2), "float32")
    with pytest.raises(IndexError, match="a.npy with 3 rows"):
        stored[3]
    with pytest.raises(IndexError, match="out of range"):
        stored[np.array([0, 5])]
    with pytest.raises(PermissionError, match="read-only"):
        NpyFile(stored.path)[0] = 1
    with pytest.raises(ValueError, match="C-ordered"):
        np.save(tmp_path / "f.npy", np.asfortranarray(np.ones((3, 2))))
        NpyFile(tmp_path / "f.npy")
    with open(stored.path, "r+b") as f:  # cut short, as by a full disk
        f.truncate(stored.path.stat().st_size - 4)
    with pytest.raises(OSError, match="shorter than its header says"):
        NpyFile(stored.path)[2]


def test_threads_read_the_rows_they_ask_for(tmp_path):
    expected = np.arange(2000 * 16, dtype=np.float32).reshape(2000, 16)
    np.save(tmp_path / "a.npy", expected)
    stored, errors = NpyFile(tmp_path / "a.npy"), []

    def read(seed):
        rng = np.random.default_rng(seed)
        for _ in range(200):
            picks = rng.integers(0, 2000, 32)
            if not np.array_equal(stored[picks], expected[picks]):
                errors.append(seed)

    threads = [threading.Thread(target=read, args=(s,)) for s in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []


def _resident_mib() -> float:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads resident memory from /proc")
def test_reading_every_row_does_not_keep_the_file_in_resident_memory(tmp_path):
    rows = 4096
    path = tmp_path / "big.npy"
    stored = NpyFile.create(path, (rows, 32 * 1024), "uint8")  # 128 MiB
    block = np.full((256, 32 * 1024), 7, np.uint8)
    for start in range(0, rows, 256):
        stored[start : start + 256] = block
    del block

    before = _resident_mib()
    order = np.random.default_rng(0).permutation(rows)
    total = sum(int(stored[order[i : i + 64]][:, 0].sum()) for i in range(0, rows, 64))
    grown = _resident_mib() - before
    assert total == 7 * rows
    assert grown < 32, f"resident memory grew by {grown:.0f} MiB reading a 128 MiB file"

    mapped = np.load(path, mmap_mode="r")  # the memory map this replaced, for contrast
    before = _resident_mib()
    total = sum(int(np.asarray(mapped[np.sort(order[i : i + 64])])[:, 0].sum()) for i in range(0, rows, 64))
    assert _resident_mib() - before > 64  # ... keeps what it touched resident


def test_image_folder_cache_reads_the_same_pixels_and_pickles_as_a_name(two_class_tree, tmp_path):
    in_memory = ImageFolder(two_class_tree, image_size=(32, 32))
    on_disk = ImageFolder(two_class_tree, image_size=(32, 32), cache_dir=tmp_path / "cache")
    for split in ("train", "validation", "test"):
        assert np.array_equal(in_memory.images(split), on_disk.images(split))
    batches = [np.concatenate([x.numpy() for x, _ in d.train]) for d in (in_memory, on_disk)]
    assert np.array_equal(*batches)  # same pixels, same seeded order
    copy = pickle.loads(pickle.dumps(on_disk))
    pixels = on_disk.images("train").nbytes
    assert len(pickle.dumps(in_memory)) > pixels  # control: held in memory, the pixels travel
    assert len(pickle.dumps(on_disk)) < pixels / 4  # from a cache file, its name and the file list do
    assert np.array_equal(copy.images("train"), in_memory.images("train"))
