"""Classify image files.

Prints the class and its probability for each image.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from transferkit.cli.options import command_parser


def add_parser(commands) -> None:
    p = command_parser(commands, "predict", __doc__)
    p.add_argument("model", metavar="MODEL", help="a .keras file saved by transferkit, an exported .tflite file "
                                                  "or SavedModel folder")
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
            print(json.dumps(row), flush=True)
        elif "error" in row:
            print(f"{row['file']:<{width}}  error: {row['error']}", flush=True)
        else:
            print(f"{row['file']:<{width}}  {row['class']:<12}  {row['probability']:.4f}", flush=True)

    if not args.json:
        print(f"{'file':<{width}}  {'class':<12}  probability")
    from transferkit._internal.progress import progress

    failures = 0
    # Results stream to stdout; the progress line goes to stderr when stdout is a file or a pipe.
    bar = progress(len(files), "Classifying", verbose=not sys.stdout.isatty())
    for start in range(0, len(files), args.batch_size):
        chunk, images = [], []
        for path in files[start : start + args.batch_size]:
            try:
                images.append(read_image(path, classifier.image_size))
                chunk.append(path)
            except ImageReadError as exc:
                show({"file": str(path), "error": exc.reason})
                failures += 1
        if images:
            probabilities = classifier.predict(np.stack(images), tta=args.tta)
            for path, probs in zip(chunk, probabilities):
                best = int(np.argmax(probs))
                show({"file": str(path), "class": classifier.class_names[best], "probability": float(probs[best]),
                      "probabilities": dict(zip(classifier.class_names, map(float, probs)))})
        bar.update(len(files[start : start + args.batch_size]))
    bar.close()
    return 1 if failures else 0
