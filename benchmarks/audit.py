"""Benchmark: does `transferkit audit` find planted label errors and leaked near-duplicates, what does it
flag in the untouched shared set, and does leaving the flagged training files out change accuracy?

    python benchmarks/audit.py                   # planted flips and duplicates, the untouched set, timings
    python benchmarks/audit.py --accuracy-seeds 42 1 2   # also: the default recipe with and without them

1. A copy (symbolic links) of ../shared/data/cats_vs_dogs with ``--flip`` of the training files
   (seeded, one copy per ``--plant-seeds``) filed under the other class: precision and recall of those files among the suspected
   label errors.
2. The same copy with ``--duplicates`` training images planted into validation as near-duplicates:
   re-encoded as JPEG (quality 70), resized to 80%, 5% cropped from each side. Found: planted pairs
   among the reported cross-split pairs.
3. The untouched set: what it flags, and the thumbnail pages (``--output``) to look at.
4. With ``--accuracy-seeds``: the default recipe trained with and without the files flagged in the
   *training* split (the validation set stays whole, so both are scored on the same photos, and on
   the web photos).
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
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from two_phase import DATA, WEB, WEIGHTS, web_accuracy  # noqa: E402

from transferkit import ImageFolder, TwoPhaseTrainer  # noqa: E402
from transferkit.audit import audit  # noqa: E402


def linked_copy(source: Path, target: Path) -> Path:
    for f in sorted(source.rglob("*")):
        if f.is_file():
            dest = target / f.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(f, dest)
    return target


def plant_flips(root: Path, fraction: float, seed: int) -> set[str]:
    files = sorted(root.glob("train/*/*"))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(files), int(round(fraction * len(files))), replace=False)
    classes = sorted(p.name for p in (root / "train").iterdir())
    flipped = set()
    for i in chosen:
        f = files[i]
        other = classes[(classes.index(f.parent.name) + 1) % len(classes)]
        dest = root / "train" / other / f"flipped_{f.name}"
        os.rename(f, dest)
        flipped.add(dest.relative_to(root).as_posix())
    return flipped


def plant_duplicates(root: Path, count: int, seed: int) -> dict[str, str]:
    """``{copy in validation: original in train}``: re-encoded, resized, slightly cropped copies."""
    files = sorted(root.glob("train/*/*"))
    rng = np.random.default_rng(seed + 1)
    planted = {}
    for i in rng.choice(len(files), count, replace=False):
        original = files[i]
        with Image.open(original) as image:
            image = image.convert("RGB")
            w, h = image.size
            image = image.crop((int(0.05 * w), int(0.05 * h), int(0.95 * w), int(0.95 * h)))
            image = image.resize((int(0.8 * image.size[0]), int(0.8 * image.size[1])))
            copy = root / "validation" / original.parent.name / f"dup_{original.stem}.jpg"
            image.save(copy, quality=70)
        planted[copy.relative_to(root).as_posix()] = original.relative_to(root).as_posix()
    return planted


def run_audit(root: Path, weights: str, size: int):
    data = ImageFolder(root, image_size=(size, size), seed=42)
    start = time.perf_counter()
    report = audit(data, TwoPhaseTrainer(weights=weights, seed=0))
    return data, report, time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(DATA))
    p.add_argument("--weights", default=str(WEIGHTS))
    p.add_argument("--web-dir", default=str(WEB) if WEB.is_dir() else None)
    p.add_argument("--image-size", type=int, default=192)
    p.add_argument("--flip", type=float, default=0.02, help="fraction of training files filed under the other class")
    p.add_argument("--duplicates", type=int, default=20, help="training images planted into validation")
    p.add_argument("--plant-seeds", type=int, nargs="*", default=[0], help="one planted copy per seed (none: skip)")
    p.add_argument("--output", default="benchmarks/results/audit", help="audit.json and pages of the untouched set")
    p.add_argument("--accuracy-seeds", type=int, nargs="*", default=[])
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="transferkit-audit-bench-"))
    results = {}
    try:
        for seed in args.plant_seeds:
            planted_root = linked_copy(Path(args.data_dir), work / f"planted-{seed}")
            flipped = plant_flips(planted_root, args.flip, seed)
            duplicates = plant_duplicates(planted_root, args.duplicates, seed)
            _, report, seconds = run_audit(planted_root, args.weights, args.image_size)
            found = {issue["file"] for issue in report.label_issues}
            hits = found & flipped
            pairs = {(d["file_a"], d["file_b"]) for d in report.leaks}
            planted_found = [copy for copy, original in duplicates.items() if (original, copy) in pairs]
            row = {
                "seed": seed, "images": sum(sum(c.values()) for c in report.counts.values()),
                "seconds": round(seconds, 1), "flipped": len(flipped), "flagged_label_issues": len(found),
                "true_flags": len(hits), "recall": round(len(hits) / len(flipped), 3),
                "precision": round(len(hits) / max(1, len(found)), 3),
                "planted_duplicates": len(duplicates), "planted_duplicates_found": len(planted_found),
                "cross_split_pairs_reported": len(report.leaks),
                "lowest_similarity_of_a_found_copy": min((d["similarity"] for d in report.leaks
                                                          if d["file_b"] in planted_found), default=None),
                "missed_duplicates": sorted(set(duplicates) - set(planted_found)),
                "other_pairs": [d for d in report.duplicates if d["file_b"] not in duplicates],
            }
            results.setdefault("planted", []).append(row)
            print(json.dumps(row, indent=2), flush=True)

        data, clean, seconds = run_audit(Path(args.data_dir), args.weights, args.image_size)
        clean.save(args.output, data)
        results["untouched"] = {"seconds": round(seconds, 1), "label_issues": clean.label_issues,
                                "duplicates": clean.duplicates, "outliers": clean.outliers[:10],
                                "flagged": clean.flagged}
        print(clean, flush=True)

        exclude = [f for f in clean.flagged if f.startswith("train/")]
        for seed in args.accuracy_seeds:
            for name, left_out in (("all files", None), ("flagged training files left out", exclude)):
                data = ImageFolder(args.data_dir, image_size=(args.image_size, args.image_size), seed=42,
                                   exclude=left_out)
                trainer = TwoPhaseTrainer(weights=args.weights, seed=seed)
                result = trainer.fit(data, epochs=10, fine_tune_epochs=10, verbose=0)
                row = {"seed": seed, "run": name, "excluded": len(left_out or []),
                       "val_accuracy": result.final("val_accuracy")}
                if args.web_dir:
                    row["web_accuracy"] = web_accuracy(result.classifier, Path(args.web_dir))
                results.setdefault("accuracy", []).append(row)
                print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Path(args.output).mkdir(parents=True, exist_ok=True)
    (Path(args.output) / "benchmark.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
