"""Export a saved model.

Write the model as .keras, a TensorFlow SavedModel, TFLite (float32, float16, int8, full-integer
int8) or ONNX. Class names and image size go with it: inside a .tflite file as TFLite metadata (an
.onnx file: in its metadata), and beside it as labels.txt and transferkit.json. With --data-dir, the
export is compared with the Keras model on the held-out images and the result recorded
(OUTPUT.parity.json).
"""

from __future__ import annotations

import sys
from pathlib import Path

from transferkit.cli.options import UsageError, add_table_options, command_parser, labels_as_recorded, open_data

#: An export that gives another class than the Keras model on more than 2% of the held-out images is
#: not the model that was evaluated (on the demo's 800 validation photos float32 and float16 agree on all,
#: int8 on 99.88%: the README's parity table).
DEFAULT_MIN_AGREEMENT = 0.98


def add_parser(commands) -> None:
    p = command_parser(commands, "export", __doc__)
    p.add_argument("model", metavar="MODEL", help="a .keras file saved by transferkit, or the run folder holding it")
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
    add_table_options(p)
    p.add_argument("--min-agreement", type=float, default=DEFAULT_MIN_AGREEMENT, metavar="FRACTION",
                   help="with --data-dir: the share of held-out images on which the export must give the Keras "
                        "model's class; below it the command says so and exits 1 (the export stays written)")


def check(args) -> None:
    """What can be wrong with the options alone, found before TensorFlow loads."""
    if args.integer_io and args.quantize != "int8":
        raise UsageError(f"--integer-io {args.integer_io} needs --quantize int8 (a full-integer model).")
    if args.format != "tflite" and (args.quantize or not args.metadata):
        raise UsageError("--quantize and --no-metadata apply to --format tflite only.")
    if args.quantize == "int8" and not args.data_dir:
        raise UsageError("--quantize int8 needs --data-dir: training images to calibrate the quantization.")
    if not 0 <= args.min_agreement <= 1:
        raise UsageError(f"--min-agreement {args.min_agreement}: give a fraction from 0 to 1.")


def run(args) -> int:
    import numpy as np

    from transferkit import load_model
    from transferkit.export import export
    from transferkit.export.parity import PARITY_SUFFIX, check_parity
    from transferkit.models.classifier import model_file

    model_path = model_file(args.model)  # a run folder: its model.keras, and the exports go beside it
    classifier = load_model(model_path)
    suffix = "".join(f"_{x}" for x in (args.quantize, args.integer_io and f"{args.integer_io}io") if x)
    default = {"keras": model_path.with_name(model_path.stem + "_export.keras"),
               "savedmodel": model_path.with_name(model_path.stem + "_savedmodel"),
               "tflite": model_path.with_name(model_path.stem + suffix + ".tflite"),
               "onnx": model_path.with_name(model_path.stem + ".onnx")}
    output = Path(args.output) if args.output else default[args.format]
    data = None
    if args.data_dir:
        split = classifier.split["files"] if classifier.split is not None else (0.8, 0.1, 0.1)
        labels_as_recorded(args, classifier)
        data = open_data(args, args.data_dir, image_size=classifier.image_size, split=split, verbose=1)
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
    if parity.agreement < args.min_agreement:
        print(f"transferkit export: {path.name} gives the Keras model's class on only {parity.agreement:.1%} of the "
              f"{len(parity.labels)} {split} images, below --min-agreement {args.min_agreement:.0%}: it is not the "
              "model that was evaluated. Try another quantization (float16), more --calibration-images, or pass "
              "a lower --min-agreement to accept it.", file=sys.stderr)
        return 1
    return 0
