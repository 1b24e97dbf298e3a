import keras
import numpy as np
import pytest

from conftest import make_tree, tiny_trainer
from transferkit import ClassifierHead, ImageFolder, load_model
from transferkit.training.callbacks import PhaseCallback

CNN = dict(backbone="test_cnn", backbone_options={}, unfreeze_from="block2")


class PhaseProbe(PhaseCallback):
    """Records, at the start and end of each phase, what the trainer set up. ``self.model`` is the
    full training model, whose optimizer is the one that trains the phase."""

    def __init__(self, trainer):
        super().__init__()
        self.trainer = trainer
        self.starts, self.ends, self.epochs = [], [], []

    def snapshot(self):
        bns = [l for l in self.trainer.backbone_model.layers if isinstance(l, keras.layers.BatchNormalization)]
        return {
            "trainable_weights": len(self.model.trainable_weights),
            "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            "moving_means": [keras.ops.convert_to_numpy(b.moving_mean).copy() for b in bns],
        }

    def on_phase_begin(self, phase, logs=None):
        self.starts.append(self.snapshot())
        self.epochs.append([])

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs[-1].append(epoch)

    def on_phase_end(self, phase, logs=None):
        self.ends.append(self.snapshot())


def backbone_of(trainer):
    return trainer.backbone_model


def expected_phase2_trainables(trainer, index):
    """Trainable weights in phase 2: the head's plus those of non-BN backbone layers from index on."""
    layers = backbone_of(trainer).layers[index:]
    backbone = sum(len(l.trainable_weights) for l in layers if not isinstance(l, keras.layers.BatchNormalization))
    return backbone + 2  # head: logits kernel and bias


@pytest.mark.parametrize("unfreeze_from", [100, "block_15", "block_16_project"])
def test_trainable_weights_before_and_after_the_switch(tiny_data, unfreeze_from):
    trainer = tiny_trainer(unfreeze_from=unfreeze_from)
    trainer.build(tiny_data.class_names, tiny_data.image_size)
    trainer.freeze_backbone()
    assert len(trainer.model.trainable_weights) == 2
    index = trainer.unfreeze_top()
    names = [l.name for l in backbone_of(trainer).layers]
    assert index == (unfreeze_from if isinstance(unfreeze_from, int) else
                     names.index("block_15_expand" if unfreeze_from == "block_15" else unfreeze_from))
    assert all(not l.trainable for l in backbone_of(trainer).layers[:index])
    assert len(trainer.model.trainable_weights) == expected_phase2_trainables(trainer, index)
    assert expected_phase2_trainables(trainer, index) > 2


@pytest.mark.parametrize("cache_features", [True, False])
def test_fit_runs_both_phases_as_set_up(tiny_data, cache_features):
    trainer = tiny_trainer(unfreeze_from="block_14", learning_rate=2e-3, fine_tune_lr_factor=0.1,
                           cache_features=cache_features)
    probe = PhaseProbe(trainer)
    result = trainer.fit(tiny_data, epochs=2, fine_tune_epochs=2, callbacks=[probe], verbose=0)

    assert probe.epochs == [[0, 1], [2, 3]]  # phase 2 continues the count, no extra epoch
    assert result.phase_boundary == 2 and len(result.history["val_accuracy"]) == 4
    assert set(result.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert probe.starts[0]["trainable_weights"] == 2
    index = trainer.unfreeze_index()
    assert probe.starts[1]["trainable_weights"] == expected_phase2_trainables(trainer, index)
    assert probe.starts[0]["learning_rate"] == pytest.approx(2e-3)
    assert probe.starts[1]["learning_rate"] == pytest.approx(2e-4)
    assert result.final("val_accuracy", phase=1) == result.history["val_accuracy"][1]


@pytest.mark.parametrize("cache_features", [True, False], ids=["fast", "exact"])
@pytest.mark.parametrize("freeze_batchnorm", [True, False])
def test_batchnorm_moving_statistics_change_only_when_asked(tmp_path, cache_features, freeze_batchnorm):
    """On the small CNN the activations at the cut are far from zero (in float16 too), so an
    unfrozen BatchNorm's moving statistics do move: the frozen case is a real check."""
    root = make_tree(tmp_path / "pets", {"cats": 8, "dogs": 8})
    data = ImageFolder(root, image_size=(32, 32), batch_size=4, split=(0.5, 0.5), seed=0)
    trainer = tiny_trainer(**CNN, freeze_batchnorm=freeze_batchnorm, cache_features=cache_features)
    probe = PhaseProbe(trainer)
    trainer.fit(data, epochs=1, fine_tune_epochs=2, callbacks=[probe], verbose=0)
    bn = trainer.backbone_model.get_layer("block2_bn")
    assert bn in trainer.backbone_model.layers[trainer.unfreeze_index():]  # in the part that trains
    position = [l for l in trainer.backbone_model.layers if isinstance(l, keras.layers.BatchNormalization)].index(bn)
    before, after = probe.starts[1]["moving_means"][position], probe.ends[1]["moving_means"][position]
    assert np.abs(before).max() < 1e-6  # fresh statistics: zero mean
    if freeze_batchnorm:
        np.testing.assert_array_equal(before, after)
        variance = keras.ops.convert_to_numpy(bn.moving_variance)
        np.testing.assert_array_equal(variance, np.ones_like(variance))
    else:
        assert np.abs(after - before).max() > 1e-3  # would move, were it not frozen


def test_phase_one_only(tiny_data):
    result = tiny_trainer().fit(tiny_data, epochs=1, fine_tune_epochs=0, verbose=0)
    assert result.phase_boundary == 1 and result.final("val_accuracy", phase=2) is None


def test_save_and_load_give_identical_predictions(trained, tiny_data, tmp_path):
    trainer, result = trained
    path = trainer.save(tmp_path / "model.keras")
    loaded = load_model(path)
    assert loaded.class_names == ["cats", "dogs"] and loaded.image_size == (32, 32)
    images = tiny_data.images("test")
    np.testing.assert_allclose(loaded.predict(images), trainer.predict(images), rtol=0, atol=1e-6)
    assert loaded.predict_classes(images) == trainer.predict_classes(images)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        trainer.save(path)
    assert trainer.save(path, overwrite=True) == path


def test_saved_model_takes_raw_pixels_and_files(trained, tiny_data, tmp_path):
    trainer, _ = trained
    loaded = load_model(trainer.save(tmp_path / "m.keras"))
    files = tiny_data.files("test")
    by_file = loaded.predict(files)
    by_pixels = loaded.predict(tiny_data.images("test").astype("uint8"))
    np.testing.assert_allclose(by_file, by_pixels, atol=1e-6)
    assert np.allclose(by_file.sum(axis=1), 1.0, atol=1e-5)
    assert loaded.predict(files[0]).shape == (1, 2)
    assert loaded.predict(tiny_data.test).shape == (len(files), 2)
    with pytest.raises(ValueError, match="takes 32x32"):
        loaded.predict(np.zeros((1, 40, 40, 3)))


def test_three_classes_end_to_end(tmp_path):
    root = make_tree(tmp_path / "three", {"red": 8, "blue": 8, "green": 8})
    data = ImageFolder(root, image_size=(32, 32), batch_size=8, split=(0.5, 0.5), seed=0)
    trainer = tiny_trainer(head=ClassifierHead(hidden_units=8, dropout=0.1))
    result = trainer.fit(data, epochs=1, fine_tune_epochs=1, verbose=0)
    assert isinstance(trainer.model.loss, keras.losses.SparseCategoricalCrossentropy)
    assert trainer.model.output_shape == (None, 3)
    probabilities = trainer.predict(data.images("validation"))
    assert probabilities.shape == (12, 3) and np.allclose(probabilities.sum(1), 1, atol=1e-5)
    assert set(trainer.predict_classes(data.images("validation"))) <= {"blue", "green", "red"}
    loaded = load_model(trainer.save(tmp_path / "three.keras"))
    assert loaded.class_names == ["blue", "green", "red"]
    assert len(result.history["loss"]) == 2


@pytest.mark.parametrize("cache_features", [True, False], ids=["fast", "exact"])
def test_a_seed_makes_runs_repeatable(tmp_path, cache_features):
    """A learnable backbone, augmentation and dropout: the history depends on the weights, the order
    and the random draws, so only seeding all of them makes two runs equal (another seed differs)."""
    root = make_tree(tmp_path / "pets", {"cats": 8, "dogs": 8})
    histories = []
    for seed in (11, 11, 12):
        data = ImageFolder(root, image_size=(32, 32), batch_size=4, split=(0.5, 0.5), seed=5)
        trainer = tiny_trainer(**CNN, seed=seed, learning_rate=1e-2, head={"dropout": 0.3},
                               cache_features=cache_features)
        histories.append(trainer.fit(data, epochs=2, fine_tune_epochs=2, verbose=0).history)
    assert histories[0] == histories[1]
    assert histories[0]["loss"] != histories[2]["loss"]


def test_bad_unfreeze_points_are_named(tiny_data):
    for point, message in [(999, "outside"), ("block_99", "block_1, block_2"), (1.5, "layer index")]:
        trainer = tiny_trainer(unfreeze_from=point)
        trainer.build(tiny_data.class_names, tiny_data.image_size)
        with pytest.raises((ValueError, TypeError), match=message):
            trainer.unfreeze_index()


def test_misuse_is_explained(tiny_data):
    with pytest.raises(RuntimeError, match="call fit"):
        tiny_trainer().predict(np.zeros((1, 32, 32, 3)))
    with pytest.raises(ValueError, match="image_size"):
        tiny_trainer(image_size=(64, 64)).build(tiny_data.class_names, tiny_data.image_size)
    with pytest.raises(ValueError, match="at least one epoch"):
        tiny_trainer().fit(tiny_data, epochs=0, fine_tune_epochs=0)
    with pytest.raises(KeyError, match="Unknown backbone"):
        tiny_trainer(backbone="alexnet")


def test_get_config_describes_the_run(trained):
    trainer, _ = trained
    config = trainer.get_config()
    assert config["backbone"] == "test_cnn" and config["unfreeze_from"] == "block2"
    assert config["head"]["dropout"] == 0.2


def test_the_model_learns_the_colours(trained, tiny_data):
    trainer, result = trained
    assert result.history["val_accuracy"][-1] == 1.0
    assert trainer.predict_classes(tiny_data.images("test")) == [tiny_data.class_names[i] for i in tiny_data.labels("test")]


def test_mirror_test_time_augmentation_averages_image_and_mirror(trained, tiny_data):
    trainer, _ = trained
    images = tiny_data.images("validation")
    mirrored = images[:, :, ::-1]
    expected = (trainer.predict(images) + trainer.predict(mirrored)) / 2
    np.testing.assert_allclose(trainer.classifier.predict(images, tta=True), expected, atol=1e-6)
    np.testing.assert_allclose(trainer.classifier.predict(tiny_data.dataset("validation"), tta=True), expected,
                               atol=1e-6)
    half = images.copy()
    half[:, :, :16] = 128  # an image whose mirror differs: TTA must change its prediction
    assert not np.allclose(trainer.classifier.predict(half, tta=True), trainer.predict(half))


@pytest.mark.parametrize("cached", [True, False])
def test_mixed_precision_computes_in_bfloat16_and_keeps_float32_logits(tiny_data, cached, tmp_path):
    import keras

    from transferkit import load_model

    trainer = tiny_trainer(backbone="test_cnn", backbone_options={}, unfreeze_from="block2", learning_rate=5e-2,
                           cache_features=cached, mixed_precision="mixed_bfloat16")
    result = trainer.fit(tiny_data, epochs=3, fine_tune_epochs=1, verbose=0)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is put back
    conv = trainer.backbone_model.get_layer("block1_conv")
    assert conv.compute_dtype == "bfloat16" and conv.variable_dtype == "float32"
    head = trainer.model.layers[-1]
    assert head.logits.compute_dtype == "float32"
    images = tiny_data.images("test")
    probabilities = result.classifier.predict(images)
    assert probabilities.dtype == np.float32 and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert result.history["accuracy"][-1] > 0.7  # it still learns
    reloaded = load_model(trainer.save(tmp_path / "m.keras")).predict(images)
    # Keras does not save a functional sub-model's own policy, so the reloaded backbone rounds its input
    # to bfloat16 one layer later: equal to bfloat16's precision, not bit for bit.
    np.testing.assert_allclose(reloaded, probabilities, atol=2e-3)
    assert (reloaded.argmax(1) == probabilities.argmax(1)).all()
    with pytest.raises(ValueError, match="mixed_precision"):
        tiny_trainer(mixed_precision="float8")


def test_the_fast_path_on_data_that_cannot_serve_it_says_so(tiny_data):
    """Plain datasets have no per-file images to compute features from: asking for the fast path on
    them warns, naming why, and trains the exact way; asking for the exact way is silent."""
    import warnings
    from types import SimpleNamespace

    plain = SimpleNamespace(train=tiny_data.train, validation=tiny_data.validation,
                            class_names=tiny_data.class_names, image_size=tiny_data.image_size)
    with pytest.warns(UserWarning, match=r"has no dataset\(\) and labels\(\).*training the exact way"):
        result = tiny_trainer(**CNN, seed=0).fit(plain, epochs=1, fine_tune_epochs=1, verbose=0)
    assert len(result.history["loss"]) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        tiny_trainer(**CNN, seed=0, cache_features=False).fit(plain, epochs=1, fine_tune_epochs=0, verbose=0)


def test_the_recipes_receive_the_built_model_not_the_trainer(tiny_data):
    from transferkit.training import BuiltModel, CachedRecipe, ExactRecipe

    trainer = tiny_trainer(**CNN, seed=0)
    trainer.build(tiny_data.class_names, tiny_data.image_size)
    built = trainer.parts
    assert isinstance(built, BuiltModel) and built.model is trainer.model and built.backbone is trainer.backbone_model
    assert built.head.num_classes == 2
    exact = ExactRecipe(built, tiny_data, seed=0)
    assert exact.model(2) is trainer.model and exact.trains_full_model
    cached = CachedRecipe(built, tiny_data, cut=trainer.unfreeze_index(), phases=[1, 2], verbose=0)
    try:
        phase1, phase2 = cached.model(1), cached.model(2)
        assert phase1.inputs[0].shape[-1] == cached.features.pooled_shape[-1]
        assert {l.name for l in phase2.layers} >= {l.name for l in trainer.backbone_model.layers[trainer.unfreeze_index():]
                                                   if not isinstance(l, keras.layers.InputLayer)}
    finally:
        cached.close()
    with pytest.raises(ValueError, match="leaves no frozen layers"):
        CachedRecipe(built, tiny_data, cut=1, phases=[1, 2])


# The layers phase 2 must train, written out from MobileNetV2's architecture (not from the trainable flags
# the code under test sets): every convolution from the unfreeze point on, no BatchNormalization, and the
# head's logits.
MOBILENET_TOP = {
    "block_15": ["block_15_expand", "block_15_depthwise", "block_15_project", "block_16_expand",
                 "block_16_depthwise", "block_16_project", "Conv_1"],
    "block_16_project": ["block_16_project", "Conv_1"],
}


@pytest.mark.parametrize("cache_features", [True, False], ids=["fast", "exact"])
@pytest.mark.parametrize("point", sorted(MOBILENET_TOP))
def test_phase_two_trains_exactly_the_layers_from_the_unfreeze_point(tiny_data, cache_features, point):
    from conftest import TrainedInPhaseTwo

    probe = TrainedInPhaseTwo()
    trainer = tiny_trainer(unfreeze_from=point, cache_features=cache_features)
    trainer.fit(tiny_data, epochs=1, fine_tune_epochs=1, callbacks=[probe], verbose=0)
    owners = {path.split("/")[-2] for path in probe.paths}
    assert owners == set(MOBILENET_TOP[point]) | {"logits"}
    kinds = {path.split("/")[-1] for path in probe.paths}
    assert kinds <= {"kernel", "depthwise_kernel", "bias"}  # no gamma/beta: BatchNormalization stays frozen


def test_the_exact_recipe_leaves_one_image_in_views_as_it_is(tiny_data):
    from transferkit.models.augment import PartlyAugmented

    trainer = tiny_trainer(cache_features=False, views=4)
    trainer.build(tiny_data.class_names, tiny_data.image_size)
    mix = trainer.model.get_layer("view_mix")
    assert isinstance(mix, PartlyAugmented) and mix.plain_fraction == 0.25
    assert trainer.parts.augmentation is mix.block  # the fast path's views 1, 2, ... stay augmented
    x = np.random.default_rng(0).uniform(0, 255, (400, 32, 32, 3)).astype("float32")
    served = keras.ops.convert_to_numpy(mix(x, training=True))
    assert 0.18 < np.all(np.isclose(served, x), axis=(1, 2, 3)).mean() < 0.32
    tutorial = tiny_trainer(cache_features=False, augmentation={"preset": "default", "plain_fraction": 0})
    tutorial.build(tiny_data.class_names, tiny_data.image_size)
    assert not any(isinstance(layer, PartlyAugmented) for layer in tutorial.model.layers)


def test_the_seed_project_preset_augments_every_image_as_the_tutorial_does(tiny_data):
    from transferkit import TwoPhaseTrainer
    from transferkit.models.augment import PartlyAugmented

    trainer = TwoPhaseTrainer.from_preset("seed_project", weights=None, backbone_options={"alpha": 0.35},
                                          image_size=tiny_data.image_size)
    trainer.build(tiny_data.class_names, tiny_data.image_size)
    assert not any(isinstance(layer, PartlyAugmented) for layer in trainer.model.layers)
    flips = [layer for layer in trainer.parts.augmentation.layers if layer.__class__.__name__ == "RandomFlip"]
    x = np.random.default_rng(0).uniform(0, 255, (64,) + tiny_data.image_size + (3,)).astype("float32")
    served = keras.ops.convert_to_numpy(trainer.parts.augmentation(x, training=True))
    assert flips and not np.any(np.all(np.isclose(served, x), axis=(1, 2, 3)))  # no image passes as it is
