"""Find the learning rates.

Sweep phase 1's learning rate (the head on the frozen backbone) and phase 2's (at the unfreeze point,
after phase 1 has trained at its suggested rate) over an exponential range; print the suggested
--learning-rate and --fine-tune-lr-factor with the rule that chose them; write lr_find.png and
lr_find.json. On the fast path (the default) the sweeps run on cached features.
"""

from __future__ import annotations

import json
from pathlib import Path

from transferkit.cli.options import (UsageError, add_data_options, add_model_options, command_parser, load_data,
                                     table_flags)
from transferkit.training import settings

OUTPUTS = ("lr_find.png", "lr_find.json")


def add_parser(commands) -> None:
    p = command_parser(commands, "lr-find", __doc__)
    p.add_argument("data_dir", metavar="DATA_DIR", help="class folders, or train/ and validation/ of class folders")
    p.add_argument("--output", default="runs/lr-find", help="folder for lr_find.png and lr_find.json")
    p.add_argument("--phase", choices=("1", "2", "both"), default="both", help="which phases to sweep")
    p.add_argument("--steps", type=int, default=100, help="steps of each sweep")
    p.add_argument("--min-lr", type=float, default=1e-7, help="the sweep's first learning rate")
    p.add_argument("--max-lr", type=float, default=1.0, help="the sweep's last learning rate")
    p.add_argument("--epochs", type=int, default=settings.EPOCHS,
                   help="phase-1 epochs trained before phase 2 is swept")
    p.add_argument("--overwrite", action="store_true", help="replace lr_find.png and lr_find.json in --output")
    p.add_argument("--json", action="store_true", help="print lr_find.json to stdout instead of the summary")
    add_data_options(p)
    add_model_options(p)


def check(args) -> None:
    """What can be wrong with the options alone, found before TensorFlow loads."""
    from transferkit.cli.train import check as check_train

    if args.steps < 20:
        raise UsageError(f"--steps {args.steps}: give at least 20.")
    if not 0 < args.min_lr < args.max_lr:
        raise UsageError(f"--min-lr {args.min_lr} --max-lr {args.max_lr}: give 0 < min < max.")
    args.fine_tune_epochs = 0 if args.phase == "1" else 1  # what the shared checks read
    args.resume = False
    check_train(args)
    existing = [name for name in OUTPUTS if (Path(args.output) / name).exists()]
    if existing and not args.overwrite:
        raise UsageError(f"{Path(args.output) / existing[0]} exists: pass --overwrite to replace it, or give another "
                         "--output.")


def run(args) -> int:
    from transferkit.cli.train import _check_train_args

    trainer = _check_train_args(args)
    data = load_data(args)
    phases = {"1": (1,), "2": (2,), "both": (1, 2)}[args.phase]
    finding = trainer.lr_find(data, min_lr=args.min_lr, max_lr=args.max_lr, steps=args.steps, phases=phases,
                              epochs=args.epochs)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    from transferkit.evaluation.plots import plot_lr_find

    plot_lr_find(finding, out / "lr_find.png")
    (out / "lr_find.json").write_text(json.dumps(finding.to_dict(), indent=2))
    if args.json:
        print(json.dumps(finding.to_dict()), file=args.stdout)
    else:
        print(finding)
        flags = [f"--learning-rate {finding.learning_rate:.3g}"] if finding.learning_rate is not None else []
        if finding.fine_tune_lr_factor is not None:
            flags.append(f"--fine-tune-lr-factor {finding.fine_tune_lr_factor:.3g}")
        print(f"train with: transferkit train {args.data_dir} {' '.join(table_flags(args) + flags)}")
        print(f"Wrote {out / 'lr_find.png'} and {out / 'lr_find.json'}")
    return 0
