"""Several labels per image: per-class thresholds chosen on validation images, and the metrics that fit
(per-class precision, recall, F1 and average precision; micro and macro F1; mAP; exact-match accuracy).

>>> import numpy as np
>>> labels = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
>>> probabilities = np.array([[.9, .2], [.7, .6], [.3, .8], [.1, .4]])
>>> [round(t, 2) for t in choose_thresholds(labels, probabilities)]
[0.5, 0.5]
>>> ev = MultiLabelEvaluation(["cat", "dog"], labels, probabilities, thresholds=[0.5, 0.5])
>>> ev.accuracy, ev.mean_average_precision, ev.micro_f1
(1.0, 1.0, 1.0)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["MultiLabelEvaluation", "average_precision", "choose_thresholds", "label_sets", "evaluate_multilabel"]

from transferkit.evaluation.shared import keep_highest, reliability
from transferkit.models.thresholds import DEFAULT_THRESHOLD, choose_thresholds


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Average precision of ``scores`` for binary ``labels``: the mean, over the positives, of the precision
    among the images scored at least as high as each (ties counted together); None without positives.

    >>> average_precision(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1]))
    0.8333333333333333
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    positives = int(labels.sum())
    if positives == 0:
        return None
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, hits = scores[order], labels[order]
    ends = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(scores) - 1]  # the last position of each tie
    true_positives = np.cumsum(hits)[ends]
    precision = true_positives / (ends + 1)
    recall_gained = np.diff(np.r_[0, true_positives]) / positives
    return float(np.sum(precision * recall_gained))


def label_sets(class_names, decisions: np.ndarray) -> list[list[str]]:
    """Each row of 0/1 (or True/False) ``decisions`` as the class names it holds.

    >>> label_sets(["cat", "dog"], np.array([[1, 1], [0, 0]]))
    [['cat', 'dog'], []]
    """
    return [[class_names[c] for c in np.flatnonzero(row)] for row in np.asarray(decisions)]


def _f1(tp, predicted, actual) -> float:
    return float(2 * tp / (predicted + actual)) if predicted + actual else 0.0


@dataclass
class TopLoss:
    """An image whose label set the model got most confidently wrong (highest binary cross-entropy)."""

    index: int
    loss: float
    true: str
    predicted: str
    probability: float  # the largest probability of a class the image has not, or the smallest of one it has
    file: Path | None = None
    image: np.ndarray | None = field(default=None, repr=False)


@dataclass
class MultiLabelEvaluation:
    """Predictions on images with several labels each (``labels``: a 0/1 row per image), decided at
    ``thresholds`` (one per class; 0.5 each when not given)."""

    class_names: list[str]
    labels: np.ndarray
    probabilities: np.ndarray
    thresholds: list[float] | None = None
    files: list[Path] | None = None
    kept_images: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    multi_label = True

    def __post_init__(self):
        self.labels = np.asarray(self.labels).astype(bool)
        self.probabilities = np.asarray(self.probabilities, dtype=np.float64)
        if self.thresholds is None:
            self.thresholds = [DEFAULT_THRESHOLD] * len(self.class_names)

    @property
    def predictions(self) -> np.ndarray:
        """A True/False row per image: each class above its threshold."""
        return self.probabilities >= np.asarray(self.thresholds)[None, :]

    @property
    def losses(self) -> np.ndarray:
        """Per-image binary cross-entropy, summed over the classes."""
        p = np.clip(self.probabilities, 1e-12, 1 - 1e-12)
        return -np.sum(np.where(self.labels, np.log(p), np.log(1 - p)), axis=1)

    @property
    def accuracy(self) -> float:
        """Exact-match accuracy: the share of images whose predicted label set is exactly their own."""
        return float(np.mean(np.all(self.predictions == self.labels, axis=1)))

    @property
    def per_class(self) -> dict[str, dict[str, float]]:
        predicted = self.predictions
        report = {}
        for c, name in enumerate(self.class_names):
            truth, said = self.labels[:, c], predicted[:, c]
            tp = int(np.sum(truth & said))
            precision = tp / said.sum() if said.sum() else 0.0
            recall = tp / truth.sum() if truth.sum() else 0.0
            report[name] = {"precision": float(precision), "recall": float(recall),
                            "f1": _f1(tp, said.sum(), truth.sum()),
                            "average_precision": average_precision(truth, self.probabilities[:, c]),
                            "threshold": float(self.thresholds[c]), "support": int(truth.sum())}
        return report

    @property
    def micro_f1(self) -> float:
        """F1 over every (image, class) decision pooled."""
        predicted = self.predictions
        return _f1(int(np.sum(predicted & self.labels)), int(predicted.sum()), int(self.labels.sum()))

    @property
    def macro_f1(self) -> float:
        """The mean of the classes' F1."""
        return float(np.mean([row["f1"] for row in self.per_class.values()]))

    @property
    def mean_average_precision(self) -> float | None:
        """mAP: the mean of the classes' average precision (classes without positives left out)."""
        values = [row["average_precision"] for row in self.per_class.values() if row["average_precision"] is not None]
        return float(np.mean(values)) if values else None

    @property
    def roc_auc(self) -> None:
        return None  # one ROC curve per class; the average precision says more where positives are rare

    def calibration(self, bins: int = 10) -> dict:
        """Reliability of every (image, class) probability: per equal-width bin, the mean probability, the
        share of those (image, class) pairs that hold, and the count; ``ece`` the count-weighted gap."""
        return reliability(self.probabilities.ravel(), self.labels.ravel(), bins)

    def top_losses(self, k: int = 9) -> list[TopLoss]:
        """The ``k`` images with the highest loss."""
        losses, predicted = self.losses, self.predictions
        result = []
        for i in np.argsort(-losses, kind="stable")[:k]:
            i = int(i)
            wrong = np.where(self.labels[i], 1 - self.probabilities[i], self.probabilities[i])
            worst = int(np.argmax(wrong))
            result.append(TopLoss(
                index=i, loss=float(losses[i]), true=", ".join(label_sets(self.class_names, self.labels[i:i + 1])[0])
                or "none", predicted=", ".join(label_sets(self.class_names, predicted[i:i + 1])[0]) or "none",
                probability=float(self.probabilities[i, worst]), file=self.files[i] if self.files else None,
                image=self.kept_images.get(i)))
        return result

    def to_dict(self) -> dict:
        """JSON-friendly summary (for ``metrics.json``)."""
        return {
            "task": "multi_label",
            "count": int(len(self.labels)),
            "accuracy": self.accuracy,
            "roc_auc": None,
            "map": self.mean_average_precision,
            "micro_f1": self.micro_f1,
            "macro_f1": self.macro_f1,
            "thresholds": [float(t) for t in self.thresholds],
            "per_class": self.per_class,
            "class_names": list(self.class_names),
            "calibration": self.calibration(),
            "top_losses": [{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(t).items() if k != "image"}
                           for t in self.top_losses(9)],
        }

    def __str__(self) -> str:
        width = max(len(c) for c in self.class_names + ["class"])
        lines = [f"{'class':<{width}}  precision  recall     f1     AP  threshold  support"]
        for name, row in self.per_class.items():
            ap = "    -" if row["average_precision"] is None else f"{row['average_precision']:5.3f}"
            lines.append(f"{name:<{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:5.3f}  {ap}  "
                         f"{row['threshold']:9.3f}  {row['support']:7d}")
        mean_ap = self.mean_average_precision
        lines.append(f"mAP {'-' if mean_ap is None else f'{mean_ap:.4f}'}, micro F1 {self.micro_f1:.4f}, "
                     f"macro F1 {self.macro_f1:.4f}, exact match {self.accuracy:.4f} on {len(self.labels)} images")
        return "\n".join(lines)

    def plot(self, directory: os.PathLike | str) -> list[Path]:
        """Write ``precision_recall.png``, ``top_losses.png`` and ``reliability.png`` into ``directory``."""
        from transferkit.evaluation import plots

        directory = Path(directory)
        return [
            plots.plot_precision_recall(self, directory / "precision_recall.png"),
            plots.plot_top_losses(self, directory / "top_losses.png"),
            plots.plot_reliability(self.calibration(), directory / "reliability.png"),
        ]


def evaluate_multilabel(classifier, dataset, files=None, keep_top: int = 16, tta: bool = False,
                        bar=None) -> MultiLabelEvaluation:
    """`transferkit.evaluation.evaluate` for a classifier of several labels per image: ``dataset`` yields
    ``(images, 0/1 label rows)``; decided at the classifier's thresholds."""
    labels, probabilities, heap = [], [], []
    offset = 0
    for images, batch_labels in dataset:
        images, batch_labels = np.asarray(images), np.asarray(batch_labels).astype(bool)
        probs = np.asarray(classifier.model.predict_on_batch(images))
        if tta:
            probs = (probs + np.asarray(classifier.model.predict_on_batch(images[:, :, ::-1]))) / 2
        labels.append(batch_labels)
        probabilities.append(probs)
        clipped = np.clip(probs, 1e-12, 1 - 1e-12)
        losses = -np.sum(np.where(batch_labels, np.log(clipped), np.log(1 - clipped)), axis=1)
        keep_highest(heap, losses, images, offset, keep_top)
        offset += len(batch_labels)
        if bar is not None:
            bar.update(len(batch_labels))
    if not labels:
        raise ValueError("The evaluation data is empty.")
    return MultiLabelEvaluation(list(classifier.class_names), np.concatenate(labels), np.concatenate(probabilities),
                                thresholds=classifier.thresholds, files=files,
                                kept_images={index: image for _, index, image in heap})
