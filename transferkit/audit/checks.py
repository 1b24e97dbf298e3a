"""An audit of an image folder before trusting a model trained on it: suspected label errors,
near-duplicates (within a split and across splits, where they leak), outliers, class balance, image
sizes, and the files the scan could not read.

Everything comes from one pass of the backbone over every image, the pooled features the head trains
on (no augmentation):

- **label errors**: out-of-fold class probabilities from a linear head (multinomial logistic
  regression on the standardised features) trained ``folds`` times on stratified folds, ranked by
  cleanlab's ``find_label_issues`` (`label_issues`);
- **near-duplicates**: pairs of images whose mean-centred features have cosine similarity of at least
  ``duplicate_threshold``, or that are each other's nearest neighbour by a ``duplicate_margin`` over
  the next-best, computed a block of rows at a time, so memory grows with the number of images, not
  its square (`near_duplicates`);
- **outliers**: cleanlab's ``OutOfDistribution`` score (from the distances to each image's nearest
  neighbours in feature space), the least typical first.

Nothing is moved or deleted: `AuditReport.flagged` lists the files a run can leave out
(``ImageFolder(..., exclude=report.flagged)``, ``transferkit train --exclude audit.json``).

>>> import numpy as np
>>> features = np.array([[1.0, 0.0], [0.0, 1.0], [0.99, 0.05], [-1.0, 0.2]])
>>> near_duplicates(features, threshold=0.98, margin=None)
[(0, 2, 0.9986)]
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transferkit.data import SPLITS

__all__ = ["audit", "AuditReport", "near_duplicates", "out_of_fold_probabilities", "label_issues",
           "outlier_scores", "read_exclusions"]

SPLIT_ORDER = {name: i for i, name in enumerate(SPLITS)}


def _cleanlab():
    try:
        import cleanlab.filter
        import cleanlab.outlier
        import cleanlab.rank
    except ImportError as exc:
        raise ImportError("The audit ranks label issues and outliers with cleanlab: "
                          "pip install 'transferkit[audit]' (or pip install cleanlab).") from exc
    return cleanlab


def near_duplicates(features: np.ndarray, threshold: float = 0.95, margin: float | None = 0.15,
                    block: int = 1024) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, similarity)``, ``i < j``, of near-duplicates, most similar first.

    Similarity is the cosine of the features once the mean row is subtracted (what all images share,
    a large part of post-ReLU features, would make every pair look alike). A pair counts when its
    similarity is at least ``threshold``, or when the two are each other's nearest neighbour and
    their similarity exceeds each one's next-best by at least ``margin``: a re-encoded, resized or
    cropped copy is far more like its original than like anything else, even where the change lowers
    the similarity itself. Computed ``block`` rows at a time, so memory grows with the number of rows,
    not with its square."""
    x = np.asarray(features, dtype=np.float32)
    x = x - x.mean(axis=0)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    nearest, best, second = np.zeros(n, dtype=np.int64), np.full(n, -np.inf), np.full(n, -np.inf)
    pairs = {}
    for start in range(0, n, block):
        similarity = x[start : start + block] @ x.T
        rows = np.arange(len(similarity))
        similarity[rows, start + rows] = -np.inf  # not its own neighbour
        for a, b in zip(*np.nonzero(similarity >= threshold)):
            if start + a < b:
                pairs[(start + int(a), int(b))] = float(similarity[a, b])
        if n >= 3:
            top = np.argpartition(-similarity, 1, axis=1)[:, :2]
            values = np.take_along_axis(similarity, top, axis=1)
            order = np.argsort(-values, axis=1)
            nearest[start : start + len(rows)] = np.take_along_axis(top, order, axis=1)[:, 0]
            best[start : start + len(rows)] = np.take_along_axis(values, order, axis=1)[:, 0]
            second[start : start + len(rows)] = np.take_along_axis(values, order, axis=1)[:, 1]
    if margin is not None and n >= 3:
        for i in range(n):
            j = int(nearest[i])
            if i < j and nearest[j] == i and best[i] - max(second[i], second[j]) >= margin:
                pairs[(i, j)] = float(best[i])
    return sorted(((i, j, round(v, 4)) for (i, j), v in pairs.items()), key=lambda p: (-p[2], p[0], p[1]))


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Class probabilities for every row from a linear head that never saw that row (stratified
    K-fold; fewer folds when a class has fewer images than ``folds``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels)
    smallest = int(np.bincount(labels).min())
    if smallest < 2:
        raise ValueError("Out-of-fold probabilities need at least 2 images of every class.")
    probabilities = np.zeros((len(labels), int(labels.max()) + 1))
    splitter = StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=seed)
    for train, held_out in splitter.split(features, labels):
        head = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
        head.fit(features[train], labels[train])
        probabilities[np.ix_(held_out, head.classes_)] = head.predict_proba(features[held_out])
    return probabilities


def label_issues(labels: np.ndarray, probabilities: np.ndarray) -> list[tuple[int, int, float]]:
    """``(row, suggested label, label quality)`` for the rows cleanlab finds mislabelled, worst first."""
    cleanlab = _cleanlab()
    rows = cleanlab.filter.find_label_issues(labels, probabilities, return_indices_ranked_by="self_confidence")
    quality = cleanlab.rank.get_label_quality_scores(labels, probabilities)
    return [(int(r), int(np.argmax(probabilities[r])), round(float(quality[r]), 4)) for r in rows]


def outlier_scores(features: np.ndarray, k: int = 10) -> np.ndarray:
    """cleanlab's out-of-distribution score per row (0-1; lower is less like the other images)."""
    cleanlab = _cleanlab()
    k = max(1, min(k, len(features) - 1))
    estimator = cleanlab.outlier.OutOfDistribution(params={"k": k})
    return estimator.fit_score(features=np.asarray(features, np.float32), verbose=False)


@dataclass
class AuditReport:
    """What `audit` found. Files are paths relative to ``root``, with their split."""

    root: Path
    class_names: list[str]
    counts: dict
    label_issues: list[dict]
    duplicates: list[dict]
    outliers: list[dict]
    image_sizes: dict
    skipped: list[dict]
    settings: dict
    seconds: float = 0.0
    pictures: dict = field(default_factory=dict, repr=False)  # list name -> [(split, position), ...]

    @property
    def flagged(self) -> list[str]:
        """Files a run can leave out: every suspected label error, and of each near-duplicate pair the
        copy in the later split (validation after train, test after validation; the second file
        within a split). Outliers are listed, not flagged: the least typical images are not wrong."""
        files = [issue["file"] for issue in self.label_issues]
        for pair in self.duplicates:
            files.append(pair["file_b"])
        return sorted(dict.fromkeys(files))

    @property
    def leaks(self) -> list[dict]:
        """The near-duplicate pairs that cross splits."""
        return [pair for pair in self.duplicates if pair["split_a"] != pair["split_b"]]

    def to_dict(self) -> dict:
        return {
            "schema": "transferkit.audit/1",
            "root": str(self.root), "class_names": self.class_names, "counts": self.counts,
            "label_issues": self.label_issues, "duplicates": self.duplicates,
            "leaks_across_splits": len(self.leaks), "outliers": self.outliers,
            "image_sizes": self.image_sizes, "skipped": self.skipped, "flagged": self.flagged,
            "settings": self.settings, "seconds": round(self.seconds, 1),
        }

    def __str__(self) -> str:
        lines = [f"Audit of {self.root}: {sum(sum(c.values()) for c in self.counts.values())} images, "
                 f"{len(self.skipped)} unreadable file(s) skipped",
                 f"suspected label errors: {len(self.label_issues)}"]
        lines += [f"  {i['file']} ({i['split']}): labelled {i['given']}, looks like {i['suggested']} "
                  f"(label quality {i['score']:.3f})" for i in self.label_issues[:10]]
        lines.append(f"near-duplicate pairs: {len(self.duplicates)}, of which across splits: {len(self.leaks)}")
        lines += [f"  {p['file_a']} ({p['split_a']}) ~ {p['file_b']} ({p['split_b']}): {p['similarity']:.3f}"
                  for p in self.duplicates[:10]]
        lines.append(f"least typical images: {', '.join(o['file'] for o in self.outliers[:5])}")
        lines.append(f"flagged to exclude: {len(self.flagged)} file(s)")
        return "\n".join(lines)

    def save(self, output: os.PathLike | str, data=None) -> list[Path]:
        """Write ``audit.json`` and, with the audited ``data``, a thumbnail page per list
        (``label_issues.png``, ``duplicates.png``, ``outliers.png``)."""
        from transferkit.evaluation.plots import plot_gallery

        output = Path(output)
        output.mkdir(parents=True, exist_ok=True)
        (output / "audit.json").write_text(json.dumps(self.to_dict(), indent=2))
        files = [output / "audit.json"]
        if data is None:
            return files
        captions = {
            "label_issues": [f"{i['file']}\n{i['given']} -> {i['suggested']}" for i in self.label_issues],
            "duplicates": [f"{p[f'file_{s}']} ({p[f'split_{s}']})" for p in self.duplicates for s in "ab"],
            "outliers": [f"{o['file']}\nscore {o['score']:.3f}" for o in self.outliers],
        }
        titles = {"label_issues": "Suspected label errors (given -> suggested)",
                  "duplicates": "Near-duplicate pairs (each row: a pair, side by side)",
                  "outliers": "Least typical images"}
        for name, where in self.pictures.items():
            shown = where[:48]
            images = [data.images(split, [position])[0] for split, position in shown]
            files.append(plot_gallery(images, captions[name][: len(shown)], output / f"{name}.png", titles[name],
                                      columns=2 if name == "duplicates" else 6))
        return files


def read_exclusions(path: os.PathLike | str) -> list[str]:
    """The files to leave out from an ``audit.json`` (its ``flagged`` list) or a text file (one path
    per line; ``#`` starts a comment)."""
    path = Path(path)
    text = path.read_text()
    if path.suffix == ".json":
        document = json.loads(text)
        if "flagged" not in document:
            raise ValueError(f"{path} has no 'flagged' list: give an audit.json or a text file of paths.")
        return list(document["flagged"])
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def _pooled_extractor(trainer, image_size):
    """Pixels -> the trainer's pooled backbone output (its preprocessing, backbone and pooling)."""
    import keras

    inputs = keras.Input((*image_size, 3))
    x = trainer.parts.preprocessing(inputs) if trainer.parts.preprocessing is not None else inputs
    return keras.Model(inputs, trainer.parts.head.pool(trainer.backbone_model(x)))


def _pooled_features(extractor, data, split: str) -> np.ndarray:
    return np.concatenate([np.asarray(extractor.predict_on_batch(np.asarray(images)), np.float32)
                           for images, _ in data.dataset(split)])


def _image_sizes(files: list[Path], input_size) -> dict:
    from PIL import Image

    sizes = []
    for f in files:
        with Image.open(f) as image:
            sizes.append(image.size)
    widths, heights = np.array([s[0] for s in sizes]), np.array([s[1] for s in sizes])
    ratios = widths / heights

    def summary(values):
        return {k: round(float(np.percentile(values, q)), 3)
                for k, q in (("min", 0), ("p05", 5), ("median", 50), ("p95", 95), ("max", 100))}

    return {"width": summary(widths), "height": summary(heights), "aspect_ratio": summary(ratios),
            "smaller_than_input": int(np.sum((widths < input_size[1]) | (heights < input_size[0])))}


def audit(data, trainer=None, folds: int = 5, duplicate_threshold: float = 0.95,
          duplicate_margin: float | None = 0.15, outliers: int = 20, seed: int = 0) -> AuditReport:
    """Audit every image of ``data`` (an `ImageFolder`, all its splits) with ``trainer``'s backbone,
    weights, preprocessing and pooling (by default ``TwoPhaseTrainer()``: MobileNetV2, ImageNet
    weights). ``outliers``: how many of the least typical images to list."""
    from transferkit.training.trainer import TwoPhaseTrainer

    if getattr(data, "multi_label", False):
        raise ValueError("The audit's label-error check assumes one label per image; it cannot judge data with "
                         "several labels per image yet (nothing was audited).")
    start = time.perf_counter()
    trainer = trainer if trainer is not None else TwoPhaseTrainer()
    trainer.build(data.class_names, data.image_size)
    splits = [s for s in SPLITS if s in data.report.counts]
    where = [(split, position) for split in splits for position in range(len(data.labels(split)))]
    files = [f for split in splits for f in data.files(split)]
    labels = np.concatenate([data.labels(split) for split in splits])
    extractor = _pooled_extractor(trainer, data.image_size)  # built once, run over every split
    features = np.concatenate([_pooled_features(extractor, data, split) for split in splits])
    relative = [Path(os.path.relpath(f, data.root)).as_posix() for f in files]
    names = data.class_names

    probabilities = out_of_fold_probabilities(features, labels, folds=folds, seed=seed)
    issues = [{"file": relative[r], "split": where[r][0], "given": names[labels[r]], "suggested": names[s],
               "score": q, "probability_of_given": round(float(probabilities[r, labels[r]]), 4)}
              for r, s, q in label_issues(labels, probabilities)]
    duplicates = []
    for i, j, similarity in near_duplicates(features, duplicate_threshold, duplicate_margin):
        a, b = sorted((i, j), key=lambda r: (SPLIT_ORDER[where[r][0]], relative[r]))
        duplicates.append({"file_a": relative[a], "split_a": where[a][0], "file_b": relative[b],
                           "split_b": where[b][0], "similarity": similarity})
    scores = outlier_scores(features)
    order = np.argsort(scores, kind="stable")[:outliers]
    odd = [{"file": relative[r], "split": where[r][0], "label": names[labels[r]], "score": round(float(scores[r]), 4)}
           for r in order]
    position = {name: k for k, name in enumerate(relative)}
    report = AuditReport(
        root=data.root, class_names=list(names), counts=data.report.counts,
        label_issues=issues, duplicates=duplicates, outliers=odd,
        image_sizes=_image_sizes(files, data.image_size),
        skipped=[{"file": str(s.path), "reason": s.reason} for s in data.report.skipped],
        settings={"backbone": trainer.backbone, "weights": trainer.weights, "image_size": list(data.image_size),
                  "folds": folds, "duplicate_threshold": duplicate_threshold,
                  "duplicate_margin": duplicate_margin, "seed": seed},
        pictures={
            "label_issues": [where[position[i["file"]]] for i in issues],
            "duplicates": [where[position[p[f"file_{s}"]]] for p in duplicates for s in "ab"],
            "outliers": [where[r] for r in order],
        },
    )
    report.seconds = time.perf_counter() - start
    return report
