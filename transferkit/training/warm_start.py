"""Starting a run from a trained classifier (``fit(data, initial_model=...)``, ``transferkit train
--init-from MODEL``): its weights go into the model the trainer has just built, the logits of each class it
knows into that class's place, so it can continue on more images, or on more classes.

A classifier with the same classes gives every weight. One with fewer classes (all of them among the
data's) gives every weight but the new classes' logits, which keep their fresh initialisation; a two-class
model's one logit ``z`` (class 1 against class 0) becomes the logits ``(0, z)``, the same probabilities.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from transferkit.models.classifier import Classifier, load_model
from transferkit.models.head import ClassifierHead

__all__ = ["start_from"]


def _head_of(model) -> ClassifierHead:
    heads = [layer for layer in model.layers if isinstance(layer, ClassifierHead)]
    if len(heads) != 1:
        raise ValueError(f"The initial model {model.name!r} has no transferkit head: give a classifier transferkit "
                         "trained (a .keras file, or its run folder).")
    return heads[0]


def _as_softmax_columns(kernel: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if kernel.shape[-1] == 1:  # sigmoid(z) for class 1 is softmax((0, z))
        return np.concatenate([np.zeros_like(kernel), kernel], axis=-1), np.concatenate([np.zeros_like(bias), bias])
    return kernel, bias


def start_from(trainer, source: os.PathLike | str | Classifier) -> str:
    """Load ``source``'s weights into ``trainer``'s freshly built model; returns a digest of them (what the
    run's fingerprint and feature cache record)."""
    name = source if not isinstance(source, Classifier) else "the initial model"
    classifier = source if isinstance(source, Classifier) else load_model(source)
    old, new = list(classifier.class_names), list(trainer.classifier.class_names)
    unknown = [c for c in old if c not in new]
    if unknown:
        raise ValueError(f"{name} knows classes the data does not have ({', '.join(unknown)}); its classes are "
                         f"{old}, the data's {new}. A warm start keeps every class it knows: add their images.")
    if classifier.multi_label != trainer.classifier.multi_label:
        kinds = {True: "several labels per image", False: "one label per image"}
        raise ValueError(f"{name} was trained for {kinds[classifier.multi_label]}, the data has "
                         f"{kinds[trainer.classifier.multi_label]}: a warm start continues the same task.")
    theirs, mine = _head_of(classifier.model), trainer.parts.head
    skip_theirs, skip_mine = {id(v) for v in theirs.logits.weights}, {id(v) for v in mine.logits.weights}
    their_weights = [v for v in classifier.model.weights if id(v) not in skip_theirs]
    my_weights = [v for v in trainer.classifier.model.weights if id(v) not in skip_mine]
    shapes = [tuple(v.shape) for v in their_weights], [tuple(v.shape) for v in my_weights]
    if shapes[0] != shapes[1]:
        raise ValueError(f"{name} is another network than this trainer builds ({len(shapes[0])} weights against "
                         f"{len(shapes[1])}{'' if len(shapes[0]) != len(shapes[1]) else ', of other shapes'}): give "
                         f"the backbone, its options, the image size and the head it was trained with (backbone "
                         f"{trainer.backbone!r}, image size {tuple(classifier.image_size or ())} for the model).")
    digest = hashlib.sha256()
    for target, value in zip(my_weights, their_weights):
        array = np.asarray(value)
        target.assign(array)
        digest.update(np.ascontiguousarray(array).tobytes())
    kernel, bias = (np.asarray(w) for w in theirs.logits.weights)
    if mine.logits.units == 1 or (mine.multi_label and old == new):  # the same classes, a logit each as before
        mine.logits.kernel.assign(kernel)
        mine.logits.bias.assign(bias)
    else:
        if not mine.multi_label:  # several labels per image: a logit per class already
            kernel, bias = _as_softmax_columns(kernel, bias)
        my_kernel, my_bias = (np.array(w) for w in mine.logits.weights)
        for j, class_name in enumerate(old):
            my_kernel[:, new.index(class_name)] = kernel[:, j]
            my_bias[new.index(class_name)] = bias[j]
        mine.logits.kernel.assign(my_kernel)
        mine.logits.bias.assign(my_bias)
    digest.update(np.ascontiguousarray(kernel).tobytes() + np.ascontiguousarray(bias).tobytes())
    digest.update("\0".join(old).encode())
    return digest.hexdigest()[:16]
