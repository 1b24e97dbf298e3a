"""Evaluation: accuracy, per-class precision/recall/F1, confusion matrix, ROC AUC, top losses.

>>> import numpy as np
>>> ev = Evaluation(["cat", "dog"], labels=np.array([0, 0, 1, 1]),
...                 probabilities=np.array([[.9, .1], [.4, .6], [.2, .8], [.3, .7]]))
>>> ev.accuracy, ev.confusion_matrix.tolist(), ev.roc_auc
(0.75, [[1, 1], [0, 2]], 1.0)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transferkit.evaluation.shared import keep_highest, reliability

__all__ = ["Evaluation", "evaluate", "roc_auc"]


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (ties count half); None if one class.

    >>> roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.5, 0.5, 0.9]))
    0.875
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    start = 0
    for end in range(1, len(scores) + 1):  # average ranks over ties
        if end == len(scores) or sorted_scores[end] != sorted_scores[start]:
            ranks[order[start:end]] = (start + end + 1) / 2.0
            start = end
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@dataclass
class TopLoss:
    """One confidently wrong (or barely right) prediction."""

    index: int
    loss: float
    true: str
    predicted: str
    probability: float  # of the predicted class
    file: Path | None = None
    image: np.ndarray | None = field(default=None, repr=False)


@dataclass
class Evaluation:
    """Predictions on a labelled set, and the numbers derived from them."""

    class_names: list[str]
    labels: np.ndarray
    probabilities: np.ndarray
    files: list[Path] | None = None
    kept_images: dict[int, np.ndarray] = field(default_factory=dict, repr=False)  # index -> pixels

    @property
    def predictions(self) -> np.ndarray:
        return np.argmax(self.probabilities, axis=-1)

    @property
    def losses(self) -> np.ndarray:
        """Per-image cross-entropy, ``-log p(true class)``."""
        p = self.probabilities[np.arange(len(self.labels)), self.labels]
        return -np.log(np.clip(p, 1e-12, 1.0))

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.predictions == self.labels))

    @property
    def confusion_matrix(self) -> np.ndarray:
        """Rows: true class; columns: predicted class."""
        n = len(self.class_names)
        return np.bincount(self.labels * n + self.predictions, minlength=n * n).reshape(n, n)

    @property
    def per_class(self) -> dict[str, dict[str, float]]:
        cm = self.confusion_matrix
        report = {}
        for i, name in enumerate(self.class_names):
            tp, predicted, actual = cm[i, i], cm[:, i].sum(), cm[i, :].sum()
            precision = tp / predicted if predicted else 0.0
            recall = tp / actual if actual else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            report[name] = {
                "precision": float(precision),
                "recall": float(recall),
                "f1": float(f1),
                "support": int(actual),
            }
        return report

    @property
    def roc_auc(self) -> float | None:
        """Two classes only: AUC of the probability of ``class_names[1]``."""
        if len(self.class_names) != 2:
            return None
        return roc_auc(self.labels == 1, self.probabilities[:, 1])

    def calibration(self, bins: int = 10) -> dict:
        """Reliability of the predicted class's probability: per equal-width confidence bin, the mean
        confidence, the accuracy and the count; ``ece`` is the expected calibration error (the
        count-weighted mean gap between the two).

        >>> ev = Evaluation(["a", "b"], np.array([0, 0, 1, 1]), np.array([[.9, .1], [.8, .2], [.4, .6], [.7, .3]]))
        >>> round(ev.calibration(bins=5)["ece"], 4)
        0.25
        """
        return reliability(self.probabilities.max(axis=1), self.predictions == self.labels, bins)

    def top_losses(self, k: int = 9) -> list[TopLoss]:
        """The ``k`` images with the highest loss (most confidently wrong first)."""
        losses, preds = self.losses, self.predictions
        result = []
        for i in np.argsort(-losses, kind="stable")[:k]:
            i = int(i)
            result.append(
                TopLoss(
                    index=i,
                    loss=float(losses[i]),
                    true=self.class_names[self.labels[i]],
                    predicted=self.class_names[preds[i]],
                    probability=float(self.probabilities[i, preds[i]]),
                    file=self.files[i] if self.files else None,
                    image=self.kept_images.get(i),
                )
            )
        return result

    def most_confused(self, min_count: int = 1) -> list[tuple[str, str, int]]:
        """``(true, predicted, count)`` for off-diagonal cells, largest first."""
        cm = self.confusion_matrix
        pairs = [
            (self.class_names[t], self.class_names[p], int(cm[t, p]))
            for t in range(len(cm))
            for p in range(len(cm))
            if t != p and cm[t, p] >= min_count
        ]
        return sorted(pairs, key=lambda x: -x[2])

    def to_dict(self) -> dict:
        """JSON-friendly summary (for ``metrics.json``)."""
        return {
            "count": int(len(self.labels)),
            "accuracy": self.accuracy,
            "roc_auc": self.roc_auc,
            "per_class": self.per_class,
            "confusion_matrix": self.confusion_matrix.tolist(),
            "class_names": list(self.class_names),
            "calibration": self.calibration(),
            "top_losses": [
                {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(t).items() if k != "image"}
                for t in self.top_losses(9)
            ],
        }

    def __str__(self) -> str:
        width = max(len(c) for c in self.class_names + ["class"])
        lines = [f"{'class':<{width}}  precision  recall     f1  support"]
        for name, row in self.per_class.items():
            lines.append(
                f"{name:<{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:5.3f}  {row['support']:7d}"
            )
        lines.append(f"accuracy {self.accuracy:.4f} on {len(self.labels)} images")
        if self.roc_auc is not None:
            lines.append(f"ROC AUC {self.roc_auc:.4f}")
        return "\n".join(lines)

    def plot(self, directory: os.PathLike | str) -> list[Path]:
        """Write ``confusion_matrix.png``, ``top_losses.png`` and ``reliability.png`` into ``directory``."""
        from transferkit.evaluation import plots

        directory = Path(directory)
        return [
            plots.plot_confusion_matrix(self, directory / "confusion_matrix.png"),
            plots.plot_top_losses(self, directory / "top_losses.png"),
            plots.plot_reliability(self.calibration(), directory / "reliability.png"),
        ]


def evaluate(classifier, data, split: str = "validation", keep_top: int = 16, tta: bool = False,
             verbose: int = 0) -> Evaluation:
    """Run ``classifier`` over labelled data and return an `Evaluation` (a `MultiLabelEvaluation` for a
    classifier of several labels per image).

    ``data`` is an `ImageFolder` (its ``split``, or ``"all"``, with file names) or a dataset (``tf.data``,
    `ArrayBatches`, any iterable) of ``(images, labels)`` batches. The pixels of the ``keep_top``
    highest-loss images are kept for the top-losses picture. With ``tta``, each image's probabilities
    are the mean over it and its mirror image (as ``Classifier.predict(..., tta=True)``). ``verbose=1``
    shows a progress line.
    """
    from transferkit._internal.progress import progress

    files = None
    dataset = data
    if hasattr(data, "class_names") and hasattr(data, "files"):
        if getattr(data, "multi_label", False) != getattr(classifier, "multi_label", False):
            kinds = {True: "several labels per image", False: "one label per image"}
            raise ValueError(f"The model was trained for {kinds[classifier.multi_label]}, but the data has "
                             f"{kinds[getattr(data, 'multi_label', False)]}: read the table as it was read for "
                             "training (label_separator= / label_columns=).")
        if data.class_names != classifier.class_names:
            raise ValueError(f"The model's classes {classifier.class_names} differ from the data's {data.class_names}.")
        files = data.files(split)
        dataset = data.dataset(split)
    bar = progress(len(files) if files is not None else None, "Evaluating", verbose=verbose)
    if getattr(classifier, "multi_label", False):
        from transferkit.evaluation.multilabel import evaluate_multilabel

        try:
            return evaluate_multilabel(classifier, dataset, files=files, keep_top=keep_top, tta=tta, bar=bar)
        finally:
            bar.close()
    labels, probabilities, heap = [], [], []
    offset = 0
    for images, batch_labels in dataset:
        images, batch_labels = np.asarray(images), np.asarray(batch_labels).astype(np.int64).reshape(-1)
        probs = np.asarray(classifier.model.predict_on_batch(images))
        if tta:
            probs = (probs + np.asarray(classifier.model.predict_on_batch(images[:, :, ::-1]))) / 2
        labels.append(batch_labels)
        probabilities.append(probs)
        losses = -np.log(np.clip(probs[np.arange(len(batch_labels)), batch_labels], 1e-12, 1.0))
        keep_highest(heap, losses, images, offset, keep_top)
        offset += len(batch_labels)
        bar.update(len(batch_labels))
    bar.close()
    if not labels:
        raise ValueError("The evaluation data is empty.")
    return Evaluation(
        list(classifier.class_names),
        np.concatenate(labels),
        np.concatenate(probabilities),
        files=files,
        kept_images={index: image for _, index, image in heap},
    )
