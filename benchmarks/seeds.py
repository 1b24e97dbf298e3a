"""Benchmark: recipes over seeds, one process per run, on validation and on photos from another source.

    python benchmarks/seeds.py --variant 'default:{}' --variant 'exact:{"cache_features": false}'
    python benchmarks/seeds.py --variant 'p224:{"image_size": 224}' --seeds 1 2 3 4
    python benchmarks/seeds.py --variant 'lr-find:{"lr_find": true}' --feature-cache /tmp/features
    python benchmarks/seeds.py --variant 'tutorial:{"reference": true}'   # the tutorial's recipe, by hand
    python benchmarks/seeds.py --variant 'tutorial, Pillow:{"reference": true, "reference_resize": "pillow"}'
    python benchmarks/seeds.py --table                        # the table of every run recorded so far

Each (variant, seed) trains `TwoPhaseTrainer(weights=..., seed=seed, **options)` on an `ImageFolder` of
``--data-dir`` (``image_size`` from the options, else transferkit's default) in a Python process of its
own, and records one JSON line in ``--results``: the variant's options, the seed, the accuracy of the
finished model on the validation split and on ``--web-dir`` (class folders, when present), and the phase
times. With ``"lr_find": true`` in the options, each seed's run first asks `TwoPhaseTrainer.lr_find` and
trains with its suggested ``learning_rate`` and ``fine_tune_lr_factor`` (recorded with the sweeps' time).
A (variant, options, seed) already recorded is not run again. With ``--feature-cache``, fast-path
runs keep their cached features there, so variants that compute the same features (same seed, image size,
augmentation, views and unfreeze point) compute them once: their phase-1 time then excludes the feature
pass, and the table marks it.

The table gives, per variant, each seed's figures, the mean, the worst seed and the spread (best - worst).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from two_phase import DATA, WEB, WEIGHTS, reference, web_accuracy, web_accuracy_reference

REPO = Path(__file__).resolve().parent.parent


def one_run(data_dir: Path, web_dir: Path | None, weights: str, options: dict, seed: int,
            feature_cache: str | None) -> dict:
    """Train one model and measure it (called in a process of its own)."""
    from transferkit import ImageFolder, TwoPhaseTrainer

    options = dict(options)
    epochs = int(options.pop("epochs", 10))
    fine_tune_epochs = int(options.pop("fine_tune_epochs", 10))
    size = options.pop("image_size", None)
    if options.pop("reference", False):  # the tutorial's recipe, written out by hand (two_phase.reference)
        return reference_run(data_dir, web_dir, weights, int(size or 160), epochs, fine_tune_epochs, seed,
                             pillow=options.pop("reference_resize", "tensorflow") == "pillow")
    folder_options = {"image_size": (int(size), int(size))} if size else {}
    start = time.perf_counter()
    data = ImageFolder(data_dir, batch_size=32, seed=seed, **folder_options)
    prep = time.perf_counter() - start
    if feature_cache and options.get("cache_features", True):
        options.setdefault("cache_dir", feature_cache)
    found = {}
    if options.pop("lr_find", False):  # the learning-rate finder's suggestions, for this seed
        sweep_start = time.perf_counter()
        finding = TwoPhaseTrainer(weights=weights, seed=seed, **options).lr_find(data)
        options.update(learning_rate=finding.learning_rate, fine_tune_lr_factor=finding.fine_tune_lr_factor)
        found = {"lr_find_s": time.perf_counter() - sweep_start, "suggested": {
            "learning_rate": finding.learning_rate, "fine_tune_lr_factor": finding.fine_tune_lr_factor}}
    trainer = TwoPhaseTrainer(weights=weights, seed=seed, **options)
    result = trainer.fit(data, epochs=epochs, fine_tune_epochs=fine_tune_epochs, verbose=2)
    classifier = result.classifier
    images, labels = data.images("validation"), data.labels("validation")
    probabilities = classifier.predict_array(images, batch_size=32)
    mirrored = classifier.predict(images, batch_size=32, tta=True)
    figures = {
        "val_acc": float(np.mean(np.argmax(probabilities, axis=-1) == labels)),
        "val_acc_tta": float(np.mean(np.argmax(mirrored, axis=-1) == labels)),
        "val_acc_history": result.final("val_accuracy", 2 if fine_tune_epochs else 1),
        "val_acc_phase1": result.final("val_accuracy", 1) if epochs else None,
        "prep_s": prep, "phase1_s": result.phase_seconds[0], "phase2_s": result.phase_seconds[1],
        "image_size": list(data.image_size), "features_reused": bool(options.get("cache_dir")),
        "val_acc_by_epoch": [round(float(v), 5) for v in result.history.get("val_accuracy", [])], **found,
    }
    if web_dir is not None:
        figures["web_acc"] = web_accuracy(classifier, web_dir)
        figures["web_acc_tta"] = web_accuracy(classifier, web_dir, tta=True)
    return figures


def reference_run(data_dir: Path, web_dir: Path | None, weights: str, size: int, epochs: int, fine_tune_epochs: int,
                  seed: int, pillow: bool = False) -> dict:
    """The tutorial recipe (`two_phase.reference`), scored as `one_run` scores transferkit's; with ``pillow``
    its images (and the web photos) are decoded and resized as transferkit does."""
    figures = reference(data_dir, weights, size, epochs, fine_tune_epochs, seed, pillow=pillow)
    model = figures.pop("model")
    figures.update(val_acc=figures["val_acc_phase2"], val_acc_history=figures["val_acc_phase2"],
                   image_size=[size, size], features_reused=False)
    if web_dir is not None:
        figures["web_acc"] = web_accuracy_reference(model, web_dir, size, pillow=pillow)
    return figures


def read_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def table(records: list[dict]) -> str:
    """A Markdown table: one row per variant, in the order first recorded."""
    variants: dict[str, list[dict]] = {}
    for record in records:
        variants.setdefault(record["variant"], []).append(record)
    lines = ["| variant | options | seeds | validation (per seed) | mean | worst | spread | web photos (per seed) "
             "| mean | worst | spread | time per run |", "|" + "---|" * 12]
    for name, runs in variants.items():
        runs = sorted(runs, key=lambda r: r["seed"])

        def column(key):
            values = [100 * r[key] for r in runs if r.get(key) is not None]
            if not values:
                return ["–"] * 4
            return [" / ".join(f"{v:.2f}" for v in values), f"**{np.mean(values):.2f}**", f"{min(values):.2f}",
                    f"{max(values) - min(values):.2f}"]

        seconds = [r["prep_s"] + r["phase1_s"] + r["phase2_s"] for r in runs]
        reused = any(r.get("features_reused") for r in runs)
        time_text = f"{np.mean(seconds):.0f} s" + (" ᶜ" if reused else "")
        lines.append(f"| {name} | `{json.dumps(runs[0]['options'])}` | {', '.join(str(r['seed']) for r in runs)} | "
                     + " | ".join(column("val_acc") + column("web_acc")) + f" | {time_text} |")
    lines.append("")
    lines.append("ᶜ run with a feature-cache folder: where an earlier run had computed the same features, "
                 "they were read from there, and phase 1's time excludes the feature pass.")
    mirrored = {name: sorted(runs, key=lambda r: r["seed"]) for name, runs in variants.items()
                if all(r.get("val_acc_tta") is not None for r in runs)}
    if mirrored:
        lines += ["", "Mirror test-time augmentation (each photo and its mirror image averaged), on the same models:", "",
                  "| variant | seeds | validation, plain / mirror TTA (per seed) | mean | web photos, plain / mirror "
                  "TTA (per seed) | mean |", "|" + "---|" * 6]
        for name, runs in mirrored.items():
            def pair(key):
                if any(r.get(key) is None for r in runs):  # no --web-dir: no web figures
                    return ["–", "–"]
                plain = [100 * r[key] for r in runs]
                tta = [100 * r[f"{key}_tta"] for r in runs]
                return [" / ".join(f"{a:.2f} → {b:.2f}" for a, b in zip(plain, tta)),
                        f"{np.mean(plain):.2f} → **{np.mean(tta):.2f}**"]
            lines.append(f"| {name} | {', '.join(str(r['seed']) for r in runs)} | "
                         + " | ".join(pair("val_acc") + pair("web_acc")) + " |")
    return "\n".join(lines)


def run_variants(script: str, doc: str, results: str, one_run, table, argv=None, summary=None) -> int:
    """The command line of a benchmark of named variants over seeds (`seeds.py` itself, `batchnorm.py`): each
    (variant, seed) not yet in ``--results`` runs ``one_run(data_dir, web_dir, weights, options, seed,
    feature_cache)`` in a child process of ``script``, and its figures go there as one JSON line;
    ``table(records)`` prints them; ``summary(figures)``, when given, prints a line per new run."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", action="append", default=[], metavar="NAME:JSON",
                   help="a named run: TwoPhaseTrainer arguments, plus image_size, epochs, fine_tune_epochs")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--data-dir", default=str(DATA))
    p.add_argument("--web-dir", default=str(WEB))
    p.add_argument("--weights", default=str(WEIGHTS))
    p.add_argument("--results", default=results)
    p.add_argument("--feature-cache", default=None, help="a folder for the fast path's cached features")
    p.add_argument("--table", action="store_true", help="print the table of the recorded runs and stop")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: JSON of one run, in a child
    args = p.parse_args(argv)

    web_dir = Path(args.web_dir) if args.web_dir and Path(args.web_dir).is_dir() else None
    if args.one:
        run = json.loads(args.one)
        figures = one_run(Path(args.data_dir), web_dir, args.weights, run["options"], run["seed"], args.feature_cache)
        print("RESULT " + json.dumps(figures), flush=True)
        return 0

    results = Path(args.results)
    if args.table:
        print(table(read_results(results)))
        return 0
    if not (Path(args.data_dir) / "train").is_dir():
        sys.exit(f"error: {args.data_dir} has no train/ folder; pass --data-dir")
    results.parent.mkdir(parents=True, exist_ok=True)
    for spec in args.variant:
        name, _, text = spec.partition(":")
        options = json.loads(text or "{}")
        for seed in args.seeds:
            done = [r for r in read_results(results) if r["variant"] == name and r["seed"] == seed]
            if any(r["options"] == options for r in done):
                continue
            if done:
                sys.exit(f"error: variant {name!r} is recorded with other options {done[0]['options']}; rename it")
            command = [sys.executable, script, "--one", json.dumps({"options": options, "seed": seed}),
                       "--data-dir", args.data_dir, "--web-dir", args.web_dir or "", "--weights", args.weights]
            if args.feature_cache:
                command += ["--feature-cache", args.feature_cache]
            print(f"== {name} seed {seed}: {json.dumps(options)}", flush=True)
            completed = subprocess.run(command, capture_output=True, text=True)
            lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
            if completed.returncode != 0 or not lines:
                sys.stderr.write(completed.stdout[-3000:] + completed.stderr[-3000:])
                sys.exit(f"error: {name} seed {seed} failed (exit {completed.returncode})")
            figures = json.loads(lines[-1][len("RESULT "):])
            record = {"variant": name, "options": options, "seed": seed, **figures,
                      "date": time.strftime("%Y-%m-%d")}
            with results.open("a") as f:
                f.write(json.dumps(record) + "\n")
            if summary is not None:
                summary(figures)
    print(table(read_results(results)))
    return 0


def main(argv=None) -> int:
    def summary(figures):
        print(f"   val {figures['val_acc']:.4f}  web {figures.get('web_acc', float('nan')):.4f}  "
              f"{figures['prep_s'] + figures['phase1_s'] + figures['phase2_s']:.0f} s", flush=True)

    return run_variants(__file__, __doc__, str(REPO / "benchmarks" / "results" / "seeds.jsonl"), one_run, table,
                        argv, summary)


if __name__ == "__main__":
    raise SystemExit(main())
