"""Benchmark: a warm start on more images against training on all of them from the start.

    python benchmarks/warm_start.py                 # seeds 1 2 3; appends to results/warm_start.jsonl
    python benchmarks/warm_start.py --table

For each seed: model A trains (the default recipe, 10 + 10 epochs) on half of the shared training photos
(the first half of each class's files, sorted); model B starts from A (``fit(initial_model=A)``) and trains
on all of them for ``--epochs`` + ``--fine-tune-epochs`` (3 + 3 by default). Both are measured on the
validation photos and on the web photos, with their training time. The run from scratch on all the photos
is the default variant of ``seeds.py`` (same seeds, same settings), in results/seeds.jsonl.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from two_phase import DATA, WEB, WEIGHTS, web_accuracy

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "warm_start.jsonl"


def measure(classifier, data) -> dict:
    probabilities = classifier.predict_array(data.images("validation"), batch_size=32)
    figures = {"val_acc": float(np.mean(np.argmax(probabilities, axis=-1) == data.labels("validation")))}
    if WEB.is_dir():
        figures["web_acc"] = web_accuracy(classifier, WEB)
    return figures


def one_seed(seed: int, epochs: int, fine_tune_epochs: int) -> dict:
    from transferkit import ImageFolder, TwoPhaseTrainer

    everything = ImageFolder(DATA, batch_size=32, seed=seed)
    files = everything.split_record()["files"]
    by_class: dict[str, list[str]] = {}
    for name in sorted(files["train"]):
        by_class.setdefault(name.split("/")[1], []).append(name)
    half = [name for names in by_class.values() for name in names[: len(names) // 2]]
    first = ImageFolder(DATA, batch_size=32, seed=seed, split={"train": half, "validation": files["validation"]})
    start = time.perf_counter()
    a = TwoPhaseTrainer(weights=str(WEIGHTS), seed=seed).fit(first, verbose=0).classifier
    a_seconds = time.perf_counter() - start
    start = time.perf_counter()
    b = TwoPhaseTrainer(weights=str(WEIGHTS), seed=seed).fit(everything, epochs=epochs, fine_tune_epochs=fine_tune_epochs,
                                                             verbose=0, initial_model=a).classifier
    b_seconds = time.perf_counter() - start
    return {"seed": seed, "half_images": len(half), "all_images": len(files["train"]),
            "half": {**measure(a, everything), "seconds": a_seconds},
            "warm": {**measure(b, everything), "seconds": b_seconds, "epochs": [epochs, fine_tune_epochs]}}


def table(records: list[dict]) -> str:
    lines = ["| seed | half the images, 10 + 10: validation / web | warm start on all, "
             f"{'+'.join(map(str, records[0]['warm']['epochs'])) if records else ''}: validation / web | time: half, "
             "warm |", "|---|---|---|---|"]
    for r in records:
        h, w = r["half"], r["warm"]
        lines.append(f"| {r['seed']} | {100 * h['val_acc']:.2f} / {100 * h.get('web_acc', float('nan')):.2f} | "
                     f"{100 * w['val_acc']:.2f} / {100 * w.get('web_acc', float('nan')):.2f} | {h['seconds']:.0f} s, "
                     f"{w['seconds']:.0f} s |")
    if records:
        mean = lambda part, key: 100 * np.mean([r[part].get(key, np.nan) for r in records])  # noqa: E731
        lines.append(f"| mean | {mean('half', 'val_acc'):.2f} / {mean('half', 'web_acc'):.2f} | "
                     f"{mean('warm', 'val_acc'):.2f} / {mean('warm', 'web_acc'):.2f} | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--fine-tune-epochs", type=int, default=3)
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--table", action="store_true")
    args = p.parse_args(argv)
    results = Path(args.results)
    read = lambda: [json.loads(line) for line in results.read_text().splitlines() if line.strip()] \
        if results.exists() else []  # noqa: E731
    if not args.table:
        results.parent.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            if any(r["seed"] == seed for r in read()):
                continue
            record = one_seed(seed, args.epochs, args.fine_tune_epochs)
            with results.open("a") as f:
                f.write(json.dumps({**record, "date": time.strftime("%Y-%m-%d")}) + "\n")
            print(json.dumps(record), flush=True)
    print(table(read()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
