"""Labels from a table: a CSV file (or a pandas DataFrame) of image paths and labels, with an optional
split column, read into the same verified, split pipelines as `ImageFolder`.

>>> import tempfile, pathlib
>>> from PIL import Image
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> rows = ["path,label"]
>>> for i in range(12):
...     Image.new("RGB", (24, 20), "red" if i % 2 else "blue").save(root / f"{i}.png")
...     rows.append(f"{i}.png,{'cat' if i % 2 else 'dog'}")
>>> _ = (root / "labels.csv").write_text("\\n".join(rows))
>>> data = ImageTable(root / "labels.csv", image_size=(16, 16), batch_size=4, split=(0.5, 0.5), seed=1)
>>> data.class_names, data.report.counts["train"]
(['cat', 'dog'], {'cat': 3, 'dog': 3})
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from transferkit._internal.files import display_path
from transferkit.data.folder import SPLITS, ImageFolder

__all__ = ["ImageTable", "TableError", "SPLIT_NAMES"]

log = logging.getLogger(__name__)

#: What a split column may say, and the split each means.
SPLIT_NAMES = {"train": "train", "training": "train", "validation": "validation", "val": "validation",
               "valid": "validation", "test": "test", "testing": "test"}
_SHOWN_ERRORS = 10


class TableError(ValueError):
    """Rows of a label table that cannot be used, each named by its line (or DataFrame row)."""


class ImageTable(ImageFolder):
    """`ImageFolder`'s data read from a table of image paths and labels instead of class folders.

    ``table`` is a CSV file (comma, semicolon, tab or ``|`` separated, with a header row) or a pandas
    DataFrame; ``root`` is the folder its paths are relative to (by default the CSV file's folder; a
    DataFrame needs one). ``path_column`` and ``label_column`` name the columns of the paths and the
    labels. The split column (``split_column``; by default a column named ``split``, when the table has
    one) says each image's split, ``train``, ``validation`` or ``test`` (also ``val``, ``valid``); without
    one the images are split by ``split``'s fractions with ``seed``, stratified per class, as
    `ImageFolder` splits them. ``split`` may also be the file lists of a recorded split (what a trained
    model carries: `split_record`).

    Several labels per image: ``label_separator`` (say ``";"``) splits the label column into a set of
    labels (``cat;dog``), or ``label_columns`` names one column per class whose value says whether the
    image has it (``1``/``0``, ``true``/``false``, ``yes``/``no``; empty is no; an image may have none).
    The data is then ``multi_label``: its labels are a 0/1 row per image (one column per class), and
    the seeded split is stratified by label set (each combination of labels split by the fractions).

    The class names are the labels, sorted (numerically when every label is a whole number). Rows that
    cannot be used raise one `TableError` naming each by its line: a missing or empty path, a file that
    is not there, an empty label, an unknown split name, a path outside ``root``, a path given twice with
    two labels or two splits. A row that repeats an earlier one exactly is kept once (counted in
    ``report.repeated``). Everything else, decoding, the report, the cache and the pipelines, is
    `ImageFolder`'s.
    """

    def __init__(self, table, root: os.PathLike | str | None = None, *, path_column: str = "path",
                 label_column: str = "label", split_column: str | None = None, label_separator: str | None = None,
                 label_columns=None, **options):
        if isinstance(table, (str, os.PathLike)):
            self.table_path: Path | None = Path(table)
            if not self.table_path.is_file():
                raise FileNotFoundError(f"Label table not found: {display_path(self.table_path)}; give a CSV file "
                                        "of image paths and labels.")
            root = self.table_path.parent if root is None else root
        elif hasattr(table, "to_dict") and hasattr(table, "columns"):
            self.table_path = None
            if root is None:
                raise ValueError("A DataFrame of image paths needs root=: the folder its paths are relative to.")
        else:
            raise TypeError(f"table={type(table).__name__}: give the path of a CSV file or a pandas DataFrame.")
        self._table = table
        self.path_column, self.label_column = path_column, label_column
        if label_separator is not None and label_columns is not None:
            raise ValueError("Give label_separator= (one column of labels) or label_columns= (a column per class), "
                             "not both.")
        if label_separator == "":
            raise ValueError("label_separator='': give the character between the labels of one image, e.g. ';'.")
        self.label_separator = label_separator
        self.label_columns = None if label_columns is None else [str(c) for c in label_columns]
        if self.label_columns is not None and len(set(self.label_columns)) < 2:
            raise ValueError(f"label_columns={label_columns!r}: name at least two columns, one per class.")
        self.split_column = split_column
        self.repeated: list[str] = []
        super().__init__(root, **options)
        self.report.repeated = list(self.repeated)

    # -- reading the table ---------------------------------------------------------------------

    def _rows(self) -> tuple[list[str], list[tuple[str, dict]]]:
        """The column names and every row, each with where it is (``line 7``, ``row 5``)."""
        if self.table_path is None:
            frame = self._table
            columns = [str(c) for c in frame.columns]
            records = frame.to_dict("records")
            return columns, [(f"row {index}", {str(k): v for k, v in record.items()})
                             for index, record in zip(frame.index, records)]
        with open(self.table_path, newline="", encoding="utf-8-sig") as handle:
            sample = handle.read(64 * 1024)
            handle.seek(0)
            try:
                dialect = csv.Sniffer().sniff(sample.splitlines()[0] if sample else "", delimiters=",;\t|")
            except csv.Error:
                dialect = csv.excel
            reader = csv.DictReader(handle, dialect=dialect)
            columns = list(reader.fieldnames or [])
            rows = [(f"line {reader.line_num}", row) for row in reader]
        return columns, rows

    def _list_files(self, split):
        where = display_path(self.table_path) if self.table_path is not None else "the DataFrame"
        if not self.root.is_dir():
            raise FileNotFoundError(f"Image root not found: {display_path(self.root)} (the folder the paths of "
                                    f"{where} are relative to).")
        columns, rows = self._rows()
        split_column = self.split_column or ("split" if "split" in columns else None)
        label_columns = self.label_columns or [self.label_column]
        wanted = [self.path_column, *label_columns] + ([split_column] if split_column else [])
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise TableError(f"{where} has no column {', '.join(map(repr, missing))}; its columns are "
                             f"{', '.join(map(repr, columns))}. Name them with path_column=, label_column= (or "
                             "label_columns=) and split_column= (--path-column, --label-column (--label-columns), "
                             "--split-column).")
        root = Path(os.path.abspath(self.root))
        problems, first = [], {}  # first: {relative path: (where, label, split)}
        listed: list[tuple[Path, str, str]] = []
        for place, row in rows:
            text = _text(row.get(self.path_column))
            label, bad_value = self._label_of(row)
            named = _text(row.get(split_column)) if split_column else "train"
            if not text:
                problems.append(f"{place}: no path in column {self.path_column!r}")
                continue
            path = Path(os.path.abspath(root / text))
            if root not in path.parents:
                problems.append(f"{place}: {text} is not inside {display_path(self.root)}")
                continue
            if bad_value:
                problems.append(f"{place}: {text} has {bad_value}")
                continue
            if not label and self.label_columns is None:
                problems.append(f"{place}: {text} has an empty label")
                continue
            part = SPLIT_NAMES.get(named.lower())
            if part is None:
                problems.append(f"{place}: split {named!r} for {text} is not one of train, validation, test "
                                "(or val, valid)")
                continue
            key = path.relative_to(root).as_posix()
            if key in first:
                earlier, earlier_label, earlier_part = first[key]
                if (earlier_label, earlier_part) != (label, part):
                    what = f"labelled {_shown(earlier_label)} and {_shown(label)}" if earlier_label != label else \
                        f"in the {earlier_part} and the {part} split"
                    problems.append(f"{earlier} and {place}: {text} is {what}")
                else:
                    self.repeated.append(f"{place}: {text}")
                continue
            if not path.is_file():
                problems.append(f"{place}: {text} not found in {display_path(self.root)}")
                continue
            first[key] = (place, label, part)
            listed.append((self.root / key, label, part))  # as ImageFolder names its files: under root as given
        if problems:
            shown = "\n  ".join(problems[:_SHOWN_ERRORS])
            more = f"\n  ... and {len(problems) - _SHOWN_ERRORS} more" if len(problems) > _SHOWN_ERRORS else ""
            raise TableError(f"{where}: {len(problems)} row(s) cannot be used:\n  {shown}{more}\nFix or remove them; "
                             "nothing was read.")
        if self.repeated:
            log.warning("%s: %d row(s) repeat an earlier one exactly and are kept once, e.g. %s", where,
                        len(self.repeated), self.repeated[0])
        self._split_column = split_column
        if self.multi_label:
            class_names = self.label_columns or _sorted_labels({name for _, label, _ in listed for name in label})
            if len(class_names) < 2:
                raise TableError(f"{where} needs at least two labels, found {class_names or 'none'}.")
            index = {name: i for i, name in enumerate(class_names)}
            rows = np.zeros((len(listed), len(class_names)), dtype=np.int32)
            for r, (_, label, _) in enumerate(listed):
                rows[r, [index[name] for name in label]] = 1
            return class_names, [p for p, _, _ in listed], rows, [part for _, _, part in listed]
        class_names = _sorted_labels({label for _, label, _ in listed})
        if len(class_names) < 2:
            raise TableError(f"{where} needs at least two labels, found {class_names or 'none'}.")
        index = {name: i for i, name in enumerate(class_names)}
        return (class_names, [p for p, _, _ in listed], [index[label] for _, label, _ in listed],
                [part for _, _, part in listed])

    @property
    def multi_label(self) -> bool:
        """Whether an image may have several labels (``label_separator`` or ``label_columns`` given)."""
        return self.label_separator is not None or self.label_columns is not None

    def _label_of(self, row: dict) -> tuple:
        """A row's label (a text; several labels per image: a sorted tuple of names) and what is wrong with
        its value, if anything."""
        if self.label_columns is not None:
            names, bad = [], []
            for column in self.label_columns:
                value = _text(row.get(column)).lower()
                if value in _YES:
                    names.append(column)
                elif value not in _NO:
                    bad.append(f"{value!r} in column {column!r}")
            return tuple(names), (f"{', '.join(bad)} (use 1 or 0)" if bad else "")
        label = _text(row.get(self.label_column))
        if self.label_separator is None or not label:
            return label, ""
        names = [part.strip() for part in label.split(self.label_separator)]
        if any(not name for name in names):
            return label, f"an empty label in {label!r} (labels separated by {self.label_separator!r})"
        return tuple(sorted(set(names))), ""

    def _check_readable(self, good: np.ndarray, origin: np.ndarray) -> None:
        """Every label must keep a readable image (each split's own check follows, as for folders)."""
        for label, name in enumerate(self.class_names):
            has = self._labels[:, label] == 1 if self.multi_label else self._labels == label
            if not np.any(good & has):
                raise ValueError(f"No readable images labelled {name!r}; see the skipped files in the report.")

    def _presplit(self, origin: np.ndarray) -> bool:
        return self._split_column is not None  # a split column says every image's split, even one for all

    # -- what it records -----------------------------------------------------------------------

    def split_record(self) -> dict:
        """`ImageFolder.split_record`, with the table it was read from."""
        return {**super().split_record(), "layout": "table" if self.split != "given" else "given",
                "table": None if self.table_path is None else str(self.table_path.resolve()),
                "columns": {"path": self.path_column, "label": self.label_column, "split": self._split_column,
                            **({"label_separator": self.label_separator} if self.label_separator else {}),
                            **({"label_columns": self.label_columns} if self.label_columns else {})}}

    def label_digest(self) -> str:
        """A digest of every file's label: a checkpoint of a run on this table is not resumed after the
        labels changed (a folder's labels are its file paths; a table's are not)."""
        digest = hashlib.sha256()
        for name in SPLITS:
            if name in self._indices:
                digest.update(name.encode())
                digest.update(np.ascontiguousarray(self._labels[self._indices[name]]).tobytes())
        digest.update("\0".join(self.class_names).encode())
        return digest.hexdigest()[:16]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self._indices.items())
        source = display_path(self.table_path) if self.table_path is not None else "a DataFrame"
        return f"ImageTable({source!r}, root={str(self.root)!r}, classes={self.class_names}, {sizes})"


_YES = {"1", "1.0", "true", "yes", "y"}
_NO = {"", "0", "0.0", "false", "no", "n"}


def _shown(label) -> str:
    return repr(label) if isinstance(label, str) else repr(", ".join(label))


def _text(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


def _sorted_labels(labels: set[str]) -> list[str]:
    """Sorted as numbers when every label is a whole number (``2`` before ``10``), else as text."""
    if labels and all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)
