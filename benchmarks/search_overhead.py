"""Benchmark: what a small search costs beyond its training, against one exact run of the same settings.

    python benchmarks/search_overhead.py            # 4 trials, 3 + 3 epochs, 128 px, 300 + 100 images a class

One process, one data folder (linked from ../shared), the same settings both ways: first one exact
`TwoPhaseTrainer` run (the whole network every step), then a 4-trial random search on the fast path
with trials isolated in worker processes, as `tune` does by default. It prints both wall times and
their ratio; a search whose trials each paid for a fresh process (importing TensorFlow, receiving the
data) is slower than one that reuses its workers. Run it on two versions to compare them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from two_phase import DATA, WEIGHTS, subset  # noqa: E402

from transferkit import ImageFolder, TwoPhaseTrainer  # noqa: E402
from transferkit.tuning import tune  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--fine-tune-epochs", type=int, default=3)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--train-per-class", type=int, default=300)
    p.add_argument("--validation-per-class", type=int, default=100)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="search-overhead-"))
    root = subset(DATA, work / "data", {"train": args.train_per_class, "validation": args.validation_per_class})
    data = ImageFolder(root, image_size=(args.image_size, args.image_size), batch_size=32, seed=42)
    epochs = dict(epochs=args.epochs, fine_tune_epochs=args.fine_tune_epochs)

    start = time.perf_counter()
    TwoPhaseTrainer(weights=str(WEIGHTS), seed=42, cache_features=False).fit(data, verbose=0, **epochs)
    exact = time.perf_counter() - start

    start = time.perf_counter()
    result = tune(data, work / "search", max_trials=args.trials, overwrite=True, verbose=0, weights=str(WEIGHTS),
                  seed=42, **epochs)
    searched = time.perf_counter() - start
    print(json.dumps({"exact_run_s": round(exact, 1), "search_s": round(searched, 1),
                      "search_over_exact": round(searched / exact, 2), "trials": len(result.trials),
                      "best_score": result.best_score}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
