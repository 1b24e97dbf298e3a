"""Properties of the stratified, seeded split."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from transferkit.data import stratified_split

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
