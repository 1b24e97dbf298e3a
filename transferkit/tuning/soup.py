"""Model soups: one model whose weights are the average of a search's best trials (Wortsman et al. 2022).

A search's trials all fine-tune the same pretrained backbone, so their weights tend to lie in one basin of
the loss, where their average is a model at least as good as each (the soup costs nothing at inference: it
is one model of the same size). `greedy_soup` follows the paper's greedy recipe: the trials in order of
score, each added to the average only where the search's metric on the validation images does not get
worse with it, so the soup scores at least what the best trial alone does on those images. Only trials of
the best trial's architecture (backbone, head) can go in; the others are listed as skipped.

>>> import keras_tuner as kt, numpy as np, tensorflow as tf
>>> from types import SimpleNamespace
>>> from transferkit.tuning import tune
>>> images = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)).astype("float32")
>>> batches = tf.data.Dataset.from_tensor_slices((images, np.arange(16) % 2)).batch(8)
>>> data = SimpleNamespace(train=batches, validation=batches, class_names=["cats", "dogs"], image_size=(32, 32))
>>> result = tune(data, tempfile.mkdtemp(), max_trials=2, epochs=1, fine_tune_epochs=1, weights=None,
...               backbone_options={"alpha": 0.35}, hidden_units=(0,), cache_features=False, seed=0,
...               isolate_trials=False, verbose=0)
>>> soup = greedy_soup(result, data)
>>> soup.ingredients[0] == result.trials[0]["trial_id"], soup.score >= soup.steps[0]["soup_score"]
(True, True)
"""

from __future__ import annotations

import json
import os
import tempfile  # noqa: F401  (used by the docstring example)
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import keras_tuner as kt
import numpy as np

__all__ = ["Soup", "greedy_soup"]


@dataclass
class Soup:
    """The result of `greedy_soup`.

    Attributes:
        classifier: the soup, a `Classifier` like the search's best one (same settings, averaged weights).
        ingredients: the ids of the trials averaged, best first.
        score: the soup's metric on the validation images (``metric``, as the search scores trials).
        metric: that metric's name (``val_accuracy`` ...).
        steps: one entry per trial considered, in order: ``trial_id``, the trial's own ``trial_score``
            from the search, ``soup_score`` (the average with it, measured; None where skipped),
            ``kept`` and, where not kept, ``why``.
    """

    classifier: object
    ingredients: list[str]
    score: float
    metric: str
    steps: list[dict] = field(default_factory=list)

    def save(self, directory: os.PathLike | str) -> list[Path]:
        """Write the soup (``soup.keras``) and what went into it (``soup.json``) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = [self.classifier.save(directory / "soup.keras", overwrite=True), directory / "soup.json"]
        files[1].write_text(json.dumps({"metric": self.metric, "score": self.score, "ingredients": self.ingredients,
                                        "steps": self.steps}, indent=2))
        return files

    def table(self) -> str:
        """The trials considered, in order: trial score, the soup's score with the trial, kept or why not."""
        lines = [f"{'trial':<6} {'trial score':>11} {'soup score':>10}  added"]
        for step in self.steps:
            soup = "-" if step["soup_score"] is None else f"{step['soup_score']:.4f}"
            added = "yes" if step["kept"] else f"no: {step['why']}"
            lines.append(f"{step['trial_id']:<6} {step['trial_score']:>11.4f} {soup:>10}  {added}")
        return "\n".join(lines)


def greedy_soup(result, data, max_ingredients: int | None = None, verbose: int = 0) -> Soup:
    """Average the weights of ``result``'s best trials, greedily, into one classifier.

    ``result`` is a finished `tune` search's `TuningResult`; ``data`` its data (the validation images
    decide). The trials are taken best first (``max_ingredients`` of them at most, all completed trials
    by default); each is added where the average with it scores at least as well as the average
    without it (for a loss: at most as much). Weights that are not floating point (seed states) are
    the best trial's. Several labels per image: the soup's thresholds are chosen again on the
    validation images, as for the best trial.

    Loading a trial rebuilds its model in a fresh Keras session, as KerasTuner's ``load_model`` does;
    save or use ``result.classifier`` before making a soup.
    """
    tuner = result.tuner
    hypermodel = tuner.hypermodel
    objective = tuner.oracle.objective
    metric = objective.name[len("final_"):] if objective.name.startswith("final_") else objective.name
    measured = metric[len("val_"):] if metric.startswith("val_") else metric
    better_or_equal = (lambda a, b: a >= b) if objective.direction == "max" else (lambda a, b: a <= b)
    trials = [t for t in result.trials if t["score"] is not None and t["status"] == kt.engine.trial.TrialStatus.COMPLETED]
    if not trials:
        raise ValueError("The search has no completed trial to make a soup of.")
    if max_ingredients is not None:
        if max_ingredients < 1:
            raise ValueError(f"max_ingredients={max_ingredients}: give at least 1.")
        trials = trials[:max_ingredients]

    def load(trial_id: str):
        hypermodel.trial_id = trial_id
        with warnings.catch_warnings():  # the checkpoint holds phase 2's optimizer state, which is not needed
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model = tuner.load_model(tuner.oracle.get_trial(trial_id))
        return model, {v.path: np.array(v) for v in model.weights}

    def score(model) -> float:
        logs = model.evaluate(data.validation, verbose=verbose, return_dict=True)
        if measured not in logs:
            raise ValueError(f"The search's metric {metric!r} is not one the model measures "
                             f"({', '.join(sorted(logs))}); a soup is scored as the trials were.")
        return float(logs[measured])

    best_id = trials[0]["trial_id"]
    model, best = load(best_id)
    shapes = {path: w.shape for path, w in best.items()}
    averaged = {path: np.issubdtype(w.dtype, np.floating) for path, w in best.items()}
    total = {path: w.astype(np.float64) if averaged[path] else w for path, w in best.items()}
    ingredients = [best_id]
    current = score(model)
    steps = [{"trial_id": best_id, "trial_score": float(trials[0]["score"]), "soup_score": current, "kept": True}]
    for trial in trials[1:]:
        step = {"trial_id": trial["trial_id"], "trial_score": float(trial["score"]), "soup_score": None, "kept": False}
        steps.append(step)
        model, weights = load(trial["trial_id"])
        if {path: w.shape for path, w in weights.items()} != shapes:
            step["why"] = "another architecture than the best trial's (backbone or head)"
            continue
        candidate = {path: t + weights[path] if averaged[path] else t for path, t in total.items()}
        # Measured in this trial's model: the same layers as the best trial's (dropout aside, idle here).
        _assign(model, _mean(candidate, len(ingredients) + 1, averaged, best))
        step["soup_score"] = score(model)
        if better_or_equal(step["soup_score"], current):
            total, current, step["kept"] = candidate, step["soup_score"], True
            ingredients.append(trial["trial_id"])
        else:
            step["why"] = "the average scored worse with it"
    model, _ = load(best_id)
    _assign(model, _mean(total, len(ingredients), averaged, best))
    trainer = hypermodel.trainer
    if trainer.classifier.multi_label:
        trainer.set_thresholds(data)
    return Soup(trainer.classifier, ingredients, current, metric, steps)


def _mean(total: dict, n: int, averaged: dict, best: dict) -> dict:
    return {path: (t / n).astype(best[path].dtype) if averaged[path] else best[path] for path, t in total.items()}


def _assign(model, weights: dict) -> None:
    for variable in model.weights:
        variable.assign(weights[variable.path])
