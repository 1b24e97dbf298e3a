"""The input pipeline: rows of arrays (in memory or `NpyFile` rows on disk) as shuffled-by-pass batches.

Two implementations serve the same batches in the same order: ``tf.data`` (what the TensorFlow backend
uses) and a `keras.utils.PyDataset` that needs no TensorFlow (what the JAX and PyTorch backends use).
``TRANSFERKIT_PIPELINE=tf.data`` or ``=pydataset`` chooses one by hand.

>>> import numpy as np
>>> pixels, labels = np.zeros((5, 2, 2, 3), np.uint8), np.arange(5) % 2
>>> batches = array_dataset((pixels, labels), np.arange(5), batch_size=2, kind="pydataset")
>>> [(x.shape, y.tolist()) for x, y in batches]
[((2, 2, 2, 3), [0, 1]), ((2, 2, 2, 3), [0, 1]), ((1, 2, 2, 3), [0])]
"""

from __future__ import annotations

import math
import os

import numpy as np

__all__ = ["PassClock", "ArrayBatches", "array_dataset", "pass_rng", "pipeline_kind", "PIPELINES",
           "batch_size_of", "full_batches_forever", "images_only", "has_tensorflow"]

#: The two input pipelines; `pipeline_kind` says which one a dataset made now gets.
PIPELINES = ("tf.data", "pydataset")
PIPELINE_VARIABLE = "TRANSFERKIT_PIPELINE"


def has_tensorflow() -> bool:
    """Whether TensorFlow can be imported here (it is optional on the JAX and PyTorch backends)."""
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


def pipeline_kind(kind: str = "auto") -> str:
    """``kind``, or for ``"auto"`` the environment's ``TRANSFERKIT_PIPELINE``, or else ``"tf.data"`` on the
    TensorFlow backend (measured faster there: benchmarks/README.md) and ``"pydataset"`` on the others.

    >>> pipeline_kind("pydataset")
    'pydataset'
    """
    if kind == "auto":
        kind = os.environ.get(PIPELINE_VARIABLE, "").strip() or "auto"
    if kind == "auto":
        import keras

        return "tf.data" if keras.backend.backend() == "tensorflow" else "pydataset"
    if kind not in PIPELINES:
        raise ValueError(f"pipeline {kind!r} (from {PIPELINE_VARIABLE} or kind=): use one of {', '.join(PIPELINES)}.")
    if kind == "tf.data" and not has_tensorflow():
        raise ImportError(f"The tf.data pipeline needs TensorFlow, which is not installed: unset {PIPELINE_VARIABLE} "
                          "(or set it to 'pydataset'), or pip install tensorflow.")
    return kind


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


class _Rows:
    """What both pipelines share: which rows pass ``k`` serves, and how a batch of rows is gathered."""

    def __init__(self, arrays, indices, shuffle_seed, start_pass, mirror):
        self.chooser = indices if callable(indices) else None
        indices = np.asarray(self.chooser(0, pass_rng(0, 0)) if self.chooser else indices, dtype=np.int64)
        if shuffle_seed is None:
            indices = indices.reshape(-1)
        *self.features, self.labels = arrays
        self.total = len(self.labels)
        self.seed, self.mirror = shuffle_seed, mirror
        self.rows = indices.reshape(-1, indices.shape[-1]) if shuffle_seed is not None else indices
        self.length = self.rows.shape[-1]
        self.clock = start_pass if isinstance(start_pass, PassClock) else None
        self._next = None if self.clock is not None else int(start_pass)

    def next_pass(self, peek: bool = False) -> int:
        """The pass a new iteration serves: the clock's, or the next of the count from ``start_pass`` (counted
        unless ``peek``: Keras reads a batch to learn the shapes before the first epoch begins)."""
        if self.clock is not None:
            return self.clock.value
        k = self._next
        if not peek:
            self._next += 1
        return k

    def order(self, k: int) -> np.ndarray:
        """The rows of pass ``k`` in order (rows >= total: the mirrored sample)."""
        if self.seed is None:
            return self.rows
        rng = pass_rng(self.seed, k)
        chosen = self.chooser(k, rng) if self.chooser else rng.permutation(self.rows[k % len(self.rows)])
        if self.mirror:
            chosen = chosen + self.total * (rng.random(len(chosen)) < 0.5)
        return np.asarray(chosen, dtype=np.int64)

    def gather(self, batch_indices):
        batch_indices = np.asarray(batch_indices)
        flip = batch_indices >= self.total
        rows = batch_indices % self.total
        out = [np.asarray(a[rows]) for a in self.features]
        if flip.any():
            out = [np.where(flip.reshape(-1, 1, 1, 1), x[:, :, ::-1], x) if x.ndim == 4 else x for x in out]
        return tuple(out) + (np.asarray(self.labels[rows]).astype(np.int32, copy=False),)

    def gather_float(self, batch_indices):
        """`gather` with the inputs as float32, as the tf.data pipeline casts them."""
        *xs, y = self.gather(batch_indices)
        return tuple(x.astype(np.float32, copy=False) for x in xs) + (y,)


def _keras_base():
    import keras

    return keras.utils.PyDataset


class ArrayBatches:
    """Batches of `array_dataset` as a `keras.utils.PyDataset`: no TensorFlow needed, and Keras's ``fit``,
    ``evaluate`` and ``predict`` take it on every backend. Each ``on_epoch_begin`` (Keras calls it) and each
    ``iter()`` starts the next pass; ``len()`` is the number of batches."""

    def __new__(cls, *args, **kwargs):  # subclass PyDataset on first use, so importing this module loads no Keras
        concrete = _concrete_array_batches()
        return super().__new__(concrete)


_CONCRETE = None


def _concrete_array_batches():
    global _CONCRETE
    if _CONCRETE is None:
        base = _keras_base()

        class _ArrayBatches(ArrayBatches, base):
            def __init__(self, rows: _Rows, batch_size: int, shard: tuple[int, int] | None = None):
                base.__init__(self)
                self._rows, self.batch_size, self._shard = rows, int(batch_size), shard
                self._pass, self._order = None, None

            def __len__(self) -> int:
                if self._shard is not None:  # whole batches only: each splits evenly between the processes
                    return self._rows.length // self.batch_size
                return math.ceil(self._rows.length / self.batch_size)

            def shard(self, index: int, count: int):
                """The same batches, less a last one of another size, each cut into ``count`` equal parts
                of which this dataset serves part ``index``: one process's share of every batch."""
                if self.batch_size % count:
                    raise ValueError(f"Batches of {self.batch_size} do not split evenly over {count} processes: "
                                     f"give a batch size that is a multiple of {count}.")
                return type(self)(self._rows, self.batch_size, (int(index), int(count)))

            def on_epoch_begin(self):
                self._start_pass()

            def _start_pass(self, peek: bool = False):
                self._pass = self._rows.next_pass(peek)
                self._order = self._rows.order(self._pass)

            def __getitem__(self, index: int):
                if not 0 <= index < len(self):
                    raise IndexError(f"batch {index} of {len(self)}")
                if self._order is None or (self._rows.clock is not None and self._rows.clock.value != self._pass):
                    self._start_pass(peek=True)
                return self._batch(self._order, index)

            def __iter__(self):
                self._start_pass()
                order = self._order
                for index in range(len(self)):
                    yield self._batch(order, index)

            def _batch(self, order: np.ndarray, index: int):
                chosen = order[index * self.batch_size:(index + 1) * self.batch_size]
                if self._shard is not None:
                    part, parts = self._shard
                    chosen = np.array_split(chosen, parts)[part]
                *xs, y = self._rows.gather_float(chosen)
                return (xs[0] if len(xs) == 1 else tuple(xs)), y

        _CONCRETE = _ArrayBatches
    return _CONCRETE


def array_dataset(arrays, indices, batch_size: int, shuffle_seed: int | None = None,
                  start_pass: int | PassClock = 0, mirror: bool = False, kind: str = "auto"):
    """Batches ``(arrays[0][i], ..., labels[i])`` for ``i`` in ``indices``: a ``tf.data.Dataset`` or an
    `ArrayBatches` (``kind``: see `pipeline_kind`), the same batches in the same order.

    The last array holds the labels (kept as int32; a row of 0/1 per sample for several labels per
    image); the others are cast to float32. Rows are
    gathered batch by batch, so the arrays may be `NpyFile` rows on disk, larger than RAM.

    Without ``shuffle_seed`` the order is ``indices``. With it, pass ``k`` over the dataset (``k``
    counted from ``start_pass``) takes a permutation drawn from `pass_rng` ``(shuffle_seed, k)``,
    so the order depends neither on TensorFlow's global seed nor on earlier passes. A 2-D
    ``indices`` gives pass ``k`` the row ``k % len(indices)``; a `PassClock` as ``start_pass`` says which
    pass each new iterator serves; a callable ``indices(k, rng)`` gives
    pass ``k`` the rows it returns. With ``mirror`` (and a seed), each sample's 4-D arrays are
    mirrored left-right with probability 1/2, drawn from the same generator.
    """
    rows = _Rows(arrays, indices, shuffle_seed, start_pass, mirror)
    if pipeline_kind(kind) == "pydataset":
        return ArrayBatches(rows, batch_size)
    return _tf_dataset(rows, batch_size)


def _tf_dataset(rows: _Rows, batch_size: int):
    import tensorflow as tf

    features = rows.features

    def load(batch_indices):
        dtypes = tuple(tf.as_dtype(a.dtype) for a in features) + (tf.int32,)
        out = tf.numpy_function(rows.gather, [batch_indices], dtypes, stateful=False)
        xs = [tf.ensure_shape(tf.cast(x, tf.float32), [None, *a.shape[1:]]) for x, a in zip(out[:-1], features)]
        y = tf.ensure_shape(out[-1], [None, *rows.labels.shape[1:]])  # several labels per image: a row each
        return (xs[0] if len(xs) == 1 else tuple(xs)), y

    if rows.seed is not None:
        ds = tf.data.Dataset.from_generator(lambda: iter(rows.order(rows.next_pass())),
                                            output_signature=tf.TensorSpec((), tf.int64))
        ds = ds.apply(tf.data.experimental.assert_cardinality(rows.length))
    else:
        ds = tf.data.Dataset.from_tensor_slices(rows.rows)
    ds = ds.batch(batch_size).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _is_tf_dataset(dataset) -> bool:
    return hasattr(dataset, "element_spec")


def batch_size_of(dataset) -> int:
    """The size of a batched dataset's first batch (either pipeline, or any iterable of ``(x, y)``)."""
    first = next(iter(dataset.take(1) if _is_tf_dataset(dataset) else dataset), None)
    if first is None:
        raise ValueError("The dataset is empty.")
    x = first[0]
    return int((x[0] if isinstance(x, tuple) else x).shape[0])


def full_batches_forever(dataset, batch_size: int):
    """``dataset``'s samples regrouped in batches of exactly ``batch_size``, pass after pass, without end
    (what a learning-rate sweep of a set number of steps feeds on)."""
    if _is_tf_dataset(dataset):
        return dataset.unbatch().batch(batch_size, drop_remainder=True).repeat()

    def batches():
        held_x, held_y = None, None
        while True:
            for x, y in dataset:
                xs = x if isinstance(x, tuple) else (x,)
                held_x = xs if held_x is None else tuple(np.concatenate([h, a]) for h, a in zip(held_x, xs))
                held_y = y if held_y is None else np.concatenate([held_y, y])
                while len(held_y) >= batch_size:
                    out = tuple(h[:batch_size] for h in held_x)
                    yield (out[0] if len(out) == 1 else out), held_y[:batch_size]
                    held_x, held_y = tuple(h[batch_size:] for h in held_x), held_y[batch_size:]

    return batches()


def images_only(dataset, mirror: bool = False):
    """A dataset of the images alone (its batches' first element when they are tuples), mirrored
    left-right with ``mirror``: what ``predict`` takes, from either pipeline."""
    if _is_tf_dataset(dataset):
        images = dataset.map(lambda *batch: batch[0]) if isinstance(dataset.element_spec, tuple) else dataset
        return images.map(lambda batch: batch[:, :, ::-1]) if mirror else images

    def batches():
        for batch in dataset:
            x = np.asarray(batch[0] if isinstance(batch, tuple) else batch)
            yield (x[:, :, ::-1] if mirror else x),  # Keras takes a generator's batches as tuples

    return batches()
