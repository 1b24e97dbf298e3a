"""Benchmark: a KerasTuner random search on the fast path against the same trials run the exact way.

    python benchmarks/tune.py                      # 10 trials, 160 px, 10 + 10 epochs a trial, ../shared data
    python benchmarks/tune.py --exact-trials 3     # the exact way for the first 3 of the same trials only
    python benchmarks/tune.py --quick              # 2 trials, 1 + 1 epochs, 100 + 40 images a class

Both searches are `transferkit.tuning.tune` with the same seed, so a random search draws the same
hyperparameters in the same order (checked); the fast one trains on cached features
(``cache_features=True``, shared by all its trials), the exact one runs the whole network every step
(``cache_features=False``). Trials run in worker processes, as `tune` does by default. Decoded
images are cached once for both. Every finished trial is appended to ``--log`` as a JSON line as
soon as it ends, so a run cut short still leaves its figures; the table at the end compares the
trials both ways ran and, where the exact way ran fewer, projects its time from its mean per trial
(said so in the table).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from two_phase import DATA, WEB, WEIGHTS, subset, web_accuracy  # noqa: E402

from transferkit import ImageFolder  # noqa: E402
from transferkit.tuning import TwoPhaseTuner, tune  # noqa: E402


def timed_search(log_path: Path, way: str):
    """A tuner that logs each trial's wall time, score and hyperparameters as it ends."""

    class TimedTuner(TwoPhaseTuner):
        def run_trial(self, trial, *args, **kwargs):
            start = time.perf_counter()
            results = super().run_trial(trial, *args, **kwargs)
            values = {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}
            record = {"way": way, "trial_id": trial.trial_id, "seconds": time.perf_counter() - start,
                      "score": results[0]["final_val_accuracy"], "hyperparameters": values}
            with open(log_path, "a") as log:
                log.write(json.dumps(record) + "\n")
            print(f"  {way} trial {trial.trial_id}: {record['seconds']:.0f} s, score {record['score']:.4f}", flush=True)
            return results

    return TimedTuner


def search(way: str, data, directory: Path, trials: int, args, log_path: Path) -> dict:
    start = time.perf_counter()
    result = tune(data, directory, project_name=way, tuner="random", tuner_class=timed_search(log_path, way),
                  max_trials=trials,
                  overwrite=True, verbose=0, weights=args.weights, epochs=args.epochs,
                  fine_tune_epochs=args.fine_tune_epochs, seed=args.seed, cache_features=way == "fast")
    seconds = time.perf_counter() - start
    summary = {"way": way, "search_seconds": seconds, "trials": len(result.trials), "best_score": result.best_score,
               "best_trial": result.trials[0]["trial_id"] if result.trials else None}
    if args.web_dir and result.classifier is not None:
        summary["best_web_accuracy"] = web_accuracy(result.classifier, Path(args.web_dir))
    with open(log_path, "a") as log:
        log.write(json.dumps({**summary, "summary": True}) + "\n")
    return summary


def table(log_path: Path, planned: int) -> str:
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    trials = {way: [r for r in records if r.get("way") == way and "seconds" in r] for way in ("fast", "exact")}
    summaries = {r["way"]: r for r in records if r.get("summary")}
    common = min(len(trials["fast"]), len(trials["exact"]))
    for a, b in zip(trials["fast"][:common], trials["exact"][:common]):
        if a["hyperparameters"] != b["hyperparameters"]:
            raise SystemExit(f"trial {a['trial_id']}: the two searches drew different hyperparameters")
    lines = ["| way | trials run | search time | mean per trial | best of the first "
             f"{common} | best of all it ran | best model, web photos |", "|---|---|---|---|---|---|---|"]
    for way, rows in trials.items():
        if not rows:
            continue
        summary = summaries.get(way, {})
        total = summary.get("search_seconds", sum(r["seconds"] for r in rows))
        mean = sum(r["seconds"] for r in rows) / len(rows)
        if len(rows) < planned:
            total_text = f"{mean * planned / 60:.1f} min projected for {planned} ({len(rows)} run)"
        else:
            total_text = f"{total / 60:.1f} min"
        best_common = max(r["score"] for r in rows[:common]) if common else float("nan")
        best = max(r["score"] for r in rows)
        web = summary.get("best_web_accuracy")
        lines.append(f"| {way} | {len(rows)} | {total_text} | {mean:.0f} s | {best_common:.4f} | {best:.4f} | "
                     f"{'-' if web is None else f'{web:.4f}'} |")
    if trials["fast"] and trials["exact"]:
        fast_total = summaries.get("fast", {}).get("search_seconds", sum(r["seconds"] for r in trials["fast"]))
        exact_mean = sum(r["seconds"] for r in trials["exact"]) / len(trials["exact"])
        fast_per_planned = fast_total * planned / len(trials["fast"])
        projected = "" if len(trials["exact"]) >= planned else " (exact time projected from its mean per trial)"
        lines.append(f"\nspeed-up of the {planned}-trial search: x{exact_mean * planned / fast_per_planned:.1f}"
                     f"{projected}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(DATA))
    p.add_argument("--weights", default=str(WEIGHTS))
    p.add_argument("--web-dir", default=str(WEB) if WEB.is_dir() else None)
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--exact-trials", type=int, default=None, help="trials the exact way (default: --trials)")
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--fine-tune-epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--ways", nargs="+", default=["fast", "exact"], choices=["fast", "exact"])
    p.add_argument("--quick", action="store_true", help="2 trials of 1 + 1 epochs on 100 + 40 images a class")
    p.add_argument("--log", default="benchmarks/results/tune.jsonl", help="JSON lines, appended (default: %(default)s)")
    p.add_argument("--report", action="store_true", help="print the table from --log and stop")
    args = p.parse_args(argv)
    log_path = Path(args.log)
    if args.report:
        print(table(log_path, args.trials))
        return 0
    data_dir = Path(args.data_dir)
    if not (data_dir / "train").is_dir():
        sys.exit(f"error: {data_dir} has no train/ folder; pass --data-dir")
    work = Path(tempfile.mkdtemp(prefix="transferkit-tune-bench-"))
    if args.quick:
        args.trials, args.epochs, args.fine_tune_epochs = 2, 1, 1
        data_dir = subset(data_dir, work / "subset", {"train": 100, "validation": 40})
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("")
    size = (args.image_size, args.image_size)
    data = ImageFolder(data_dir, image_size=size, seed=args.seed, cache_dir=work / "images")
    print(f"{len(data.labels('train'))} training images, {args.image_size} px, {args.epochs} + "
          f"{args.fine_tune_epochs} epochs a trial, {args.trials} trials", flush=True)
    try:
        for way in args.ways:
            trials = args.trials if way == "fast" or args.exact_trials is None else args.exact_trials
            summary = search(way, data, work / "search", trials, args, log_path)
            print(f"{way}: {summary['search_seconds']:.0f} s for {summary['trials']} trials, best "
                  f"{summary['best_score']:.4f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(log_path, args.trials))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
