"""Settings that are passed through to Keras or to the fast path, each seen where it acts: the optimizer
(a fresh one per phase, phase 2's own where asked), label smoothing, class weights, ``random_views`` and ``epochs=0``. Each test
fails when the setting is dropped on its way (checked by hand: tests/README.md)."""

import keras
import numpy as np
import pytest

from conftest import tiny_trainer
from transferkit.training.callbacks import PhaseCallback

CNN = dict(backbone="test_cnn", backbone_options={}, unfreeze_from="block2", learning_rate=5e-2)


class OptimizerSeen(PhaseCallback):
    """Per phase: the optimizer that trains (its class and identity) and its step count at the phase's start."""

    def __init__(self):
        super().__init__()
        self.phase, self.seen = 0, {}

    def on_phase_begin(self, phase, logs=None):
        self.phase = phase

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        self.seen.setdefault(self.phase, (type(optimizer).__name__, id(optimizer), int(optimizer.iterations)))


@pytest.mark.parametrize("cache_features", [True, False], ids=["fast", "exact"])
@pytest.mark.parametrize("name, cls", [("sgd", "SGD"), ("rmsprop", "RMSprop")])
def test_the_optimizer_asked_for_trains_both_phases_fresh_each_time(tiny_data, cache_features, name, cls):
    seen = OptimizerSeen()
    tiny_trainer(**CNN, optimizer=name, cache_features=cache_features).fit(
        tiny_data, epochs=2, fine_tune_epochs=1, callbacks=[seen], verbose=0)
    assert [seen.seen[p][0] for p in (1, 2)] == [cls, cls]
    assert seen.seen[2][2] == 0 and seen.seen[1][1] != seen.seen[2][1]  # phase 2 starts a new optimizer


@pytest.mark.parametrize("cache_features", [True, False], ids=["fast", "exact"])
def test_fine_tune_optimizer_trains_phase_two_only(tiny_data, cache_features):
    seen = OptimizerSeen()
    trainer = tiny_trainer(**CNN, fine_tune_optimizer="rmsprop", cache_features=cache_features)
    trainer.fit(tiny_data, epochs=1, fine_tune_epochs=1, callbacks=[seen], verbose=0)
    assert [seen.seen[p][0] for p in (1, 2)] == ["Adam", "RMSprop"]
    assert type(trainer.model.optimizer).__name__ == "RMSprop"  # the full model is left as phase 2 left it


def test_label_smoothing_reaches_the_loss(tiny_data):
    runs = {s: tiny_trainer(**CNN, label_smoothing=s, ema_window=None).fit(tiny_data, epochs=2, fine_tune_epochs=0,
                                                                          verbose=0) for s in (0.0, 0.3)}
    # the same seed, the same first weights and batches: only the targets differ, and with them the loss
    assert runs[0.3].history["loss"][0] != pytest.approx(runs[0.0].history["loss"][0], abs=1e-4)
    # targets of 0.15 / 0.85 hold the logits back: the smoothed model is less sure of its answers
    images = tiny_data.images("validation")
    confidence = {s: np.abs(r.classifier.predict(images)[:, 1] - 0.5).mean() for s, r in runs.items()}
    assert confidence[0.3] < confidence[0.0]


@pytest.mark.parametrize("cache_features", [True, False], ids=["fast", "exact"])
def test_class_weights_tilt_the_model_toward_the_heavier_class(tiny_data, cache_features):
    images = tiny_data.images("validation")

    def dog_probability(class_weight):
        trainer = tiny_trainer(**CNN, cache_features=cache_features, ema_window=None)
        result = trainer.fit(tiny_data, epochs=3, fine_tune_epochs=0, class_weight=class_weight, verbose=0)
        return result.classifier.predict(images)[:, 1].mean()

    plain, heavy_dogs = dog_probability(None), dog_probability({0: 1.0, 1: 20.0})
    assert heavy_dogs > plain + 0.05


@pytest.mark.parametrize("random_views", [True, False])
def test_random_views_reaches_the_feature_datasets(tiny_data, monkeypatch, random_views):
    from transferkit.training.features import FrozenFeatures

    asked = []
    original = FrozenFeatures.phase_dataset

    def spy(self, which, phase, random_views=False, *args, **kwargs):
        if which == "train":
            asked.append((phase, random_views))
        return original(self, which, phase, random_views, *args, **kwargs)

    monkeypatch.setattr(FrozenFeatures, "phase_dataset", spy)
    tiny_trainer(**CNN, random_views=random_views).fit(tiny_data, epochs=1, fine_tune_epochs=1, verbose=0)
    assert asked and {r for _, r in asked} == {random_views} and {p for p, _ in asked} == {1, 2}


@pytest.mark.parametrize("cache_features", [True, False], ids=["fast", "exact"])
def test_epochs_zero_goes_straight_to_fine_tuning(tiny_data, cache_features):
    class Phases(PhaseCallback):
        begun = []

        def on_phase_begin(self, phase, logs=None):
            self.begun.append(phase)

    trainer = tiny_trainer(**CNN, cache_features=cache_features)
    phases = Phases()
    result = trainer.fit(tiny_data, epochs=0, fine_tune_epochs=2, callbacks=[phases], verbose=0)
    assert phases.begun == [2] and len(result.history["loss"]) == 2 and result.phase_boundary == 0
    # phase 2 trained the top of the backbone: its weights moved from the initial ones
    untrained = tiny_trainer(**CNN, cache_features=cache_features)
    keras.utils.set_random_seed(untrained.seed)  # as fit seeds its build
    untrained.build(tiny_data.class_names, tiny_data.image_size)
    def kernel(model, name):
        return keras.ops.convert_to_numpy(model.get_layer(name).kernel)

    np.testing.assert_array_equal(kernel(trainer.backbone_model, "block1_conv"),
                                  kernel(untrained.backbone_model, "block1_conv"))  # below the point: untouched
    assert not np.allclose(kernel(trainer.backbone_model, "block2_conv"), kernel(untrained.backbone_model, "block2_conv"))
