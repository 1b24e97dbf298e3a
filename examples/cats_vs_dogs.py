"""Cats vs dogs with MobileNetV2: the classic two-phase transfer-learning recipe, through transferkit.

    python examples/cats_vs_dogs.py                       # downloads data + weights via Keras's cache
    python examples/cats_vs_dogs.py --data-dir PATH --weights FILE.h5   # offline

Recipe (transferkit's defaults): 224x224 inputs, batch 32, flip + rotation augmentation, 10 epochs
with the backbone frozen (Adam 3e-3), then 5 epochs with MobileNetV2's last stages (block_13 on)
unfrozen at 0.01 times the learning rate (3e-5), BatchNorm frozen while fine-tuning; each phase ends
on a moving average of its weights over its last third or so of steps. The frozen layers run
once over two views of each training image (as it is, and augmented); each epoch draws one view per
image, and phase 2 mirrors the cached activations at random. --seed-recipe gives the seed project's
settings instead: 160x160, 10 + 10 epochs, the whole network every step with every image augmented anew
every epoch,
layers 100+ unfrozen at a tenth of the learning rate (1e-4, then 1e-5 with RMSprop) and BatchNorm
training in phase 2 as in the seed's Keras 3 code, no weight averaging.
Without --data-dir/--weights, a ``../shared`` folder next to the repository (the offline copies on the
project's own machines) is used when it exists, and there its web photos (``cats_vs_dogs_web``) are
scored too, beside the validation photos.

A checkpoint is written after every epoch into OUTPUT/checkpoint; --resume continues a killed run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cats_vs_dogs_data import DownloadError, cats_vs_dogs  # next to this script

from transferkit import ImageFolder, TwoPhaseTrainer, WeightsUnavailableError
from transferkit.cli.options import data_defaults
from transferkit.evaluation import RunFolder, summary
from transferkit.training import PhaseSummary
from transferkit.training.settings import EPOCHS, FINE_TUNE_EPOCHS, PRESETS, SEED_PROJECT_EPOCHS

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data" / "cats_vs_dogs"
SHARED_WEB = SHARED / "data" / "cats_vs_dogs_web"
SHARED_WEIGHTS = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="folder with train/ and validation/ (or class folders to split); "
                   "default: ../shared copy if present, else the TensorFlow tutorial archive (downloaded)")
    p.add_argument("--weights", help="MobileNetV2 weights: 'imagenet', 'none' or a .h5 path; "
                   "default: ../shared copy if present, else 'imagenet' (downloaded)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"phase-1 epochs, backbone frozen (default: {EPOCHS}; {SEED_PROJECT_EPOCHS[0]} with --seed-recipe)")
    p.add_argument("--fine-tune-epochs", type=int, default=None,
                   help=f"phase-2 epochs (default: {FINE_TUNE_EPOCHS}; {SEED_PROJECT_EPOCHS[1]} with --seed-recipe)")
    p.add_argument("--image-size", type=int, default=None,
                   help=f"square input size in pixels (default: {data_defaults()['image_size'][0]}; "
                        f"{PRESETS['seed_project']['image_size'][0]} with --seed-recipe)")
    p.add_argument("--unfreeze-from", default=None,
                   help="layer index or block name (default: the preset's: the backbone's own, block_13; "
                        f"{PRESETS['seed_project']['unfreeze_from']} with --seed-recipe)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    p.add_argument("--output", default="runs/cats_vs_dogs", help="where to write model, metrics, pictures "
                   "(default: runs/cats_vs_dogs)")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an earlier run in --output")
    p.add_argument("--seed", type=int, default=42, help="seed for the split, shuffling and weights (default: 42)")
    p.add_argument("--mixed-precision", action="store_true",
                   help="compute in float16 on a GPU, bfloat16 elsewhere (the logits stay float32)")
    p.add_argument("--exact", action="store_true", help="the exact recipe: fresh augmentation every epoch and the "
                   "whole network every step, instead of frozen features computed once (3 augmented views)")
    p.add_argument("--seed-recipe", action="store_true",
                   help="the seed project's settings: 160 px, --exact, 10 + 10 epochs, unfreeze from layer 100, "
                        "a phase-2 learning rate of a tenth with RMSprop, BatchNorm training in phase 2")
    p.add_argument("--resume", action="store_true", help="continue the run in --output after its last epoch")
    args = p.parse_args(argv)
    epochs = SEED_PROJECT_EPOCHS if args.seed_recipe else (EPOCHS, FINE_TUNE_EPOCHS)
    args.epochs = epochs[0] if args.epochs is None else args.epochs
    args.fine_tune_epochs = epochs[1] if args.fine_tune_epochs is None else args.fine_tune_epochs
    return args


def resolve_sources(args):
    """Where the data and weights come from, with a one-line message that says so."""
    if args.data_dir:
        data_dir = Path(args.data_dir)
    elif SHARED_DATA.is_dir():
        data_dir = SHARED_DATA
        print(f"Using the local copy of the data in {data_dir}")
    else:
        try:
            data_dir = cats_vs_dogs()
        except DownloadError as exc:
            sys.exit(f"error: {exc}\nWithout network, pass --data-dir with a folder of train/ and validation/ "
                     "class folders (cats/, dogs/).")
    if args.weights:
        weights = None if args.weights.lower() == "none" else args.weights
    elif SHARED_WEIGHTS.is_file():
        weights = str(SHARED_WEIGHTS)
        print(f"Using the local copy of the weights in {weights}")
    else:
        weights = "imagenet"
    return data_dir, weights


def web_accuracy(classifier) -> tuple[float, int]:
    """Accuracy on photos from another source than the training photos, and how many there are."""
    from transferkit.evaluation import evaluate

    web = ImageFolder(SHARED_WEB, image_size=classifier.image_size, split=(0.5, 0.5), seed=0)
    evaluation = evaluate(classifier, web, split="all")
    return evaluation.accuracy, evaluation.to_dict()["count"]


def main(argv=None) -> int:
    args = parse_args(argv)
    folder = RunFolder(args.output, overwrite=args.overwrite, resume=args.resume)
    try:
        folder.check()
    except FileExistsError as exc:
        sys.exit(f"error: {exc}")
    data_dir, weights = resolve_sources(args)
    overrides = {"weights": weights, "seed": args.seed, "mixed_precision": args.mixed_precision}
    if args.image_size:
        overrides["image_size"] = (args.image_size, args.image_size)
    if args.unfreeze_from:
        overrides["unfreeze_from"] = int(args.unfreeze_from) if args.unfreeze_from.lstrip("-").isdigit() \
            else args.unfreeze_from
    if args.exact:
        overrides["cache_features"] = False
    trainer = TwoPhaseTrainer.from_preset("seed_project" if args.seed_recipe else "default", **overrides)
    try:
        if folder.finished(trainer, args.epochs, args.fine_tune_epochs):
            print(f"The run in {folder.path} has finished all its epochs: nothing to resume, its files are kept.")
            return 0
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    print(folder.start())
    size = {"image_size": trainer.image_size} if trainer.image_size else {}  # else ImageFolder's default
    data = ImageFolder(data_dir, **size, batch_size=args.batch_size, seed=args.seed, verbose=1)
    print(data.report, "\n")
    print(f"{data.image_size[0]} px, unfreeze from {trainer.unfreeze_from}, phase-2 learning rate x{trainer.fine_tune_lr_factor}, "
          f"{'exact recipe' if not trainer.cache_features else 'frozen features computed once'}")
    try:
        result = trainer.fit(data, epochs=args.epochs, fine_tune_epochs=args.fine_tune_epochs,
                             callbacks=[PhaseSummary()], checkpoint_dir=folder.checkpoint)
    except WeightsUnavailableError as exc:
        sys.exit(f"error: {exc}\nWithout network, pass --weights with the path of the .h5 file.")

    metrics = folder.save(trainer, result, data)
    web = web_accuracy(result.classifier) if not args.data_dir and SHARED_WEB.is_dir() else None
    print("\n" + summary(metrics, extra=[(f"accuracy on {web[1]} web photos", f"{web[0]:.4f}")] if web else []))
    p1, p2 = result.phase_seconds
    print(json.dumps({"val_accuracy_phase1": metrics["val_accuracy_phase1"],
                      "val_accuracy_phase2": metrics["val_accuracy_phase2"],
                      "web_accuracy": None if web is None else web[0], "phase_seconds": [p1, p2]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
