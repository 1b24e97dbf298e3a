"""The dataset factory: a folder of class folders in, verified and split batches out (`array_dataset`).

>>> import tempfile, pathlib
>>> from PIL import Image
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> for name, colour in [("cats", "red"), ("dogs", "blue")]:
...     (root / name).mkdir()
...     for i in range(10):
...         Image.new("RGB", (24, 20), colour).save(root / name / f"{i}.png")
>>> data = ImageFolder(root, image_size=(16, 16), batch_size=4, split=(0.6, 0.2, 0.2), seed=1)
>>> data.class_names, data.report.counts["train"]
(['cats', 'dogs'], {'cats': 6, 'dogs': 6})
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transferkit._internal.files import display_path, unique_partial, write_atomically
from transferkit._internal.npyfile import NpyFile
from transferkit._internal.progress import progress
from transferkit.data.fingerprint import FileList
from transferkit.data.images import ImageReadError, read_image
from transferkit.data.pipeline import PassClock, array_dataset
from transferkit.data.split import stratified_split, validate_fractions

__all__ = ["ImageFolder", "DatasetReport", "SkippedFile", "SPLITS"]

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
_VALIDATION_FOLDER_NAMES = ("validation", "val", "valid")
_CACHE_FORMAT = 2  # 2: EXIF orientation applied


@dataclass(frozen=True)
class SkippedFile:
    path: Path
    reason: str


@dataclass
class DatasetReport:
    """What was found: images per split and class, and every file skipped with the reason."""

    root: Path
    class_names: list[str]
    counts: dict[str, dict[str, int]]
    skipped: list[SkippedFile] = field(default_factory=list)
    left_out: list[Path] = field(default_factory=list)
    excluded: list[Path] = field(default_factory=list)
    new: dict[str, int] | None = None  # with a recorded split kept: the files it did not hold, per split
    repeated: list[str] = field(default_factory=list)  # a label table's rows that repeat an earlier one

    def __str__(self) -> str:
        splits = [s for s in SPLITS if s in self.counts]
        width = max([len(c) for c in self.class_names] + [5])
        lines = [f"Images in {display_path(self.root)}", f"{'class':<{width}}" + "".join(f"{s:>12}" for s in splits)]
        for name in self.class_names:
            lines.append(f"{name:<{width}}" + "".join(f"{self.counts[s][name]:>12}" for s in splits))
        totals = [sum(self.counts[s].values()) for s in splits]
        lines.append(f"{'total':<{width}}" + "".join(f"{t:>12}" for t in totals))
        lines.append(f"skipped: {len(self.skipped)} file(s)")
        lines.extend(f"  {display_path(s.path)}: {s.reason}" for s in self.skipped)
        if self.left_out:
            lines.append(f"left out: {len(self.left_out)} file(s) not in the given split, e.g. "
                         f"{display_path(self.left_out[0])}")
        if self.excluded:
            lines.append(f"excluded as asked: {len(self.excluded)} file(s), e.g. {display_path(self.excluded[0])}")
        if self.new is not None:
            lines.append(f"new since the recorded split: {sum(self.new.values())} file(s) ("
                         + ", ".join(f"{name} {count}" for name, count in self.new.items()) + "); the recorded files "
                         "keep their splits")
        if self.repeated:
            lines.append(f"repeated rows: {len(self.repeated)}, each kept once, e.g. {self.repeated[0]}")
        return "\n".join(lines)


def _check_folder(folder: Path) -> None:
    if folder.is_file():
        raise NotADirectoryError(
            f"{display_path(folder)} is a file; give the folder that holds one folder of images per class."
        )
    if not folder.is_dir():
        raise FileNotFoundError(f"Image folder not found: {display_path(folder)}")


def _class_folders(folder: Path) -> list[Path]:
    _check_folder(folder)
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        found = f"only {classes[0].name!r}" if classes else "none"
        raise ValueError(
            f"{folder} needs at least two class folders (e.g. {folder}/cats/, {folder}/dogs/), found {found}."
        )
    return classes


def _files_in(class_folder: Path) -> list[str]:
    """The files below ``class_folder``, hidden ones left out, as path strings in path order (a Path object
    a file would cost ~400 B each at 100,000 files)."""
    files = []
    for directory, folders, names in os.walk(class_folder):
        folders[:] = [f for f in folders if not f.startswith(".")]
        files += [path for path in (os.path.join(directory, n) for n in names if not n.startswith("."))
                  if os.path.isfile(path)]
    if not files:
        raise ValueError(f"Class folder {class_folder} is empty: put its images there or remove the folder.")
    return sorted(files, key=lambda path: path.split(os.sep))  # the order Path objects sort in


def bounded_map(pool, function, count: int, window: int):
    """``function(0), ..., function(count - 1)`` in order, run by ``pool`` with at most ``window`` of them
    submitted at a time (``Executor.map`` submits them all first, and 100,000 pending calls hold memory).

    >>> from concurrent.futures import ThreadPoolExecutor
    >>> with ThreadPoolExecutor(2) as pool:
    ...     list(bounded_map(pool, lambda i: i * i, 5, window=2))
    [0, 1, 4, 9, 16]
    """
    pending = deque()
    for i in range(count):
        pending.append(pool.submit(function, i))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


class ImageFolder:
    """Verified, decoded, split image data from a class-per-folder tree.

    ``directory`` is either a root of class folders (``root/cats/*.jpg``, ``root/dogs/*.jpg``),
    split by ``split`` on the file list, stratified per class with ``seed`` (see `stratified_split`:
    adding files to a folder moves at most one existing file per cut of its class); or a root that
    already has ``train/`` and ``validation/`` (or ``val/``) and optionally ``test/`` folders of
    class folders, used as given (``split`` is then ignored). ``split`` may also be the file lists
    themselves, ``{"train": [...], "validation": [...], "test": [...]}`` of paths relative to
    ``directory`` (``split_record()["files"]``, which a trained model carries): exactly those
    files are used, a listed file that is missing is an error, and files not listed are left out
    (counted in ``report.left_out``). ``exclude`` names files to leave out (paths relative to
    ``directory`` or absolute; `AuditReport.flagged` gives such a list), counted in
    ``report.excluded``. File and folder names starting with ``.`` are ignored. ``recorded_split`` (a
    trained model's ``split``, to continue training it on more images) keeps every file it lists in its
    recorded split and splits the files it does not list by ``split``'s rule, counted in ``report.new``.

    Every file is decoded once, up front: files that cannot be used (empty, corrupt, truncated,
    not an image) are skipped and listed in ``report`` (or raise, with ``on_bad_file="raise"``);
    nothing is ever deleted or moved. The decoded, resized pixels are kept in memory or, with
    ``cache_dir``, in a file there that is read a batch at a time (for data larger than memory)
    and that later runs on the same files reuse.

    Attributes:
        train, validation, test: datasets of ``(float32 images 0-255, int32 labels)`` batches (``tf.data``
            on TensorFlow, `ArrayBatches` elsewhere: `pipeline_kind`); only ``train`` is reshuffled every
            epoch. ``test`` is None when there is none.
        class_names: sorted class folder names; label ``i`` is ``class_names[i]``.
        class_weights: ``{label: weight}`` balancing the training classes, for ``fit(class_weight=...)``.
        report: a `DatasetReport`.
    """

    def __init__(
        self,
        directory: os.PathLike | str,
        image_size: tuple[int, int] = (224, 224),
        batch_size: int = 32,
        split: tuple[float, ...] | dict[str, list[str]] = (0.8, 0.1, 0.1),
        seed: int = 42,
        crop_to_aspect_ratio: bool = False,
        on_bad_file: str = "skip",
        cache_dir: os.PathLike | str | None = None,
        verbose: int = 0,
        num_workers: int | None = None,
        exclude=None,
        recorded_split: dict | None = None,
    ):
        if on_bad_file not in ("skip", "raise"):
            raise ValueError(f"on_bad_file={on_bad_file!r}: use 'skip' or 'raise'.")
        if len(image_size) != 2 or min(image_size) < 1:
            raise ValueError(f"image_size={image_size!r}: give (height, width) in pixels.")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be at least 1.")
        self.root = Path(directory)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.batch_size = int(batch_size)
        self.seed = seed
        self.crop_to_aspect_ratio = crop_to_aspect_ratio
        self.cache_dir = None if cache_dir is None else Path(cache_dir)

        given = split if isinstance(split, dict) else None
        self.class_names, paths, labels, origin = self._list_files(split)
        left_out = []
        if given is not None:
            paths, labels, origin, left_out = self._listed_files(given, paths, labels)
        excluded = []
        if exclude is not None:
            paths, labels, origin, excluded = self._without(exclude, paths, labels, origin)
        self._paths = tuple(map(os.fspath, paths))  # plain strings: a Path object costs ~400 B a file
        self._file_list = FileList.of(paths, root=self.root)  # what the caches and checkpoints fingerprint
        self._labels = np.asarray(labels, dtype=np.int32)
        self._images, skipped = self._decode_all(on_bad_file, verbose, num_workers)
        bad = {os.fspath(s.path) for s in skipped}
        good = np.asarray([p not in bad for p in self._paths])
        origin = np.asarray(origin)
        if given is None:
            self._check_readable(good, origin)

        self._all = np.flatnonzero(good)
        new = None
        if given is not None or self._presplit(origin):
            self.split = None if given is None else "given"
            self._indices = {name: np.flatnonzero(good & (origin == name)) for name in dict.fromkeys(origin.tolist())}
        else:
            self.split = validate_fractions(split)
            good_positions = np.flatnonzero(good)
            keys = [self._relative(paths[i]) for i in good_positions]
            parts = stratified_split(self._strata(self._labels[good_positions]), self.split, seed, keys=keys)
            self._indices = {name: good_positions[p] for name, p in zip(SPLITS, parts)}
            new = self._keep_recorded(recorded_split) if recorded_split is not None else None
        # File lists that name only some splits (the test files a model recorded, to evaluate it) give only
        # those; every split they name, like the two that fractions and folders give, must hold images.
        required = ("train", "validation") if given is None else [name for name in SPLITS if name in given]
        for name in required:
            if len(self._indices.get(name, ())) == 0:
                shown = "the given file lists" if given is not None else f"split={split!r}"
                raise ValueError(
                    f"The {name} split of {display_path(self.root)} is empty: add images or change {shown}."
                )

        counts = {
            name: {c: int(np.sum(self._labels[idx] == i if self._labels.ndim == 1 else self._labels[idx, i]))
                   for i, c in enumerate(self.class_names)}
            for name, idx in self._indices.items()
        }
        self.report = DatasetReport(self.root, list(self.class_names), counts, skipped, left_out, excluded,
                                    new=new if given is None and isinstance(self.split, tuple) else None)
        log.info("%s", self.report)

        self._make_datasets()

    # -- layout -------------------------------------------------------------------------------

    def _list_files(self, split) -> tuple[list[str], list[str], list[int], list[str]]:
        """The class names, and every file with its label and the split its place gives (``"train"`` for
        all of them when the data is to be split by fractions)."""
        self._sources = self._find_sources(split)
        class_names = [p.name for p in next(iter(self._sources.values()))]
        paths, labels, origin = [], [], []
        for split_name, class_folders in self._sources.items():
            for label, folder in enumerate(class_folders):
                files = _files_in(folder)
                paths += files
                labels += [label] * len(files)
                origin += [split_name] * len(files)
        return class_names, paths, labels, origin

    def _check_readable(self, good: np.ndarray, origin: np.ndarray) -> None:
        """Every class folder must keep a readable image."""
        for split_name, class_folders in self._sources.items():
            for label, folder in enumerate(class_folders):
                if not np.any(good & (self._labels == label) & (origin == split_name)):
                    raise ValueError(
                        f"No readable images in {display_path(folder)}; see the skipped files in the report."
                    )

    def _keep_recorded(self, record: dict) -> dict[str, int]:
        """Files a recorded split holds go back to their recorded splits; the others keep what the rule gave
        them. Returns the new files per split."""
        files = record.get("files", record) if isinstance(record, dict) else {}
        recorded = {name: split for split, names in files.items() if split in SPLITS for name in names}
        if not recorded:
            raise ValueError("recorded_split holds no file lists: give a trained model's split record "
                             "(Classifier.split, or ImageFolder.split_record()).")
        chosen, new = {}, {}
        for split, positions in self._indices.items():
            new[split] = 0
            for i in positions:
                name = self._relative(self._paths[i])
                chosen[int(i)] = recorded.get(name, split)
                new[split] += name not in recorded
        self._indices = {split: np.asarray(sorted(i for i, s in chosen.items() if s == split), dtype=np.int64)
                         for split in SPLITS if any(s == split for s in chosen.values())}
        return new

    def _presplit(self, origin: np.ndarray) -> bool:
        """Whether the layout says each file's split (train/ and validation/ folders), rather than fractions."""
        return len(set(origin.tolist())) > 1

    def _relative(self, path: os.PathLike | str) -> str:
        return Path(path).relative_to(self.root).as_posix()

    def _listed_files(self, given: dict, paths, labels):
        """Keep the files that ``given`` ({split: [relative paths]}) lists; say what no longer matches."""
        unknown = set(given) - set(SPLITS)
        if unknown:
            raise ValueError(f"split lists {sorted(unknown)}: name the file lists train, validation and test.")
        where = {self._relative(p): i for i, p in enumerate(paths)}
        missing = [f for files in given.values() for f in files if f not in where]
        if missing:
            raise ValueError(
                f"{len(missing)} file(s) of the recorded split are not in {display_path(self.root)} "
                f"(e.g. {display_path(missing[0])}): the folder's files no longer match the split. "
                "Point at the folder the model was trained on, or evaluate on all of its images."
            )
        order = [(name, where[f]) for name in SPLITS for f in given.get(name, ())]
        listed = {i for _, i in order}
        left_out = [Path(p) for i, p in enumerate(paths) if i not in listed]
        if left_out:
            log.warning("%d file(s) in %s are not in the given split and are left out, e.g. %s",
                        len(left_out), display_path(self.root), display_path(left_out[0]))
        return ([paths[i] for _, i in order], [labels[i] for _, i in order], [n for n, _ in order], left_out)

    def _without(self, exclude, paths, labels, origin):
        """Leave out the files ``exclude`` names (relative to the folder, relative to the current folder
        as the reports print them, or absolute); a name that is none of its image files is an error (an
        exclusion list made for another folder, say)."""
        if isinstance(exclude, (str, os.PathLike)):
            exclude = [exclude]
        found = {Path(os.path.abspath(p)): i for i, p in enumerate(paths)}
        wanted = {}
        for item in exclude:
            path = Path(item)
            candidates = [path] if path.is_absolute() else [self.root / path, path]
            where = next((c for c in map(Path, map(os.path.abspath, candidates)) if c in found),
                         Path(os.path.abspath(candidates[0])))
            wanted[where] = item
        missing = [wanted[p] for p in wanted if p not in found]
        if missing:
            raise ValueError(f"{len(missing)} file(s) to exclude are not images of {display_path(self.root)} "
                             f"(e.g. {display_path(missing[0])}; names are read relative to that folder, or to the "
                             "current one): was the list made for another folder?")
        drop = {found[p] for p in wanted}
        keep = [i for i in range(len(paths)) if i not in drop]
        return ([paths[i] for i in keep], [labels[i] for i in keep], [origin[i] for i in keep],
                [Path(paths[i]) for i in sorted(drop)])

    def split_record(self) -> dict:
        """How this data was split, JSON-friendly: enough to rebuild exactly the same split later
        with ``ImageFolder(root, split=record["files"])`` (what a trained model carries)."""
        return {
            "root": str(self.root.resolve()),
            "seed": self.seed,
            "fractions": None if not isinstance(self.split, tuple) else list(self.split),
            "layout": "fractions" if isinstance(self.split, tuple) else (self.split or "folders"),
            "class_names": list(self.class_names),
            "files": {name: [self._relative(self._paths[i]) for i in idx] for name, idx in self._indices.items()},
        }

    def _find_sources(self, split) -> dict[str, list[Path]]:
        _check_folder(self.root)
        if not (self.root / "train").is_dir():
            return {"train": _class_folders(self.root)}
        validation = next(
            (self.root / n for n in _VALIDATION_FOLDER_NAMES if (self.root / n).is_dir()), None
        )
        if validation is None:
            raise ValueError(
                f"{self.root} has a train/ folder but no validation/ (or val/) folder next to it; add one, "
                f"or point ImageFolder at {self.root / 'train'} to split it with split={split!r}."
            )
        sources = {"train": _class_folders(self.root / "train"), "validation": _class_folders(validation)}
        if (self.root / "test").is_dir():
            sources["test"] = _class_folders(self.root / "test")
        expected = [p.name for p in sources["train"]]
        for name, folders in sources.items():
            if [p.name for p in folders] != expected:
                raise ValueError(
                    f"Class folders differ between splits: {self.root / 'train'} has {expected}, "
                    f"the {name} folder has {[p.name for p in folders]}."
                )
        return sources

    # -- decoding, once -----------------------------------------------------------------------

    def _cache_key(self) -> str:
        return self._file_list.digest(_CACHE_FORMAT, self.image_size, self.crop_to_aspect_ratio)[:24]

    def _decode_all(self, on_bad_file: str, verbose: int, num_workers: int | None):
        shape = (len(self._paths), *self.image_size, 3)
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            key = self._cache_key()
            array_file = self.cache_dir / f"images-{key}.npy"
            meta_file = self.cache_dir / f"images-{key}.json"
            if array_file.exists() and meta_file.exists():
                log.info("Reusing decoded images from %s", array_file)
                skipped = [SkippedFile(Path(p), r) for p, r in json.loads(meta_file.read_text())["skipped"]]
                return NpyFile(array_file), skipped
            partial = unique_partial(array_file)
            images = NpyFile.create(partial, shape, np.uint8)
        else:
            images = np.empty(shape, dtype=np.uint8)

        def decode(i: int):
            try:
                images[i] = read_image(self._paths[i], self.image_size, self.crop_to_aspect_ratio)
                return None
            except ImageReadError as exc:
                if on_bad_file == "raise":
                    raise
                images[i] = 0
                return SkippedFile(Path(exc.path), exc.reason)

        bar = progress(len(self._paths), f"Decoding {self.root}", unit="image", verbose=verbose)
        skipped = []
        workers = num_workers or min(8, (os.cpu_count() or 1) + 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for n, result in enumerate(bounded_map(pool, decode, len(self._paths), 16 * workers), start=1):
                if result is not None:
                    skipped.append(result)
                    log.warning("Skipping %s: %s", result.path, result.reason)
                bar.update(1)
        bar.close()

        if self.cache_dir is not None:
            images.close()
            os.replace(partial, array_file)  # another process may publish the same file: same contents
            meta = {"skipped": [[str(s.path), s.reason] for s in skipped]}
            write_atomically(meta_file, json.dumps(meta))
            return NpyFile(array_file), skipped
        return images, skipped

    # -- pipelines ----------------------------------------------------------------------------

    def _make_datasets(self) -> None:
        self.train, self.validation, self.test = (
            self._dataset(self._indices[name], training=name == "train") if len(self._indices.get(name, ())) else None
            for name in SPLITS)

    def _dataset(self, indices: np.ndarray, training: bool, start_pass: int | PassClock = 0, seed: int | None = None):
        seed = (self.seed if seed is None else seed) if training else None
        return array_dataset((self._images, self._labels), indices, self.batch_size, seed, start_pass)

    # -- pickling (e.g. to a process that runs one tuning trial) -------------------------------

    def __getstate__(self):  # a cache file (NpyFile) travels as its name, not its pixels
        return {k: v for k, v in self.__dict__.items() if k not in ("train", "validation", "test")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._make_datasets()

    # -- what users ask of it -----------------------------------------------------------------

    @staticmethod
    def _strata(labels: np.ndarray) -> np.ndarray:
        """What the split stratifies by: the label, or, for several labels per image, the label set."""
        if labels.ndim == 1:
            return labels
        return np.unique(labels, axis=0, return_inverse=True)[1].reshape(-1)

    @property
    def multi_label(self) -> bool:
        """Whether an image may have several labels (a table read with ``label_separator`` or
        ``label_columns``; class folders give one label per image)."""
        return False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_weights(self) -> dict[int, float]:
        if self.multi_label:
            raise ValueError("class_weights balance one label per image; with several labels per image weigh the "
                             "classes in the loss instead (or leave them unweighted).")
        counts = np.bincount(self._labels[self._indices["train"]], minlength=self.num_classes)
        total = counts.sum()
        return {i: float(total / (self.num_classes * c)) if c else 0.0 for i, c in enumerate(counts)}

    def dataset(self, split: str, shuffle: bool = False, start_pass: int | PassClock = 0, seed: int | None = None):
        """A dataset (`array_dataset`) of ``"train"``, ``"validation"``, ``"test"`` or ``"all"`` readable images:
        unshuffled, in the order of ``files(split)`` (e.g. to evaluate a model), or with ``shuffle``
        reshuffled every pass as ``train`` is (with ``seed``, or this folder's), its first pass being
        pass ``start_pass`` (to resume)."""
        return self._dataset(self._split_indices(split), training=shuffle, start_pass=start_pass, seed=seed)

    def files(self, split: str = "validation") -> list[Path]:
        """Paths of a split (or ``"all"``), in the order its unshuffled dataset yields them."""
        return [Path(self._paths[i]) for i in self._split_indices(split)]

    def file_list(self, split: str = "validation") -> FileList:
        """The `FileList` (paths, sizes, modification times) of a split's files, in dataset order, as they
        were when this folder read them."""
        return self._file_list.subset(self._split_indices(split))

    def labels(self, split: str = "validation") -> np.ndarray:
        """Integer labels of a split, in dataset order (several labels per image: a 0/1 row per image,
        a column per class)."""
        return self._labels[self._split_indices(split)].copy()

    def images(self, split: str = "validation", positions=None) -> np.ndarray:
        """Decoded uint8 pixels of a split in dataset order (a copy); ``positions`` picks some."""
        indices = self._split_indices(split)
        return np.asarray(self._images[indices if positions is None else indices[np.asarray(positions)]])

    def _split_indices(self, split: str) -> np.ndarray:
        if split == "all":
            return self._all
        if split not in self._indices or len(self._indices[split]) == 0:
            available = [s for s in SPLITS if len(self._indices.get(s, ())) > 0] + ["all"]
            raise KeyError(f"No {split!r} split in {self.root}; available: {', '.join(available)}.")
        return self._indices[split]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self._indices.items())
        return f"ImageFolder({str(self.root)!r}, classes={self.class_names}, {sizes})"
