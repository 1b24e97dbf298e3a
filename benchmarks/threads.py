"""Benchmark: TensorFlow thread settings (and oneDNN) for the cached recipe's two hot steps.

    python benchmarks/threads.py        # about 3 minutes on 2 cores

Thread pools are fixed when TensorFlow starts, so each setting runs in a child process of its own
(the same steps as ``jit_and_batch.py``: phase-2 training on cached activations at batch 32, and the
frozen part's forward pass); this process prints each setting's throughput and its ratio to
TensorFlow's defaults, measured in a child started the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

SETTINGS = {  # name: (intra_op threads, inter_op threads, extra environment); 0 = TensorFlow chooses
    "TensorFlow defaults": (0, 0, {}),
    "intra 1, inter 1": (1, 1, {}),
    "intra cores, inter 1": (os.cpu_count(), 1, {}),
    "intra 1, inter cores": (1, os.cpu_count(), {}),
    "oneDNN off (TF_ENABLE_ONEDNN_OPTS=0)": (0, 0, {"TF_ENABLE_ONEDNN_OPTS": "0"}),
}


def child(intra: int, inter: int, image_size: int, steps: int) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    from jit_and_batch import WEIGHTS, hot_steps  # after the thread settings: it imports Keras

    train_rate, forward_rate = hot_steps(str(WEIGHTS) if WEIGHTS.exists() else None, image_size, steps)
    print(json.dumps({"train": train_rate(32, False), "forward": forward_rate(False)}))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--steps", type=int, default=24, help="batches of 32 per timed pass")
    p.add_argument("--child", nargs=2, type=int, metavar=("INTRA", "INTER"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(*args.child, args.image_size, args.steps)
        return 0

    base = None
    for name, (intra, inter, env) in SETTINGS.items():
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(intra), str(inter),
             "--image-size", str(args.image_size), "--steps", str(args.steps)],
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env}, capture_output=True, text=True,
        )
        if out.returncode:
            raise SystemExit(f"{name}: the child process failed:\n{out.stderr[-2000:]}")
        rates = json.loads(out.stdout.strip().splitlines()[-1])
        base = base or rates
        print(f"{name}: phase 2 {rates['train']:.0f} samples/s (x{rates['train'] / base['train']:.2f}), "
              f"frozen forward {rates['forward']:.0f} images/s (x{rates['forward'] / base['forward']:.2f})",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
