"""Classify image files.

Prints the class and its probability for each image; for a model of several labels per image, every
label at or above its threshold, with the probabilities.
"""

from __future__ import annotations

import json
from pathlib import Path

from transferkit.cli.options import UsageError, command_parser


def add_parser(commands) -> None:
    p = command_parser(commands, "predict", __doc__)
    p.add_argument("model", metavar="MODEL", help="a .keras file saved by transferkit (or the run folder holding "
                                                  "it), an exported .tflite or .onnx file, or a SavedModel folder")
    p.add_argument("inputs", metavar="IMAGE_OR_DIR", nargs="+", help="image files or folders (searched recursively)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch")
    p.add_argument("--json", action="store_true", help="print one JSON object per line")
    p.add_argument("--tta", action="store_true", help="average each image's probabilities with its mirror image's")


def _collect_images(inputs) -> list[Path]:
    from transferkit.data.images import IMAGE_EXTENSIONS

    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            files.append(item)
    return files


def _load_any(path: str):
    from transferkit.export import load_exported

    return load_exported(path)


def check(args) -> None:
    """What can be wrong with the options alone, found before TensorFlow loads."""
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size}: give at least 1.")


def run(args) -> int:
    """Print each batch's results as soon as it is classified (``--json``: one object a line)."""
    import numpy as np

    from transferkit.data.images import ImageReadError, read_image

    classifier = _load_any(args.model)
    files = _collect_images(args.inputs)
    if not files:
        raise FileNotFoundError(f"No image files in {', '.join(args.inputs)}.")
    width = max(len(str(f)) for f in files)

    def show(row):
        if args.json:
            print(json.dumps(row), file=args.stdout, flush=True)
        elif "error" in row:
            print(f"{row['file']:<{width}}  error: {row['error']}", flush=True)
        elif classifier.multi_label:
            shown = ", ".join(f"{name} {row['probabilities'][name]:.4f}" for name in row["labels"]) or "(none)"
            print(f"{row['file']:<{width}}  {shown}", flush=True)
        else:
            print(f"{row['file']:<{width}}  {row['class']:<12}  {row['probability']:.4f}", flush=True)

    if not args.json:
        print(f"{'file':<{width}}  labels (probability)" if classifier.multi_label
              else f"{'file':<{width}}  {'class':<12}  probability")
    from transferkit._internal.progress import progress

    failures = 0
    # Results stream to stdout; the progress line goes to stderr when stdout is a file or a pipe.
    bar = progress(len(files), "Classifying", verbose=not args.stdout.isatty())
    for start in range(0, len(files), args.batch_size):
        rows, images = [], []  # in the order given, errors in their place
        for path in files[start : start + args.batch_size]:
            rows.append({"file": str(path)})
            if not path.is_file():
                rows[-1]["error"] = "no such file" if not path.exists() else "not a file"
                continue
            try:
                images.append(read_image(path, classifier.image_size))
            except ImageReadError as exc:
                rows[-1]["error"] = exc.reason
        if images:
            probabilities = classifier.predict(np.stack(images), tta=args.tta)
            decisions = iter(classifier.decide(probabilities))
            probabilities = iter(probabilities)
            for row in (r for r in rows if "error" not in r):
                probs, decision = next(probabilities), next(decisions)
                every = dict(zip(classifier.class_names, map(float, probs)))
                if classifier.multi_label:
                    row.update({"labels": [classifier.class_names[c] for c in np.flatnonzero(decision)],
                                "probabilities": every})
                else:
                    row.update({"class": classifier.class_names[decision], "probability": float(probs[decision]),
                                "probabilities": every})
        for row in rows:
            show(row)
        failures += sum("error" in row for row in rows)
        bar.update(len(files[start : start + args.batch_size]))
    bar.close()
    return 1 if failures else 0
