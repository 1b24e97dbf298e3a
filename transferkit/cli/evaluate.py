"""Evaluate a saved model on labelled images.

Accuracy, per-class precision/recall/F1, confusion matrix, ROC AUC, top losses.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path

from transferkit.cli.options import (add_table_options, command_parser, data_defaults, labels_as_recorded, open_data,
                                     split_option)


def add_parser(commands) -> None:
    p = command_parser(commands, "evaluate", __doc__)
    p.add_argument("model", metavar="MODEL", help="a .keras file saved by transferkit, or the run folder holding it")
    p.add_argument("data_dir", metavar="DATA_DIR", help="class folders (same class names as the model), or the "
                                                          "images of --labels")
    p.add_argument("--split", dest="which", default="all", choices=("all", "train", "validation", "test"),
                   help="all, or train/validation/test: the files of that split as recorded in MODEL "
                        "(models without a record: DATA_DIR split again with --seed and --fractions)")
    data = data_defaults()
    p.add_argument("--seed", type=int, default=data["seed"],
                   help="seed of the split, for models that do not record theirs")
    p.add_argument("--fractions", type=split_option, default=data["split"],
                   help="split fractions, for models that do not record theirs")
    p.add_argument("--batch-size", type=int, default=data["batch_size"], help="images per batch")
    add_table_options(p)
    p.add_argument("--output", default=None, help="also write metrics.json, confusion_matrix.png, top_losses.png here")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--tta", action="store_true", help="average each image's probabilities with its mirror image's")


def run(args) -> int:
    from transferkit import load_model
    from transferkit.evaluation.metrics import evaluate

    classifier = load_model(args.model)
    split = args.fractions
    if args.which != "all":
        if classifier.split is not None:  # only that split's files are read and decoded
            split = {args.which: classifier.split["files"][args.which]}
        else:
            print(f"{args.model} does not record its split: splitting {args.data_dir} with --seed {args.seed} and "
                  f"--fractions {','.join(map(str, args.fractions))}; use the training run's values.", file=sys.stderr)
    labels_as_recorded(args, classifier)
    with _files_left_out_unsaid(isinstance(split, dict)):
        data = open_data(args, args.data_dir, image_size=classifier.image_size, batch_size=args.batch_size,
                         split=split, seed=args.seed, verbose=0 if args.json else 1)
    evaluation = evaluate(classifier, data, split=args.which, tta=args.tta, verbose=1)
    summary = evaluation.to_dict()
    summary["skipped"] = [[str(s.path), s.reason] for s in data.report.skipped]
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        evaluation.plot(out)
        (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    if args.json:
        print(json.dumps(summary), file=args.stdout)
    else:
        print(evaluation)
        if not classifier.multi_label:
            print("confusion matrix (rows true, columns predicted):", evaluation.class_names)
            for name, row in zip(evaluation.class_names, evaluation.confusion_matrix):
                print(f"  {name:>12} {row.tolist()}")
        print("top losses:")
        for t in evaluation.top_losses(5):
            print(f"  {t.file}  true {t.true}, predicted {t.predicted} (p={t.probability:.3f})")
    return 0


@contextlib.contextmanager
def _files_left_out_unsaid(quiet: bool):
    """The other splits' files are left out on purpose: no warning that they are."""
    logger = logging.getLogger("transferkit.data.folder")
    level = logger.level
    if quiet:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
