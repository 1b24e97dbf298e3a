"""Benchmark: peak memory of transferkit's default recipe as the training set grows.

    python benchmarks/scale.py                               # 2,000 and 20,000 training images
    python benchmarks/scale.py --sizes 2000 20000 100000 --image-size 96 --pipeline pydataset
    python benchmarks/scale.py --sizes 500 2000 --in-memory 2000  # a quick look; 2,000 also without cache_dir

Makes each training set from the photos in ``../shared/data/cats_vs_dogs/train``: the photos
themselves, then as many new images as needed, each a photo randomly cropped, flipped, rotated, its
colours jittered, resized and re-encoded as JPEG (written once into ``--work-dir`` and reused).
The validation set is the shared one. Then, in a fresh process per run, it trains
``ImageFolder(..., cache_dir=...)`` + ``TwoPhaseTrainer(cache_dir=...)`` with its defaults (the recorded
figures used 3 views, the default then) and prints: decode, phase-1 (including computing the features)
and phase-2 times, the features' time (phase 1 less its epochs) and each phase's epoch time, and a table
of them per training image; peak resident memory (VmHWM) and its anonymous part (sampled every 50 ms);
the cache's size on disk; validation accuracy. Last, how peak memory grew from the smallest to the largest set.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
DATA = SHARED / "data" / "cats_vs_dogs"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


# -- making the larger sets ----------------------------------------------------------------------

def _variant(job) -> None:
    source, target, seed = job
    from PIL import Image, ImageEnhance, ImageOps

    rng = np.random.default_rng(seed)
    with Image.open(source) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
    w, h = image.size
    scale, aspect = np.sqrt(rng.uniform(0.6, 1.0)), rng.uniform(0.8, 1.25)
    cw, ch = min(w, int(w * scale * np.sqrt(aspect))), min(h, int(h * scale / np.sqrt(aspect)))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    image = image.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    image = image.rotate(rng.uniform(-12, 12), resample=Image.BILINEAR, expand=False)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhance(image).enhance(rng.uniform(0.75, 1.25))
    side = int(rng.integers(240, 500))
    image.thumbnail((side, side))
    image.save(target, "JPEG", quality=int(rng.integers(70, 96)))


def make_training_set(source: Path, target: Path, size: int, workers: int) -> Path:
    """``target/train/<class>/``: ``size`` images split evenly over the classes of ``source/train``;
    ``target/validation`` links to ``source/validation``."""
    classes = sorted(p for p in (source / "train").iterdir() if p.is_dir())
    per_class = size // len(classes)
    jobs = []
    for c, class_dir in enumerate(classes):
        dest = target / "train" / class_dir.name
        dest.mkdir(parents=True, exist_ok=True)
        photos = sorted(class_dir.iterdir())
        for k in range(per_class):
            photo = photos[k % len(photos)]
            out = dest / (f"{photo.stem}{photo.suffix}" if k < len(photos) else f"{photo.stem}_v{k // len(photos)}.jpg")
            if out.exists() or out.is_symlink():
                continue
            if k < len(photos):
                os.symlink(photo.resolve(), out)
            else:
                jobs.append((str(photo), str(out), c * 10_000_000 + k))
    if not (target / "validation").exists():
        os.symlink((source / "validation").resolve(), target / "validation")
    if jobs:
        start = time.perf_counter()
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_variant, jobs, chunksize=64))
        print(f"made {len(jobs)} new images for {target.name} in {time.perf_counter() - start:.0f} s", flush=True)
    return target


# -- one run, in a process of its own -------------------------------------------------------------

def _status() -> dict[str, int]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) // 1024 for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile") if k in fields}


class MemorySampler(threading.Thread):
    """Largest anonymous and file-backed resident memory seen, every ``interval`` seconds."""

    def __init__(self, interval: float = 0.05):
        super().__init__(daemon=True)
        self.interval, self.peak, self._done = interval, {}, threading.Event()

    def run(self):
        while not self._done.is_set():
            for k, v in _status().items():
                self.peak[k] = max(self.peak.get(k, 0), v)
            time.sleep(self.interval)

    def stop(self) -> dict[str, int]:
        self._done.set()
        self.join()
        return self.peak


def _disk_mib(folder: Path) -> float:
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file()) / 2**20


class EpochTimes:
    """Wall time of each epoch (validation included), both phases in order; a Keras callback made on
    first use so that this module imports no Keras."""

    def __new__(cls):
        import keras

        class _EpochTimes(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.seconds, self._start = [], 0.0

            def on_epoch_begin(self, epoch, logs=None):
                self._start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds.append(time.perf_counter() - self._start)

        return _EpochTimes()


def child(args) -> None:
    sampler = MemorySampler()
    sampler.start()
    from transferkit import ImageFolder, TwoPhaseTrainer

    cache = Path(args.cache_dir) if args.cache_dir else None
    start = time.perf_counter()
    data = ImageFolder(args.child, image_size=(args.image_size,) * 2, batch_size=32, seed=args.seed, cache_dir=cache)
    decode = time.perf_counter() - start
    after_decode = _status()
    trainer = TwoPhaseTrainer(weights=args.weights, seed=args.seed, cache_dir=cache)
    epochs = EpochTimes()
    result = trainer.fit(data, epochs=args.epochs, fine_tune_epochs=args.fine_tune_epochs, verbose=2,
                         callbacks=[epochs])
    peak = sampler.stop()
    phase1_epochs, phase2_epochs = epochs.seconds[: args.epochs], epochs.seconds[args.epochs:]
    from transferkit.data.pipeline import pipeline_kind

    print("RESULT " + json.dumps({
        "train_images": len(data.labels("train")), "decode_s": decode, "pipeline": pipeline_kind(),
        "phase1_s": result.phase_seconds[0], "phase2_s": result.phase_seconds[1],
        "features_s": result.phase_seconds[0] - sum(phase1_epochs),  # phase 1 less its epochs
        "phase1_epoch_s": float(np.mean(phase1_epochs)), "phase2_epoch_s": float(np.mean(phase2_epochs)),
        "peak_rss_mib": _status()["VmHWM"], "peak_anon_mib": peak.get("RssAnon"),
        "rss_after_decode_mib": after_decode["VmRSS"],
        "cache_mib": _disk_mib(cache) if cache else 0.0,
        "val_acc_phase1": result.final("val_accuracy", 1), "val_acc_phase2": result.final("val_accuracy", 2),
    }), flush=True)


def run_one(data_dir: Path, cache_dir: Path | None, args) -> dict:
    env = {**os.environ, **({"TRANSFERKIT_PIPELINE": args.pipeline} if args.pipeline else {})}
    command = [sys.executable, __file__, "--child", str(data_dir), "--weights", args.weights,
               "--image-size", str(args.image_size), "--epochs", str(args.epochs),
               "--fine-tune-epochs", str(args.fine_tune_epochs), "--seed", str(args.seed)]
    if cache_dir is not None:
        command += ["--cache-dir", str(cache_dir)]
    lines = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as process:
        for line in process.stdout:
            lines.append(line)
            if args.verbose:
                print("   ", line, end="", flush=True)
    if process.returncode != 0:
        sys.exit("".join(lines[-40:]) + f"\nerror: the run on {data_dir} failed (exit {process.returncode})")
    return json.loads(next(line for line in reversed(lines) if line.startswith("RESULT "))[7:])


def table(runs: list[dict]) -> str:
    """Per training image: milliseconds of decoding, of feature extraction (all views) and of an epoch of
    each phase; peak RSS and disk; each rate against the smallest run's."""
    lines = ["| training images | decode | features | phase-1 epoch | phase-2 epoch | peak RSS | cache on disk |",
             "|---|---|---|---|---|---|---|"]
    first = runs[0] if runs else None
    for r in runs:
        n = r["train_images"]
        cells = []
        for key in ("decode_s", "features_s", "phase1_epoch_s", "phase2_epoch_s"):
            ms, base = 1000 * r[key] / n, 1000 * first[key] / first["train_images"]
            cells.append(f"{ms:.2f} ms ({ms / base:.2f}x)")
        cells.append(f"{r['peak_rss_mib']} MiB ({r['peak_rss_mib'] / first['peak_rss_mib']:.2f}x)")
        cells.append(f"{r['cache_mib'] / 1024:.1f} GiB")
        lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(DATA), help="train/ and validation/ of class folders")
    p.add_argument("--weights", default=str(WEIGHTS), help="MobileNetV2 weights (.h5 or 'imagenet')")
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000], help="training set sizes")
    p.add_argument("--work-dir", default=None, help="where the sets and caches go (default: a new temp folder)")
    p.add_argument("--in-memory", type=int, nargs="*", default=[], metavar="SIZE",
                   help="also run these sizes without cache_dir (everything in memory)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--fine-tune-epochs", type=int, default=1)
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes making images")
    p.add_argument("--verbose", action="store_true", help="show the runs' own output")
    p.add_argument("--pipeline", choices=("tf.data", "pydataset"), default=None,
                   help="the input pipeline (TRANSFERKIT_PIPELINE; default: the backend's)")
    p.add_argument("--json", default=None, help="also write every run's figures here (JSON lines)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0

    source = Path(args.data_dir)
    if not (source / "train").is_dir():
        sys.exit(f"error: {source} has no train/ folder; pass --data-dir")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="transferkit-scale-"))
    print(f"work dir: {work}", flush=True)
    runs = []
    for size in sorted(args.sizes):
        data_dir = make_training_set(source, work / f"set_{size}", size, args.workers)
        modes = [("cache_dir", work / f"cache_{size}")] + ([("in memory", None)] if size in args.in_memory else [])
        for mode, cache in modes:
            figures = run_one(data_dir, cache, args)
            figures["mode"] = mode
            runs.append(figures)
            label = f"{figures['train_images']} images [{mode}]"
            print(f"{label} decode: {figures['decode_s']:.1f} s")
            print(f"{label} phase 1 (with features): {figures['phase1_s']:.1f} s")
            print(f"{label} phase 2: {figures['phase2_s']:.1f} s")
            print(f"{label} peak RSS: {figures['peak_rss_mib']} MiB")
            print(f"{label} peak anonymous RSS: {figures['peak_anon_mib']} MiB")
            print(f"{label} cache on disk: {figures['cache_mib']:.0f} MiB")
            print(f"{label} val accuracy after phase 1 / 2: "
                  f"{figures['val_acc_phase1']:.4f} / {figures['val_acc_phase2']:.4f}", flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps({**figures, "image_size": args.image_size}) + "\n")
    disk = [r for r in runs if r["mode"] == "cache_dir"]
    print(table(disk))
    if len(disk) > 1:
        small, large = disk[0], disk[-1]
        print(f"images x{large['train_images'] / small['train_images']:.1f}: peak RSS "
              f"{small['peak_rss_mib']} -> {large['peak_rss_mib']} MiB "
              f"(x{large['peak_rss_mib'] / small['peak_rss_mib']:.2f}), cache on disk "
              f"{small['cache_mib']:.0f} -> {large['cache_mib']:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
