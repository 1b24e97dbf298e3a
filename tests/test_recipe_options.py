"""The recipe's steering: weight averaging (``ema_window``) and phase 2's cosine schedule."""

import math

import keras
import numpy as np
import pytest

from conftest import tiny_trainer

CNN = dict(backbone="test_cnn", backbone_options={}, unfreeze_from="block2", learning_rate=5e-2)


class StepRecorder(keras.callbacks.Callback):
    """The head's kernel after every training step, and each epoch's learning rate."""

    def __init__(self, trainer):
        super().__init__()
        self.trainer = trainer
        self.kernels, self.rates = [], {}

    def on_train_batch_end(self, batch, logs=None):
        self.kernels.append(keras.ops.convert_to_numpy(self.trainer.parts.head.weights[0]).copy())

    def on_epoch_begin(self, epoch, logs=None):
        self.rates[epoch] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


def moving_average(values, momentum):
    average = values[0]
    for value in values[1:]:
        average = momentum * average + (1 - momentum) * value
    return average


@pytest.mark.parametrize("cache_features", [True, False], ids=["fast", "exact"])
def test_a_phase_ends_on_the_moving_average_of_its_weights(tiny_data, cache_features):
    """A window of half the phase's 8 steps: momentum 1 - 1/4."""
    trainer = tiny_trainer(**CNN, ema_window=0.5, cache_features=cache_features)
    recorder = StepRecorder(trainer)
    trainer.fit(tiny_data, epochs=4, fine_tune_epochs=0, callbacks=[recorder], verbose=0)
    final = keras.ops.convert_to_numpy(trainer.parts.head.weights[0])
    assert len(recorder.kernels) == 4 * 2  # 16 training images, batches of 8
    np.testing.assert_allclose(final, moving_average(recorder.kernels, 0.75), rtol=1e-5, atol=1e-6)
    assert np.abs(final - recorder.kernels[-1]).max() > 1e-4  # not the last step's weights


def test_without_averaging_a_phase_ends_on_its_last_step(tiny_data):
    trainer = tiny_trainer(**CNN, ema_window=None)
    recorder = StepRecorder(trainer)
    trainer.fit(tiny_data, epochs=3, fine_tune_epochs=0, callbacks=[recorder], verbose=0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(trainer.parts.head.weights[0]), recorder.kernels[-1])


@pytest.mark.parametrize("ema_window", [0.5, None], ids=["averaged", "plain"])
def test_validation_during_a_phase_sees_the_weights_it_ends_on(tiny_data, ema_window):
    """The last epoch's validation loss is the finished model's (training went on from the raw weights)."""
    trainer = tiny_trainer(**CNN, ema_window=ema_window, cache_features=False)
    result = trainer.fit(tiny_data, epochs=3, fine_tune_epochs=0, verbose=0)
    loss = trainer.model.evaluate(tiny_data.validation, verbose=0, return_dict=True)["loss"]
    assert result.history["val_loss"][-1] == pytest.approx(loss, rel=1e-4)


class MeasureAtEpochEnd(keras.callbacks.Callback):
    """At each epoch's end, the validation loss of the weights the model holds then (the full model, as
    user callbacks see it), beside the loss the epoch logged."""

    def __init__(self, data):
        super().__init__()
        self.data, self.pairs = data, []

    def on_epoch_end(self, epoch, logs=None):
        measured = self.model.evaluate(self.data.validation, verbose=0, return_dict=True)["loss"]
        self.pairs.append((logs["val_loss"], measured))


@pytest.mark.parametrize("ema_window", [0.5, None], ids=["averaged", "plain"])
def test_callbacks_that_keep_an_epochs_weights_keep_the_ones_its_metrics_measured(tiny_data, ema_window):
    """What EarlyStopping(restore_best_weights=True) and ModelCheckpoint keep at an epoch's end is what
    the epoch's validation measured, in both phases."""
    trainer = tiny_trainer(**CNN, ema_window=ema_window, cache_features=False)
    probe = MeasureAtEpochEnd(tiny_data)
    trainer.fit(tiny_data, epochs=2, fine_tune_epochs=2, callbacks=[probe], verbose=0)
    assert len(probe.pairs) == 4
    for logged, measured in probe.pairs:
        assert logged == pytest.approx(measured, rel=1e-4)


def test_the_cosine_schedule_lowers_phase_2s_rate_epoch_by_epoch(tiny_data):
    trainer = tiny_trainer(**CNN, fine_tune_lr_factor=0.1, fine_tune_schedule="cosine")
    recorder = StepRecorder(trainer)
    trainer.fit(tiny_data, epochs=2, fine_tune_epochs=4, callbacks=[recorder], verbose=0)
    phase2 = 5e-3
    assert recorder.rates[0] == recorder.rates[1] == pytest.approx(5e-2)  # phase 1: flat
    assert [recorder.rates[e] for e in range(2, 6)] == pytest.approx(
        [phase2 * (1 + math.cos(math.pi * i / 4)) / 2 for i in range(4)], rel=1e-5)


def test_the_constant_schedule_keeps_phase_2s_rate(tiny_data):
    trainer = tiny_trainer(**CNN, fine_tune_lr_factor=0.1)
    recorder = StepRecorder(trainer)
    trainer.fit(tiny_data, epochs=1, fine_tune_epochs=3, callbacks=[recorder], verbose=0)
    assert [recorder.rates[e] for e in range(1, 4)] == pytest.approx([5e-3] * 3)


def test_bad_steering_settings_are_named():
    with pytest.raises(ValueError, match="ema_window=1.5"):
        tiny_trainer(ema_window=1.5)
    with pytest.raises(ValueError, match="fine_tune_schedule='linear'.*'constant' or 'cosine'"):
        tiny_trainer(fine_tune_schedule="linear")


def test_the_window_is_a_fraction_of_each_phase_and_a_resumed_phase_ends_alike(tiny_data, tmp_path):
    """Phase 1 of 2 epochs of 2 steps with a window of 0.5: momentum 1 - 1/2; phase 2 of 3 epochs: 1 - 1/3,
    also when the run is resumed inside phase 2 (the window counts the whole phase, not what is left of it)."""
    seen = []

    class Momentum(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append((epoch, round(float(self.model.optimizer.ema_momentum), 6)))

    class StopAt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tiny_trainer(**CNN, ema_window=0.5).fit(tiny_data, epochs=2, fine_tune_epochs=3, verbose=0,
                                                callbacks=[Momentum(), StopAt()], checkpoint_dir=tmp_path)
    resumed = tiny_trainer(**CNN, ema_window=0.5)
    resumed.fit(tiny_data, epochs=2, fine_tune_epochs=3, verbose=0, callbacks=[Momentum()], checkpoint_dir=tmp_path)
    assert seen == [(0, 0.5), (1, 0.5), (2, 0.666667), (3, 0.666667), (4, 0.666667)]
    uninterrupted = tiny_trainer(**CNN, ema_window=0.5)
    uninterrupted.fit(tiny_data, epochs=2, fine_tune_epochs=3, verbose=0)
    for a, b in zip(resumed.model.get_weights(), uninterrupted.model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # the checkpoint held the raw weights
