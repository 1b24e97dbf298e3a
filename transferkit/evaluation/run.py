"""Everything a finished training run or search leaves behind, written into one folder.

`RunFolder` is what ``transferkit train`` and ``examples/cats_vs_dogs.py`` share: whether a run may
start in a folder (``overwrite``, ``resume``), where its checkpoint goes, which process writes, and
`save_run`: the model, a ``metrics.json``, the pictures, and ``report.html``
(`transferkit.evaluation.report`) that holds them all; `summary` is the text both print at the end.
``save_search`` writes a search's best model, trials and picture.

>>> import tempfile
>>> folder = RunFolder(tempfile.mkdtemp())
>>> folder.check(); folder.checkpoint.name, folder.resuming
('checkpoint', False)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from transferkit.evaluation import plots
from transferkit.evaluation.metrics import evaluate
from transferkit.evaluation.report import REPORT_FILE, write_report

__all__ = ["RunFolder", "save_run", "save_search", "summary", "RUN_FILES"]

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


class RunFolder:
    """The folder of one training run: what it holds, and what a new run may do with it.

    A folder that holds a run (any of `RUN_FILES`) is only written again with ``overwrite`` or
    ``resume``; one that holds the checkpoint of an unfinished run, only with ``resume`` (continue
    it) or ``overwrite`` (start again). `start` says which of these happens; with ``overwrite`` it
    first removes the earlier run (`earlier_run`: its files, its checkpoint, and the exports made
    from its model), so nothing of it is mistaken for the new run's. With several processes only
    the one that ``writes`` (process 0) writes the run.
    """

    def __init__(self, path: os.PathLike | str, overwrite: bool = False, resume: bool = False,
                 writes: bool = True):
        self.path = Path(path)
        self.overwrite, self.resume, self.writes = bool(overwrite), bool(resume), bool(writes)

    @property
    def checkpoint(self) -> Path:
        """Where the run's checkpoint goes (``TwoPhaseTrainer.fit(checkpoint_dir=...)``)."""
        return self.path / "checkpoint"

    @property
    def resuming(self) -> bool:
        """Whether the run continues a checkpoint found here."""
        return self.resume and (self.checkpoint / "checkpoint.json").exists()

    def holds_run(self) -> bool:
        return any((self.path / name).exists() for name in RUN_FILES)

    def check(self) -> None:
        """Refuse, before anything is trained, a folder the run may not write to (``FileExistsError``
        naming the way out)."""
        if self.overwrite and not self.resume:
            return
        if self.resume:
            if self.writes and not self.resuming and self.holds_run():
                raise FileExistsError(f"{self.path} holds a finished run but no checkpoint to resume; pass --overwrite "
                                      "to train it again, or choose another --output.")
            return
        if self.writes and self.holds_run():
            raise FileExistsError(f"{self.path} already holds a run; pass --overwrite or choose another --output.")
        if self.checkpoint.exists():
            raise FileExistsError(f"{self.path} holds the checkpoint of an unfinished run; pass --resume to continue "
                                  "it, --overwrite to start again, or choose another --output.")

    def earlier_run(self) -> list[Path]:
        """What an earlier run left here: `RUN_FILES`, its checkpoint, and what ``transferkit export``
        wrote from its model (each export with its ``labels.txt``, ``transferkit.json`` and parity
        record). Other files are not the run's and are left alone."""
        from transferkit.export.formats import METADATA_FILE
        from transferkit.export.parity import PARITY_SUFFIX

        found = [self.path / name for name in (*RUN_FILES, "checkpoint", "model_export.keras")]
        for sidecar in self.path.glob(f"*.{METADATA_FILE}"):  # model_int8.transferkit.json: model_int8.tflite's
            stem = sidecar.name[: -len(METADATA_FILE) - 1]
            found += [sidecar, self.path / f"{stem}.labels.txt",
                      *(self.path / f"{stem}{suffix}" for suffix in (".tflite", ".onnx"))]
        for saved_model in self.path.glob(f"*/{METADATA_FILE}"):
            if (saved_model.parent / "saved_model.pb").exists():
                found.append(saved_model.parent)
        found += self.path.glob(f"*{PARITY_SUFFIX}")
        return sorted({f for f in found if f.exists()})

    def start(self) -> str:
        """Check, then with ``overwrite`` (and not ``resume``) remove the `earlier_run`, so the run starts
        again instead of continuing it; returns what happens, in one line."""
        self.check()
        if self.resume:
            if self.resuming:
                return f"Resuming the run in {self.path} from its last finished epoch."
            return f"Nothing to resume in {self.path} (no checkpoint there): starting a new run."
        if self.overwrite and self.writes:
            earlier = self.earlier_run()
            for path in earlier:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            if earlier:
                return (f"Removed the earlier run in {self.path} ({len(earlier)} files and folders: "
                        f"{', '.join(p.name for p in earlier)}).")
        return f"Training a new run into {self.path}."

    def finished(self, trainer, epochs: int, fine_tune_epochs: int) -> bool:
        """Whether resuming would train nothing: the checkpoint here holds a finished run of these
        settings and epochs, saved (its ``metrics.json`` written). A finished run of other settings is
        refused, naming each difference (``ValueError``); the data is not compared."""
        from transferkit.training.checkpoint import RunCheckpoint, differences

        record = RunCheckpoint(self.checkpoint, {}).record() if self.resuming else None
        if record is None or not (self.path / "metrics.json").exists():
            return False
        asked = {phase for phase, count in ((1, epochs), (2, fine_tune_epochs)) if count}
        if not asked <= set(record.get("phases_done", [])):
            return False
        saved = {k: v for k, v in record["fingerprint"].items() if k != "data"}
        changed = differences(saved, trainer.run_settings(epochs, fine_tune_epochs))
        if changed:
            raise ValueError(f"The run in {self.path} finished with other settings: {'; '.join(changed)}. Pass "
                             "--overwrite to train it again with these, or choose another --output.")
        return True

    def save(self, trainer, result, data, split: str = "validation", verbose: int = 1) -> dict:
        """`save_run` into this folder."""
        return save_run(trainer, result, data, self.path, split=split, overwrite=self.overwrite or self.resume,
                        verbose=verbose)


def summary(metrics: dict, extra: list[tuple[str, str]] = ()) -> str:
    """The end of a run as text: accuracies, timings, ``extra`` rows, per-class results, files written.

    >>> print(summary({"split": "test", "val_accuracy_phase1": 0.9, "val_accuracy_phase2": None,
    ...                "evaluation": {"accuracy": 0.95, "roc_auc": 0.99, "per_class": {}}, "phase_seconds": [3, 4],
    ...                "data": {"skipped": 0}, "files": ["m.keras"]}))  # doctest: +NORMALIZE_WHITESPACE
    Summary
      validation accuracy after phase 1  0.9000
      validation accuracy after phase 2  -
      test accuracy                      0.9500
      test ROC AUC                       0.9900
      phase 1 / phase 2 wall time        3 s / 4 s
      skipped files                      0
    <BLANKLINE>
    Wrote:
      m.keras
    """
    evaluation = metrics["evaluation"]
    seconds = metrics["phase_seconds"]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    if evaluation.get("task") == "multi_label":
        scores = [
            ("validation mAP after phase 1", fmt(metrics.get("val_map_phase1"))),
            ("validation mAP after phase 2", fmt(metrics.get("val_map_phase2"))),
            (f"{metrics['split']} mAP", fmt(evaluation["map"])),
            (f"{metrics['split']} macro F1 / micro F1", f"{fmt(evaluation['macro_f1'])} / {fmt(evaluation['micro_f1'])}"),
            (f"{metrics['split']} exact-match accuracy", fmt(evaluation["accuracy"])),
        ]
    else:
        scores = [
            ("validation accuracy after phase 1", fmt(metrics["val_accuracy_phase1"])),
            ("validation accuracy after phase 2", fmt(metrics["val_accuracy_phase2"])),
            (f"{metrics['split']} accuracy", fmt(evaluation["accuracy"])),
            (f"{metrics['split']} ROC AUC", fmt(evaluation["roc_auc"])),
        ]
    rows = [
        *scores,
        *extra,
        ("phase 1 / phase 2 wall time", f"{seconds[0]:.0f} s / {seconds[1]:.0f} s"),
        ("skipped files", str(metrics["data"]["skipped"])),
    ]
    width = max(len(name) for name, _ in rows)
    lines = ["Summary", *(f"  {name:<{width}}  {value}" for name, value in rows)]
    if evaluation["per_class"]:
        lines += ["", f"Per class ({metrics['split']}):"]
        name_width = max(len(name) for name in evaluation["per_class"])
        lines += [f"  {name:<{name_width}}  precision {row['precision']:.3f}  recall {row['recall']:.3f}  "
                  f"f1 {row['f1']:.3f}" + (f"  AP {row['average_precision']:.3f}  threshold {row['threshold']:.3f}"
                                            if row.get("average_precision") is not None else "")
                  for name, row in evaluation["per_class"].items()]
    lines += ["", "Wrote:", *(f"  {f}" for f in metrics["files"])]
    return "\n".join(lines)


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
        raise FileExistsError(f"{output} already holds {', '.join(existing)}; pass overwrite=True (--overwrite) "
                              "to replace them.")
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
        **({"val_map_phase1": result.final("val_map", phase=1), "val_map_phase2": result.final("val_map", phase=2)}
           if result.classifier.multi_label else {}),
        "phase_boundary": result.phase_boundary,
        "phase_seconds": list(result.phase_seconds),
        "history": result.history,
        "trainer": trainer.get_config(),
        "run": result.run,
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
