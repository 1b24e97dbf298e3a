"""Benchmark: XLA (``jit_compile``) and batch size for the two steps the cached recipe spends its time on.

    python benchmarks/jit_and_batch.py        # about 2 minutes on 2 cores

Times, in one process on random inputs of the real shapes (MobileNetV2, 160 px, unfreeze point of
the default recipe): training the unfrozen top on cached activations (phase 2) at batch 32 and 64,
with and without XLA; and running the frozen part forward (computing the features), with and
without XLA. Prints throughput and the ratio to the default (no XLA, batch 32) for each.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import keras
import numpy as np

from transferkit import TwoPhaseTrainer
from transferkit.training.features import split_backbone

WEIGHTS = Path(__file__).resolve().parent.parent.parent / "shared" / "weights" / \
    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def hot_steps(weights: str | None, image_size: int, steps: int):
    """``(train_rate(batch_size, jit), forward_rate(jit))``: samples/s of the cached recipe's phase-2
    training step and of its frozen part's forward pass, on random inputs of the real shapes."""
    trainer = TwoPhaseTrainer(weights=weights, seed=0)
    trainer.build(["cat", "dog"], (image_size, image_size))
    index = trainer.unfreeze_index()
    trainer.freeze_backbone()
    frozen, top = split_backbone(trainer.backbone_model, index)
    trainer.unfreeze_top()
    rng = np.random.default_rng(0)
    n = 32 * steps
    crossing = [rng.normal(size=(n, *t.shape[1:])).astype("float32") for t in top.inputs]
    labels = rng.integers(0, 2, n)

    def train_rate(batch_size: int, jit: bool) -> float:
        model = keras.Model(top.inputs, trainer.parts.head(top.output))
        trainer.compile(1e-5, model)
        model.compile(optimizer=model.optimizer, loss=model.loss, jit_compile=jit)
        model.fit(crossing, labels, batch_size=batch_size, epochs=1, verbose=0)  # trace / compile
        start = time.perf_counter()
        model.fit(crossing, labels, batch_size=batch_size, epochs=2, verbose=0)
        return 2 * n / (time.perf_counter() - start)

    def forward_rate(jit: bool) -> float:
        images = rng.uniform(0, 255, (n // 3, image_size, image_size, 3)).astype("float32")
        model = keras.Model(frozen.inputs, frozen.outputs)
        model.compile(jit_compile=jit)
        model.predict_on_batch(images[:32])
        start = time.perf_counter()
        for i in range(0, len(images), 32):
            model.predict_on_batch(images[i : i + 32])
        return len(images) / (time.perf_counter() - start)

    return train_rate, forward_rate


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=str(WEIGHTS) if WEIGHTS.exists() else None,
                   help="MobileNetV2 weights file (default: ../shared's, else random weights)")
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--steps", type=int, default=24, help="batches of 32 per timed pass")
    args = p.parse_args(argv)

    train_rate, forward_rate = hot_steps(args.weights, args.image_size, args.steps)
    base = train_rate(32, False)
    print(f"phase 2 (top on cached activations), batch 32, no XLA: {base:.0f} samples/s")
    for batch_size, jit in ((32, True), (64, False), (64, True)):
        rate = train_rate(batch_size, jit)
        print(f"phase 2, batch {batch_size}, {'XLA' if jit else 'no XLA'}: {rate:.0f} samples/s "
              f"(x{rate / base:.2f})", flush=True)
    base = forward_rate(False)
    print(f"frozen part forward, no XLA: {base:.0f} images/s")
    rate = forward_rate(True)
    print(f"frozen part forward, XLA: {rate:.0f} images/s (x{rate / base:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
