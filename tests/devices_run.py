"""Run in a fresh process by tests/test_devices.py: one run on one device and the same run spread over
two (TensorFlow: two logical CPU devices and MirroredStrategy; JAX: two host devices and DataParallel),
on both paths; prints one JSON line with the largest weight difference of each path, what each device
was given to work on (tests/work_probe.py) and where the trained variables live."""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import keras  # noqa: E402

from transferkit.training import distribute  # noqa: E402

if keras.backend.backend() == "tensorflow":
    distribute.logical_cpu_devices(2)  # before TensorFlow runs anything

import work_probe  # noqa: E402
from conftest import make_tree, tiny_trainer  # noqa: E402

from transferkit import ImageFolder  # noqa: E402

root = Path(sys.argv[1])
data = ImageFolder(make_tree(root / "pets", {"cats": 14, "dogs": 14}), image_size=(32, 32), batch_size=8,
                   split=(0.5, 0.25, 0.25), seed=3)  # 14 training images: the last batch of each epoch is uneven
report = {"backend": keras.backend.backend()}
work_probe.install()


for path, cached in (("cached", True), ("exact", False)):
    weights, accuracy, predictions, work, held = [], [], [], [], []
    for run, distribution in enumerate((None, distribute.for_devices(2))):
        work_probe.record_to(root / f"work-{path}-{run}.txt")
        trainer = tiny_trainer(backbone="test_cnn", backbone_options={}, unfreeze_from="block2", learning_rate=5e-2,
                               cache_features=cached, head={"dropout": 0.0}, augmentation=None,
                               distribution=distribution)
        result = trainer.fit(data, epochs=3, fine_tune_epochs=2, verbose=0)
        weights.append([np.asarray(v) for v in trainer.model.weights])
        accuracy.append(result.history["val_accuracy"])
        predictions.append(result.classifier.predict(data.images("test")))  # one row per image, either way
        work.append(work_probe.read(root / f"work-{path}-{run}.txt"))
        held.append(work_probe.variable_devices(trainer.model))
    report[path] = {"replicas": distribute.replicas(distribute.for_devices(2)),
                    "largest_weight_difference": max(float(np.abs(a - b).max()) for a, b in zip(*weights)),
                    "largest_weight": max(float(np.abs(a).max()) for a in weights[0]),
                    "val_accuracy": accuracy,
                    "prediction_shapes": [list(p.shape) for p in predictions],
                    "largest_prediction_difference": float(np.abs(predictions[0] - predictions[1]).max()),
                    "work": work, "variable_devices": held}
print(json.dumps(report))
