"""Does an exported model still agree with the Keras one? Both run on the same labelled images.

>>> import numpy as np
>>> p = Parity("tflite", "int8", None, labels=np.array([0, 1, 1]),
...            keras=np.array([[.9, .1], [.2, .8], [.6, .4]]), exported=np.array([[.8, .2], [.3, .7], [.4, .6]]))
>>> p.keras_accuracy, p.exported_accuracy, p.agreement
(0.6666666666666666, 1.0, 0.6666666666666666)
>>> print(p.row())
| tflite int8 | 3 | 66.67% | 100.00% | +33.33 | 66.67% | 0.2000 |
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferkit._internal.progress import progress

__all__ = ["Parity", "check_parity", "parity_table", "parity_cells", "PARITY_COLUMNS", "PARITY_SUFFIX"]

#: ``check_parity``'s record beside an exported file: ``model_int8.tflite`` -> ``model_int8.tflite.parity.json``.
PARITY_SUFFIX = ".parity.json"


@dataclass
class Parity:
    """Predictions of the Keras model and of its export on the same images."""

    format: str
    quantize: str | None
    integer_io: str | None
    labels: np.ndarray
    keras: np.ndarray  # probabilities, (N, classes)
    exported: np.ndarray
    thresholds: list | None = None  # several labels per image: each class's threshold (labels: 0/1 rows)

    @property
    def name(self) -> str:
        return _export_name(self.format, self.quantize, self.integer_io)

    def _decide(self, probabilities: np.ndarray) -> np.ndarray:
        if self.thresholds is None:
            return probabilities.argmax(-1)
        return probabilities >= np.asarray(self.thresholds)[None, :]

    def _same(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a == b if a.ndim == 1 else np.all(a == b, axis=-1)

    @property
    def keras_accuracy(self) -> float:
        """The Keras model's accuracy (several labels per image: exact-match, the whole label set right)."""
        return float(np.mean(self._same(self._decide(self.keras), self._labels())))

    @property
    def exported_accuracy(self) -> float:
        return float(np.mean(self._same(self._decide(self.exported), self._labels())))

    @property
    def agreement(self) -> float:
        """The fraction of images both models put in the same class (give the same label set)."""
        return float(np.mean(self._same(self._decide(self.keras), self._decide(self.exported))))

    def _labels(self) -> np.ndarray:
        return self.labels.astype(bool) if self.thresholds is not None else self.labels

    @property
    def max_probability_difference(self) -> float:
        return float(np.max(np.abs(self.keras - self.exported)))

    def to_dict(self) -> dict:
        return {"format": self.format, "quantize": self.quantize, "integer_io": self.integer_io,
                "count": int(len(self.labels)), "keras_accuracy": self.keras_accuracy,
                "exported_accuracy": self.exported_accuracy,
                "accuracy_difference": self.exported_accuracy - self.keras_accuracy,
                "agreement": self.agreement, "max_probability_difference": self.max_probability_difference}

    def row(self) -> str:
        return _row(self.to_dict())

    def __str__(self) -> str:
        return (f"{self.name}: accuracy {self.exported_accuracy:.2%} against {self.keras_accuracy:.2%} for the Keras "
                f"model ({100 * (self.exported_accuracy - self.keras_accuracy):+.2f} points); the two agree on "
                f"{self.agreement:.2%} of {len(self.labels)} images; largest probability difference "
                f"{self.max_probability_difference:.4f}")

    def save(self, path: os.PathLike | str) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path


#: The columns of `parity_cells`, as the README, the docs and ``report.html`` show them.
PARITY_COLUMNS = ("export", "images", "Keras accuracy", "exported accuracy", "difference (points)", "agreement",
                  "largest probability difference")


def _export_name(format: str, quantize: str | None, integer_io: str | None) -> str:
    return " ".join(x for x in (format, quantize or "", f"{integer_io} I/O" if integer_io else "") if x)


def parity_cells(record: dict) -> list[str]:
    """One ``Parity.to_dict()`` record as the cells of a `PARITY_COLUMNS` row."""
    return [_export_name(record["format"], record.get("quantize"), record.get("integer_io")), str(record["count"]),
            f"{record['keras_accuracy']:.2%}", f"{record['exported_accuracy']:.2%}",
            f"{100 * record['accuracy_difference']:+.2f}", f"{record['agreement']:.2%}",
            f"{record['max_probability_difference']:.4f}"]


def _row(record: dict) -> str:
    return "| " + " | ".join(parity_cells(record)) + " |"


def parity_table(records: list[dict]) -> str:
    """A Markdown table of ``Parity.to_dict()`` records."""
    head = "| " + " | ".join(PARITY_COLUMNS) + " |\n|" + "---|" * len(PARITY_COLUMNS)
    return "\n".join([head] + [_row(r) for r in records])


def check_parity(classifier, exported, data, split: str = "validation", verbose: int = 1) -> Parity:
    """Run ``classifier`` (a `Classifier`) and ``exported`` (a path, or a loaded export such as
    `TFLiteClassifier`) over ``data``'s ``split`` and compare their predictions.

    ``data`` is an `ImageFolder` or a dataset (``tf.data``, `ArrayBatches`, any iterable) of
    ``(images, labels)`` batches.
    """
    from transferkit.export import load_exported

    if isinstance(exported, (str, os.PathLike)):
        path = Path(exported)
        exported = load_exported(path)
    else:
        path = getattr(exported, "path", Path("model"))
    if list(exported.class_names) != list(classifier.class_names):
        raise ValueError(f"{path} has classes {exported.class_names}, the Keras model {classifier.class_names}.")
    dataset = data.dataset(split) if hasattr(data, "dataset") else data
    total = len(data.files(split)) if hasattr(data, "files") else None
    labels, keras_probs, exported_probs = [], [], []
    with progress(total, f"Comparing {path.name} with the Keras model", verbose=verbose) as bar:
        for images, batch_labels in dataset:
            images = np.asarray(images, dtype=np.float32)
            batch_labels = np.asarray(batch_labels).astype(np.int64)
            labels.append(batch_labels if classifier.multi_label else batch_labels.reshape(-1))
            keras_probs.append(np.asarray(classifier.model.predict_on_batch(images)))
            exported_probs.append(np.asarray(exported.predict(images), dtype=np.float32))
            bar.update(len(images))
    if not labels:
        raise ValueError("The data to compare the models on is empty.")
    description = _description(path)
    return Parity(description.get("format", path.suffix.lstrip(".") or "savedmodel"), description.get("quantize"),
                  description.get("integer_io"), np.concatenate(labels), np.concatenate(keras_probs),
                  np.concatenate(exported_probs),
                  thresholds=(classifier.thresholds or [0.5] * len(classifier.class_names)) if classifier.multi_label
                  else None)


def _description(path: Path) -> dict:
    from transferkit.export import read_description

    try:
        return read_description(path)
    except (FileNotFoundError, OSError):
        return {}
