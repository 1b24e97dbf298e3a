"""Properties of the stratified, seeded split."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transferkit.data.split import stratified_split

labels_strategy = st.lists(st.integers(0, 4), min_size=1, max_size=300)
fractions_strategy = st.sampled_from([(0.8, 0.1, 0.1), (0.8, 0.2), (0.5, 0.25, 0.25), (0.6, 0.3, 0.1), (0.34, 0.33, 0.33)])


@settings(max_examples=200, deadline=None)
@given(labels_strategy, fractions_strategy, st.integers(0, 2**32 - 1))
def test_split_is_disjoint_complete_stratified_and_deterministic(labels, fractions, seed):
    labels = np.array(labels)
    parts = stratified_split(labels, fractions, seed)
    together = np.concatenate(parts)
    assert len(together) == len(set(together.tolist())) == len(labels)  # disjoint and complete
    for label in np.unique(labels):
        n = int(np.sum(labels == label))
        for part, fraction in zip(parts, fractions):
            assert abs(int(np.sum(labels[part] == label)) - n * fraction) <= 1  # within one file per class
    again = stratified_split(labels, fractions, seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_another_seed_gives_another_split():
    labels = np.repeat([0, 1], 50)
    a = stratified_split(labels, (0.8, 0.2), seed=1)
    b = stratified_split(labels, (0.8, 0.2), seed=2)
    assert not np.array_equal(a[1], b[1])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=2, max_size=4), st.integers(0, 3), fractions_strategy,
       st.integers(0, 2**32 - 1))
def test_adding_a_file_moves_no_file_of_another_class_and_at_most_one_per_cut(sizes, grow, fractions, seed):
    grow = grow % len(sizes)
    keys = [f"class{c}/{i}.jpg" for c, n in enumerate(sizes) for i in range(n)]
    labels = [c for c, n in enumerate(sizes) for _ in range(n)]
    before = stratified_split(labels, fractions, seed, keys=keys)
    where_before = {keys[i]: part for part, members in enumerate(before) for i in members}
    keys2, labels2 = keys + [f"class{grow}/new.jpg"], labels + [grow]
    after = stratified_split(labels2, fractions, seed, keys=keys2)
    where_after = {keys2[i]: part for part, members in enumerate(after) for i in members}
    moved = [k for k in where_before if where_before[k] != where_after[k]]
    assert all(k.startswith(f"class{grow}/") for k in moved)  # other classes keep their split
    assert len(moved) <= len(fractions) - 1  # at most one existing file per cut


def test_the_split_goes_with_the_files_and_notices_when_they_change(tmp_path):
    from conftest import make_image, make_tree
    from transferkit import ImageFolder

    root = make_tree(tmp_path / "pets", {"cats": 10, "dogs": 10})
    data = ImageFolder(root, image_size=(8, 8), split=(0.6, 0.2, 0.2), seed=7)
    record = data.split_record()
    assert record["seed"] == 7 and record["fractions"] == [0.6, 0.2, 0.2]
    assert sorted(sum(record["files"].values(), [])) == sorted(p.relative_to(root).as_posix()
                                                             for p in data.files("all"))
    make_image(root / "cats" / "new.png", (0, 0, 0))
    again = ImageFolder(root, image_size=(8, 8), split=record["files"])
    for split in ("train", "validation", "test"):
        assert again.files(split) == data.files(split)
    assert [p.name for p in again.report.left_out] == ["new.png"] and "left out: 1" in str(again.report)
    (root / "dogs" / record["files"]["test"][-1].split("/")[-1]).unlink()
    with pytest.raises(ValueError, match="1 file.* of the recorded split are not in .*no longer match"):
        ImageFolder(root, image_size=(8, 8), split=record["files"])
