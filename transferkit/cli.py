"""The ``transferkit`` command: train, evaluate, predict, export, backbones, tune and audit.

A thin layer over the library: it parses options, calls the library, and prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["main", "UsageError"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transferkit")
    except PackageNotFoundError:
        return "unknown (not installed)"

_HELP = argparse.ArgumentDefaultsHelpFormatter


def _unfreeze_point(text: str):
    return int(text) if text.lstrip("-").isdigit() else text


def _split(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--split {text!r}: give fractions like 0.8,0.1,0.1") from None


def _option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--backbone-option {text!r}: write KEY=VALUE, e.g. alpha=0.35")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _devices(text: str):
    if text == "all":
        return text
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of devices (1 or more) or 'all'.")
    return count


def _weights(text: str):
    return None if text.lower() == "none" else text


def add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-size", type=int, default=192, help="square input size in pixels")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch")
    p.add_argument("--split", type=_split, default=(0.8, 0.1, 0.1),
                   help="train,validation[,test] fractions for a folder of class folders "
                        "(ignored when DATA_DIR has train/ and validation/)")
    p.add_argument("--seed", type=int, default=42, help="seed for the split, shuffling and initialisation")
    p.add_argument("--cache-dir", default=None,
                   help="keep decoded images (and frozen features) here, reused by later runs on the same files")
    p.add_argument("--exclude", default=None, metavar="FILE",
                   help="leave out the files an audit.json flags, or those a text file lists (one path a line, "
                        "relative to DATA_DIR); the run records them")


def add_backbone_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default="mobilenet_v2", help="registered backbone (see: transferkit backbones)")
    p.add_argument("--weights", type=_weights, default="imagenet",
                   help="'imagenet' (Keras cache/download), 'none', or a weights file path")
    p.add_argument("--backbone-option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                   help="backbone constructor option, repeatable (e.g. alpha=0.35)")


def add_model_options(p: argparse.ArgumentParser) -> None:
    add_backbone_options(p)
    p.add_argument("--unfreeze-from", type=_unfreeze_point, default="auto",
                   help="backbone layer index or block name where fine-tuning starts; auto: the backbone's "
                        "default (see: transferkit backbones)")
    p.add_argument("--learning-rate", type=float, default=1e-4, help="phase-1 learning rate")
    p.add_argument("--fine-tune-lr-factor", type=float, default=0.3, help="phase-2 learning rate factor")
    p.add_argument("--dropout", type=float, default=0.2, help="dropout before the logits")
    p.add_argument("--hidden-units", type=int, default=None, help="optional hidden Dense layer size")
    p.add_argument("--augmentation", default="default", help="augmentation preset: none, default, light, strong")
    p.add_argument("--exact", action="store_true",
                   help="run the exact recipe (the whole network every step) instead of training on frozen "
                        "features computed once")
    p.add_argument("--views", type=int, default=3, help="augmented views per training image for the fast path")
    p.add_argument("--mixed-precision", action="store_true",
                   help="compute in float16 on a GPU, bfloat16 elsewhere; the logits stay float32")


def build_parser() -> argparse.ArgumentParser:
    """The `transferkit` command line: every command and option (the CLI reference is made from it)."""
    parser = argparse.ArgumentParser(prog="transferkit", description="Two-phase transfer learning for image classifiers.")
    parser.add_argument("--version", action="version", version=f"transferkit {_version()}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true", help="show TensorFlow's own log lines")
    common.add_argument("--debug", action="store_true", help="print the traceback of an error")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    class Commands:  # every command gets --verbose and --debug
        @staticmethod
        def add_parser(name, **kwargs):
            return subparsers.add_parser(name, parents=[common], **kwargs)

    commands = Commands()

    p = commands.add_parser("train", formatter_class=_HELP, help="train a classifier on a folder of class folders",
                            description="Train with the two-phase recipe; writes model.keras, metrics.json and pictures.")
    p.add_argument("data_dir", metavar="DATA_DIR", help="class folders, or train/ and validation/ of class folders")
    p.add_argument("--output", default="runs/train", help="folder for the model, metrics and pictures")
    p.add_argument("--epochs", type=int, default=10, help="phase-1 epochs (backbone frozen)")
    p.add_argument("--fine-tune-epochs", type=int, default=10, help="phase-2 epochs (top of the backbone trains)")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an earlier run in --output")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --output after its last finished epoch (a checkpoint is written "
                        "after every epoch into OUTPUT/checkpoint)")
    p.add_argument("--log-dir", default=None, help="also write TensorBoard logs here (both phases as one run)")
    p.add_argument("--devices", type=_devices, default=1, metavar="N|all",
                   help="train data-parallel on N devices (GPUs; without GPUs, N logical CPU devices sharing the "
                        "same cores, for trying it out): MirroredStrategy on TensorFlow, DataParallel on JAX")
    processes = p.add_argument_group(
        "several machines (JAX backend)",
        "Run the same command, same data and --seed, on every machine (or once per GPU); each process trains "
        "on its share of every batch and process 0 writes the run. Unset options are read from "
        "KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTRIBUTION_NUM_PROCESSES and KERAS_DISTRIBUTION_PROCESS_ID.")
    processes.add_argument("--coordinator", metavar="HOST:PORT", default=None,
                           help="address of process 0, reachable from every process")
    processes.add_argument("--num-processes", type=int, default=None, metavar="N", help="processes in the job")
    processes.add_argument("--process-id", type=int, default=None, metavar="I",
                           help="this process's number, 0 to N-1 (0 writes the run)")
    p.add_argument("--json", action="store_true", help="end with the run's metrics as one JSON line "
                                                       "instead of the summary")
    add_data_options(p)
    add_model_options(p)

    p = commands.add_parser("evaluate", formatter_class=_HELP, help="evaluate a saved model on labelled images",
                            description="Accuracy, per-class precision/recall/F1, confusion matrix, ROC AUC, top losses.")
    p.add_argument("model", metavar="MODEL", help="a .keras file saved by transferkit")
    p.add_argument("data_dir", metavar="DATA_DIR", help="class folders (same class names as the model)")
    p.add_argument("--split", dest="which", default="all",
                   help="all, or train/validation/test: the files of that split as recorded in MODEL "
                        "(models without a record: DATA_DIR split again with --seed and --fractions)")
    p.add_argument("--seed", type=int, default=42, help="seed of the split, for models that do not record theirs")
    p.add_argument("--fractions", type=_split, default=(0.8, 0.1, 0.1),
                   help="split fractions, for models that do not record theirs")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch")
    p.add_argument("--output", default=None, help="also write metrics.json, confusion_matrix.png, top_losses.png here")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--tta", action="store_true", help="average each image's probabilities with its mirror image's")

    p = commands.add_parser("predict", formatter_class=_HELP, help="classify image files",
                            description="Prints the class and its probability for each image.")
    p.add_argument("model", metavar="MODEL", help="a .keras file saved by transferkit, an exported .tflite file "
                                                  "or SavedModel folder")
    p.add_argument("inputs", metavar="IMAGE_OR_DIR", nargs="+", help="image files or folders (searched recursively)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch")
    p.add_argument("--json", action="store_true", help="print one JSON object per line")
    p.add_argument("--tta", action="store_true", help="average each image's probabilities with its mirror image's")

    p = commands.add_parser("export", formatter_class=_HELP, help="export a saved model",
                            description="Write the model as .keras, a TensorFlow SavedModel, TFLite (float32, float16, "
                                        "int8, full-integer int8) or ONNX. Class names and image size go with it: "
                                        "inside a .tflite file as TFLite metadata (an .onnx file: in its metadata), "
                                        "and beside it as labels.txt and "
                                        "transferkit.json. With --data-dir, the export is compared with the Keras "
                                        "model on the held-out images and the result recorded (OUTPUT.parity.json).")
    p.add_argument("model", metavar="MODEL", help="a .keras file saved by transferkit")
    p.add_argument("--format", choices=["keras", "savedmodel", "tflite", "onnx"], default="tflite",
                   help="output format (onnx needs transferkit[onnx])")
    p.add_argument("--quantize", choices=["float16", "int8"], default=None, help="TFLite quantization")
    p.add_argument("--data-dir", default=None,
                   help="the training folder: int8 calibrates on its training images, and the export is compared "
                        "with the Keras model on its validation (or test) images")
    p.add_argument("--integer-io", choices=["uint8", "int8"], default=None,
                   help="with --quantize int8: integer input and output too (Edge TPU, microcontrollers)")
    p.add_argument("--no-metadata", dest="metadata", action="store_false",
                   help="TFLite: do not pack the class names inside the file (packing needs transferkit[export])")
    p.add_argument("--calibration-images", type=int, default=100, help="how many images calibrate int8")
    p.add_argument("--output", default=None, help="output path (default: next to MODEL, by format)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")

    p = commands.add_parser("report", formatter_class=_HELP, help="rebuild a training run's report.html",
                            description="Write RUN_DIR/report.html again from the run's metrics.json and pictures "
                                        "(and any export parity records beside them): one self-contained page.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --output folder of transferkit train")

    p = commands.add_parser("backbones", formatter_class=_HELP, help="list the registered backbones",
                            description="Registered backbones, with default image size and unfreeze blocks.")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of the table")

    p = commands.add_parser("audit", formatter_class=_HELP, help="find label errors, duplicates and outliers",
                            description="Audit a folder before training on it: suspected label errors (out-of-fold "
                                        "predictions ranked by cleanlab), near-duplicates within and across splits, "
                                        "outliers, class balance and image sizes. Writes audit.json and thumbnail "
                                        "pages; nothing is moved or deleted (train --exclude audit.json leaves the "
                                        "flagged files out).")
    p.add_argument("data_dir", metavar="DATA_DIR", help="class folders, or train/ and validation/ of class folders")
    p.add_argument("--output", default="runs/audit", help="folder for audit.json and the thumbnail pages")
    add_backbone_options(p)
    p.add_argument("--folds", type=int, default=5, help="folds of the out-of-fold predictions")
    p.add_argument("--duplicate-threshold", type=float, default=0.95,
                   help="cosine similarity of the features from which two images count as near-duplicates")
    p.add_argument("--duplicate-margin", type=float, default=0.15,
                   help="two images that are each other's nearest neighbour by this much similarity over the "
                        "next-best also count as near-duplicates (negative: off)")
    p.add_argument("--outliers", type=int, default=20, help="how many of the least typical images to list")
    p.add_argument("--json", action="store_true", help="print audit.json to stdout instead of the summary")
    add_data_options(p)

    p = commands.add_parser("tune", formatter_class=_HELP, help="search head, learning rate and unfreeze point",
                            description="KerasTuner search over the two-phase recipe; prints the trials, saves the "
                                        "best model and a picture of score against the hyperparameters. Run it "
                                        "again with the same --directory to resume. For a distributed search set "
                                        "KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT "
                                        "(see docs/tuning.md).")
    p.add_argument("data_dir", metavar="DATA_DIR", help="class folders, or train/ and validation/ of class folders")
    p.add_argument("--tuner", choices=["bayesian", "hyperband", "random"], default="random", help="search algorithm")
    p.add_argument("--max-trials", type=int, default=10, help="trials (random, bayesian)")
    p.add_argument("--epochs", type=int, default=3, help="phase-1 epochs per trial")
    p.add_argument("--fine-tune-epochs", type=int, default=3, help="phase-2 epochs per trial")
    p.add_argument("--max-epochs", type=int, default=None,
                   help="Hyperband's per-trial budget (default: epochs + fine-tune-epochs)")
    p.add_argument("--backbone", default="mobilenet_v2", help="registered backbone")
    p.add_argument("--weights", default="imagenet", help="'imagenet', 'none', or a weights file path")
    p.add_argument("--metric", default="val_accuracy", help="what to optimise, at the end of phase 2")
    p.add_argument("--directory", default="runs/tune", help="KerasTuner's working folder (trials, checkpoints)")
    p.add_argument("--project-name", default="transferkit", help="search name inside --directory")
    p.add_argument("--output", default=None, help="where to write best.keras, trials.json, tuning.png "
                                                  "(default: DIRECTORY/PROJECT_NAME-results)")
    p.add_argument("--stop-below-median-after", type=int, default=None, metavar="EPOCH",
                   help="stop a trial whose metric after this epoch is below the finished trials' median")
    p.add_argument("--exact", action="store_true",
                   help="train every trial the exact way (no cached features; several times slower)")
    p.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    add_data_options(p)
    return parser


# -- commands ---------------------------------------------------------------------------------


def load_data(args):
    """The `ImageFolder` that ``add_data_options`` describes, its report printed."""
    from transferkit import ImageFolder

    exclude = None
    if args.exclude:
        from transferkit.audit import read_exclusions

        exclude = read_exclusions(args.exclude)
    data = ImageFolder(args.data_dir, image_size=(args.image_size, args.image_size), batch_size=args.batch_size,
                       split=args.split, seed=args.seed, cache_dir=args.cache_dir, verbose=1, exclude=exclude)
    print(data.report, "\n")
    return data


def _check_epochs_and_backbone(args) -> None:
    """The options ``train`` and ``tune`` share, checked before anything is decoded."""
    from transferkit import get_backbone_spec, list_backbones

    for name in ("epochs", "fine_tune_epochs"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)}: give 0 or more epochs.")
    if args.epochs + args.fine_tune_epochs == 0:
        raise UsageError("--epochs 0 and --fine-tune-epochs 0: train for at least one epoch.")
    try:
        get_backbone_spec(args.backbone)
    except KeyError:
        raise UsageError(f"--backbone {args.backbone!r} is not registered; choose one of: "
                         f"{', '.join(list_backbones())}.") from None
    weights = args.weights
    if isinstance(weights, str) and weights.lower() not in ("none", "imagenet") and not Path(weights).is_file():
        raise UsageError(f"--weights {weights}: no such file; give a weights file, 'imagenet' or 'none'.")


def _check_train_args(args):
    """Everything that can be wrong with the options, found before any image is decoded."""
    from transferkit.data import _validate_fractions

    _check_epochs_and_backbone(args)
    if args.image_size < 32:
        raise UsageError(f"--image-size {args.image_size}: give at least 32 pixels.")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size}: give at least 1.")
    if args.views < 1:
        raise UsageError(f"--views {args.views}: give at least 1 augmented view per image.")
    if not (Path(args.data_dir) / "train").is_dir():
        try:
            _validate_fractions(args.split)
        except ValueError as exc:
            raise UsageError(f"--split: {exc}") from None
    try:
        return _trainer_from_args(args)
    except (ValueError, TypeError) as exc:  # a preset, unfreeze point, learning rate... that cannot work
        raise UsageError(str(exc)) from None


def _trainer_from_args(args):
    from transferkit import ClassifierHead, TwoPhaseTrainer

    trainer = TwoPhaseTrainer(
        backbone=args.backbone, weights=args.weights, backbone_options=dict(args.backbone_option),
        head=ClassifierHead(dropout=args.dropout, hidden_units=args.hidden_units),
        augmentation=None if args.augmentation == "none" else args.augmentation,
        unfreeze_from=args.unfreeze_from, learning_rate=args.learning_rate,
        fine_tune_lr_factor=args.fine_tune_lr_factor, seed=args.seed,
        cache_features=not args.exact, views=args.views, cache_dir=args.cache_dir,
        mixed_precision=args.mixed_precision,
    )
    if args.fine_tune_epochs:
        trainer.check((args.image_size, args.image_size))
    return trainer


def cmd_train(args) -> int:
    import shutil

    from transferkit import distribute
    from transferkit.callbacks import PhaseSummary
    from transferkit.run import RUN_FILES, save_run

    output = Path(args.output)
    if args.resume and _asks_for_processes(args):
        raise UsageError("--resume: a run of several processes cannot be resumed yet (their checkpoints could hold "
                         "different epochs); start it again with --overwrite.")
    distribution = _distribution(args)  # before the backend runs anything: it may split the CPU or join a job
    several = distribute.processes(distribution) > 1
    chief = distribute.process_index() == 0  # the process that writes the run
    checkpoint = output / "checkpoint"
    if chief and not (args.overwrite or args.resume) and any((output / f).exists() for f in RUN_FILES):
        raise FileExistsError(f"{output} already holds a run; pass --overwrite or choose another --output.")
    if checkpoint.exists() and not (args.overwrite or args.resume):
        raise FileExistsError(f"{output} holds the checkpoint of an unfinished run; pass --resume to continue it, "
                              "--overwrite to start again, or choose another --output.")
    trainer = _check_train_args(args)
    trainer.distribution = distribution
    if args.overwrite and not args.resume and checkpoint.exists():
        shutil.rmtree(checkpoint)  # asked for with --overwrite
    if args.resume and (checkpoint / "checkpoint.json").exists():
        print(f"Resuming the run in {output} from its last finished epoch.")
    print(_device_line(trainer.distribution))
    data = load_data(args)
    callbacks = [PhaseSummary()]
    if args.log_dir:
        import keras

        callbacks.append(keras.callbacks.TensorBoard(log_dir=args.log_dir))
    result = trainer.fit(data, epochs=args.epochs, fine_tune_epochs=args.fine_tune_epochs,
                         callbacks=callbacks, checkpoint_dir=None if several else checkpoint)
    if not chief:
        print(f"Process {distribute.process_index()} of {distribute.processes(distribution)}: trained; "
              f"process 0 writes the run to its {output}.")
        return 0
    split = "test" if data.test is not None else "validation"
    metrics = save_run(trainer, result, data, output, split=split, overwrite=args.overwrite or args.resume)
    if args.json:
        print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, default=str))
    else:
        _print_summary(metrics)
    return 0


def _asks_for_processes(args) -> bool:
    """Whether ``train`` is one process of several (by its flags or Keras's environment variables)."""
    from transferkit.distribute import PROCESS_VARIABLES

    flags = (args.coordinator, args.num_processes, args.process_id)
    return any(value is not None for value in flags) or os.environ.get(PROCESS_VARIABLES[1], "1") not in ("", "1")


def _distribution(args):
    """The distribution for ``--devices`` or the job of several processes (None for one device), made
    before the backend runs anything."""
    import keras

    from transferkit import distribute

    devices = args.devices
    if _asks_for_processes(args):
        if devices not in (1, "all"):
            raise UsageError(f"--devices {devices}: with several processes every device of every process trains; "
                             "leave --devices out.")
        try:
            return distribute.for_processes(args.coordinator, args.num_processes, args.process_id)
        except ValueError as exc:
            raise UsageError(f"several processes: {exc}") from None
    if devices == 1:
        return None
    if keras.backend.backend() == "tensorflow" and not distribute.gpu_visible():
        if devices == "all":
            return None  # one CPU
        distribute.logical_cpu_devices(devices)
    try:
        return distribute.for_devices(devices)
    except ValueError as exc:
        raise UsageError(f"--devices {devices}: {exc}") from None


def _device_line(distribution=None) -> str:
    """Which devices Keras will train on."""
    import keras

    from transferkit import distribute

    count = distribute.replicas(distribution)
    if keras.backend.backend() == "jax":
        import jax

        kinds = ", ".join(sorted({d.platform.upper() for d in jax.devices()}))
        if distribute.processes(distribution) > 1:
            return (f"Training on {count} JAX device(s) ({kinds}) of {distribute.processes(distribution)} "
                    f"processes; this is process {distribute.process_index()}")
        return f"Training on {count} of {len(jax.devices())} JAX device(s) ({kinds})"
    if distribute.gpu_visible():
        import tensorflow as tf

        names = ", ".join(g.name for g in tf.config.list_physical_devices("GPU"))
        return f"Training on {count} GPU(s) of: {names}"
    if count > 1:
        return f"Training on {count} logical CPU devices (TensorFlow sees no GPU; they share the same cores)"
    return "Training on CPU (TensorFlow sees no GPU)"


def _print_summary(metrics: dict) -> None:
    evaluation = metrics["evaluation"]
    seconds = metrics["phase_seconds"]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    rows = [
        ("validation accuracy after phase 1", fmt(metrics["val_accuracy_phase1"])),
        ("validation accuracy after phase 2", fmt(metrics["val_accuracy_phase2"])),
        (f"{metrics['split']} accuracy", fmt(evaluation["accuracy"])),
        (f"{metrics['split']} ROC AUC", fmt(evaluation["roc_auc"])),
        ("phase 1 / phase 2 wall time", f"{seconds[0]:.0f} s / {seconds[1]:.0f} s"),
        ("skipped files", str(metrics["data"]["skipped"])),
    ]
    width = max(len(name) for name, _ in rows)
    print("\nSummary")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print("\nWrote:")
    for f in metrics["files"]:
        print(f"  {f}")


def cmd_evaluate(args) -> int:
    from transferkit import ImageFolder, load_model
    from transferkit.evaluate import evaluate

    classifier = load_model(args.model)
    split = args.fractions
    if args.which != "all":
        if classifier.split is not None:
            split = classifier.split["files"]
        else:
            print(f"{args.model} does not record its split: splitting {args.data_dir} with --seed {args.seed} and "
                  f"--fractions {','.join(map(str, args.fractions))}; use the training run's values.", file=sys.stderr)
    data = ImageFolder(args.data_dir, image_size=classifier.image_size, batch_size=args.batch_size,
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
        print(json.dumps(summary))
    else:
        print(evaluation)
        print("confusion matrix (rows true, columns predicted):", evaluation.class_names)
        for name, row in zip(evaluation.class_names, evaluation.confusion_matrix):
            print(f"  {name:>12} {row.tolist()}")
        print("top losses:")
        for t in evaluation.top_losses(5):
            print(f"  {t.file}  true {t.true}, predicted {t.predicted} (p={t.probability:.3f})")
    return 0


def _collect_images(inputs) -> list[Path]:
    from transferkit.images import IMAGE_EXTENSIONS

    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            files.append(item)
    return files


def _load_any(path: str):
    from transferkit.export import load_exported

    return load_exported(path)


def cmd_predict(args) -> int:
    """Print each batch's results as soon as it is classified (``--json``: one object a line)."""
    import numpy as np

    from transferkit.images import ImageReadError, read_image

    classifier = _load_any(args.model)
    files = _collect_images(args.inputs)
    if not files:
        raise FileNotFoundError(f"No image files in {', '.join(args.inputs)}.")
    width = max(len(str(f)) for f in files)

    def show(row):
        if args.json:
            print(json.dumps(row), flush=True)
        elif "error" in row:
            print(f"{row['file']:<{width}}  error: {row['error']}", flush=True)
        else:
            print(f"{row['file']:<{width}}  {row['class']:<12}  {row['probability']:.4f}", flush=True)

    if not args.json:
        print(f"{'file':<{width}}  {'class':<12}  probability")
    from transferkit.progress import progress

    failures = 0
    # Results stream to stdout; the progress line goes to stderr when stdout is a file or a pipe.
    bar = progress(len(files), "Classifying", verbose=not sys.stdout.isatty())
    for start in range(0, len(files), args.batch_size):
        chunk, images = [], []
        for path in files[start : start + args.batch_size]:
            try:
                images.append(read_image(path, classifier.image_size))
                chunk.append(path)
            except ImageReadError as exc:
                show({"file": str(path), "error": exc.reason})
                failures += 1
        if images:
            probabilities = classifier.predict(np.stack(images), tta=args.tta)
            for path, probs in zip(chunk, probabilities):
                best = int(np.argmax(probs))
                show({"file": str(path), "class": classifier.class_names[best], "probability": float(probs[best]),
                      "probabilities": dict(zip(classifier.class_names, map(float, probs)))})
        bar.update(len(files[start : start + args.batch_size]))
    bar.close()
    return 1 if failures else 0


def cmd_export(args) -> int:
    import numpy as np

    from transferkit import ImageFolder, load_model
    from transferkit.export import export
    from transferkit.parity import PARITY_SUFFIX, check_parity

    if args.integer_io and args.quantize != "int8":
        raise UsageError(f"--integer-io {args.integer_io} needs --quantize int8 (a full-integer model).")
    if args.format != "tflite" and (args.quantize or not args.metadata):
        raise UsageError("--quantize and --no-metadata apply to --format tflite only.")
    if args.quantize == "int8" and not args.data_dir:
        raise UsageError("--quantize int8 needs --data-dir: training images to calibrate the quantization.")
    classifier = load_model(args.model)
    model_path = Path(args.model)
    suffix = "".join(f"_{x}" for x in (args.quantize, args.integer_io and f"{args.integer_io}io") if x)
    default = {"keras": model_path.with_name(model_path.stem + "_export.keras"),
               "savedmodel": model_path.with_name(model_path.stem + "_savedmodel"),
               "tflite": model_path.with_name(model_path.stem + suffix + ".tflite"),
               "onnx": model_path.with_name(model_path.stem + ".onnx")}
    output = Path(args.output) if args.output else default[args.format]
    data = None
    if args.data_dir:
        split = classifier.split["files"] if classifier.split is not None else (0.8, 0.1, 0.1)
        data = ImageFolder(args.data_dir, image_size=classifier.image_size, split=split, verbose=1)
    representative = None
    if args.quantize == "int8":
        train = data.images("train")
        picks = np.random.default_rng(0).permutation(len(train))[: args.calibration_images]
        representative = train[picks]
    path = export(classifier, output, format=args.format, quantize=args.quantize,
                  representative_images=representative, overwrite=args.overwrite, integer_io=args.integer_io,
                  metadata=args.metadata, verbose=1)
    print(f"Wrote {path} ({args.format}{', ' + args.quantize if args.quantize else ''}"
          f"{', ' + args.integer_io + ' input and output' if args.integer_io else ''}); "
          f"classes {classifier.class_names}, image size {classifier.image_size}")
    if data is None:
        print("Not compared with the Keras model: give --data-dir to check the export on the held-out images.")
        return 0
    split = "test" if data.test is not None else "validation"
    parity = check_parity(classifier, path, data, split=split)
    record = path.parent / (path.name + PARITY_SUFFIX)  # model_int8.tflite -> model_int8.tflite.parity.json
    parity.save(record)
    print(f"On the {split} split: {parity}\nRecorded in {record}")
    return 0


def cmd_report(args) -> int:
    from transferkit.report import write_report

    print(f"Wrote {write_report(args.run_dir)}")
    return 0


def cmd_backbones(args) -> int:
    from transferkit import get_backbone_spec, list_backbones

    names = list_backbones()
    if args.json:
        specs = [get_backbone_spec(name) for name in names]
        print(json.dumps([{"name": name, "default_image_size": list(spec.default_image_size),
                           "default_unfreeze": spec.default_unfreeze, "preprocessing": spec.preprocessing,
                           "description": spec.description} for name, spec in zip(names, specs)], indent=2))
        return 0
    width = max(len(n) for n in names)
    print(f"{'name':<{width}}  size     unfreeze  preprocessing  description")
    for name in names:
        spec = get_backbone_spec(name)
        size = "x".join(map(str, spec.default_image_size))
        unfreeze = "top third" if spec.default_unfreeze is None else str(spec.default_unfreeze)
        print(f"{name:<{width}}  {size:<7}  {unfreeze:<8}  {spec.preprocessing:<13}  {spec.description}")
    return 0


def cmd_audit(args) -> int:
    from transferkit.audit import audit

    if args.folds < 2:
        raise UsageError(f"--folds {args.folds}: give at least 2.")
    if not 0 < args.duplicate_threshold <= 1:
        raise UsageError(f"--duplicate-threshold {args.duplicate_threshold}: give a similarity in (0, 1].")
    args.epochs, args.fine_tune_epochs = 1, 0  # what the shared check needs
    _check_epochs_and_backbone(args)
    from transferkit import TwoPhaseTrainer

    trainer = TwoPhaseTrainer(backbone=args.backbone, weights=args.weights, backbone_options=dict(args.backbone_option),
                              seed=args.seed)
    data = load_data(args) if not args.json else _quiet_data(args)
    report = audit(data, trainer, folds=args.folds, duplicate_threshold=args.duplicate_threshold,
                   duplicate_margin=None if args.duplicate_margin < 0 else args.duplicate_margin,
                   outliers=args.outliers, seed=args.seed)
    files = report.save(args.output, data)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report)
        print(f"\nWrote ({report.seconds:.0f} s):")
        for f in files:
            print(f"  {f}")
    return 0


def _quiet_data(args):
    """`load_data` without printing (``--json`` keeps stdout for the JSON)."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return load_data(args)


def cmd_tune(args) -> int:
    from transferkit.tuning import tune

    _check_epochs_and_backbone(args)
    if args.max_trials < 1:
        raise UsageError(f"--max-trials {args.max_trials}: give at least 1.")
    data = load_data(args)
    output = args.output or str(Path(args.directory) / f"{args.project_name}-results")
    result = tune(
        data, args.directory, project_name=args.project_name, tuner=args.tuner, max_trials=args.max_trials,
        max_epochs=args.max_epochs, overwrite=args.overwrite, output=output, backbone=args.backbone,
        weights=None if args.weights.lower() == "none" else args.weights, epochs=args.epochs,
        fine_tune_epochs=args.fine_tune_epochs, metric=args.metric, seed=args.seed,
        stop_below_median_after=args.stop_below_median_after, cache_features=not args.exact,
    )
    print("\nTrials (best first)")
    print(result.table())
    if result.files:
        print(f"\nBest score {result.best_score:.4f} with {result.best_hyperparameters}")
        print("Wrote:")
        for f in result.files:
            print(f"  {f}")
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "export": cmd_export,
            "backbones": cmd_backbones, "tune": cmd_tune, "audit": cmd_audit,
            "report": cmd_report}


class UsageError(ValueError):
    """An option or argument that cannot work; the command exits with 2, as for argparse's errors."""


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 pointed at /dev/null: its C++ start-up lines (the
    oneDNN banner, twice) are written there before any log level applies."""
    if "tensorflow" in sys.modules:
        return
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(null, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def main(argv=None) -> int:
    """Run one command; exit status 0 on success, 2 for a usage error, 1 for a failure (a one-line
    message on stderr; ``--debug`` adds the traceback)."""
    for stream in (sys.stdout, sys.stderr):  # file names that are not valid UTF-8 print as \xNN
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if args.verbose else "2")
    if not args.verbose:
        _import_tensorflow_quietly()
    command = COMMANDS[args.command]
    try:
        return command(args)
    except KeyboardInterrupt:
        print(f"transferkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure ends as one line (and the traceback with --debug)
        if args.debug:
            import traceback

            traceback.print_exc()
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"transferkit {args.command}: error: {message}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1


if __name__ == "__main__":
    sys.exit(main())
