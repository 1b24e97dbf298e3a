"""Computing what the frozen layers produce once, instead of every epoch.

In phase 1 the whole backbone is frozen and in phase 2 the layers before the unfreeze point are, so
(with BatchNorm frozen) their outputs depend only on the input image. `FrozenFeatures` runs the
frozen part once over a few augmented *views* of every training image (view 0 unaugmented) and
once over the validation images, keeping what phase 1 needs (the pooled backbone output) and what
phase 2 needs (the activations that cross the unfreeze point, the *cut*). Epoch ``e`` then trains on
view ``e % views`` of every image (or a view drawn per image), through the head only (phase 1) or the
unfrozen top only (phase 2). Given the same views, this is the exact recipe's arithmetic; what
changes is that augmentation draws ``views`` variants per image instead of one per epoch.

With a ``cache_dir`` each of these is its own cache entry: the pooled features are shared by every
run with the same images, backbone, augmentation and pooling, whatever its cut, and each cut's
activations by every run with that cut. One pass over the images fills every missing entry at once,
including ``also_cuts`` (a search passes all the cuts it may try).

>>> import keras, numpy as np
>>> from transferkit import get_backbone
>>> backbone = get_backbone("mobilenet_v2", (32, 32, 3), weights=None, alpha=0.35)
>>> frozen, top = split_backbone(backbone, 100)
>>> x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
>>> *crossing, output = frozen(x)
>>> expected = np.asarray(backbone(x))  # an untrained network's outputs are tiny: compare relative to them
>>> float(np.abs(np.asarray(top(crossing)) - expected).max() / np.abs(expected).max()) < 1e-5
True
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from transferkit._internal.files import unique_partial, write_atomically
from transferkit._internal.memory import available_memory
from transferkit._internal.npyfile import NpyFile
from transferkit._internal.progress import progress
from transferkit.data.fingerprint import file_list_of
from transferkit.data.pipeline import array_dataset
from transferkit.training import distribute
from transferkit.training.settings import FastPath

__all__ = ["split_backbone", "crossing_tensors", "FrozenFeatures"]

log = logging.getLogger(__name__)

_CACHE_FORMAT = 3  # 3: pooled features and each cut's activations are separate entries
_SPLITS = ("train", "validation")


def crossing_tensors(backbone: keras.Model, index: int) -> list:
    """The tensors that layers before ``backbone.layers[index]`` produce and layers from it on use.

    Operations that are not layers (``x + y`` in a functional model: ConvNeXt's residuals) count where
    they stand in the network's order of operations."""
    operations = backbone.operations
    start = next(i for i, op in enumerate(operations) if op is backbone.layers[index])
    after = {id(op) for op in operations[start:]}
    crossing = [op.output for op in operations[:start]
                if any(id(node.operation) in after for node in op._outbound_nodes)]
    if not crossing:
        raise ValueError(f"Nothing crosses layer {index} of {backbone.name}; is it a functional model?")
    return crossing


def split_backbone(backbone: keras.Model, index: int) -> tuple[keras.Model, keras.Model]:
    """Cut a functional backbone before ``backbone.layers[index]``.

    Returns ``frozen`` (image -> [tensors crossing the cut..., backbone output]) and ``top``
    (crossing tensors -> backbone output). Both share the backbone's layers and weights. With
    ``index >= len(backbone.layers)`` nothing is cut: ``frozen`` gives the output alone, ``top`` is None.
    """
    if index >= len(backbone.layers):
        return keras.Model(backbone.input, [backbone.output], name=f"{backbone.name}_frozen"), None
    crossing = crossing_tensors(backbone, index)
    frozen = keras.Model(backbone.input, [*crossing, backbone.output], name=f"{backbone.name}_frozen")
    top = keras.Model(crossing, backbone.output, name=f"{backbone.name}_top")
    return frozen, top


def _source_name(tensor) -> str:
    """The name of the layer that produced a functional model's tensor."""
    history = getattr(tensor, "_keras_history", None)
    return history[0].name if history else str(getattr(tensor, "name", tensor))


def _weights_digest(layers) -> str:
    digest = hashlib.sha256()
    for layer in layers:
        for weight in layer.weights:
            digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()


@dataclass
class _Entry:
    """One cached quantity: the pooled backbone output, or the activations crossing one cut."""

    name: str  # "pooled" or "cut-<index>"
    tensors: list  # symbolic tensors of the backbone (the pooled entry: the backbone output, pooled later)
    shapes: list
    description: dict
    layers: list  # the layers its values depend on (their weights are hashed into the key)
    key: str = ""
    arrays: dict = field(default_factory=dict)  # split -> [arrays]
    reused: bool = False


class FrozenFeatures:
    """Cached outputs of a backbone's frozen layers for the training (``views`` per image) and
    validation images of an `ImageFolder`.

    ``cut`` is the backbone layer index phase 2 starts at (None: phase 1 only); ``phases`` says which
    phases' inputs are needed (a continued run may need phase 2's alone). Arrays live in memory, or
    with ``cache_dir`` in `NpyFile` files there (read a batch at a time, so they need not fit in
    memory), reused by later runs only when everything they depend on is the same: the image files
    and split, image size, the weights of the layers involved (hashed), the cut, pooling and
    preprocessing, the augmentation and its ``seed``, the views and dtype. Without ``cache_dir``,
    features that would take more than half the available memory go to a temporary folder instead,
    removed by `close`. ``shuffle_seed`` orders the training batches (default: ``seed``).
    """

    def __init__(self, data, backbone: keras.Model, head_pool, preprocessing=None, augment=None, *,
                 cut: int | None = None, phases=(1, 2), also_cuts=(), views: int = FastPath.views,
                 dtype: str = FastPath.feature_dtype,
                 cache_dir: os.PathLike | str | None = None, augmentation_config=None, seed=None,
                 shuffle_seed=None, verbose: int = 0, identity: dict | None = None, distribution=None):
        if views < 1:
            raise ValueError(f"views={views!r}: need at least one view per image.")
        self.views = views if augment is not None else 1  # without augmentation every view is the same
        self.dtype = np.dtype(dtype)
        self.n_train = len(data.labels("train"))
        self.n_validation = len(data.labels("validation"))
        self.batch_size = data.batch_size
        self.seed = seed
        shuffle_seed = seed if shuffle_seed is None else shuffle_seed
        self.shuffle_seed = shuffle_seed if shuffle_seed is not None else int(np.random.default_rng().integers(2**31))
        train_labels = data.labels("train")
        self.train_labels = np.tile(train_labels, (self.views,) + (1,) * (train_labels.ndim - 1))  # view-major
        self.validation_labels = data.labels("validation")
        if cut is not None and cut >= len(backbone.layers):
            cut = None
        self.cut = cut

        pooled_shape = tuple(head_pool.compute_output_shape(backbone.output.shape)[1:])
        self.pooled_shape = pooled_shape
        entries = {}
        if 1 in phases:
            entries["pooled"] = _Entry("pooled", [backbone.output], [pooled_shape],
                                       {"entry": "pooled", "pooling": _layer_config(head_pool)}, backbone.layers)
        wanted_cuts = [cut] if 2 in phases and cut is not None else []
        for index in dict.fromkeys([*wanted_cuts, *(c for c in also_cuts if cache_dir is not None)]):
            if index is None or not 0 < index < len(backbone.layers):
                continue
            tensors = crossing_tensors(backbone, index)
            entries[f"cut-{index}"] = _Entry(
                f"cut-{index}", tensors, [tuple(t.shape[1:]) for t in tensors],
                {"entry": "cut", "index": index, "layer": backbone.layers[index].name,
                 "crossing": [_source_name(t) for t in tensors]}, backbone.layers[:index])
        needed = [n for n in entries if n == "pooled" or n == f"cut-{cut}"]
        self._entries = entries
        self._needed = needed

        self._spill = None
        self._partial: dict[Path, Path] = {}  # final cache file -> the name it is written under
        rows = self.views * self.n_train + self.n_validation
        self.nbytes = sum(rows * sum(int(np.prod(s)) for s in entries[n].shapes) for n in needed) * self.dtype.itemsize
        available = available_memory() if cache_dir is None else None
        if available is not None and self.nbytes > available // 2:
            self._spill = tempfile.TemporaryDirectory(prefix="transferkit-features-")
            cache_dir = self._spill.name
            log.warning("The frozen features need %.1f GiB, more than half the %.1f GiB of available memory: "
                        "keeping them in %s for this fit (give cache_dir= to choose where, and to reuse them).",
                        self.nbytes / 2**30, available / 2**30, cache_dir)
        if cache_dir is not None:
            cache_dir = Path(cache_dir)
            cache_dir.mkdir(parents=True, exist_ok=True)
            base = self._base_description(data, preprocessing, augmentation_config, seed, augment is not None,
                                          identity or {})
            for entry in entries.values():
                entry.key = self._key(base, entry)
        sizes = {"train": self.views * self.n_train, "validation": self.n_validation}
        for entry in entries.values():
            entry.reused = self._reuse(cache_dir, entry)
        if all(entries[n].reused for n in needed):
            to_fill = []  # what this run needs is cached: the extra cuts wait for a run that makes a pass anyway
        else:
            to_fill = [e for e in entries.values() if not e.reused]
        for entry in entries.values():
            if entry.reused:
                log.info("Reusing frozen features (%s) from %s", entry.name, cache_dir)
            elif entry in to_fill:
                entry.arrays = {split: self._create(cache_dir, entry, split, rows) for split, rows in sizes.items()}
        if to_fill:
            extractor = distribute.extractor(self._extractor(backbone, to_fill, head_pool, preprocessing),
                                             distribution)
            self._fill(data.dataset("train"), [a for e in to_fill for a in e.arrays["train"]], extractor, augment,
                       verbose)
            self._fill(data.dataset("validation"), [a for e in to_fill for a in e.arrays["validation"]], extractor,
                       None, verbose)
            if cache_dir is not None:
                for entry in to_fill:
                    self._publish(cache_dir, entry)

    @property
    def train(self) -> list:
        """The training arrays this run uses: ``[crossing activations..., pooled]`` (each if needed)."""
        return self._split_arrays("train")

    @property
    def validation(self) -> list:
        return self._split_arrays("validation")

    def _split_arrays(self, split: str) -> list:
        order = [n for n in self._needed if n != "pooled"] + [n for n in self._needed if n == "pooled"]
        return [a for n in order for a in self._entries[n].arrays[split]]

    def inputs(self, split: str, phase: int) -> list:
        """The arrays phase ``phase`` trains (``"train"``) or validates on."""
        name = "pooled" if phase == 1 else f"cut-{self.cut}"
        if name not in self._needed:
            raise ValueError(f"These features were computed without phase {phase}'s inputs.")
        return self._entries[name].arrays[split]

    # -- storage ------------------------------------------------------------------------------

    def _base_description(self, data, preprocessing, augmentation_config, seed, augmented, identity) -> dict:
        """What every entry depends on: the images and split, the backbone, preprocessing and views."""
        files = (file_list_of(data, "train") + file_list_of(data, "validation")).digest()
        return {
            "format": _CACHE_FORMAT,
            "files": files, "split_sizes": [self.n_train, self.n_validation],
            "image_size": list(data.image_size), "crop": getattr(data, "crop_to_aspect_ratio", None),
            "batch_size": self.batch_size, "views": self.views, "dtype": self.dtype.str, "seed": seed,
            "augmented": augmented, "augmentation": augmentation_config,
            "preprocessing": _layer_config(preprocessing), "identity": identity,
        }

    @staticmethod
    def _key(base: dict, entry: _Entry) -> str:
        """Everything the entry's values depend on, hashed: reuse is safe only when all of it matches."""
        digest = hashlib.sha256()
        description = {**base, **entry.description, "shapes": [list(s) for s in entry.shapes]}
        digest.update(json.dumps(description, default=str, sort_keys=True).encode("utf-8", "surrogateescape"))
        digest.update(_weights_digest(entry.layers).encode())
        return digest.hexdigest()[:24]

    def _files(self, cache_dir: Path, entry: _Entry, split: str) -> list[Path]:
        return [cache_dir / f"features-{entry.key}-{split}-{i}.npy" for i in range(len(entry.shapes))]

    def _reuse(self, cache_dir, entry: _Entry) -> bool:
        """Open a finished entry of ``cache_dir``; False if there is none."""
        if cache_dir is None or not (cache_dir / f"features-{entry.key}.done").exists():
            return False
        files = {split: self._files(cache_dir, entry, split) for split in _SPLITS}
        if not all(f.exists() for names in files.values() for f in names):
            return False
        entry.arrays = {split: [NpyFile(f) for f in names] for split, names in files.items()}
        return True

    def _create(self, cache_dir, entry: _Entry, split: str, rows: int) -> list:
        """Arrays to fill: in memory, or files in ``cache_dir`` under unique partial names."""
        if cache_dir is None:
            return [np.empty((rows, *s), dtype=self.dtype) for s in entry.shapes]
        arrays = []
        for name, shape in zip(self._files(cache_dir, entry, split), entry.shapes):
            self._partial[name] = unique_partial(name)
            arrays.append(NpyFile.create(self._partial[name], (rows, *shape), self.dtype))
        return arrays

    def _publish(self, cache_dir: Path, entry: _Entry) -> None:
        """Rename each finished file into place, then mark the entry done. Another process filling the
        same entry computes the same values, so whichever rename lands last changes nothing."""
        for split, arrays in entry.arrays.items():
            for i, array in enumerate(arrays):
                array.close()
                final = cache_dir / f"features-{entry.key}-{split}-{i}.npy"
                os.replace(self._partial.pop(final), final)
                arrays[i] = NpyFile(final)
        write_atomically(cache_dir / f"features-{entry.key}.done", "ok\n")

    @staticmethod
    def _extractor(backbone, entries, head_pool, preprocessing) -> keras.Model:
        """Pixels -> the entries' values, in order; ``predict_on_batch`` runs it compiled."""
        tensors = [t for e in entries for t in e.tensors]
        inner = keras.Model(backbone.input, tensors)
        inputs = keras.Input(backbone.input.shape[1:])
        outputs = inner(preprocessing(inputs) if preprocessing is not None else inputs)
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        values, position = [], 0
        for entry in entries:
            taken = outputs[position : position + len(entry.tensors)]
            position += len(entry.tensors)
            values += [head_pool(taken[0])] if entry.name == "pooled" else taken
        return keras.Model(inputs, values)

    def _fill(self, dataset, arrays, extractor, augment, verbose) -> None:
        views = self.views if augment is not None else 1
        total = len(arrays[0])
        bar = progress(total, "Computing frozen features", unit="image view", verbose=verbose)
        row = 0
        for view in range(views):
            for images in _view_batches(dataset, augment if view > 0 else None):
                values = extractor(images)
                for array, value in zip(arrays, values):
                    array[row : row + len(value)] = value.astype(self.dtype)
                row += len(values[0])
                bar.update(len(values[0]))
        bar.close()
        if row != total:
            raise RuntimeError(f"Expected {total} feature rows, computed {row}.")

    def close(self) -> None:
        """Close the cache files; remove them if they were only spilled to a temporary folder."""
        for entry in self._entries.values():
            for arrays in entry.arrays.values():
                for array in arrays:
                    if isinstance(array, NpyFile):
                        array.close()
        if self._spill is not None:
            self._spill.cleanup()
            self._spill = None

    # -- datasets -----------------------------------------------------------------------------

    def phase_dataset(self, which: str, phase: int, random_views: bool = False, mirror: bool = False,
                      start_pass=0):
        """``(inputs, labels)`` batches for ``phase`` (1: pooled features; 2: crossing activations).
        The training set serves view ``k % views`` on its ``k``-th pass (counted from ``start_pass``),
        shuffled; with ``random_views`` each image gets a view drawn at random on every pass instead.
        With ``mirror`` (phase 2), each training sample's activation maps are mirrored left-right
        with probability 1/2."""
        labels = self.train_labels if which == "train" else self.validation_labels
        inputs = self.inputs(which, phase)
        if which != "train":
            return array_dataset((*inputs, labels), np.arange(len(labels)), self.batch_size)
        n, views = self.n_train, self.views
        rows = np.arange(views * n).reshape(views, n)
        if random_views and views > 1:
            def rows(k, rng):  # noqa: F811 - a per-pass choice of view for each image
                return rng.permutation(n) + n * rng.integers(0, views, n)
        return array_dataset((*inputs, labels), rows, self.batch_size, self.shuffle_seed, start_pass,
                             mirror=mirror and phase == 2)


def _layer_config(layer):
    return None if layer is None else [type(layer).__name__, layer.get_config()]


def _view_batches(dataset, augment):
    """The images of ``dataset``'s batches in order, as NumPy arrays, through ``augment`` in training mode
    when given: inside ``tf.data`` for a ``tf.data`` dataset, eagerly on the backend's arrays otherwise.
    Either way the layers' seed generators advance batch by batch, so a seeded run repeats."""
    steps = [] if augment is None else augment.layers if isinstance(augment, keras.Sequential) else [augment]
    if hasattr(dataset, "element_spec"):
        import tensorflow as tf

        def augmented(x, y):
            # Keras's random layers run inside tf.data on every backend, but a Sequential around them
            # converts its input to the backend's arrays first, which a tf.data graph cannot hold.
            for step in steps:
                x = step(x, training=True)
            return x, y

        source = dataset.map(augmented) if steps else dataset  # in order: seeds repeat
        for images, _ in source.prefetch(tf.data.AUTOTUNE):
            yield np.asarray(images)
        return
    for images, _ in dataset:
        for step in steps:
            images = step(images, training=True)
        yield np.asarray(keras.ops.convert_to_numpy(images)) if steps else np.asarray(images)
