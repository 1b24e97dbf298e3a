"""What several commands share: option types, the data, backbone and model options, loading the data,
and the usage error (exit status 2)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["UsageError", "command_parser", "defaults_of", "data_defaults", "HELP", "split_option", "key_value_option",
           "devices_option", "weights_option", "unfreeze_point_option", "image_size_option", "add_data_options",
           "add_backbone_options", "add_model_options", "load_data", "quiet_data", "check_backbone",
           "check_training_options", "as_options", "size_text"]


class UsageError(ValueError):
    """An option or argument that cannot work; the command exits with 2, as for argparse's errors."""


class HELP(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults as they are typed (``0.8,0.1,0.1``, ``192x192``), and none for flags (whose default
    is only ever off), for options without one, or where the help already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.nargs == 0 or action.default in (None, argparse.SUPPRESS) or "(default" in text:
            return text
        default = action.default
        if isinstance(default, (tuple, list)):
            default = ("x" if action.dest == "image_size" else ",").join(map(str, default))
        return f"{text} (default: {str(default).replace('%', '%%')})"


def unfreeze_point_option(text: str):
    return int(text) if text.lstrip("-").isdigit() else text


def image_size_option(text: str) -> tuple[int, int]:
    """``192`` (square) or ``HEIGHTxWIDTH`` (``96x128``), in pixels."""
    parts = text.lower().split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2:
        raise argparse.ArgumentTypeError(f"{text!r}: give one number of pixels (192) or HEIGHTxWIDTH (96x128).")
    return size


def split_option(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--split {text!r}: give fractions like 0.8,0.1,0.1") from None


def key_value_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--backbone-option {text!r}: write KEY=VALUE, e.g. alpha=0.35")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def devices_option(text: str):
    if text == "all":
        return text
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of devices (1 or more) or 'all'.")
    return count


def weights_option(text: str):
    return None if text.lower() == "none" else text


def ema_window_option(text: str):
    """``none``, or a fraction of a phase over 0 and at most 1."""
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a fraction of the phase (over 0, at most 1) or none")
    return value


def command_parser(commands, name: str, doc: str) -> argparse.ArgumentParser:
    """The parser of command ``name``, its one-line help and its description taken from ``doc`` (the
    command module's docstring: a summary line, a blank line, the description)."""
    summary, _, description = doc.partition("\n\n")
    summary = summary.strip().rstrip(".")
    return commands.add_parser(name, formatter_class=HELP, help=summary[0].lower() + summary[1:],
                               description=" ".join(description.split()) or summary + ".")


def defaults_of(function) -> dict:
    """The default of each argument of ``function`` (a class: its constructor), as the library sets it:
    the options below take their defaults from there, so the command line and the library agree."""
    import inspect

    return {name: parameter.default for name, parameter in inspect.signature(function).parameters.items()
            if parameter.default is not inspect.Parameter.empty}


def data_defaults() -> dict:
    from transferkit.data.folder import ImageFolder  # NumPy and Pillow only: --help stays fast

    return defaults_of(ImageFolder)


def add_data_options(p: argparse.ArgumentParser) -> None:
    data = data_defaults()
    p.add_argument("--image-size", type=image_size_option, default=tuple(data["image_size"]), metavar="SIZE",
                   help="input size in pixels: one number for a square, or HEIGHTxWIDTH (e.g. 96x128)")
    p.add_argument("--batch-size", type=int, default=data["batch_size"], help="images per batch")
    p.add_argument("--split", type=split_option, default=data["split"], metavar="FRACTIONS",
                   help="train,validation[,test] fractions for a folder of class folders "
                        "(ignored when DATA_DIR has train/ and validation/)")
    p.add_argument("--seed", type=int, default=data["seed"], help="seed for the split, shuffling and initialisation")
    p.add_argument("--cache-dir", default=None,
                   help="keep decoded images (and frozen features) here, reused by later runs on the same files")
    add_table_options(p)
    p.add_argument("--exclude", default=None, metavar="FILE",
                   help="leave out the files an audit.json flags, or those a text file lists (one path a line, "
                        "relative to DATA_DIR or to the current folder, as the audit prints them); the run records "
                        "them")


def add_table_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", default=None, metavar="TABLE",
                   help="a CSV file of image paths (relative to DATA_DIR) and labels, instead of class folders; "
                        "a 'split' column, when it has one, says each image's split")
    p.add_argument("--path-column", default="path", help="the --labels column of image paths")
    p.add_argument("--label-column", default="label", help="the --labels column of labels")
    p.add_argument("--split-column", default=None,
                   help="the --labels column of splits (train, validation, test; default: 'split' when present)")
    p.add_argument("--label-separator", default=None, metavar="CHAR",
                   help="several labels per image: the character between an image's labels in --label-column "
                        "(e.g. ';' for 'cat;dog')")
    p.add_argument("--label-columns", default=None, metavar="A,B,...",
                   help="several labels per image: the --labels columns, one per class, that say 1 or 0")


def table_flags(args) -> list[str]:
    """The ``--labels`` options given, as a command line repeats them (a suggestion's ``train with: ...``)."""
    import shlex

    given = [("--labels", getattr(args, "labels", None))]
    if given[0][1]:
        given += [("--path-column", args.path_column if args.path_column != "path" else None),
                  ("--label-column", args.label_column if args.label_column != "label" else None),
                  ("--split-column", args.split_column), ("--label-separator", args.label_separator),
                  ("--label-columns", args.label_columns)]
    return [f"{flag} {shlex.quote(str(value))}" for flag, value in given if value]


def labels_as_recorded(args, classifier) -> None:
    """A model of several labels per image read its table with ``--label-separator`` or ``--label-columns``:
    where neither is given again, take the ones its split record names."""
    columns = ((classifier.split or {}).get("columns") or {}) if classifier.multi_label else {}
    if getattr(args, "labels", None) and not (args.label_separator or args.label_columns):
        args.label_separator = columns.get("label_separator")
        args.label_columns = ",".join(columns["label_columns"]) if columns.get("label_columns") else None


def open_data(args, data_dir, **options):
    """An `ImageTable` of ``--labels`` (paths relative to ``data_dir``) when given, else an `ImageFolder`."""
    if getattr(args, "labels", None):
        from transferkit.data.table import ImageTable

        columns = getattr(args, "label_columns", None)
        return ImageTable(args.labels, data_dir, path_column=args.path_column, label_column=args.label_column,
                          split_column=args.split_column, label_separator=getattr(args, "label_separator", None),
                          label_columns=None if columns is None else [c.strip() for c in columns.split(",") if c.strip()],
                          **options)
    from transferkit import ImageFolder

    return ImageFolder(data_dir, **options)


def add_backbone_options(p: argparse.ArgumentParser) -> None:
    from transferkit.models import defaults

    p.add_argument("--backbone", default=defaults.BACKBONE,
                   help="registered backbone (see: transferkit backbones), or a .keras file of your own feature "
                        "extractor (image in, feature map out)")
    p.add_argument("--weights", type=weights_option, default=defaults.WEIGHTS,
                   help="'imagenet' (Keras cache/download), 'none', or a weights file path")
    p.add_argument("--backbone-option", type=key_value_option, action="append", default=[], metavar="KEY=VALUE",
                   help="backbone constructor option, repeatable (e.g. alpha=0.35)")


def add_model_options(p: argparse.ArgumentParser) -> None:
    from transferkit.models import defaults
    from transferkit.training.settings import FastPath, Recipe

    add_backbone_options(p)
    p.add_argument("--unfreeze-from", type=unfreeze_point_option, default=Recipe.unfreeze_from,
                   help="backbone layer index or block name where fine-tuning starts; auto: the backbone's "
                        "default (see: transferkit backbones)")
    p.add_argument("--learning-rate", type=float, default=Recipe.learning_rate, help="phase-1 learning rate")
    p.add_argument("--fine-tune-lr-factor", type=float, default=Recipe.fine_tune_lr_factor,
                   help="phase-2 learning rate factor")
    p.add_argument("--ema-window", type=ema_window_option, default=Recipe.ema_window, metavar="FRACTION|none",
                   help="each phase ends on a moving average of its weights over this fraction of its steps; "
                        "none: on the last step's weights")
    p.add_argument("--dropout", type=float, default=defaults.HEAD["dropout"], help="dropout before the logits")
    p.add_argument("--hidden-units", type=int, default=defaults.HEAD["hidden_units"],
                   help="optional hidden Dense layer size")
    p.add_argument("--augmentation", default=defaults.AUGMENTATION,
                   help="augmentation preset: none, default, light, strong")
    p.add_argument("--exact", action="store_true",
                   help="run the exact recipe (the whole network every step) instead of training on frozen "
                        "features computed once")
    p.add_argument("--views", type=int, default=FastPath.views,
                   help="views per training image for the fast path (view 0 as it is, the others augmented)")
    p.add_argument("--mixed-precision", action="store_true",
                   help="compute in float16 on a GPU, bfloat16 elsewhere; the logits stay float32")


def load_data(args):
    """The `ImageFolder` (or, with ``--labels``, `ImageTable`) that ``add_data_options`` describes, its report
    printed."""
    exclude = None
    if args.exclude:
        from transferkit.audit import read_exclusions

        exclude = read_exclusions(args.exclude)
    recorded = getattr(args, "recorded_split", None)  # train --init-from: the model's split, kept
    data = open_data(args, args.data_dir, image_size=args.image_size, batch_size=args.batch_size, split=args.split,
                     seed=args.seed, cache_dir=args.cache_dir, verbose=1, exclude=exclude,
                     **({"recorded_split": recorded} if recorded else {}))
    print(data.report, "\n")
    return data


def quiet_data(args):
    """`load_data` without printing (``--json`` keeps stdout for the JSON)."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return load_data(args)


def as_options(message: str, args) -> str:
    """A library message in the command line's words: ``unfreeze_from=500`` becomes ``--unfreeze-from 500``
    for each argument the command has as an option."""
    import re

    names = sorted((name for name in vars(args) if not name.startswith("_")), key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")=")
    return pattern.sub(lambda match: f"--{match.group(1).replace('_', '-')} ", message)


def size_text(size) -> str:
    """``192`` for a square size, ``96x128`` (height x width) otherwise."""
    return str(size[0]) if size[0] == size[1] else "x".join(map(str, size))


def check_training_options(args) -> None:
    """The options ``train`` and ``tune`` share that can be checked without Keras: run before
    TensorFlow loads, so a typo exits 2 at once."""
    from transferkit.data.split import validate_fractions

    for name in ("epochs", "fine_tune_epochs"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)}: give 0 or more epochs.")
    if args.epochs + args.fine_tune_epochs == 0:
        raise UsageError("--epochs 0 and --fine-tune-epochs 0: train for at least one epoch.")
    if min(args.image_size) < 32:
        raise UsageError(f"--image-size {size_text(args.image_size)}: give at least 32 pixels a side.")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size}: give at least 1.")
    if getattr(args, "labels", None) and not Path(args.labels).is_file():
        raise UsageError(f"--labels {args.labels}: no such file; give a CSV file of image paths and labels.")
    if not (Path(args.data_dir) / "train").is_dir():
        try:
            validate_fractions(args.split)
        except ValueError as exc:
            raise UsageError(f"--split: {exc}") from None
    weights = args.weights
    if isinstance(weights, str) and weights.lower() not in ("none", "imagenet") and not Path(weights).is_file():
        raise UsageError(f"--weights {weights}: no such file; give a weights file, 'imagenet' or 'none'.")


def check_backbone(args, model_files: bool = True) -> None:
    """``--backbone`` is registered, or (with ``model_files``) a ``.keras`` file of a model that can serve
    as one, which then replaces the path in ``args`` (the registry needs Keras: checked after
    `check_training_options`, before anything is decoded)."""
    from transferkit import get_backbone_spec, list_backbones

    if str(args.backbone).endswith(".keras"):
        if not model_files:
            raise UsageError(f"--backbone {args.backbone}: a search builds its trials from a registered backbone; "
                             "register your model (register_backbone) to search over it.")
        path = Path(args.backbone).expanduser()
        if not path.is_file():
            raise UsageError(f"--backbone {args.backbone}: no such file; give a registered name or a .keras model.")
        import keras

        try:
            model = keras.saving.load_model(path, compile=False)
            get_backbone_spec(model)
        except (ValueError, TypeError, OSError) as exc:
            raise UsageError(f"--backbone {path}: {exc}") from None
        args.backbone = model
        return
    try:
        get_backbone_spec(args.backbone)
    except KeyError:
        raise UsageError(f"--backbone {args.backbone!r} is not registered; choose one of: "
                         f"{', '.join(list_backbones())}.") from None
