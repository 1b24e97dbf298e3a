"""Pictures, as PNG files: training curves with the phase boundary, confusion matrix, top losses,
sample predictions and Grad-CAM heatmaps.

Every function returns the path it wrote. Figures are drawn with matplotlib's object API
(``matplotlib.figure.Figure``), so no display or pyplot state is needed.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "plot_history",
    "plot_confusion_matrix",
    "plot_top_losses",
    "plot_predictions",
    "plot_gradcam",
    "gradcam",
    "plot_tuning",
    "plot_lr_find",
    "plot_gallery",
    "plot_reliability",
]


def _save(fig: Figure, path: os.PathLike | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _fonts_for_every_character(fig)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")  # said once, above
        fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


@functools.lru_cache(maxsize=None)
def _characters_of(font_path: str) -> frozenset:
    from matplotlib import ft2font

    try:
        return frozenset(ft2font.FT2Font(font_path).get_charmap())
    except (OSError, RuntimeError):
        return frozenset()


_UNDRAWABLE_SAID: set[str] = set()


def _fonts_for_every_character(fig: Figure) -> None:
    """Give each text of ``fig`` that its font cannot draw (CJK or emoji class names, say) the
    installed fonts that can, as matplotlib's fallbacks; say once which characters no font has."""
    from matplotlib import font_manager
    from matplotlib.text import Text

    default = font_manager.findfont(font_manager.FontProperties())
    texts = [t for t in fig.findobj(Text) if t.get_text()]
    missing = {c for t in texts for c in t.get_text() if not c.isspace() and ord(c) not in _characters_of(default)}
    if not missing:
        return
    fallbacks, covered = [], set()
    for entry in font_manager.fontManager.ttflist:
        name = entry.name.lower()
        if "color emoji" in name or name.startswith("last resort") or entry.name in fallbacks:
            continue  # bitmap colour fonts do not draw; Last Resort draws every character as a box
        found = {c for c in missing - covered if ord(c) in _characters_of(entry.fname)}
        if found:
            fallbacks.append(entry.name)
            covered |= found
    if fallbacks:
        family = [font_manager.FontProperties(fname=default).get_name(), *fallbacks]
        for text in texts:
            if any(c in missing for c in text.get_text()):
                text.set_fontfamily(family)
    undrawable = "".join(sorted(missing - covered - _UNDRAWABLE_SAID))
    if undrawable:
        _UNDRAWABLE_SAID.update(undrawable)
        warnings.warn(f"No installed font has the characters {undrawable!r} (in class names or file names): the "
                      "pictures show boxes for them. Install a font that has them (Debian: fonts-noto-cjk for "
                      "Chinese, Japanese and Korean; fonts-noto for most other scripts).", UserWarning, stacklevel=3)


def plot_history(history: dict, phase_boundary: int | None, path: os.PathLike | str) -> Path:
    """Accuracy and loss per epoch (training and validation), the start of fine-tuning marked."""
    fig = Figure(figsize=(8, 7))
    axes = fig.subplots(2, 1, sharex=True)
    for ax, metric in zip(axes, ("accuracy", "loss")):
        for key, label in ((metric, "training"), (f"val_{metric}", "validation")):
            if key in history:
                values = history[key]
                ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=label)
        if phase_boundary:
            ax.axvline(phase_boundary + 0.5, color="grey", linestyle="--", label="start of fine-tuning")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if metric == "accuracy" else "upper right")
    axes[0].set_title("Training and validation accuracy / loss")
    axes[1].set_xlabel("epoch")
    axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, path)


def plot_confusion_matrix(evaluation, path: os.PathLike | str) -> Path:
    """The confusion matrix with counts in each cell (rows true, columns predicted)."""
    cm = evaluation.confusion_matrix
    names = evaluation.class_names
    size = max(4, 0.8 * len(names) + 2)
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    image = ax.imshow(cm, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = cm.max() / 2 if cm.size else 0
    for (t, p), count in np.ndenumerate(cm):
        ax.text(p, t, str(count), ha="center", va="center", color="white" if count > threshold else "black")
    ax.set_title(f"Confusion matrix (accuracy {evaluation.accuracy:.1%})")
    return _save(fig, path)


def _grid(count: int, columns: int = 3):
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    fig = Figure(figsize=(3 * columns, 3.3 * rows))
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.axis("off")
    return fig, axes


def _pixels(item_image, item_file, image_size):
    from transferkit.data.images import read_image

    if item_image is not None:
        return np.asarray(item_image, dtype=np.uint8)
    return read_image(item_file, image_size)


def plot_top_losses(evaluation, path: os.PathLike | str, k: int = 9) -> Path:
    """The ``k`` highest-loss images: true / predicted label, probability of the prediction, loss."""
    top = [t for t in evaluation.top_losses(k) if t.image is not None or t.file is not None]
    fig, axes = _grid(max(1, len(top)))
    for ax, item in zip(axes, top):
        size = item.image.shape[:2] if item.image is not None else (160, 160)
        ax.imshow(_pixels(item.image, item.file, size))
        colour = "red" if item.true != item.predicted else "green"
        ax.set_title(f"true {item.true} / pred {item.predicted}\np={item.probability:.2f} loss={item.loss:.2f}",
                     color=colour, fontsize=9)
        if item.file is not None:
            ax.text(0.5, -0.04, Path(item.file).name, transform=ax.transAxes, ha="center", va="top", fontsize=7)
    if not top:
        axes[0].text(0.5, 0.5, "no images kept", ha="center")
    fig.suptitle("Top losses (most confidently wrong first)")
    return _save(fig, path)


def plot_reliability(calibration: dict, path: os.PathLike | str) -> Path:
    """Reliability diagram of `Evaluation.calibration`: accuracy against confidence per bin, the
    diagonal a perfectly calibrated model would follow, and the expected calibration error."""
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    rows = calibration["bins"]
    if rows:
        ax.bar([r["low"] for r in rows], [r["accuracy"] for r in rows], width=[r["high"] - r["low"] for r in rows],
               align="edge", alpha=0.6, edgecolor="black", label="accuracy in bin")
        ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], marker="o", color="C1",
                label="mean confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (probability of the predicted class)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability (ECE {calibration['ece']:.3f})")
    ax.legend(loc="upper left")
    return _save(fig, path)


def plot_precision_recall(evaluation, path: os.PathLike | str) -> Path:
    """Several labels per image: each class's precision-recall curve, its average precision, and the point
    its threshold picks."""
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    for c, name in enumerate(evaluation.class_names):
        truth, scores = evaluation.labels[:, c], evaluation.probabilities[:, c]
        if not truth.any():
            continue
        order = np.argsort(-scores, kind="mergesort")
        hits = np.cumsum(truth[order])
        precision, recall = hits / np.arange(1, len(order) + 1), hits / truth.sum()
        row = evaluation.per_class[name]
        line, = ax.step(recall, precision, where="post", label=f"{name} (AP {row['average_precision']:.3f})")
        ax.plot([row["recall"]], [row["precision"]], "o", color=line.get_color())
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    mean_ap = evaluation.mean_average_precision
    ax.set_title(f"Precision-recall per class (mAP {mean_ap:.3f}; dots: the thresholds)" if mean_ap is not None
                 else "Precision-recall per class")
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def _caption(classifier, probs, labels, i) -> tuple[str, str]:
    """The title and colour of one image of `plot_predictions`."""
    if classifier.multi_label:
        said = classifier.decide(probs[None])[0]
        title = ", ".join(f"{classifier.class_names[c]} ({probs[c]:.2f})" for c in np.flatnonzero(said)) or "(none)"
        if labels is None:
            return title, "black"
        truth = np.asarray(labels[i]).astype(bool)
        true_names = ", ".join(classifier.class_names[c] for c in np.flatnonzero(truth)) or "none"
        return f"{title}\ntrue {true_names}", "green" if np.array_equal(truth, said) else "red"
    predicted = int(np.argmax(probs))
    title = f"{classifier.class_names[predicted]} ({probs[predicted]:.2f})"
    if labels is None:
        return title, "black"
    return (f"{title}\ntrue {classifier.class_names[int(labels[i])]}",
            "green" if int(labels[i]) == predicted else "red")


def plot_predictions(classifier, images: np.ndarray, path: os.PathLike | str, labels=None, columns: int = 4) -> Path:
    """A grid of images with the predicted class and its probability (and the true class, if given); for
    several labels per image, the labels at or above their thresholds."""
    images = np.asarray(images)
    probabilities = classifier.predict(images)
    fig, axes = _grid(len(images), columns)
    for i, (ax, image, probs) in enumerate(zip(axes, images, probabilities)):
        ax.imshow(image.astype(np.uint8))
        title, colour = _caption(classifier, probs, labels, i)
        ax.set_title(title, color=colour, fontsize=9)
    fig.suptitle("Sample predictions")
    return _save(fig, path)


def plot_gallery(images, captions: list[str], path: os.PathLike | str, title: str, columns: int = 6) -> Path:
    """Thumbnails with a caption each (an audit's lists); an empty list gives a page that says so."""
    if not len(images):
        fig = Figure(figsize=(6, 1))
        fig.text(0.5, 0.5, f"{title}: none found", ha="center", va="center")
        return _save(fig, path)
    fig, axes = _grid(len(images), columns)
    for ax, image, caption in zip(axes, images, captions):
        ax.imshow(np.asarray(image).astype(np.uint8))
        ax.set_title(caption, fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def _gradient(function, x):
    """d sum(function(x)) / dx with the running Keras backend's own autodiff."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(function(x))
        return tape.gradient(total, x)
    if backend == "jax":
        import jax

        return jax.grad(lambda v: keras.ops.sum(function(v)))(x)
    if backend == "torch":
        import torch

        x = torch.as_tensor(keras.ops.convert_to_numpy(x)).requires_grad_(True)
        function(x).sum().backward()
        return x.grad
    raise NotImplementedError(f"Grad-CAM has no gradient for the {backend!r} backend.")


def gradcam(classifier, images: np.ndarray, class_index: int | None = None) -> np.ndarray:
    """Grad-CAM heatmaps in [0, 1], one ``(height, width)`` map per image.

    The map weighs the backbone's last feature map by the gradient of the predicted (or
    ``class_index``) probability with respect to it, taken with the Keras backend's own gradients
    (TensorFlow, JAX or PyTorch).
    """
    import keras
    from keras import ops

    layers = classifier.model.layers[1:]
    position = next((i for i, layer in enumerate(layers) if isinstance(layer, keras.Model)), None)
    if position is None:
        raise ValueError("Grad-CAM needs a model with a backbone sub-model; none found.")
    before, backbone, after = layers[:position], layers[position], layers[position + 1 :]
    x = ops.convert_to_tensor(np.asarray(images, dtype="float32"))
    for layer in before:
        x = layer(x)
    features = backbone(x, training=False)

    def head(f):
        for layer in after:
            f = layer(f, training=False)  # Keras passes `training` on only to layers that take it
        return f

    probabilities = ops.convert_to_numpy(head(features))
    chosen = probabilities.argmax(axis=-1) if class_index is None else np.full(len(probabilities), class_index)
    mask = ops.convert_to_tensor(np.eye(probabilities.shape[-1], dtype="float32")[chosen])
    grads = _gradient(lambda f: head(f) * mask, features)
    weights = ops.mean(grads, axis=(1, 2), keepdims=True)
    cam = ops.relu(ops.sum(weights * features, axis=-1))
    cam = cam / (ops.max(cam, axis=(1, 2), keepdims=True) + 1e-8)
    cam = ops.image.resize(cam[..., None], classifier.image_size)[..., 0]
    return ops.convert_to_numpy(cam)


def plot_gradcam(classifier, images: np.ndarray, path: os.PathLike | str, columns: int = 4) -> Path:
    """Each image with its Grad-CAM heatmap laid over it and the predicted class."""
    images = np.asarray(images)
    maps = gradcam(classifier, images)
    probabilities = classifier.predict(images)
    fig, axes = _grid(len(images), columns)
    for ax, image, heat, probs in zip(axes, images, maps, probabilities):
        ax.imshow(image.astype(np.uint8))
        ax.imshow(heat, cmap="jet", alpha=0.4)
        predicted = int(np.argmax(probs))
        ax.set_title(f"{classifier.class_names[predicted]} ({probs[predicted]:.2f})", fontsize=9)
    fig.suptitle("Grad-CAM: where the model looks")
    return _save(fig, path)


def plot_tuning(trials: list[dict], score_name: str, path: os.PathLike | str) -> Path:
    """Trial score against each searched hyperparameter (one panel each), the best trial marked."""
    scored = [t for t in trials if t["score"] is not None]
    names = sorted({k for t in scored for k in t["hyperparameters"]})
    fig, axes = _grid(max(1, len(names)), columns=3)
    best = max(scored, key=lambda t: t["score"]) if scored and "loss" not in score_name else (
        min(scored, key=lambda t: t["score"]) if scored else None)
    for ax, name in zip(axes, names):
        ax.axis("on")
        having = [t for t in scored if name in t["hyperparameters"]]  # a backbone's unfreeze point: its trials
        values = [t["hyperparameters"][name] for t in having]
        scores = [t["score"] for t in having]
        marked = best if best is not None and name in best["hyperparameters"] else None
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            ax.scatter(values, scores, alpha=0.7)
            if name == "learning_rate":
                ax.set_xscale("log")
            if marked is not None:
                ax.scatter([marked["hyperparameters"][name]], [marked["score"]], color="red", marker="*", s=150)
        else:
            categories = sorted({str(v) for v in values}, key=lambda s: (len(s), s))
            positions = [categories.index(str(v)) for v in values]
            ax.scatter(positions, scores, alpha=0.7)
            ax.set_xticks(range(len(categories)), categories, rotation=45, ha="right")
            if marked is not None:
                ax.scatter([categories.index(str(marked["hyperparameters"][name]))], [marked["score"]],
                           color="red", marker="*", s=150)
        ax.set_xlabel(name)
        ax.set_ylabel(score_name)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{len(scored)} trials: {score_name} against each hyperparameter (best: red star)")
    fig.tight_layout()
    return _save(fig, path)


def plot_lr_find(finding, path: os.PathLike | str) -> Path:
    """A learning-rate finder's sweeps (`transferkit.training.lr_find.LRFinding`): loss against learning rate
    (log scale), one panel a phase, the suggestion marked (dotted where the sweep suggests nothing)."""
    from transferkit.training.lr_find import DIVERGENCE

    fig, axes = _grid(len(finding.sweeps), columns=2)
    for ax, sweep in zip(axes, finding.sweeps.values()):
        ax.axis("on")
        ax.plot(sweep.learning_rates, sweep.losses, alpha=0.3, label="loss")
        ax.plot(sweep.learning_rates, sweep.smoothed, label="smoothed")
        ax.axvline(sweep.suggestion, color="red", linestyle="--" if sweep.usable else ":",
                   label=f"suggested {sweep.suggestion:.2g}" if sweep.usable else "no usable suggestion")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        ax.set_title(f"phase {sweep.phase}")
        finite = sweep.smoothed[np.isfinite(sweep.smoothed)]
        if len(finite):
            ax.set_ylim(finite.min() * 0.9, min(finite.max(), finite.min() * DIVERGENCE) * 1.1)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
