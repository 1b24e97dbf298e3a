"""The learning-rate finder: both phases swept on cached features, a suggestion by its stated rule, the
trainer left as a fresh build; the command writes its picture and figures and overwrites nothing."""

import json

import numpy as np
import pytest

from transferkit import TwoPhaseTrainer
from transferkit.training.lr_find import LRSweep, _Sweep


def test_each_steps_own_loss_is_recovered_from_the_running_mean():
    class Model:
        stop_training = False

        class optimizer:
            learning_rate = None

    losses = [0.9, 0.7, 0.8, 0.4, 0.6]
    sweep = _Sweep(np.geomspace(1e-4, 1e-2, len(losses)))
    sweep.set_model(Model())
    for step, _ in enumerate(losses):
        sweep.on_train_batch_begin(step)
        assert Model.optimizer.learning_rate == pytest.approx(sweep.rates[step])
        sweep.on_train_batch_end(step, {"loss": np.mean(losses[:step + 1])})
    np.testing.assert_allclose(sweep.losses, losses, atol=1e-12)


def test_the_suggestion_follows_its_rule():
    rates = np.geomspace(1e-6, 1, 61)
    losses = np.r_[np.full(30, 2.0), np.linspace(2.0, 0.5, 20), np.linspace(0.5, 9, 11)]  # lowest at step 49
    sweep = LRSweep.of(1, rates, losses, smoothing=0.0)  # steps 49, 50: 0.5; step 51 (1.35) is above twice that
    assert sweep.suggestion == pytest.approx(rates[50] / 10) and "doubled its lowest" in sweep.rule
    flat = np.r_[np.full(40, 0.1) + 0.01 * np.sin(np.arange(40)), np.linspace(0.1, 1.0, 21)]  # noisy, then up
    sweep = LRSweep.of(2, rates, flat, smoothing=0.0)
    first_above = 40 + int(np.argmax(flat[40:] > 2 * flat.min()))
    assert sweep.suggestion == pytest.approx(rates[first_above - 1] / 10)  # not at the noise's lowest point
    assert int(np.argmin(flat)) < 40
    assert sweep.usable
    rising = LRSweep.of(2, rates, 0.1 * (1 + 0.5 * np.arange(61)), smoothing=0.0)  # a loss that only rises
    assert not rising.usable and "suggests nothing" in rising.rule
    never = LRSweep.of(1, rates, np.linspace(2.0, 1.5, 61), smoothing=0.0)
    assert never.suggestion == pytest.approx(rates[-1] / 10) and "never doubled" in never.rule


def test_both_phases_are_swept_and_the_trainer_is_left_fresh(tiny_data, tmp_path):
    trainer = TwoPhaseTrainer(backbone="test_cnn", weights=None, seed=0, unfreeze_from="block2", augmentation=None)
    finding = trainer.lr_find(tiny_data, steps=30, epochs=1)
    assert sorted(finding.sweeps) == [1, 2]
    for sweep in finding.sweeps.values():
        assert 11 <= len(sweep.losses) <= 30 and len(sweep.learning_rates) == len(sweep.losses)
        assert np.all(np.diff(sweep.learning_rates) > 0) and np.isfinite(sweep.losses).all()
        best = int(np.nanargmin(sweep.smoothed))
        above = np.flatnonzero(sweep.smoothed[best:] > 2 * sweep.smoothed[best])
        at = sweep.learning_rates[best + above[0] - 1] if len(above) else sweep.learning_rates[-1]
        assert sweep.suggestion == pytest.approx(at / 10)
    assert finding.learning_rate == finding.sweeps[1].suggestion
    assert finding.fine_tune_lr_factor == pytest.approx(finding.sweeps[2].suggestion / finding.sweeps[1].suggestion)
    fresh = TwoPhaseTrainer(backbone="test_cnn", weights=None, seed=0, unfreeze_from="block2", augmentation=None)
    import keras

    keras.utils.set_random_seed(0)
    fresh.build(tiny_data.class_names, tiny_data.image_size)
    for mine, theirs in zip(trainer.model.get_weights(), fresh.model.get_weights()):
        np.testing.assert_array_equal(mine, theirs)  # the sweeps' weights are gone
    from transferkit.evaluation import plot_lr_find

    assert plot_lr_find(finding, tmp_path / "lr.png").stat().st_size > 0
    assert "suggested: TwoPhaseTrainer(learning_rate=" in str(finding)


def test_a_sweep_into_divergence_stops_early(tmp_path):
    """Labels that the pixels cannot tell apart (both classes one colour): a huge rate makes the loss explode
    rather than fall to nothing."""
    from conftest import COLOURS, make_image
    from transferkit import ImageFolder

    for name in ("cats", "dogs"):
        for i in range(16):
            make_image(tmp_path / "same" / name / f"{i}.png", COLOURS[0], seed=(0 if name == "cats" else 100) + i)
    data = ImageFolder(tmp_path / "same", image_size=(32, 32), batch_size=8, split=(0.5, 0.5), seed=0)
    trainer = TwoPhaseTrainer(backbone="test_cnn", weights=None, seed=0, augmentation=None)
    finding = trainer.lr_find(data, min_lr=1e-3, max_lr=1e6, steps=60, phases=(1,))
    assert len(finding.sweeps[1].losses) < 60 and finding.fine_tune_lr_factor is None


def test_the_command_writes_its_picture_and_figures_and_overwrites_nothing(two_class_tree, tmp_path, capsys):
    from transferkit.cli import main

    command = ["lr-find", str(two_class_tree), "--output", str(tmp_path / "lr"), "--backbone", "test_cnn",
               "--weights", "none", "--image-size", "32", "--batch-size", "4", "--steps", "20", "--epochs", "1",
               "--augmentation", "none", "--unfreeze-from", "block2"]
    assert main(command) == 0
    out = capsys.readouterr().out
    assert "train with: transferkit train" in out and "--fine-tune-lr-factor" in out
    saved = json.loads((tmp_path / "lr" / "lr_find.json").read_text())
    assert [s["phase"] for s in saved["sweeps"]] == [1, 2] and saved["learning_rate"] > 0
    assert (tmp_path / "lr" / "lr_find.png").stat().st_size > 0
    assert main(command) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*command, "--overwrite", "--phase", "1"]) == 0
