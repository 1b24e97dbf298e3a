"""The split of a file list into train, validation and test: seeded, stratified, stable as files are added."""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["stratified_split", "validate_fractions"]


def _rank_keys(keys, seed) -> np.ndarray:
    """A seeded pseudo-random number in [0, 1) per key, fixed for the key: adding keys moves no other."""
    values = []
    for key in keys:
        digest = hashlib.sha256(f"{seed}\0{key}".encode("utf-8", "surrogateescape")).digest()
        values.append(int.from_bytes(digest[:8], "big") / 2**64)
    return np.asarray(values)


def stratified_split(labels, fractions, seed, keys=None) -> tuple[np.ndarray, ...]:
    """Split positions ``0..len(labels)-1`` into ``len(fractions)`` disjoint, class-stratified parts.

    Within each class the members are put in a seeded pseudo-random order and cut where the running
    total of the fractions, times the class's size, rounds to (so each part is within one member of
    its share). The order comes from hashing each member's key (its relative file path, or its
    position when ``keys`` is None) with ``seed``, so it does not depend on the other members:
    adding a file to a class moves at most one existing file per cut of that class to a
    neighbouring part, and leaves every other class's split as it was. Same keys and seed, same split.

    >>> [p.tolist() for p in stratified_split([0, 0, 0, 0, 1, 1, 1, 1], (0.5, 0.5), seed=0)]
    [[0, 1, 4, 5], [2, 3, 6, 7]]
    """
    labels = np.asarray(labels)
    keys = [str(i) for i in range(len(labels))] if keys is None else [str(k) for k in keys]
    if len(keys) != len(labels):
        raise ValueError(f"stratified_split: {len(keys)} keys for {len(labels)} labels.")
    ranks = _rank_keys(keys, seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[np.lexsort(([keys[i] for i in members], ranks[members]))]
        cuts = [int(np.floor(len(members) * c + 0.5)) for c in np.cumsum(fractions)[:-1]] + [len(members)]
        start = 0
        for i, stop in enumerate(cuts):
            parts[i].append(members[start:stop])
            start = stop
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in parts)


def validate_fractions(split) -> tuple[float, ...]:
    fractions = tuple(float(f) for f in split)
    if len(fractions) not in (2, 3) or min(fractions) < 0 or fractions[0] <= 0 or fractions[1] <= 0:
        raise ValueError(
            f"split={split!r}: give (train, validation) or (train, validation, test) fractions, "
            "train and validation above 0, e.g. (0.8, 0.1, 0.1)."
        )
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split={split!r} sums to {sum(fractions):g}; the fractions must sum to 1.")
    return fractions
