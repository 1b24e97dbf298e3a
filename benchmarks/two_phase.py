"""Benchmark: the plain Keras tutorial recipe against transferkit, same data and weights, one process.

    python benchmarks/two_phase.py                          # the full run (all images; 10 + 10 epochs for the
                                                            # reference, transferkit's own defaults for it)
    python benchmarks/two_phase.py --quick                  # 1 + 1 epochs on 400 + 200 images
    python benchmarks/two_phase.py --modes exact cached     # which transferkit modes to run
    python benchmarks/two_phase.py --variant 'p224:{"image_size": 224, "unfreeze_from": "block_13"}'
                                                            # a named transferkit run with its own settings
    python benchmarks/two_phase.py --rounds 2               # reference and transferkit interleaved, twice

(a) reference: written out by hand as in the TensorFlow tutorial: image_dataset_from_directory,
    flip + rotation layers, preprocess_input, base_model(x, training=False), Adam 1e-4; then layers
    from 100 on unfrozen, RMSprop 1e-5 (the tutorial's initial_epoch off-by-one fixed, so both run
    the same number of epochs).
(b) transferkit: ImageFolder + TwoPhaseTrainer (each mode given), including decoding.

Prints one line per figure and, last, the total-time ratio reference / transferkit (default mode).
With ``--rounds N`` the runs are interleaved: N rounds of the reference and transferkit one after the
other (in turn first), since this machine's speed drifts within a run; each round's ratio is printed, and
the ratio of the summed times. The figures above them are the last round's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from transferkit._internal.memory import peak_rss_mb
from transferkit.cli.options import data_defaults
from transferkit.training.settings import EPOCHS, FINE_TUNE_EPOCHS

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
DATA = SHARED / "data" / "cats_vs_dogs"
WEB = SHARED / "data" / "cats_vs_dogs_web"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def reset_peak_rss() -> None:
    try:  # Linux: resets VmHWM so the next reading is this part's peak
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def subset(source: Path, target: Path, per_class: dict[str, int]) -> Path:
    """Link the first N images of each class of each split into ``target`` (for --quick / --images)."""
    for split, n in per_class.items():
        for class_dir in sorted((source / split).iterdir()):
            dest = target / split / class_dir.name
            dest.mkdir(parents=True, exist_ok=True)
            for f in sorted(class_dir.iterdir())[:n]:
                os.symlink(f, dest / f.name)
    return target


def web_accuracy_reference(model, web_dir: Path, size: int, pillow: bool = False) -> float:
    """Accuracy of the reference model (logits out) on another source's photos, read as it read its training data
    (with ``pillow``, by transferkit's decoding)."""
    import keras

    if pillow:
        images, labels = pillow_arrays(web_dir, size, split=None)
        logits = model.predict(images.astype("float32"), batch_size=32, verbose=0)[:, 0]
    else:
        web = keras.utils.image_dataset_from_directory(web_dir, shuffle=False, batch_size=32, image_size=(size, size))
        labels = np.concatenate([y.numpy() for _, y in web])
        logits = model.predict(web, verbose=0)[:, 0]
    return float(np.mean((logits > 0).astype(int) == labels))


def pillow_arrays(folder: Path, size: int, split: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The images of ``folder/split`` (class folders; ``split=None``: ``folder`` itself) decoded and resized as
    transferkit does (Pillow, bilinear with its antialiasing, JPEG draft), with labels in class-name order as
    ``image_dataset_from_directory`` gives them."""
    from transferkit.data import read_image

    root = folder / split if split else folder
    images, labels = [], []
    for label, name in enumerate(sorted(p.name for p in root.iterdir() if p.is_dir())):
        for path in sorted(p for p in (root / name).iterdir() if p.is_file()):
            images.append(read_image(path, (size, size)))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype="int32")


def web_accuracy(classifier, web_dir: Path, tta: bool = False) -> float:
    """Accuracy of a transferkit classifier on another source's photos (class folders named as in training);
    with ``tta``, averaged over each photo and its mirror image."""
    files, labels = [], []
    for label, name in enumerate(classifier.class_names):
        found = sorted(p for p in (web_dir / name).iterdir() if p.is_file())
        files += found
        labels += [label] * len(found)
    probabilities = classifier.predict(files, batch_size=32, tta=tta)
    return float(np.mean(np.argmax(probabilities, axis=-1) == np.asarray(labels)))


def reference(data_dir: Path, weights: str, size: int, epochs: int, fine_tune_epochs: int, seed: int,
              pillow: bool = False) -> dict:
    """The tutorial's recipe; with ``pillow`` its images are decoded and resized as transferkit does, everything
    else unchanged (to measure what the resizing alone does)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    shape = (size, size)
    if pillow:
        def loaded(split, shuffle):
            images, labels = pillow_arrays(data_dir, size, split)
            found = tf.data.Dataset.from_tensor_slices((images, labels))
            if shuffle:
                found = found.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
            return found.batch(32).map(lambda x, y: (tf.cast(x, tf.float32), y))

        train, validation = loaded("train", True), loaded("validation", False)
    else:
        train = keras.utils.image_dataset_from_directory(data_dir / "train", shuffle=True, batch_size=32,
                                                         image_size=shape, seed=seed)
        validation = keras.utils.image_dataset_from_directory(data_dir / "validation", shuffle=True, batch_size=32,
                                                              image_size=shape, seed=seed)
    train, validation = train.prefetch(tf.data.AUTOTUNE), validation.prefetch(tf.data.AUTOTUNE)
    augmentation = keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.2)])
    base = keras.applications.MobileNetV2(input_shape=shape + (3,), include_top=False, weights=weights)
    base.trainable = False
    inputs = keras.Input(shape + (3,))
    x = augmentation(inputs)
    x = keras.applications.mobilenet_v2.preprocess_input(x)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=keras.losses.BinaryCrossentropy(from_logits=True),
                  metrics=[keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")])
    start = time.perf_counter()
    first = model.fit(train, epochs=epochs, validation_data=validation, verbose=2)
    phase1 = time.perf_counter() - start
    base.trainable = True
    for layer in base.layers[:100]:
        layer.trainable = False
    model.compile(optimizer=keras.optimizers.RMSprop(1e-5), loss=keras.losses.BinaryCrossentropy(from_logits=True),
                  metrics=[keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")])
    start = time.perf_counter()
    second = model.fit(train, epochs=len(first.epoch) + fine_tune_epochs, initial_epoch=len(first.epoch),
                       validation_data=validation, verbose=2)
    phase2 = time.perf_counter() - start
    return {"prep_s": 0.0, "phase1_s": phase1, "phase2_s": phase2,
            "val_acc_phase1": first.history["val_accuracy"][-1], "val_acc_phase2": second.history["val_accuracy"][-1],
            "model": model}


def transferkit_run(data_dir: Path, weights: str, size: int, epochs: int, fine_tune_epochs: int, seed: int,
                    mode: str, options: dict) -> dict:
    from transferkit import ImageFolder, TwoPhaseTrainer

    options = dict(options)
    size = int(options.pop("image_size", size))
    epochs = int(options.pop("epochs", epochs))  # a variant may train its own epochs; the reference keeps --epochs
    fine_tune_epochs = int(options.pop("fine_tune_epochs", fine_tune_epochs))
    start = time.perf_counter()
    data = ImageFolder(data_dir, image_size=(size, size), batch_size=32, seed=seed)
    prep = time.perf_counter() - start
    if mode == "exact":
        options["cache_features"] = False
    trainer = TwoPhaseTrainer(weights=weights, seed=seed, **options)
    result = trainer.fit(data, epochs=epochs, fine_tune_epochs=fine_tune_epochs, verbose=2)
    return {"prep_s": prep, "phase1_s": result.phase_seconds[0], "phase2_s": result.phase_seconds[1],
            "val_acc_phase1": result.final("val_accuracy", 1), "val_acc_phase2": result.final("val_accuracy", 2),
            "classifier": result.classifier, "data": data, "epochs_trained": epochs + fine_tune_epochs}


def inference(classifier, data, seconds: dict) -> None:
    """Batch prediction throughput of the saved model and of its TFLite export."""
    from transferkit import load_model
    from transferkit.export import TFLiteClassifier, export

    images = data.images("validation").astype("float32")
    folder = Path(tempfile.mkdtemp())
    loaded = load_model(classifier.save(folder / "m.keras"))
    loaded.predict(images[:64], batch_size=32)
    start = time.perf_counter()
    loaded.predict(images, batch_size=32)
    seconds["keras_images_per_s"] = len(images) / (time.perf_counter() - start)
    lite = TFLiteClassifier(export(loaded, folder / "m.tflite", format="tflite"))
    lite.predict(images[:32])
    start = time.perf_counter()
    lite.predict(images, batch_size=32)
    seconds["tflite_images_per_s"] = len(images) / (time.perf_counter() - start)
    shutil.rmtree(folder, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(DATA), help="train/ and validation/ of class folders")
    p.add_argument("--weights", default=str(WEIGHTS), help="MobileNetV2 weights (.h5 or 'imagenet')")
    p.add_argument("--epochs", type=int, default=10, help="the reference's phase-1 epochs (the tutorial's 10)")
    p.add_argument("--fine-tune-epochs", type=int, default=10, help="the reference's phase-2 epochs (the tutorial's 10)")
    p.add_argument("--tk-epochs", type=int, default=None,
                   help=f"transferkit's phase-1 epochs (default: the library's, {EPOCHS})")
    p.add_argument("--tk-fine-tune-epochs", type=int, default=None,
                   help=f"transferkit's phase-2 epochs (default: the library's, {FINE_TUNE_EPOCHS})")
    p.add_argument("--image-size", type=int, default=160, help="the reference's input size")
    p.add_argument("--tk-image-size", type=int, default=data_defaults()["image_size"][0],
                   help="transferkit's input size (default: the library's, %(default)s); a --variant may set "
                        "image_size")
    p.add_argument("--images", type=int, default=None, help="train images per class (validation: 40%%)")
    p.add_argument("--quick", action="store_true", help="1 + 1 epochs on 200 + 80 images per class")
    p.add_argument("--modes", nargs="*", default=["cached"], choices=["cached", "exact"],
                   help="transferkit modes to run; the first is the one the ratio uses")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:JSON",
                   help="a named transferkit run with its own TwoPhaseTrainer arguments (and image_size, epochs, "
                        "fine_tune_epochs), after the modes; repeatable")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--options", default="{}", help="JSON of extra TwoPhaseTrainer arguments, e.g. '{\"views\": 4}'")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--web-dir", default=str(WEB),
                   help="photos from another source (class folders) to report accuracy on; skipped if absent")
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--rounds", type=int, default=1,
                   help="interleave the reference and transferkit runs this many times (each round's order in turn)")
    args = p.parse_args(argv)

    data_dir = Path(args.data_dir)
    if not (data_dir / "train").is_dir():
        sys.exit(f"error: {data_dir} has no train/ folder; pass --data-dir")
    epochs, fine = args.epochs, args.fine_tune_epochs
    tk_epochs = EPOCHS if args.tk_epochs is None else args.tk_epochs
    tk_fine = FINE_TUNE_EPOCHS if args.tk_fine_tune_epochs is None else args.tk_fine_tune_epochs
    per_class = args.images
    if args.quick:
        epochs, fine, tk_epochs, tk_fine, per_class = 1, 1, 1, 1, per_class or 200
    if per_class:
        data_dir = subset(data_dir, Path(tempfile.mkdtemp()) / "subset",
                          {"train": per_class, "validation": max(1, int(per_class * 0.4))})
    options = json.loads(args.options)
    web_dir = Path(args.web_dir) if args.web_dir and Path(args.web_dir).is_dir() else None
    runs_to_do = {mode: (mode, options) for mode in args.modes}  # name: (mode, TwoPhaseTrainer options)
    for spec in args.variant:
        name, _, text = spec.partition(":")
        runs_to_do[name] = ("cached", {**options, **json.loads(text)})
    rounds = []
    for round_index in range(max(1, args.rounds)):
        order = ([] if args.skip_reference else ["reference"]) + list(runs_to_do)
        if round_index % 2:
            order.reverse()
        runs = {}
        for name in order:
            reset_peak_rss()
            if name == "reference":
                run = reference(data_dir, args.weights, args.image_size, epochs, fine, args.seed)
            else:
                mode, run_options = runs_to_do[name]
                run = transferkit_run(data_dir, args.weights, args.tk_image_size, tk_epochs, tk_fine, args.seed, mode,
                                      run_options)
            run["peak_rss_mb"] = peak_rss_mb()
            run["total_s"] = run["prep_s"] + run["phase1_s"] + run["phase2_s"]
            if web_dir and name == "reference":
                run["web_acc"] = web_accuracy_reference(run["model"], web_dir, args.image_size)
            elif web_dir:
                run["web_acc"] = web_accuracy(run["classifier"], web_dir)
                run["web_acc_tta"] = web_accuracy(run["classifier"], web_dir, tta=True)
            runs[name] = run
            print(f"round {round_index + 1}: {name} took {run['total_s']:.1f} s", flush=True)
        rounds.append({name: runs[name]["total_s"] for name in order})
    first_mode = next(iter(runs_to_do))
    inference(runs[first_mode]["classifier"], runs[first_mode]["data"], runs[first_mode])

    n_train = len(runs[first_mode]["data"].labels("train"))
    print(f"\n== {n_train} training images, {args.image_size} px, {epochs} + {fine} epochs, options {options}")
    figures = {}
    for name, run in runs.items():
        total = run["total_s"]
        label = "reference" if name == "reference" else f"transferkit[{name}]"
        print(f"{label} data preparation: {run['prep_s']:.1f} s")
        print(f"{label} phase 1 wall time: {run['phase1_s']:.1f} s")
        print(f"{label} phase 2 wall time: {run['phase2_s']:.1f} s")
        print(f"{label} total wall time: {total:.1f} s")
        print(f"{label} training images/s: {n_train * run.get('epochs_trained', epochs + fine) / total:.1f}")
        print(f"{label} peak RSS: {run['peak_rss_mb']:.0f} MiB")
        print(f"{label} val accuracy after phase 1: {run['val_acc_phase1']:.4f}")
        print(f"{label} val accuracy after phase 2: {run['val_acc_phase2']:.4f}")
        if "web_acc" in run:
            print(f"{label} web photos accuracy: {run['web_acc']:.4f}")
        if "web_acc_tta" in run:
            print(f"{label} web photos accuracy, mirror TTA: {run['web_acc_tta']:.4f}")
        figures[name] = {k: v for k, v in run.items() if isinstance(v, (int, float))}
    print(f"transferkit[{first_mode}] saved model predict: {runs[first_mode]['keras_images_per_s']:.1f} images/s")
    print(f"transferkit[{first_mode}] TFLite predict: {runs[first_mode]['tflite_images_per_s']:.1f} images/s")
    if "reference" in runs:
        ref = runs["reference"]
        for name in runs_to_do:
            run = runs[name]
            print(f"ratio reference/transferkit[{name}] phase 1: {ref['phase1_s'] / (run['prep_s'] + run['phase1_s']):.2f}")
            print(f"ratio reference/transferkit[{name}] phase 2: {ref['phase2_s'] / run['phase2_s']:.2f}")
            print(f"accuracy difference transferkit[{name}] - reference after phase 2: "
                  f"{100 * (run['val_acc_phase2'] - ref['val_acc_phase2']):+.2f} points")
        if len(rounds) > 1:
            for i, times in enumerate(rounds, start=1):
                print(f"round {i}: reference {times['reference']:.1f} s, transferkit[{first_mode}] "
                      f"{times[first_mode]:.1f} s, ratio {times['reference'] / times[first_mode]:.2f}")
            print(f"total-time ratio over {len(rounds)} interleaved rounds (summed times): "
                  f"{sum(t['reference'] for t in rounds) / sum(t[first_mode] for t in rounds):.2f}")
        print(f"total-time ratio reference/transferkit[{first_mode}]: "
              f"{ref['total_s'] / runs[first_mode]['total_s']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({**figures, "rounds": rounds}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
