"""What both kinds of evaluation (one label per image: `Evaluation`; several: `MultiLabelEvaluation`)
compute the same way: reliability bins, and the highest-loss images kept while batches stream past.

>>> round(reliability(np.array([0.9, 0.8, 0.6, 0.7]), np.array([1, 1, 0, 1]), bins=5)["ece"], 4)
0.3
"""

from __future__ import annotations

import heapq

import numpy as np

__all__ = ["reliability", "keep_highest"]


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> dict:
    """Per equal-width bin of ``confidence``: its mean, the share of ``correct`` and the count; ``ece`` the
    count-weighted mean gap between the two (`Evaluation.calibration`, `MultiLabelEvaluation.calibration`)."""
    confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        members = which == b
        count = int(members.sum())
        if count:
            mean_confidence, accuracy = float(confidence[members].mean()), float(correct[members].mean())
            ece += count / len(confidence) * abs(accuracy - mean_confidence)
            rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": count,
                         "confidence": mean_confidence, "accuracy": accuracy})
    return {"bins": rows, "ece": float(ece)}


def keep_highest(heap: list, losses, images, offset: int, keep: int) -> None:
    """Keep in ``heap`` the ``keep`` highest ``(loss, index, pixels)`` seen so far; ``losses`` and ``images``
    are one batch's, its first image at ``offset``."""
    for j, loss in enumerate(losses):
        item = (float(loss), offset + j)
        if len(heap) < keep:
            heapq.heappush(heap, (*item, images[j].astype(np.uint8)))
        elif item > heap[0][:2]:
            heapq.heapreplace(heap, (*item, images[j].astype(np.uint8)))
