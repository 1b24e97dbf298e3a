"""User callbacks see the full training model (images in) in both phases and on both paths."""

import csv

import keras
import numpy as np
import pytest

from conftest import make_tree, tiny_trainer
from transferkit import ImageFolder
from transferkit.training.callbacks import PhaseCallback

CNN = dict(backbone="test_cnn", backbone_options={}, unfreeze_from="block2", learning_rate=2e-2,
           fine_tune_lr_factor=0.1, seed=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_tree(tmp_path_factory.mktemp("callbacks") / "pets", {"cats": 8, "dogs": 8})
    return ImageFolder(root, image_size=(32, 32), batch_size=4, split=(0.5, 0.5), seed=0)


class Seen(PhaseCallback):
    def __init__(self):
        super().__init__()
        self.events, self.models, self.learning_rates = [], [], []

    def on_phase_begin(self, phase, logs=None):
        self.events.append(("begin", phase))

    def on_phase_end(self, phase, logs=None):
        self.events.append(("end", phase, logs["phase"]))

    def on_epoch_end(self, epoch, logs=None):
        self.models.append(self.model)
        self.learning_rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


@pytest.mark.parametrize("cache_features", [True, False], ids=["fast", "exact"])
def test_model_checkpoint_csv_logger_and_tensorboard_see_the_whole_model(data, tmp_path, cache_features):
    seen = Seen()
    callbacks = [
        keras.callbacks.ModelCheckpoint(str(tmp_path / "phase{phase:.0f}-epoch{epoch}.keras")),
        keras.callbacks.CSVLogger(str(tmp_path / "log.csv")),
        keras.callbacks.TensorBoard(str(tmp_path / "tensorboard")),
        seen,
    ]
    trainer = tiny_trainer(**CNN, cache_features=cache_features)
    trainer.fit(data, epochs=2, fine_tune_epochs=1, callbacks=callbacks, verbose=0)

    assert all(model is trainer.model for model in seen.models)
    assert seen.events == [("begin", 1), ("end", 1, 1), ("begin", 2), ("end", 2, 2)]
    assert sorted(p.name for p in tmp_path.glob("*.keras")) == [
        "phase1-epoch1.keras", "phase1-epoch2.keras", "phase2-epoch3.keras"]
    last = keras.saving.load_model(tmp_path / "phase2-epoch3.keras")
    assert tuple(last.input_shape) == (None, 32, 32, 3)  # images in, not cached features
    images = data.images("validation").astype("float32")
    np.testing.assert_allclose(last.predict(images, verbose=0), trainer.model.predict(images, verbose=0), atol=1e-5)
    first = keras.saving.load_model(tmp_path / "phase1-epoch1.keras")
    assert not np.allclose(first.predict(images, verbose=0), last.predict(images, verbose=0))

    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(row["phase"]) for row in rows] == [1, 1, 2] and [row["epoch"] for row in rows] == ["0", "1", "2"]
    assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    assert seen.learning_rates == pytest.approx([2e-2, 2e-2, 2e-3])


@pytest.mark.parametrize("cache_features", [True, False], ids=["fast", "exact"])
def test_early_stopping_and_reduce_lr_act_within_each_phase(data, cache_features):
    seen = Seen()
    never_better = dict(monitor="loss", min_delta=100.0, patience=0)
    callbacks = [keras.callbacks.EarlyStopping(**never_better, restore_best_weights=True),
                 keras.callbacks.ReduceLROnPlateau(**never_better, factor=0.5, min_lr=0.0), seen]
    trainer = tiny_trainer(**CNN, cache_features=cache_features)
    result = trainer.fit(data, epochs=4, fine_tune_epochs=4, callbacks=callbacks, verbose=0)
    # Phase 1 stops after 2 epochs (the first improves on nothing); phase 2 after 1, as the run's best is
    # phase 1's and patience is 0; then phase 2 still ran although phase 1 stopped early.
    assert result.phase_boundary == 2 and len(result.history["loss"]) == 3
    # ReduceLROnPlateau halves the rate of the optimizer that trains; phase 2 starts from its own rate.
    assert seen.learning_rates == pytest.approx([2e-2, 1e-2, 2e-3])


def test_early_stopping_restores_the_best_weights_of_the_whole_run(data):
    class Snapshots(keras.callbacks.Callback):
        weights = []

        def on_epoch_end(self, epoch, logs=None):
            self.weights.append([np.array(w) for w in self.model.get_weights()])

    snapshots = Snapshots()
    stop = keras.callbacks.EarlyStopping(monitor="loss", min_delta=100.0, patience=1, restore_best_weights=True)
    trainer = tiny_trainer(**CNN, cache_features=True)
    result = trainer.fit(data, epochs=3, fine_tune_epochs=3, callbacks=[stop, snapshots], verbose=0)
    # Patience 1: phase 1 stops after 2 epochs, phase 2 after 1; epoch 1 of the run was its best.
    assert result.phase_boundary == 2 and len(snapshots.weights) == 3
    for restored, best in zip(trainer.model.get_weights(), snapshots.weights[0]):
        np.testing.assert_allclose(restored, best)
    assert not all(np.allclose(a, b) for a, b in zip(snapshots.weights[0], snapshots.weights[-1]))
