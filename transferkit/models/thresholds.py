"""Decision thresholds for several labels per image: per class, the one with the best F1 on the validation
images (what `ClassProbabilities.thresholds` holds after training).

>>> import numpy as np
>>> labels = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
>>> [round(t, 2) for t in choose_thresholds(labels, np.array([[.9, .2], [.7, .6], [.3, .8], [.1, .4]]))]
[0.5, 0.5]
"""

from __future__ import annotations

import numpy as np

__all__ = ["choose_thresholds", "DEFAULT_THRESHOLD"]

#: The threshold of a class that the validation images cannot inform (no positives, or no negatives).
DEFAULT_THRESHOLD = 0.5


def choose_thresholds(labels: np.ndarray, probabilities: np.ndarray) -> list[float]:
    """Per class, the threshold on its probability with the best F1 on these (validation) images: the
    midpoint between two neighbouring probabilities, the one nearest 0.5 among equals. A class that
    these images cannot inform (no positives or no negatives) keeps 0.5."""
    labels = np.asarray(labels).astype(bool)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    chosen = []
    for c in range(labels.shape[1]):
        truth, p = labels[:, c], probabilities[:, c]
        if truth.all() or not truth.any():
            chosen.append(DEFAULT_THRESHOLD)
            continue
        values = np.unique(p)
        candidates = np.r_[values[0] / 2, (values[1:] + values[:-1]) / 2, (values[-1] + 1) / 2]
        predicted = p[None, :] >= candidates[:, None]
        tp = (predicted & truth).sum(axis=1)
        f1 = 2 * tp / (predicted.sum(axis=1) + truth.sum())
        best = np.flatnonzero(f1 >= f1.max() - 1e-12)
        chosen.append(float(candidates[best[np.argmin(np.abs(candidates[best] - DEFAULT_THRESHOLD))]]))
    return chosen
