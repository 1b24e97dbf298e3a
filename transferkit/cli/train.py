"""Train a classifier on a folder of class folders.

Train with the two-phase recipe; writes model.keras, metrics.json and pictures.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

from transferkit.cli.options import (command_parser, UsageError, add_data_options, add_model_options,
                                     as_options, check_backbone, check_training_options, devices_option,
                                     load_data)
from transferkit.training import settings


def add_parser(commands) -> None:
    p = command_parser(commands, "train", __doc__)
    p.add_argument("data_dir", metavar="DATA_DIR", help="class folders, or train/ and validation/ of class folders")
    p.add_argument("--output", default="runs/train", help="folder for the model, metrics and pictures")
    p.add_argument("--epochs", type=int, default=settings.EPOCHS, help="phase-1 epochs (backbone frozen)")
    p.add_argument("--fine-tune-epochs", type=int, default=settings.FINE_TUNE_EPOCHS,
                   help="phase-2 epochs (top of the backbone trains)")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an earlier run in --output")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --output after its last finished epoch (a checkpoint is written "
                        "after every epoch into OUTPUT/checkpoint)")
    p.add_argument("--init-from", default=None, metavar="MODEL",
                   help="start from this trained model (a .keras file or run folder) instead of the pretrained "
                        "backbone: to continue it on more images or more classes; its recorded validation and test "
                        "images stay in their splits")
    p.add_argument("--log-dir", default=None, help="also write TensorBoard logs here (both phases as one run)")
    p.add_argument("--mlflow", action="store_true",
                   help="also log the run to MLflow, both phases as one run with its settings, final metrics and "
                        "files (MLFLOW_TRACKING_URI and MLFLOW_EXPERIMENT_NAME say where; needs transferkit[mlflow])")
    p.add_argument("--devices", type=devices_option, default=1, metavar="N|all",
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


def check(args) -> None:
    """What can be wrong with the options alone, found before TensorFlow loads."""
    check_training_options(args)
    if getattr(args, "init_from", None):
        from transferkit.models.classifier import model_file

        try:
            model_file(args.init_from)
        except FileNotFoundError as exc:
            raise UsageError(f"--init-from: {exc}") from None
    if getattr(args, "mlflow", False):
        import importlib.util

        from transferkit.training.trackers import MISSING

        if importlib.util.find_spec("mlflow") is None:
            raise UsageError(f"--mlflow: {MISSING}")
    if args.views < 1:
        raise UsageError(f"--views {args.views}: give at least 1 augmented view per image.")
    if args.resume and _asks_for_processes(args):
        raise UsageError("--resume: a run of several processes cannot be resumed yet (their checkpoints could hold "
                         "different epochs); start it again with --overwrite.")


def _check_train_args(args):
    """Everything that can be wrong with the options, found before any image is decoded."""
    from transferkit.models.augment import PRESETS

    check_backbone(args)
    if args.augmentation not in PRESETS:
        raise UsageError(f"--augmentation {args.augmentation}: choose one of {', '.join(PRESETS)}.")
    try:
        return _trainer_from_args(args)
    except (ValueError, TypeError) as exc:  # a preset, unfreeze point, learning rate... that cannot work
        raise UsageError(as_options(str(exc), args)) from None


def _trainer_from_args(args):
    from transferkit import ClassifierHead, TwoPhaseTrainer

    trainer = TwoPhaseTrainer(
        backbone=args.backbone, weights=args.weights, backbone_options=dict(args.backbone_option),
        head=ClassifierHead(dropout=args.dropout, hidden_units=args.hidden_units),
        augmentation=None if args.augmentation == "none" else args.augmentation,
        unfreeze_from=args.unfreeze_from, learning_rate=args.learning_rate,
        fine_tune_lr_factor=args.fine_tune_lr_factor, ema_window=args.ema_window, seed=args.seed,
        cache_features=not args.exact, views=args.views, cache_dir=args.cache_dir,
        mixed_precision=args.mixed_precision,
    )
    if args.fine_tune_epochs:
        trainer.check(args.image_size)
    return trainer


def run(args) -> int:
    from transferkit.evaluation.run import RunFolder, summary
    from transferkit.training import distribute
    from transferkit.training.callbacks import PhaseSummary

    distribution = _distribution(args)  # before the backend runs anything: it may split the CPU or join a job
    several = distribute.processes(distribution) > 1
    folder = RunFolder(args.output, overwrite=args.overwrite, resume=args.resume,
                       writes=distribute.process_index() == 0)
    folder.check()
    trainer = _check_train_args(args)
    trainer.distribution = distribution
    try:
        if folder.finished(trainer, args.epochs, args.fine_tune_epochs):
            print(f"The run in {folder.path} has finished all its epochs: nothing to resume, its files are kept as "
                  "they are (--overwrite trains it again).")
            return 0
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(folder.start())
    print(_device_line(trainer.distribution))
    initial = None
    if args.init_from:
        from transferkit import load_model

        initial = load_model(args.init_from)
        args.recorded_split = initial.split  # its validation and test images stay there
    data = load_data(args)
    callbacks = [PhaseSummary()]
    if args.log_dir:
        import keras

        callbacks.append(keras.callbacks.TensorBoard(log_dir=args.log_dir))
    tracking = contextlib.nullcontext()
    if args.mlflow and folder.writes:
        from transferkit.training.trackers import MlflowRun

        tracking = MlflowRun(trainer, run_name=folder.path.name)
        callbacks += tracking.callbacks
    with tracking:
        result = trainer.fit(data, epochs=args.epochs, fine_tune_epochs=args.fine_tune_epochs, callbacks=callbacks,
                             initial_model=initial,
                             checkpoint_dir=None if several else folder.checkpoint,
                             verbose="auto" if sys.stdout.isatty() else 2)  # 2: one plain line an epoch, for logs
        if not folder.writes:
            print(f"Process {distribute.process_index()} of {distribute.processes(distribution)}: trained; "
                  f"process 0 writes the run to its {folder.path}.")
            return 0
        metrics = folder.save(trainer, result, data, split="test" if data.test is not None else "validation")
        if args.mlflow:
            tracking.finish(result, {k: v for k, v in metrics.items() if k not in ("history", "data")},
                            files=metrics["files"])
            print(f"Logged to MLflow: run {tracking.run_id} ({tracking.mlflow.get_tracking_uri()})")
    if args.json:
        print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, default=str), file=args.stdout)
    else:
        print("\n" + summary(metrics))
    return 0


def _asks_for_processes(args) -> bool:
    """Whether ``train`` is one process of several (by its flags or Keras's environment variables)."""
    from transferkit.training.distribute import PROCESS_VARIABLES

    flags = (args.coordinator, args.num_processes, args.process_id)
    return any(value is not None for value in flags) or os.environ.get(PROCESS_VARIABLES[1], "1") not in ("", "1")


def _distribution(args):
    """The distribution for ``--devices`` or the job of several processes (None for one device), made
    before the backend runs anything."""
    import keras

    from transferkit.training import distribute

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

    from transferkit.training import distribute

    count = distribute.replicas(distribution)
    if keras.backend.backend() == "jax":
        import jax

        kinds = ", ".join(sorted({d.platform.upper() for d in jax.devices()}))
        if distribute.processes(distribution) > 1:
            return (f"Training on {count} JAX device(s) ({kinds}) of {distribute.processes(distribution)} "
                    f"processes; this is process {distribute.process_index()}")
        return f"Training on {count} of {len(jax.devices())} JAX device(s) ({kinds})"
    if keras.backend.backend() == "torch":
        import torch

        where = f"the GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "CPU (PyTorch sees no GPU)"
        return f"Training on {where}"
    if distribute.gpu_visible():
        import tensorflow as tf

        names = ", ".join(g.name for g in tf.config.list_physical_devices("GPU"))
        return f"Training on {count} GPU(s) of: {names}"
    if count > 1:
        return f"Training on {count} logical CPU devices (TensorFlow sees no GPU; they share the same cores)"
    return "Training on CPU (TensorFlow sees no GPU)"
