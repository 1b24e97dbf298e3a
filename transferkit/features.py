"""Computing what the frozen layers produce once, instead of every epoch.

In phase 1 the whole backbone is frozen and in phase 2 the layers before the unfreeze point are, so
(with BatchNorm frozen) their outputs depend only on the input image. `FrozenFeatures` runs the
frozen part once over a few augmented *views* of every training image (view 0 unaugmented) and
once over the validation images, keeping both what phase 2 needs (the activations that cross the
unfreeze point) and what phase 1 needs (the pooled backbone output). Epoch ``e`` then trains on view
``e % views`` of every image, through the head only (phase 1) or the unfrozen top only (phase 2).
Given the same views, this is the exact recipe's arithmetic; what changes is that augmentation draws
``views`` variants per image instead of one per epoch.

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
from pathlib import Path

import keras
import numpy as np

from transferkit.data import array_dataset, unique_partial, write_atomically
from transferkit.npyfile import NpyFile

__all__ = ["split_backbone", "FrozenFeatures"]

log = logging.getLogger(__name__)

_CACHE_FORMAT = 2  # 2: the key covers the cut, pooling, preprocessing and the backbone's identity


def split_backbone(backbone: keras.Model, index: int) -> tuple[keras.Model, keras.Model]:
    """Cut a functional backbone before ``backbone.layers[index]``.

    Returns ``frozen`` (image -> [tensors crossing the cut..., backbone output]) and ``top``
    (crossing tensors -> backbone output). Both share the backbone's layers and weights. With
    ``index >= len(backbone.layers)`` nothing is cut: ``frozen`` gives the output alone, ``top`` is None.
    """
    if index >= len(backbone.layers):
        return keras.Model(backbone.input, [backbone.output], name=f"{backbone.name}_frozen"), None
    after = {id(layer) for layer in backbone.layers[index:]}
    crossing = []
    for layer in backbone.layers[:index]:
        if any(id(node.operation) in after for node in layer._outbound_nodes):
            crossing.append(layer.output)
    if not crossing:
        raise ValueError(f"Nothing crosses layer {index} of {backbone.name}; is it a functional model?")
    frozen = keras.Model(backbone.input, [*crossing, backbone.output], name=f"{backbone.name}_frozen")
    top = keras.Model(crossing, backbone.output, name=f"{backbone.name}_top")
    return frozen, top


def _source_name(tensor) -> str:
    """The name of the layer that produced a functional model's tensor."""
    history = getattr(tensor, "_keras_history", None)
    return history[0].name if history else str(getattr(tensor, "name", tensor))


def available_memory() -> int | None:
    """Bytes of memory the system can give without swapping (Linux, macOS), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _weights_digest(model: keras.Model) -> str:
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()


class FrozenFeatures:
    """Cached outputs of a backbone's frozen part for the training (``views`` per image) and
    validation images of an `ImageFolder`.

    Arrays live in memory, or with ``cache_dir`` in `NpyFile` files there (read a batch at a time,
    so they need not fit in memory), reused by later runs only when everything they depend on is
    the same: the image files and split, image size, the frozen layers' weights (hashed), the cut,
    the augmentation and its seed, the views and dtype. Without ``cache_dir``, features that would
    take more than half the available memory go to a temporary folder instead, removed by `close`.
    """

    def __init__(self, data, frozen: keras.Model, head_pool, preprocessing=None, augment=None,
                 views: int = 3, dtype: str = "float16", cache_dir: os.PathLike | str | None = None,
                 augmentation_config=None, seed=None, verbose: int = 0, identity: dict | None = None):
        if views < 1:
            raise ValueError(f"views={views!r}: need at least one view per image.")
        self.views = views if augment is not None else 1  # without augmentation every view is the same
        self.dtype = np.dtype(dtype)
        self.n_train = len(data.labels("train"))
        self.n_validation = len(data.labels("validation"))
        self.batch_size = data.batch_size
        self.seed = seed
        self.shuffle_seed = seed if seed is not None else int(np.random.default_rng().integers(2**31))
        self.train_labels = np.tile(data.labels("train"), self.views)
        self.validation_labels = data.labels("validation")
        shapes = [tuple(t.shape[1:]) for t in frozen.outputs[:-1]]
        pooled = tuple(head_pool.compute_output_shape(frozen.outputs[-1].shape)[1:])
        self.shapes = [*shapes, pooled]

        self._spill = None
        self._partial: dict[Path, Path] = {}  # final cache file -> the name it is written under
        rows = self.views * self.n_train + self.n_validation
        self.nbytes = rows * sum(int(np.prod(s)) for s in self.shapes) * self.dtype.itemsize
        available = available_memory() if cache_dir is None else None
        if available is not None and self.nbytes > available // 2:
            self._spill = tempfile.TemporaryDirectory(prefix="transferkit-features-")
            cache_dir = self._spill.name
            log.warning("The frozen features need %.1f GiB, more than half the %.1f GiB of available memory: "
                        "keeping them in %s for this fit (give cache_dir= to choose where, and to reuse them).",
                        self.nbytes / 2**30, available / 2**30, cache_dir)
        key = None
        if cache_dir is not None:
            key = self._key(data, frozen, head_pool, preprocessing, augmentation_config, seed, augment is not None,
                            identity or {})
            cache_dir = Path(cache_dir)
            cache_dir.mkdir(parents=True, exist_ok=True)
        self.train, reused = self._arrays(cache_dir, key, "train", self.views * self.n_train)
        self.validation, _ = self._arrays(cache_dir, key, "validation", self.n_validation)
        if reused:
            log.info("Reusing frozen features from %s", cache_dir)
            return
        extractor = self._extractor(frozen, head_pool, preprocessing)
        self._fill(data.dataset("train"), self.train, extractor, augment, verbose)
        self._fill(data.dataset("validation"), self.validation, extractor, None, verbose)
        if cache_dir is not None:
            self._publish(cache_dir, key)

    # -- storage ------------------------------------------------------------------------------

    def _key(self, data, frozen, head_pool, preprocessing, augmentation_config, seed, augmented, identity) -> str:
        """Everything the cached values depend on, hashed: reuse is safe only when all of it matches."""
        digest = hashlib.sha256()
        files = [str(p.resolve()) for split in ("train", "validation") for p in data.files(split)]
        stats = [(os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
        layer_config = lambda layer: None if layer is None else [type(layer).__name__, layer.get_config()]  # noqa: E731
        description = {
            "format": _CACHE_FORMAT,
            "files": files, "stats": stats, "split_sizes": [len(data.labels("train")), len(data.labels("validation"))],
            "image_size": list(data.image_size), "crop": getattr(data, "crop_to_aspect_ratio", None),
            "batch_size": self.batch_size, "views": self.views, "dtype": self.dtype.str, "seed": seed,
            "augmented": augmented, "augmentation": augmentation_config,
            "cut": [_source_name(t) for t in frozen.outputs], "shapes": [list(s) for s in self.shapes],
            "pooling": layer_config(head_pool), "preprocessing": layer_config(preprocessing),
            "identity": identity,
        }
        digest.update(json.dumps(description, default=str, sort_keys=True).encode("utf-8", "surrogateescape"))
        digest.update(_weights_digest(frozen).encode())
        return digest.hexdigest()[:24]

    def _arrays(self, cache_dir, key, split, rows) -> tuple[list[np.ndarray], bool]:
        """Arrays to fill (in memory, or partial files in ``cache_dir``), or finished ones: ``(arrays, reused)``."""
        if cache_dir is None:
            return [np.empty((rows, *s), dtype=self.dtype) for s in self.shapes], False
        names = [cache_dir / f"features-{key}-{split}-{i}.npy" for i in range(len(self.shapes))]
        if (cache_dir / f"features-{key}.done").exists() and all(n.exists() for n in names):
            return [NpyFile(n) for n in names], True
        for n in names:
            self._partial[n] = unique_partial(n)
        return [NpyFile.create(self._partial[n], (rows, *s), self.dtype) for n, s in zip(names, self.shapes)], False

    def _publish(self, cache_dir: Path, key: str) -> None:
        """Rename each finished file into place, then mark the entry done. Another process filling the
        same entry computes the same values, so whichever rename lands last changes nothing."""
        for split, arrays in (("train", self.train), ("validation", self.validation)):
            for i, array in enumerate(arrays):
                array.close()
                final = cache_dir / f"features-{key}-{split}-{i}.npy"
                os.replace(self._partial.pop(final), final)
                arrays[i] = NpyFile(final)
        write_atomically(cache_dir / f"features-{key}.done", "ok\n")

    @staticmethod
    def _extractor(frozen, head_pool, preprocessing) -> keras.Model:
        """Pixels -> [crossing activations..., pooled output]; ``predict_on_batch`` runs it compiled."""
        inputs = keras.Input(frozen.input.shape[1:])
        outputs = frozen(preprocessing(inputs) if preprocessing is not None else inputs)
        *crossing, output = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return keras.Model(inputs, [*crossing, head_pool(output)])

    def _fill(self, dataset, arrays, extractor, augment, verbose) -> None:
        import tensorflow as tf

        views = self.views if augment is not None else 1
        total = len(arrays[0])
        progress = None
        if verbose:
            from keras.utils import Progbar

            print(f"Computing frozen features: {total} image views")
            progress = Progbar(total, unit_name="view")
        row = 0
        for view in range(views):
            source = dataset
            if view > 0:  # augmentation runs in the input pipeline, in training mode
                source = dataset.map(lambda x, y: (augment(x, training=True), y))  # in order: seeds repeat
            for images, _ in source.prefetch(tf.data.AUTOTUNE):
                values = extractor.predict_on_batch(images)
                values = values if isinstance(values, (list, tuple)) else [values]
                for array, value in zip(arrays, values):
                    array[row : row + len(value)] = np.asarray(value).astype(self.dtype)
                row += len(values[0])
                if progress is not None:
                    progress.update(row)
        if row != total:
            raise RuntimeError(f"Expected {total} feature rows, computed {row}.")

    def close(self) -> None:
        """Close the cache files; remove them if they were only spilled to a temporary folder."""
        for arrays in (self.train, self.validation):
            for array in arrays:
                if isinstance(array, NpyFile):
                    array.close()
        if self._spill is not None:
            self._spill.cleanup()
            self._spill = None

    # -- datasets -----------------------------------------------------------------------------

    def phase_dataset(self, which: str, phase: int, random_views: bool = False, mirror: bool = False,
                      start_pass: int = 0):
        """``(inputs, labels)`` batches for ``phase`` (1: pooled features; 2: crossing activations).
        The training set serves view ``k % views`` on its ``k``-th pass (counted from ``start_pass``),
        shuffled; with ``random_views`` each image gets a view drawn at random on every pass instead.
        With ``mirror`` (phase 2), each training sample's activation maps are mirrored left-right
        with probability 1/2."""
        arrays = self.train if which == "train" else self.validation
        labels = self.train_labels if which == "train" else self.validation_labels
        inputs = arrays[-1:] if phase == 1 else arrays[:-1]
        if which != "train":
            return array_dataset((*inputs, labels), np.arange(len(labels)), self.batch_size)
        n, views = self.n_train, self.views
        rows = np.arange(views * n).reshape(views, n)
        if random_views and views > 1:
            def rows(k, rng):  # noqa: F811 - a per-pass choice of view for each image
                return rng.permutation(n) + n * rng.integers(0, views, n)
        return array_dataset((*inputs, labels), rows, self.batch_size, self.shuffle_seed, start_pass,
                             mirror=mirror and phase == 2)
