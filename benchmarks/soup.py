"""Benchmark: a search's best trial against the greedy soup of its trials, over search seeds.

    python benchmarks/soup.py --seeds 1 2 3                  # 4 trials of 3 + 3 epochs each, at 224 px
    python benchmarks/soup.py --seeds 1 2 3 --hidden-units 0 128 256   # the search's own head sizes too
    python benchmarks/soup.py --seeds 1 --max-trials 8 --epochs 2 --fine-tune-epochs 2
    python benchmarks/soup.py --table

Each seed runs `tune` and `greedy_soup` (random search, fast path, the search's default space except the
head: ``--hidden-units``, by default 0 alone, the default head, so that every trial can go in the soup) on
``--data-dir`` in a process of its own and records one JSON line in ``--results``: the best trial's and
the soup's accuracy on the validation split (which chose both, so it flatters both) and on ``--web-dir``
(photos from another source, which chose neither), the soup's ingredients, and the times of the search
and of the soup. A seed already recorded with the same settings is not run again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from two_phase import DATA, WEB, WEIGHTS, web_accuracy

REPO = Path(__file__).resolve().parent.parent


def one_run(settings: dict, seed: int, data_dir: Path, web_dir: Path | None, weights: str) -> dict:
    """One search and its soup, measured (called in a process of its own)."""
    from transferkit import ImageFolder
    from transferkit.tuning import greedy_soup, tune

    size = settings["image_size"]
    data = ImageFolder(data_dir, image_size=(size, size), batch_size=32, seed=seed)
    images, labels = data.images("validation"), data.labels("validation")

    def accuracy(classifier) -> tuple[float, float | None]:
        predicted = np.argmax(classifier.predict_array(images, batch_size=32), axis=-1)
        return float(np.mean(predicted == labels)), web_accuracy(classifier, web_dir) if web_dir else None

    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        result = tune(data, directory, max_trials=settings["max_trials"], epochs=settings["epochs"],
                      fine_tune_epochs=settings["fine_tune_epochs"], hidden_units=tuple(settings["hidden_units"]),
                      weights=weights, seed=seed, verbose=0)
        search_s = time.perf_counter() - start
        best_val, best_web = accuracy(result.classifier)
        start = time.perf_counter()
        soup = greedy_soup(result, data)
        soup_s = time.perf_counter() - start
        soup_val, soup_web = accuracy(soup.classifier)
    return {"settings": settings, "seed": seed, "best_val": best_val, "best_web": best_web, "soup_val": soup_val,
            "soup_web": soup_web, "ingredients": soup.ingredients, "steps": soup.steps,
            "trial_scores": [t["score"] for t in result.trials], "search_s": search_s, "soup_s": soup_s,
            "date": time.strftime("%Y-%m-%d")}


def table(rows: list[dict]) -> str:
    lines = ["| settings | seed | trials in the soup | validation: best trial → soup | web photos: best trial → soup "
             "| search | soup |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        web = f"{100 * r['best_web']:.2f} → {100 * r['soup_web']:.2f}" if r["best_web"] is not None else "–"
        lines.append(f"| `{json.dumps(r['settings'], sort_keys=True)}` | {r['seed']} | "
                     f"{len(r['ingredients'])} of {len(r['trial_scores'])} | "
                     f"{100 * r['best_val']:.2f} → {100 * r['soup_val']:.2f} | {web} | "
                     f"{r['search_s']:.0f} s | {r['soup_s']:.0f} s |")
    if rows:
        mean = lambda key: 100 * np.mean([r[key] for r in rows])  # noqa: E731
        web = f"{mean('best_web'):.2f} → {mean('soup_web'):.2f}" if all(r["best_web"] is not None for r in rows) else "–"
        lines.append(f"| mean | {len(rows)} seeds | | {mean('best_val'):.2f} → {mean('soup_val'):.2f} | {web} | | |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--max-trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--fine-tune-epochs", type=int, default=3)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--hidden-units", type=int, nargs="+", default=[0], help="the head sizes searched (0: none)")
    p.add_argument("--data-dir", default=str(DATA))
    p.add_argument("--web-dir", default=str(WEB))
    p.add_argument("--weights", default=str(WEIGHTS))
    p.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "soup.jsonl"))
    p.add_argument("--table", action="store_true", help="print the table of the recorded runs and stop")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: JSON of one run, in a child
    args = p.parse_args()
    web_dir = Path(args.web_dir) if Path(args.web_dir).is_dir() else None
    if args.one:
        job = json.loads(args.one)
        print("RESULT " + json.dumps(one_run(job["settings"], job["seed"], Path(args.data_dir), web_dir, args.weights)))
        return
    results = Path(args.results)
    rows = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    if args.table:
        print(table(rows))
        return
    settings = {"max_trials": args.max_trials, "epochs": args.epochs, "fine_tune_epochs": args.fine_tune_epochs,
                "image_size": args.image_size, "hidden_units": args.hidden_units}
    for seed in args.seeds:
        if any(r["settings"] == settings and r["seed"] == seed for r in rows):
            print(f"seed {seed}: recorded already")
            continue
        print(f"== seed {seed}: {settings}", flush=True)
        child = subprocess.run([sys.executable, __file__, "--one", json.dumps({"settings": settings, "seed": seed}),
                                "--data-dir", args.data_dir, "--web-dir", args.web_dir, "--weights", args.weights],
                               capture_output=True, text=True)
        found = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
        if child.returncode or not found:
            sys.exit(f"seed {seed} failed:\n{child.stderr[-3000:]}")
        row = json.loads(found[-1][len("RESULT "):])
        results.parent.mkdir(parents=True, exist_ok=True)
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        rows.append(row)
        print(f"   best {row['best_val']:.4f} / {row['best_web']}  soup {row['soup_val']:.4f} / {row['soup_web']}  "
              f"({len(row['ingredients'])} trials)  search {row['search_s']:.0f} s, soup {row['soup_s']:.0f} s",
              flush=True)
    print(table([r for r in rows if r["settings"] == settings]))


if __name__ == "__main__":
    main()
