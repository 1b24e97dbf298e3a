"""The default run (examples/cats_vs_dogs.py) on each Keras backend, and with mixed precision, one after
the other on this machine, each in a process of its own; prints a Markdown table.

    python benchmarks/backends.py                                  # tensorflow, jax, tensorflow + bfloat16
    python benchmarks/backends.py --runs tensorflow jax --epochs 1 --fine-tune-epochs 1   # quick

Each run's validation and web-photo accuracy, its two phases' wall time, and its whole wall time
(start-up, decoding and evaluation included) with the ratio to the first run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNS = {
    "tensorflow": ({"KERAS_BACKEND": "tensorflow"}, []),
    "jax": ({"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}, []),
    "tensorflow+bf16": ({"KERAS_BACKEND": "tensorflow"}, ["--mixed-precision"]),
    "jax+bf16": ({"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}, ["--mixed-precision"]),
    "torch": ({"KERAS_BACKEND": "torch"}, []),
}


def run(name: str, extra: list[str], output: Path) -> dict:
    env_changes, flags = RUNS[name]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(REPO / "examples" / "cats_vs_dogs.py"), "--output", str(output),
                           "--overwrite", *flags, *extra], env={**os.environ, **env_changes},
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"name": name, "error": done.stderr.strip().splitlines()[-1]}
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return {"name": name, "wall": wall, **summary}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=["tensorflow", "jax", "tensorflow+bf16"])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--fine-tune-epochs", type=int, default=10)
    args = parser.parse_args(argv)
    extra = ["--epochs", str(args.epochs), "--fine-tune-epochs", str(args.fine_tune_epochs)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.runs:
            rows.append(run(name, extra, Path(tmp) / name))
            print(json.dumps(rows[-1]), flush=True)
    reference = next((r["wall"] for r in rows if "wall" in r), None)
    print("\n| run | validation | web photos | phase 1 | phase 2 | whole run | ratio to the first |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['name']} | failed: {r['error']} | | | | | |")
            continue
        web = "n/a" if r["web_accuracy"] is None else f"{100 * r['web_accuracy']:.2f}%"
        p1, p2 = r["phase_seconds"]
        print(f"| {r['name']} | {100 * r['val_accuracy_phase2']:.2f}% | {web} | {p1:.0f} s | {p2:.0f} s | "
              f"{r['wall']:.0f} s | {r['wall'] / reference:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
