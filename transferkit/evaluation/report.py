"""One self-contained HTML page for a training run: ``report.html`` in the run folder.

Everything is inside the file (pictures as data URIs, styles inline, no scripts, no links out), so
it opens offline and can be mailed. It is built from what `transferkit.evaluation.run.save_run` leaves in the
folder (``metrics.json`` and the PNG files) plus any export parity records (``*.parity.json``), so
``transferkit report RUN_DIR`` can rebuild it at any time.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path

__all__ = ["write_report", "REPORT_FILE"]

REPORT_FILE = "report.html"

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1f2328;
       background: #f6f8fa; }
main { max-width: 1040px; margin: 0 auto; padding: 24px; }
header { background: #24292f; color: #fff; padding: 20px 24px; }
header h1 { margin: 0; font-size: 1.6em; } header p { margin: 4px 0 0; color: #d0d7de; }
section { background: #fff; border: 1px solid #d0d7de; border-radius: 8px; padding: 16px 20px; margin: 16px 0; }
h2 { margin-top: 0; font-size: 1.2em; border-bottom: 1px solid #d0d7de; padding-bottom: 6px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; text-align: right; }
th { background: #f6f8fa; } td.name, th.name, table.left td, table.left th { text-align: left; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; }
.card { border: 1px solid #d0d7de; border-radius: 8px; padding: 10px 16px; min-width: 150px; background: #fff; }
.card b { display: block; font-size: 1.5em; }
img.plot { max-width: 100%; height: auto; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 12px; }
figure { margin: 0; font-size: 0.8em; }
figure img { width: 100%; height: 140px; object-fit: cover; border-radius: 4px; }
figcaption { word-break: break-all; } .wrong { color: #cf222e; } .right { color: #1a7f37; }
.missing { background: #eaeef2; height: 140px; display: flex; align-items: center; justify-content: center; }
code { background: #eaeef2; padding: 1px 4px; border-radius: 4px; }
"""


def _png_uri(path: Path) -> str | None:
    if not path.exists():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _thumbnail_uri(file: str | None, size: int = 160) -> str | None:
    """A small JPEG of an image file, or None if it cannot be read any more."""
    if not file:
        return None
    try:
        from PIL import Image

        with Image.open(file) as image:
            image = image.convert("RGB")
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=85)
    except (OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _table(header: list[str], rows: list[list], first_is_name: bool = True) -> str:
    def cell(tag, value, i):
        cls = ' class="name"' if i == 0 and first_is_name else ""
        return f"<{tag}{cls}>{html.escape(str(value))}</{tag}>"

    head = "".join(cell("th", h, i) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", v, i) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _picture(folder: Path, name: str, alt: str) -> str:
    uri = _png_uri(folder / name)
    if uri is None:
        return f"<p>{html.escape(name)} is missing from the run folder.</p>"
    return f'<img class="plot" alt="{html.escape(alt)}" src="{uri}">'


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _setting(value) -> str:
    if isinstance(value, dict) and isinstance(value.get("config"), dict):  # a serialized Keras object
        config = {k: v for k, v in value["config"].items() if k not in ("name", "trainable", "dtype")}
        return f"{value.get('class_name', '')}(" + ", ".join(f"{k}={v!r}" for k, v in config.items()) + ")"
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _head(config: dict) -> str:
    shown = {k: v for k, v in config.items() if k not in ("name", "trainable", "dtype", "num_classes")}
    return "ClassifierHead(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


def _settings(metrics: dict) -> str:
    """The trainer's settings as a user would write them; the image size the data's where the trainer
    took it from there, and the epochs and batch size the run asked for."""
    run = metrics.get("run", {})
    image_size = run.get("data", {}).get("image_size")
    rows = []
    for key, value in metrics.get("trainer", {}).items():
        if key == "head" and isinstance(value, dict):
            shown = _head(value)
        elif key == "image_size" and value is None and image_size:
            shown = f"{' x '.join(map(str, image_size))} (the data's)"
        else:
            shown = _setting(value)
        rows.append([key, shown])
    for key in ("epochs", "fine_tune_epochs"):
        if key in run:
            rows.append([key, str(run[key])])
    if run.get("data", {}).get("batch_size") is not None:
        rows.append(["batch_size", str(run["data"]["batch_size"])])
    return _table(["setting", "value"], rows).replace("<table>", '<table class="left">', 1)


def _split(metrics: dict) -> str:
    data = metrics.get("data", {})
    counts = data.get("counts", {})
    classes = sorted({name for split in counts.values() for name in split})
    rows = [[split] + [per_class.get(name, 0) for name in classes] + [sum(per_class.values())]
            for split, per_class in counts.items()]
    excluded = data.get("excluded", [])
    notes = [f"Data folder: <code>{html.escape(str(data.get('root', '?')))}</code>.",
             "The file list of every split is recorded inside <code>model.keras</code> (its "
             "<code>Classifier.split</code>), so <code>transferkit evaluate</code> uses the same split.",
             f"Unreadable files skipped: {data.get('skipped', 0)}."]
    if excluded:
        notes.append(f"Left out on request ({len(excluded)}): " + ", ".join(html.escape(e) for e in excluded) + ".")
    if metrics.get("evaluation", {}).get("task") == "multi_label":
        notes.insert(0, "Several labels per image: each column counts the images that have the class, so the "
                        "total counts labels, not images.")
    return _table(["split"] + classes + ["total"], rows) + "".join(f"<p>{n}</p>" for n in notes)


def _per_class(evaluation: dict) -> str:
    if evaluation.get("task") == "multi_label":
        rows = [[name, f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}",
                 "n/a" if r["average_precision"] is None else f"{r['average_precision']:.3f}", f"{r['threshold']:.3f}",
                 r["support"]] for name, r in evaluation["per_class"].items()]
        return (_table(["class", "precision", "recall", "F1", "average precision", "threshold", "images with it"], rows)
                + "<p>Several labels per image: each class holds when its probability reaches its threshold (chosen "
                  "on the validation images for the best F1). Support counts the images that have the class.</p>")
    rows = [[name, f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}", r["support"]]
            for name, r in evaluation["per_class"].items()]
    names = evaluation["class_names"]
    matrix = [[f"true {name}"] + row for name, row in zip(names, evaluation["confusion_matrix"])]
    return (_table(["class", "precision", "recall", "F1", "support"], rows)
            + "<p>Confusion matrix (rows: true class; columns: predicted class).</p>"
            + _table([""] + [f"predicted {n}" for n in names], matrix))


def _calibration(folder: Path, evaluation: dict) -> str:
    calibration = evaluation.get("calibration")
    if not calibration:
        return "<p>This run's metrics.json has no calibration record; rerun <code>transferkit train</code>.</p>"
    rows = [[f"{b['low']:.1f}-{b['high']:.1f}", b["count"], f"{b['confidence']:.3f}", f"{b['accuracy']:.3f}"]
            for b in calibration["bins"]]
    return (f"<p>Expected calibration error: <b>{calibration['ece']:.4f}</b> (the count-weighted gap between "
            "confidence and accuracy; 0 is perfectly calibrated).</p>"
            + _picture(folder, "reliability.png", "reliability diagram")
            + _table(["confidence bin", "images", "mean confidence", "accuracy"], rows))


def _top_losses(evaluation: dict, root: str | None) -> str:
    figures = []
    for item in evaluation.get("top_losses", []):
        shown = item.get("file")
        if shown and root and os.path.abspath(shown).startswith(os.path.abspath(root) + os.sep):
            shown = os.path.relpath(shown, root)
        uri = _thumbnail_uri(item.get("file"))
        picture = f'<img alt="{html.escape(str(item.get("file")))}" src="{uri}">' if uri else \
            '<div class="missing">file not readable</div>'
        verdict = "wrong" if item["true"] != item["predicted"] else "right"
        figures.append(
            f'<figure>{picture}<figcaption><span class="{verdict}">true {html.escape(item["true"])}, predicted '
            f'{html.escape(item["predicted"])} (p={item["probability"]:.2f}, loss {item["loss"]:.2f})</span><br>'
            f'<code>{html.escape(str(shown))}</code></figcaption></figure>')
    if not figures:
        return "<p>No top losses recorded.</p>"
    return '<div class="gallery">' + "".join(figures) + "</div>"


def _parity(folder: Path) -> str:
    from transferkit.export.parity import PARITY_COLUMNS, PARITY_SUFFIX, parity_cells

    records = [json.loads(p.read_text()) for p in sorted(folder.glob(f"*{PARITY_SUFFIX}"))]
    if not records:
        return ("<p>No export has been checked yet: <code>transferkit export model.keras --data-dir DATA_DIR</code> "
                "compares an export with this model and records it here.</p>")
    return _table(list(PARITY_COLUMNS), [parity_cells(r) for r in records])


def _timings(metrics: dict) -> str:
    seconds = metrics.get("phase_seconds") or []
    rows = [[f"phase {i}", f"{s:.1f} s"] for i, s in enumerate(seconds, start=1)]
    rows.append(["total", f"{sum(seconds):.1f} s"])
    return _table(["", "time"], rows)


def write_report(run_dir: os.PathLike | str) -> Path:
    """Build ``report.html`` from the run in ``run_dir``; returns its path."""
    folder = Path(run_dir)
    metrics_file = folder / "metrics.json"
    if not metrics_file.exists():
        raise FileNotFoundError(f"{metrics_file} is missing: {folder} is not a finished transferkit training run.")
    metrics = json.loads(metrics_file.read_text())
    evaluation = metrics["evaluation"]
    split = metrics.get("split", "validation")
    several = evaluation.get("task") == "multi_label"
    if several:
        cards = [("mAP, " + split, _percent(evaluation["map"])),
                 ("macro F1, " + split, _percent(evaluation["macro_f1"])),
                 ("micro F1, " + split, _percent(evaluation["micro_f1"])),
                 ("exact match, " + split, _percent(evaluation["accuracy"])),
                 ("images evaluated", evaluation["count"])]
    else:
        cards = [("accuracy, " + split, _percent(evaluation["accuracy"])),
                 ("after phase 1 (validation)", _percent(metrics.get("val_accuracy_phase1"))),
                 ("after phase 2 (validation)", _percent(metrics.get("val_accuracy_phase2"))),
                 ("images evaluated", evaluation["count"])]
    if evaluation.get("roc_auc") is not None:
        cards.append(("ROC AUC", f"{evaluation['roc_auc']:.4f}"))
    sections = [
        ("Results", '<div class="cards">' + "".join(
            f'<div class="card">{html.escape(label)}<b>{html.escape(str(value))}</b></div>' for label, value in cards)
         + "</div>"),
        ("Settings", _settings(metrics)),
        ("Data and split", _split(metrics)),
        ("Training curves", "<p>The dashed line marks the start of fine-tuning (phase 2).</p>"
         + _picture(folder, "training_curves.png", "training curves")),
        (f"Per-class results ({split} split)", _per_class(evaluation)
         + (_picture(folder, "precision_recall.png", "precision-recall curves") if several
            else _picture(folder, "confusion_matrix.png", "confusion matrix"))),
        ("Calibration", _calibration(folder, evaluation)),
        ("Top losses", "<p>The images the model got most confidently wrong (or barely right).</p>"
         + _top_losses(evaluation, metrics.get("data", {}).get("root"))),
        ("Grad-CAM", "<p>Where the model looked: the heat map of its predicted class.</p>"
         + _picture(folder, "gradcam.png", "Grad-CAM")),
        ("Export parity", _parity(folder)),
        ("Timings", _timings(metrics)),
    ]
    body = "".join(f"<section><h2>{html.escape(title)}</h2>{content}</section>" for title, content in sections)
    classes = ", ".join(evaluation["class_names"])
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>transferkit run: '
            f'{html.escape(folder.name)}</title><style>{_STYLE}</style></head><body><header><h1>transferkit run '
            f'report</h1><p>{html.escape(str(folder))} &middot; classes: {html.escape(classes)}</p></header>'
            f"<main>{body}</main></body></html>")
    path = folder / REPORT_FILE
    path.write_text(page, encoding="utf-8")
    return path
