"""Run in a fresh process with KERAS_BACKEND set (jax, torch) by tests/test_backends.py: trains on both
paths, then predicts, evaluates, draws Grad-CAM, saves and reloads; prints one JSON line of what it saw."""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import keras  # noqa: E402

from conftest import Interrupt, make_tree, tiny_trainer  # noqa: E402  (registers the test CNN)

import transferkit.training.features  # noqa: E402
from transferkit import ImageFolder, load_model  # noqa: E402
from transferkit.evaluation.metrics import evaluate  # noqa: E402
from transferkit.evaluation.plots import gradcam  # noqa: E402

root, out = Path(sys.argv[1]), Path(sys.argv[2])
built = []
original_init = transferkit.training.features.FrozenFeatures.__init__


def counting_init(self, *args, **kwargs):
    built.append(1)
    original_init(self, *args, **kwargs)


transferkit.training.features.FrozenFeatures.__init__ = counting_init  # which path did each run take?
data = ImageFolder(make_tree(root / "pets", {"cats": 16, "dogs": 16}), image_size=(32, 32), batch_size=8,
                   split=(0.5, 0.25, 0.25), seed=3)
report = {"backend": keras.backend.backend()}
for name, cached in (("cached", True), ("exact", False)):
    # Phases of 8 and 2 steps: a moving average over a third of them lags behind a head this far from
    # converged (docs/training.md, "Weight averaging"), so these runs end on their last step.
    trainer = tiny_trainer(backbone="test_cnn", backbone_options={}, unfreeze_from="block2", learning_rate=5e-2,
                           cache_features=cached, ema_window=None)
    before = len(built)
    result = trainer.fit(data, epochs=4, fine_tune_epochs=1, verbose=0)
    images = data.images("test")
    probabilities = result.classifier.predict(images)
    saved = trainer.save(out / f"{name}.keras")
    reloaded = load_model(saved).predict(images)
    cam = gradcam(result.classifier, images[:4])
    report[name] = {
        "history_epochs": len(result.history["loss"]), "phase_boundary": result.phase_boundary,
        "first_loss": result.history["loss"][0], "last_loss": result.history["loss"][-1],
        "test_accuracy": evaluate(result.classifier, data, split="test").accuracy,
        "reload_difference": float(np.abs(reloaded - probabilities).max()),
        "cam_shape": list(cam.shape), "cam_max": float(cam.max()), "cam_finite": bool(np.isfinite(cam).all()),
        "probabilities_sum": float(np.abs(probabilities.sum(axis=1) - 1).max()),
        "features_computed": len(built) - before,
    }


# Resume inside phase 1 on the fast path: the resumed run ends as the uninterrupted one.
settings = dict(backbone="test_cnn", backbone_options={}, unfreeze_from="block2", learning_rate=5e-2, seed=5)
held_out = data.images("validation")
whole = tiny_trainer(**settings)
whole.fit(data, epochs=3, fine_tune_epochs=1, verbose=0, checkpoint_dir=out / "whole")
try:
    tiny_trainer(**settings).fit(data, epochs=3, fine_tune_epochs=1, verbose=0, callbacks=[Interrupt(1)],
                                 checkpoint_dir=out / "resumed")
except KeyboardInterrupt:
    pass
resumed = tiny_trainer(**settings)
resumed.fit(data, epochs=3, fine_tune_epochs=1, verbose=0, checkpoint_dir=out / "resumed")
report["resume_difference"] = float(np.abs(resumed.predict(held_out) - whole.predict(held_out)).max())
report["resume_spread"] = float(np.ptp(whole.predict(held_out)[:, 1]))

# A search of two trials (in this process) finds a best model that loads.
from transferkit.tuning import tune  # noqa: E402

search = tune(data, out / "search", max_trials=2, output=out / "search-out", verbose=0, isolate_trials=False,
              backbone="test_cnn", backbone_options={}, weights=None, unfreeze_points=["block1", "block2"], epochs=1,
              fine_tune_epochs=1, seed=1, augmentation=None)
report["search_trials"] = len(search.trials)
report["search_best_loads"] = load_model(out / "search-out" / "best.keras").class_names == data.class_names

# TFLite from this backend: converted in a process on the TensorFlow backend (where TensorFlow is installed).
try:
    import tensorflow  # noqa: F401
except ImportError:
    report["tflite_difference"] = None
else:
    from transferkit.export import TFLiteClassifier, export  # noqa: E402

    lite = TFLiteClassifier(export(result.classifier, out / "model.tflite", format="tflite"))
    report["tflite_difference"] = float(np.abs(lite.predict(images) - probabilities).max())
print(json.dumps(report))
