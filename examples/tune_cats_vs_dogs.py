"""Hyperparameter search for cats vs dogs: head, learning rate, unfreeze point, fine-tuning factor.

    python examples/tune_cats_vs_dogs.py --max-trials 6 --epochs 2 --fine-tune-epochs 2
    python examples/tune_cats_vs_dogs.py ... --directory runs/tune   # run again to resume
    python examples/tune_cats_vs_dogs.py ... --soup   # also average the best trials into one model

Each trial is a TwoPhaseTrainer run (both phases; KerasTuner alone cannot recompile between them) in
its own process, on cached features that all trials share; the score is the validation accuracy at
the end of fine-tuning. Data and weights are found as
in examples/cats_vs_dogs.py (--data-dir/--weights, else ../shared, else downloaded).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cats_vs_dogs import resolve_sources  # noqa: E402

from transferkit import ImageFolder  # noqa: E402
from transferkit.tuning import tune  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="folder with train/ and validation/ (default: ../shared or download)")
    p.add_argument("--weights", help="'imagenet', 'none' or a .h5 path (default: ../shared or 'imagenet')")
    p.add_argument("--tuner", default="random", choices=["random", "bayesian", "hyperband"],
                   help="search algorithm (default: random)")
    p.add_argument("--max-trials", type=int, default=6, help="trials (default: 6)")
    p.add_argument("--epochs", type=int, default=2, help="phase-1 epochs per trial (default: 2)")
    p.add_argument("--fine-tune-epochs", type=int, default=2, help="phase-2 epochs per trial (default: 2)")
    p.add_argument("--image-size", type=int, default=160, help="square input size (default: 160)")
    p.add_argument("--directory", default="runs/tune_cats_vs_dogs", help="search folder; reused to resume "
                   "(default: runs/tune_cats_vs_dogs)")
    p.add_argument("--overwrite", action="store_true", help="start the search over")
    p.add_argument("--seed", type=int, default=42, help="seed (default: 42)")
    p.add_argument("--stop-below-median-after", type=int, default=None, metavar="EPOCH",
                   help="stop trials below the finished trials' median after this epoch (default: off)")
    p.add_argument("--exact", action="store_true", help="train every trial the exact way (no cached features)")
    p.add_argument("--soup", action="store_true",
                   help="also average the weights of the best trials that share the best one's head (greedy soup)")
    args = p.parse_args(argv)

    data_dir, weights = resolve_sources(args)
    size = (args.image_size, args.image_size)
    data = ImageFolder(data_dir, image_size=size, seed=args.seed, verbose=1,
                       cache_dir=Path(args.directory) / "image_cache")
    print(data.report, "\n")
    result = tune(data, args.directory, project_name="search", tuner=args.tuner, max_trials=args.max_trials,
                  overwrite=args.overwrite, output=Path(args.directory) / "results", weights=weights,
                  epochs=args.epochs, fine_tune_epochs=args.fine_tune_epochs, seed=args.seed,
                  stop_below_median_after=args.stop_below_median_after, cache_features=not args.exact,
                  soup=args.soup)
    print("\nTrials (best first; score = validation accuracy at the end of fine-tuning)")
    print(result.table())
    print(f"\nBest: {result.best_score:.4f} with {result.best_hyperparameters}")
    if result.soup is not None:
        print(f"\nSoup of trials {', '.join(result.soup.ingredients)}: validation accuracy {result.soup.score:.4f}")
        print(result.soup.table())
    for f in result.files:
        print(f"  wrote {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
