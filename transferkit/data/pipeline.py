"""The input pipeline: rows of arrays (in memory or `NpyFile` rows on disk) as shuffled-by-pass batches."""

from __future__ import annotations

import numpy as np

__all__ = ["PassClock", "array_dataset", "pass_rng"]


def pass_rng(seed: int, k: int) -> np.random.Generator:
    """The generator that orders pass ``k`` of a dataset shuffled with ``seed``: a function of the two
    alone, so a resumed run can start at pass ``k`` and draw what the uninterrupted run drew."""
    return np.random.default_rng([int(seed), int(k)])


class PassClock:
    """Which pass a shuffled dataset serves, set from outside (the trainer sets it at each epoch's
    start) instead of counted from the iterators made: Keras's JAX trainer and ``tf.distribute``
    strategies make one more iterator than they use, which would shift every epoch's order by a pass.

    >>> clock = PassClock(3); clock.value
    3
    """

    def __init__(self, start: int = 0):
        self.value = int(start)


def array_dataset(arrays, indices, batch_size: int, shuffle_seed: int | None = None,
                  start_pass: int | PassClock = 0, mirror: bool = False):
    """Batches ``(arrays[0][i], ..., labels[i])`` for ``i`` in ``indices``, as a ``tf.data.Dataset``.

    The last array holds the labels (kept as int32); the others are cast to float32. Rows are
    gathered batch by batch, so the arrays may be `NpyFile` rows on disk, larger than RAM.

    Without ``shuffle_seed`` the order is ``indices``. With it, pass ``k`` over the dataset (``k``
    counted from ``start_pass``) takes a permutation drawn from `pass_rng` ``(shuffle_seed, k)``,
    so the order depends neither on TensorFlow's global seed nor on earlier passes. A 2-D
    ``indices`` gives pass ``k`` the row ``k % len(indices)``; a `PassClock` as ``start_pass`` says which
    pass each new iterator serves; a callable ``indices(k, rng)`` gives
    pass ``k`` the rows it returns. With ``mirror`` (and a seed), each sample's 4-D arrays are
    mirrored left-right with probability 1/2, drawn from the same generator.
    """
    import tensorflow as tf

    chooser = indices if callable(indices) else None
    indices = np.asarray(chooser(0, pass_rng(0, 0)) if chooser else indices, dtype=np.int64)
    if shuffle_seed is None:
        indices = indices.reshape(-1)
    *features, labels = arrays
    total = len(labels)

    def gather(batch_indices):
        flip = batch_indices >= total
        rows = batch_indices % total
        out = [np.asarray(a[rows]) for a in features]
        if flip.any():
            out = [np.where(flip.reshape(-1, 1, 1, 1), x[:, :, ::-1], x) if x.ndim == 4 else x for x in out]
        return tuple(out) + (np.asarray(labels[rows]),)

    def load(batch_indices):
        dtypes = tuple(tf.as_dtype(a.dtype) for a in features) + (tf.int32,)
        out = tf.numpy_function(gather, [batch_indices], dtypes, stateful=False)
        xs = [tf.ensure_shape(tf.cast(x, tf.float32), [None, *a.shape[1:]]) for x, a in zip(out[:-1], features)]
        y = tf.ensure_shape(out[-1], [None])
        return (xs[0] if len(xs) == 1 else tuple(xs)), y

    if shuffle_seed is not None:
        rows = indices.reshape(-1, indices.shape[-1])  # 2-D: pass k draws from row k % rows
        if isinstance(start_pass, PassClock):
            def next_pass():
                return start_pass.value
        else:
            next_pass = iter(range(int(start_pass), 2**62)).__next__

        def order():
            k = next_pass()
            rng = pass_rng(shuffle_seed, k)
            chosen = chooser(k, rng) if chooser else rng.permutation(rows[k % len(rows)])
            if mirror:
                chosen = chosen + total * (rng.random(len(chosen)) < 0.5)
            return iter(chosen)

        ds = tf.data.Dataset.from_generator(order, output_signature=tf.TensorSpec((), tf.int64)).apply(
            tf.data.experimental.assert_cardinality(rows.shape[1])
        )
    else:
        ds = tf.data.Dataset.from_tensor_slices(indices)
    ds = ds.batch(batch_size).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
