"""Benchmark: the default and the exact recipe on one NVIDIA GPU, with JAX or PyTorch and no TensorFlow.

Written for one short run on a machine that has CUDA JAX (or CUDA PyTorch), NumPy, Pillow, h5py and
matplotlib, but no TensorFlow and no network, and takes a limited amount of files with it. Two steps:

    python benchmarks/gpu.py make-kit                 # here, with ../shared and PyPI: writes .gpu-kit/ (~50 MB)
    python3 benchmarks/gpu.py run --kit .gpu-kit      # there: installs the kit's wheels, runs, prints a table

``make-kit`` writes what travels: the cats-vs-dogs photos (train 1000 + 1000, validation 400 + 400)
and the 400 web photos, each decoded with EXIF orientation, squashed to 224 x 224 as `ImageFolder`
squashes (bilinear) and saved as JPEG quality 85; the MobileNetV2 ImageNet weights (a copy of
../shared's file); and the wheels of Keras, KerasTuner and what they need that such a machine lacks,
for its Python (``--python``, 3.12 by default). ``.gpu-kit/`` is ignored by git: it is carried, never
committed. The 192 px runs read the 224 px copies and resize them again.

``run`` installs the wheels into a folder of its own (``pip install --no-index --target``), then runs
each recipe in a fresh process, on each backend asked for (``--backend jax torch``; JAX alone by
default): the default recipe, the exact recipe, the default recipe at 224 px and the default recipe with
mixed precision. For each it prints the wall time of each phase, the training images per second of each
phase (images x epochs / seconds; phase 1 includes computing the cached features), the GPU's peak
memory, the validation and web-photo accuracy, and the whole run's wall
time. It is meant to end within 8 minutes on one GPU, installs included (not yet run on one: no GPU has
been lent to measure it); ``--runs`` and ``--epochs 1 --fine-tune-epochs 1`` trim it, and each finished
run's JSON line is printed as it ends. docs/howto/platforms.md says how it is started.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
WEIGHTS_NAME = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
#: What a GPU machine without TensorFlow lacks of Keras's and KerasTuner's dependencies (the rest, NumPy,
#: h5py, rich, absl-py, ml-dtypes, packaging, six, requests, scipy, tensorboard, are there).
WHEELS = ("keras", "keras-tuner", "kt-legacy", "namex", "optree")
RECIPES = {
    "default": {},
    "exact": {"cache_features": False},
    "default, 224 px": {"image_size": 224},
    "default, mixed precision": {"mixed_precision": True},
}


def make_kit(args) -> int:
    """Write the photos, weights and wheels that travel to the GPU machine into ``args.out``."""
    import numpy as np
    from PIL import Image

    from transferkit.data.images import read_image

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        sys.exit(f"error: {out} exists; pass --overwrite to write the kit again.")
    shutil.rmtree(out, ignore_errors=True)
    sources = {"data/train": Path(args.data) / "train", "data/validation": Path(args.data) / "validation",
               "web": Path(args.web)}
    count = 0
    for target, source in sources.items():
        if not source.is_dir():
            sys.exit(f"error: {source} is not a folder of class folders (pass --data / --web).")
        for class_folder in sorted(p for p in source.iterdir() if p.is_dir()):
            files = sorted(p for p in class_folder.iterdir() if p.is_file() and not p.name.startswith("."))
            if args.per_class:
                files = files[: args.per_class]
            (out / target / class_folder.name).mkdir(parents=True)
            for path in files:
                try:
                    pixels = read_image(path, (args.size, args.size))
                except ValueError:  # an unreadable photo is left out, as ImageFolder would skip it
                    continue
                Image.fromarray(np.asarray(pixels)).save(out / target / class_folder.name / f"{path.stem}.jpg",
                                                         quality=85)
                count += 1
    if args.weights and Path(args.weights).is_file():
        shutil.copy(args.weights, out / WEIGHTS_NAME)
    if not args.no_wheels:
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", args.python, "--implementation", "cp", "-d", str(out / "wheels")]
        pip += [f"--platform=manylinux_2_{n}_x86_64" for n in (17, 27, 28)] + ["--platform=manylinux2014_x86_64"]
        subprocess.run(pip + [_pinned(name) for name in WHEELS], check=True)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {count} photos at {args.size} px, {size / 2**20:.1f} MiB in all")
    return 0


def _pinned(name: str) -> str:
    """``name==version`` of the package installed here, so the kit runs what the tests here ran."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{name}=={version(name)}"
    except PackageNotFoundError:
        return name


def install(kit: Path) -> Path | None:
    """Install the kit's wheels into a folder of their own; that folder, or None when there are none."""
    wheels = sorted((kit / "wheels").glob("*.whl"))
    if not wheels:
        return None
    site = Path(tempfile.gettempdir()) / "transferkit-gpu-site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
                    "--upgrade", "--target", str(site), *map(str, wheels)], check=True)
    return site


def run(args) -> int:
    """Each recipe in a process of its own; a table at the end."""
    kit = Path(args.kit).resolve()
    start = time.perf_counter()
    site = install(kit)
    installed = time.perf_counter() - start
    path = os.pathsep.join(str(p) for p in (site, REPO) if p) + os.pathsep + os.environ.get("PYTHONPATH", "")
    print(f"wheels installed in {installed:.0f} s", flush=True)
    rows = []
    for backend in args.backend:
        env = {**os.environ, "KERAS_BACKEND": backend, "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "PYTHONPATH": path}
        for name in args.runs:
            settings = {**RECIPES[name], "epochs": args.epochs, "fine_tune_epochs": args.fine_tune_epochs,
                        "image_size": RECIPES[name].get("image_size", args.image_size), "weights": args.weights,
                        "backbone": args.backbone}
            done = subprocess.run([sys.executable, __file__, "one", "--kit", str(kit), "--settings",
                                   json.dumps(settings)], env=env, capture_output=True, text=True)
            label = f"{name} ({backend})"
            if done.returncode != 0:
                lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
                rows.append({"name": label, "error": lines[-1] if lines else f"exit status {done.returncode}"})
            else:
                rows.append({"name": label, **json.loads(done.stdout.strip().splitlines()[-1])})
            print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    print(f"whole benchmark: {time.perf_counter() - start:.0f} s")
    return 0 if all("error" not in r for r in rows) else 1


def table(rows: list[dict]) -> str:
    lines = ["| run | device | phase 1 | phase 2 | images/s (1 / 2) | GPU memory (peak) | validation | web photos "
             "| whole run |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: {r['error']} | | | | | | | |")
            continue
        memory = "n/a" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f} MiB"
        web = "n/a" if r["web_accuracy"] is None else f"{100 * r['web_accuracy']:.2f}%"
        lines.append(f"| {r['name']} | {r['device']} | {r['phase_seconds'][0]:.1f} s | {r['phase_seconds'][1]:.1f} s | "
                     f"{r['images_per_second'][0]:.0f} / {r['images_per_second'][1]:.0f} | {memory} | "
                     f"{100 * r['val_accuracy']:.2f}% | {web} | {r['wall']:.0f} s |")
    return "\n".join(lines)


def one(args) -> int:
    """One recipe in this process: prints one JSON line."""
    start = time.perf_counter()
    kit = Path(args.kit)
    settings = json.loads(args.settings)
    import keras

    from transferkit import ImageFolder, TwoPhaseTrainer
    from transferkit.evaluation import evaluate

    size = (settings["image_size"], settings["image_size"])
    weights = settings["weights"]
    if weights == "kit":
        weights = str(kit / WEIGHTS_NAME) if (kit / WEIGHTS_NAME).is_file() else None
    elif weights == "none":
        weights = None
    data = ImageFolder(kit / "data", image_size=size, batch_size=32, seed=1)
    trainer = TwoPhaseTrainer(backbone=settings["backbone"], weights=weights, seed=1,
                              cache_features=settings.get("cache_features", True),
                              mixed_precision=settings.get("mixed_precision", False))
    result = trainer.fit(data, epochs=settings["epochs"], fine_tune_epochs=settings["fine_tune_epochs"], verbose=0)
    validation = evaluate(result.classifier, data, split="validation").accuracy
    web = None
    if (kit / "web").is_dir():
        web = evaluate(result.classifier, ImageFolder(kit / "web", image_size=size, split=(0.5, 0.5), seed=0),
                       split="all").accuracy
    images = len(data.files("train"))
    p1, p2 = result.phase_seconds
    print(json.dumps({
        "backend": keras.backend.backend(), "device": _device(), "phase_seconds": [p1, p2],
        "images_per_second": [images * settings["epochs"] / max(p1, 1e-9),
                              images * settings["fine_tune_epochs"] / max(p2, 1e-9)],
        "peak_memory_mb": _peak_memory_mb(), "val_accuracy": validation, "web_accuracy": web,
        "wall": time.perf_counter() - start, "image_size": settings["image_size"]}))
    return 0


def _device() -> str:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        return getattr(device, "device_kind", device.platform)
    if keras.backend.backend() == "torch":
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    return "CPU"


def _peak_memory_mb() -> float | None:
    """The GPU's peak memory in use during the run (None on the CPU)."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "gpu":
            return None
        return device.memory_stats().get("peak_bytes_in_use", 0) / 2**20
    if keras.backend.backend() == "torch":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    kit = commands.add_parser("make-kit", help="write the photos, weights and wheels that travel")
    kit.add_argument("--out", default=str(REPO / ".gpu-kit"))
    kit.add_argument("--data", default=str(SHARED / "data" / "cats_vs_dogs"))
    kit.add_argument("--web", default=str(SHARED / "data" / "cats_vs_dogs_web"))
    kit.add_argument("--weights", default=str(SHARED / "weights" / WEIGHTS_NAME))
    kit.add_argument("--size", type=int, default=224, help="square size of the copies, in pixels")
    kit.add_argument("--per-class", type=int, default=None, help="only the first N photos of each class folder")
    kit.add_argument("--python", default="3.12", help="the GPU machine's Python, for the wheels")
    kit.add_argument("--no-wheels", action="store_true", help="leave the wheels out (Keras is there already)")
    kit.add_argument("--overwrite", action="store_true")
    go = commands.add_parser("run", help="install the wheels and run the recipes")
    go.add_argument("--kit", default=str(REPO / ".gpu-kit"))
    go.add_argument("--backend", nargs="+", choices=("jax", "torch"), default=["jax"],
                    help="one or both, each running every recipe")
    go.add_argument("--runs", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    go.add_argument("--epochs", type=int, default=10)
    go.add_argument("--fine-tune-epochs", type=int, default=10)
    go.add_argument("--image-size", type=int, default=192, help="the size of the runs that name none")
    go.add_argument("--weights", default="kit", help="'kit' (the kit's ImageNet file), 'none', or a .h5 path")
    go.add_argument("--backbone", default="mobilenet_v2")
    single = commands.add_parser("one", help=argparse.SUPPRESS)
    single.add_argument("--kit", required=True)
    single.add_argument("--settings", required=True)
    args = parser.parse_args(argv)
    return {"make-kit": make_kit, "run": run, "one": one}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
