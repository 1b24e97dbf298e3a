"""Search head, learning rate and unfreeze point.

KerasTuner search over the two-phase recipe; prints the trials, saves the best model and a picture
of score against the hyperparameters. Run it again with the same --directory to resume. For a
distributed search set KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT (see
docs/tuning.md).
"""

from __future__ import annotations

from pathlib import Path

from transferkit.cli.options import (command_parser, UsageError, add_data_options, check_backbone,
                                     check_training_options, load_data)
from transferkit.models import defaults as model_defaults
from transferkit.tuning import defaults


def add_parser(commands) -> None:
    p = command_parser(commands, "tune", __doc__)
    p.add_argument("data_dir", metavar="DATA_DIR", help="class folders, or train/ and validation/ of class folders")
    p.add_argument("--tuner", choices=["bayesian", "hyperband", "random"], default=defaults.TUNER,
                   help="search algorithm")
    p.add_argument("--max-trials", type=int, default=defaults.MAX_TRIALS, help="trials (random, bayesian)")
    p.add_argument("--epochs", type=int, default=defaults.TRIAL_EPOCHS, help="phase-1 epochs per trial")
    p.add_argument("--fine-tune-epochs", type=int, default=defaults.TRIAL_FINE_TUNE_EPOCHS,
                   help="phase-2 epochs per trial")
    p.add_argument("--max-epochs", type=int, default=None,
                   help="Hyperband's per-trial budget (default: epochs + fine-tune-epochs)")
    p.add_argument("--backbone", default=model_defaults.BACKBONE, help="registered backbone")
    p.add_argument("--weights", default=model_defaults.WEIGHTS, help="'imagenet', 'none', or a weights file path")
    p.add_argument("--metric", default=None,
                   help=f"what to optimise, at the end of phase 2 (default: {defaults.METRIC}; for several labels "
                        f"per image {defaults.MULTI_LABEL_METRIC})")
    p.add_argument("--directory", default="runs/tune", help="KerasTuner's working folder (trials, checkpoints)")
    p.add_argument("--project-name", default=defaults.PROJECT_NAME, help="search name inside --directory")
    p.add_argument("--output", default=None, help="where to write best.keras, trials.json, tuning.png "
                                                  "(default: DIRECTORY/PROJECT_NAME-results)")
    p.add_argument("--stop-below-median-after", type=int, default=None, metavar="EPOCH",
                   help="stop a trial whose metric after this epoch is below the finished trials' median")
    p.add_argument("--exact", action="store_true",
                   help="train every trial the exact way (no cached features; several times slower)")
    p.add_argument("--soup", action="store_true",
                   help="also average the best trials' weights into one model (greedy soup): soup.keras")
    p.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    add_data_options(p)


def check(args) -> None:
    """What can be wrong with the options alone, found before TensorFlow loads."""
    check_training_options(args)
    if args.max_trials < 1:
        raise UsageError(f"--max-trials {args.max_trials}: give at least 1.")


def run(args) -> int:
    from transferkit.tuning import tune

    check_backbone(args, model_files=False)
    data = load_data(args)
    output = args.output or str(Path(args.directory) / f"{args.project_name}-results")
    result = tune(
        data, args.directory, project_name=args.project_name, tuner=args.tuner, max_trials=args.max_trials,
        max_epochs=args.max_epochs, overwrite=args.overwrite, output=output, backbone=args.backbone,
        weights=None if args.weights.lower() == "none" else args.weights, epochs=args.epochs,
        fine_tune_epochs=args.fine_tune_epochs, metric=args.metric, seed=args.seed,
        stop_below_median_after=args.stop_below_median_after, cache_features=not args.exact, soup=args.soup,
    )
    print("\nTrials (best first)")
    print(result.table())
    if result.files:
        print(f"\nBest score {result.best_score:.4f} with {result.best_hyperparameters}")
        if result.soup is not None:
            print(f"\nSoup of trials {', '.join(result.soup.ingredients)}: {result.soup.metric} "
                  f"{result.soup.score:.4f}\n{result.soup.table()}")
        print("Wrote:")
        for f in result.files:
            print(f"  {f}")
    return 0
