"""Benchmark: BatchNorm statistics re-estimated on the training images after phase 2, paired per seed.

    python benchmarks/batchnorm.py --variant 'default:{}' --feature-cache /tmp/features       # seeds 1, 2, 3
    python benchmarks/batchnorm.py --variant 'seed-project + averaging:{"image_size": 160, "epochs": 10,
        "fine_tune_epochs": 10, "unfreeze_from": 100, "learning_rate": 1e-4, "fine_tune_lr_factor": 0.1,
        "ema_window": 0.33, "cache_features": false, "freeze_batchnorm": false, "fine_tune_optimizer": "rmsprop",
        "augmentation": {"preset": "default", "plain_fraction": 0}}'
    python benchmarks/batchnorm.py --table

Each (variant, seed) trains `TwoPhaseTrainer(weights=..., seed=seed, **options)` once (10 + 5 epochs at
224 px unless the options say otherwise), in a process of its own, and scores the finished model on the
validation split and on ``--web-dir``. Then the BatchNormalization layers from the unfreeze point on
get their moving mean and variance re-estimated on the training images, as they are (one pass in
batches of 32, each layer's statistics the cumulative average of its batch moments, as SWA's
``bn_update`` does), and the same model is scored again. Pairing the two scores on one trained model
takes the seed-to-seed noise out of the comparison. The model's own statistics are then put back and
re-estimated once more on the training images augmented as the training model augments them (its
`PartlyAugmented` mix, else the augmentation block, in training mode; SWA's ``bn_update`` uses the
training loader), and the model is scored a third time. One JSON line per run goes to ``--results``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from seeds import run_variants
from two_phase import web_accuracy

REPO = Path(__file__).resolve().parent.parent


def reestimate_batchnorm(backbone, preprocessing, images: np.ndarray, first_layer: int, batch_size: int = 32,
                         augment=None) -> int:
    """Replace the moving statistics of ``backbone``'s BatchNormalization layers from ``first_layer`` on
    with the cumulative average of their batch moments over ``images`` (passed through ``augment`` in
    training mode first, when given); returns how many layers."""
    import keras

    layers = [layer for layer in backbone.layers[first_layer:] if isinstance(layer, keras.layers.BatchNormalization)]
    trainable = {id(layer): layer.trainable for layer in backbone.layers}
    momentum = {id(layer): layer.momentum for layer in layers}
    try:
        for layer in backbone.layers:
            layer.trainable = False
        for layer in layers:  # in Keras 3 only a trainable BatchNormalization updates its statistics
            layer.trainable = True
        for step, start in enumerate(range(0, len(images), batch_size)):
            for layer in layers:  # new = momentum * old + (1 - momentum) * batch: the mean of the batches so far
                layer.momentum = step / (step + 1)
            x = keras.ops.convert_to_tensor(images[start:start + batch_size].astype("float32"))
            if augment is not None:
                x = augment(x, training=True)
            backbone(preprocessing(x) if preprocessing is not None else x, training=True)
    finally:
        for layer in backbone.layers:
            layer.trainable = trainable[id(layer)]
        for layer in layers:
            layer.momentum = momentum[id(layer)]
    return len(layers)


def one_run(data_dir: Path, web_dir: Path | None, weights: str, options: dict, seed: int,
            feature_cache: str | None) -> dict:
    """Train one model, score it, re-estimate its statistics, score it again (in a process of its own)."""
    from transferkit import ImageFolder, TwoPhaseTrainer

    options = dict(options)
    size = int(options.pop("image_size", 224))
    epochs, fine_tune_epochs = int(options.pop("epochs", 10)), int(options.pop("fine_tune_epochs", 5))
    data = ImageFolder(data_dir, batch_size=32, seed=seed, image_size=(size, size))
    if feature_cache and options.get("cache_features", True):
        options.setdefault("cache_dir", feature_cache)
    trainer = TwoPhaseTrainer(weights=weights, seed=seed, **options)
    start = time.perf_counter()
    classifier = trainer.fit(data, epochs=epochs, fine_tune_epochs=fine_tune_epochs, verbose=2).classifier
    fit_s = time.perf_counter() - start
    images, labels = data.images("validation"), data.labels("validation")

    def score(prefix: str) -> dict:
        found = {f"val_{prefix}": float(np.mean(np.argmax(classifier.predict_array(images, 32), -1) == labels))}
        if web_dir is not None:
            found[f"web_{prefix}"] = web_accuracy(classifier, web_dir)
        return found

    figures = {**score("before"), "fit_s": fit_s}
    backbone, index, train = trainer.backbone_model, trainer.unfreeze_index(), data.images("train")
    statistics = [v.numpy() for v in backbone.non_trainable_weights]
    start = time.perf_counter()
    figures["bn_layers"] = reestimate_batchnorm(backbone, trainer.parts.preprocessing, train, index)
    figures.update(index=index, reestimate_s=time.perf_counter() - start, **score("after"))
    for variable, value in zip(backbone.non_trainable_weights, statistics):
        variable.assign(value)
    # the training model's own mix where it has one (each image plain with probability 1 / views), else the block
    augment = next((layer for layer in trainer.model.layers if type(layer).__name__ == "PartlyAugmented"),
                   trainer.parts.augmentation)
    if augment is not None:
        reestimate_batchnorm(backbone, trainer.parts.preprocessing, train, index, augment=augment)
        figures.update(score("augmented"))
    return figures


def table(records: list[dict]) -> str:
    lines = ["| variant | seeds | validation, as trained → re-estimated on the images as they are → on augmented "
             "images (per seed) | mean | web photos, the same (per seed) | mean |", "|" + "---|" * 6]
    variants: dict[str, list[dict]] = {}
    for record in records:
        variants.setdefault(record["variant"], []).append(record)
    for name, runs in variants.items():
        runs = sorted(runs, key=lambda r: r["seed"])

        def pair(prefix: str) -> list[str]:
            if any(r.get(f"{prefix}_before") is None for r in runs):
                return ["–", "–"]
            columns = [[100 * r[f"{prefix}_{k}"] for r in runs] for k in ("before", "after", "augmented")
                       if all(r.get(f"{prefix}_{k}") is not None for r in runs)]
            return [" / ".join(" → ".join(f"{c[i]:.2f}" for c in columns) for i in range(len(runs))),
                    " → ".join(f"{np.mean(c):.2f}" for c in columns)]

        lines.append(f"| {name} | {', '.join(str(r['seed']) for r in runs)} | " + " | ".join(pair("val") + pair("web"))
                     + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    return run_variants(__file__, __doc__, str(REPO / "benchmarks" / "results" / "batchnorm.jsonl"), one_run, table,
                        argv)


if __name__ == "__main__":
    raise SystemExit(main())
