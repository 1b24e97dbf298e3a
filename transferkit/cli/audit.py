"""Find label errors, duplicates and outliers.

Audit a folder before training on it: suspected label errors (out-of-fold predictions ranked by
cleanlab), near-duplicates within and across splits, outliers, class balance and image sizes. Writes
audit.json and thumbnail pages; nothing is moved or deleted (train --exclude audit.json leaves the
flagged files out).
"""

from __future__ import annotations

import json

from transferkit.cli.options import (command_parser, UsageError, add_backbone_options, add_data_options,
                                     check_backbone, check_training_options, defaults_of, load_data, quiet_data)


def add_parser(commands) -> None:
    p = command_parser(commands, "audit", __doc__)
    p.add_argument("data_dir", metavar="DATA_DIR", help="class folders, or train/ and validation/ of class folders")
    p.add_argument("--output", default="runs/audit", help="folder for audit.json and the thumbnail pages")
    add_backbone_options(p)
    from transferkit.audit.checks import audit  # NumPy only until it runs

    library = defaults_of(audit)
    p.add_argument("--folds", type=int, default=library["folds"], help="folds of the out-of-fold predictions")
    p.add_argument("--duplicate-threshold", type=float, default=library["duplicate_threshold"],
                   help="cosine similarity of the features from which two images count as near-duplicates")
    p.add_argument("--duplicate-margin", type=float, default=library["duplicate_margin"],
                   help="two images that are each other's nearest neighbour by this much similarity over the "
                        "next-best also count as near-duplicates (negative: off)")
    p.add_argument("--outliers", type=int, default=library["outliers"],
                   help="how many of the least typical images to list")
    p.add_argument("--json", action="store_true", help="print audit.json to stdout instead of the summary")
    add_data_options(p)


def check(args) -> None:
    """What can be wrong with the options alone, found before TensorFlow loads."""
    if args.folds < 2:
        raise UsageError(f"--folds {args.folds}: give at least 2.")
    if not 0 < args.duplicate_threshold <= 1:
        raise UsageError(f"--duplicate-threshold {args.duplicate_threshold}: give a similarity in (0, 1].")
    args.epochs, args.fine_tune_epochs = 1, 0  # what the shared check needs
    check_training_options(args)


def run(args) -> int:
    from transferkit.audit import audit

    check_backbone(args)
    from transferkit import TwoPhaseTrainer

    trainer = TwoPhaseTrainer(backbone=args.backbone, weights=args.weights, backbone_options=dict(args.backbone_option),
                              seed=args.seed)
    data = load_data(args) if not args.json else quiet_data(args)
    report = audit(data, trainer, folds=args.folds, duplicate_threshold=args.duplicate_threshold,
                   duplicate_margin=None if args.duplicate_margin < 0 else args.duplicate_margin,
                   outliers=args.outliers, seed=args.seed)
    files = report.save(args.output, data)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2), file=args.stdout)
    else:
        print(report)
        print(f"\nWrote ({report.seconds:.0f} s):")
        for f in files:
            print(f"  {f}")
    return 0
