"""Benchmark: the registered backbones side by side, to choose one from.

    python benchmarks/backbones.py                       # every registered backbone, its default size
    python benchmarks/backbones.py --names 'mobilenet*' --image-size 192
    python benchmarks/backbones.py --train               # also one run each at fit's default epochs (random weights)

Per backbone, at its default image size (or ``--image-size``) on this machine's CPU: the parameter
count; the layers and the default unfreeze point; the forward throughput of the frozen network in
inference (images/s, batches of 32, after a warm-up batch); and what the fast path caches per training
image (the pooled output and the activations crossing the default unfreeze point, in ``feature_dtype``,
times ``views``). With ``--train``, the wall time of one run at ``fit``'s default epochs (10 + 10 until
2026-12-06, 10 + 5 since) on ``--data-dir`` with random
weights (the accuracy of random weights means nothing, so it is not shown), one process per backbone.
Results go to ``--results`` as JSON lines, and the table to the same name with ``.md`` (the docs include it).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from two_phase import DATA

REPO = Path(__file__).resolve().parent.parent


def measure(name: str, size: int | None, batches: int) -> dict:
    """Parameters, layers, throughput and cached-feature size of one backbone (in this process)."""
    import keras

    from transferkit import get_backbone, get_backbone_spec
    from transferkit.training.features import crossing_tensors
    from transferkit.training.settings import FastPath

    spec = get_backbone_spec(name)
    shape = (size, size, 3) if size else (*spec.default_image_size, 3)
    model = get_backbone(name, shape, weights=None)
    preprocessing = spec.preprocessing_layer()
    inputs = keras.Input(shape)
    frozen = keras.Model(inputs, model(preprocessing(inputs) if preprocessing else inputs))
    x = np.random.default_rng(0).uniform(0, 255, (32, *shape)).astype("float32")
    frozen.predict_on_batch(x)  # trace and warm up
    start = time.perf_counter()
    for _ in range(batches):
        frozen.predict_on_batch(x)
    throughput = 32 * batches / (time.perf_counter() - start)
    point = spec.unfreeze_point(model)
    index = point if isinstance(point, int) else spec.blocks(model).get(point, None)
    if index is None:
        index = [layer.name for layer in model.layers].index(point)
    crossing = sum(int(np.prod(t.shape[1:])) for t in crossing_tensors(model, index))
    per_view = crossing + int(model.output.shape[-1])
    bytes_per_value = np.dtype(FastPath.feature_dtype).itemsize
    return {"name": name, "image_size": list(shape[:2]), "parameters": int(model.count_params()),
            "layers": len(model.layers), "default_unfreeze": point, "unfreeze_index": int(index),
            "images_per_s": throughput,
            "cached_kib_per_image": per_view * bytes_per_value * FastPath.views / 1024,
            "date": time.strftime("%Y-%m-%d")}


def train_time(name: str, size: int | None, data_dir: Path) -> dict:
    """One run at ``fit``'s default epochs with random weights: its wall time (in this process)."""
    from transferkit import ImageFolder, TwoPhaseTrainer, get_backbone_spec

    spec = get_backbone_spec(name)
    image_size = (size, size) if size else spec.default_image_size
    start = time.perf_counter()
    data = ImageFolder(data_dir, image_size=image_size, batch_size=32, seed=1)
    result = TwoPhaseTrainer(backbone=name, weights=None, unfreeze_from="auto", seed=1).fit(data, verbose=0)
    return {"train_s": time.perf_counter() - start, "phase1_s": result.phase_seconds[0],
            "phase2_s": result.phase_seconds[1]}


def table(records: list[dict]) -> str:
    """A Markdown table, one row per backbone; the run-time column only where ``--train`` measured it."""
    trained = any(r.get("train_s") for r in records)
    lines = ["| backbone | size | parameters | layers | unfreeze (auto) | images/s (CPU, inference) | cached per image |"
             + (" run at the default epochs |" if trained else ""), "|" + "---|" * (8 if trained else 7)]
    for r in records:
        run = (f" {r['train_s'] / 60:.1f} min |" if r.get("train_s") else " – |") if trained else ""
        lines.append(f"| `{r['name']}` | {r['image_size'][0]} px | {r['parameters'] / 1e6:.1f} M | {r['layers']} | "
                     f"`{r['default_unfreeze']}` (layer {r['unfreeze_index']}) | {r['images_per_s']:.0f} | "
                     f"{r['cached_kib_per_image']:.0f} KiB |" + run)
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--names", default="*", help="a shell-style pattern over the registered names")
    p.add_argument("--image-size", type=int, default=None, help="one size for all (default: each backbone's own)")
    p.add_argument("--batches", type=int, default=3, help="timed batches of 32 per backbone")
    p.add_argument("--train", action="store_true", help="also time one run at fit's default epochs (random weights)")
    p.add_argument("--data-dir", default=str(DATA))
    p.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "backbones.jsonl"))
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one backbone, in a child
    args = p.parse_args(argv)

    if args.one:
        figures = measure(args.one, args.image_size, args.batches)
        if args.train:
            figures.update(train_time(args.one, args.image_size, Path(args.data_dir)))
        print("RESULT " + json.dumps(figures), flush=True)
        return 0

    from transferkit import list_backbones

    if args.train and not (Path(args.data_dir) / "train").is_dir():
        sys.exit(f"error: {args.data_dir} has no train/ folder; pass --data-dir")
    records = []
    for name in fnmatch.filter(list_backbones(), args.names):
        command = [sys.executable, __file__, "--one", name, "--batches", str(args.batches), "--data-dir", args.data_dir]
        if args.image_size:
            command += ["--image-size", str(args.image_size)]
        if args.train:
            command.append("--train")
        print(f"== {name}", flush=True)
        completed = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
        if completed.returncode != 0 or not lines:
            sys.stderr.write(completed.stdout[-3000:] + completed.stderr[-3000:])
            sys.exit(f"error: {name} failed (exit {completed.returncode})")
        records.append(json.loads(lines[-1][len("RESULT "):]))
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    with results.open("a") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    results.with_suffix(".md").write_text(table(records) + f"\n\nMeasured {time.strftime('%Y-%m-%d')} by "
                                          f"`python benchmarks/backbones.py {' '.join(argv or sys.argv[1:])}`.\n")
    print(table(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
