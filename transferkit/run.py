"""Everything a finished training run or search leaves behind, written into one folder.

``save_run`` is what ``examples/cats_vs_dogs.py`` and ``transferkit train`` share: the model, a
``metrics.json``, the pictures, and ``report.html`` (`transferkit.report`) that holds them all. ``save_search`` writes a search's best model, trials and picture.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from transferkit import plots
from transferkit.evaluate import evaluate
from transferkit.report import REPORT_FILE, write_report

__all__ = ["save_run", "save_search", "RUN_FILES"]

#: File names ``save_run`` writes.
RUN_FILES = (
    "model.keras",
    "metrics.json",
    "training_curves.png",
    "confusion_matrix.png",
    "top_losses.png",
    "predictions.png",
    "gradcam.png",
    "reliability.png",
    "report.html",
)


def save_run(trainer, result, data, output: os.PathLike | str, split: str = "validation", overwrite: bool = False,
             verbose: int = 1) -> dict:
    """Evaluate ``result`` on ``data``'s ``split`` and write the run into ``output``.

    Returns the metrics written to ``metrics.json`` (with the paths of the files under ``"files"``).
    Existing files are only replaced with ``overwrite=True``. ``verbose=1`` shows the evaluation's
    progress on stderr.
    """
    output = Path(output)
    existing = [name for name in RUN_FILES if (output / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{output} already holds {', '.join(existing)}; pass overwrite to replace them.")
    output.mkdir(parents=True, exist_ok=True)
    evaluation = evaluate(result.classifier, data, split=split, verbose=verbose)
    files = [result.classifier.save(output / "model.keras", overwrite=True)]
    files.append(plots.plot_history(result.history, result.phase_boundary, output / "training_curves.png"))
    files += evaluation.plot(output)
    rng = np.random.default_rng(0)
    picks = np.sort(rng.choice(len(evaluation.labels), size=min(12, len(evaluation.labels)), replace=False))
    images = data.images(split, picks)
    files.append(plots.plot_predictions(result.classifier, images, output / "predictions.png", labels=evaluation.labels[picks]))
    files.append(plots.plot_gradcam(result.classifier, images[:8], output / "gradcam.png"))
    metrics = {
        "split": split,
        "evaluation": evaluation.to_dict(),
        "val_accuracy_phase1": result.final("val_accuracy", phase=1),
        "val_accuracy_phase2": result.final("val_accuracy", phase=2),
        "phase_boundary": result.phase_boundary,
        "phase_seconds": list(result.phase_seconds),
        "history": result.history,
        "trainer": trainer.get_config(),
        "data": {"root": str(data.root), "counts": data.report.counts, "skipped": len(data.report.skipped),
                 "excluded": [os.path.relpath(f, data.root) for f in getattr(data.report, "excluded", [])]},
        "files": [str(f) for f in files] + [str(output / "metrics.json"), str(output / REPORT_FILE)],
    }
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    write_report(output)
    return metrics


def save_search(result, objective: str, output: os.PathLike | str) -> list[Path]:
    """Write a search's best classifier (``best.keras``), ``trials.json`` and ``tuning.png`` into
    ``output``; ``result`` is a `transferkit.tuning.TuningResult`."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    files = [result.classifier.save(output / "best.keras", overwrite=True)]
    (output / "trials.json").write_text(json.dumps(result.trials, indent=2, default=str))
    files += [output / "trials.json", plots.plot_tuning(result.trials, objective, output / "tuning.png")]
    return files
