import keras
import numpy as np
import pytest

from transferkit import ClassifierHead, ClassProbabilities, augmentation


def test_augmentation_presets_and_overrides():
    assert [type(l).__name__ for l in augmentation("none").layers] == []
    strong = [type(l).__name__ for l in augmentation("strong").layers]
    assert strong == ["RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast"]
    layers = augmentation("default", flip="vertical", rotation=0.05).layers
    assert layers[0].mode == "vertical" and layers[1].factor == (-0.05, 0.05)


def test_augmentation_rejects_unknown_names():
    with pytest.raises(ValueError, match="preset 'wild'"):
        augmentation("wild")
    with pytest.raises(ValueError, match="blur"):
        augmentation("default", blur=0.1)


def test_augmentation_changes_images_in_training_only():
    block = augmentation("default", seed=1)
    x = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    assert np.allclose(block(x, training=False), x)
    assert not np.allclose(block(x, training=True), x)


def test_a_plain_fraction_leaves_that_share_of_the_images_as_they_are():
    x = np.random.default_rng(0).uniform(0, 255, (400, 16, 16, 3)).astype("float32")
    block = augmentation("default", seed=1, plain_fraction=0.25)
    plain = [np.all(np.isclose(keras.ops.convert_to_numpy(block(x, training=True)), x), axis=(1, 2, 3)).mean()
             for _ in range(3)]
    assert all(0.18 < p < 0.32 for p in plain)  # 100 of 400 expected, drawn anew at every call
    never = augmentation("default", seed=1)
    assert np.all(np.isclose(keras.ops.convert_to_numpy(never(x, training=True)), x), axis=(1, 2, 3)).mean() < 0.02
    assert np.allclose(keras.ops.convert_to_numpy(block(x, training=False)), x)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(block))
    assert again.layers[0].plain_fraction == 0.25 and len(again.layers[0].block.layers) == 2
    with pytest.raises(ValueError, match="plain_fraction=1.5"):
        augmentation("default", plain_fraction=1.5)


@pytest.mark.parametrize("num_classes, units", [(2, 1), (3, 3), (10, 10)])
def test_head_logits(num_classes, units):
    head = ClassifierHead(num_classes=num_classes, hidden_units=8, pooling="max")
    assert head(np.zeros((3, 4, 4, 16), "float32")).shape == (3, units)


def test_head_config_round_trip():
    head = ClassifierHead(num_classes=3, pooling="max", dropout=0.3, hidden_units=16, hidden_activation="gelu")
    clone = ClassifierHead.from_config(head.get_config())
    for key in ("num_classes", "pooling", "dropout", "hidden_units", "hidden_activation"):
        assert getattr(clone, key) == getattr(head, key)
    assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head)).hidden_units == 16


def test_head_loss_and_metrics_follow_the_logits():
    binary, multi = ClassifierHead(num_classes=2), ClassifierHead(num_classes=4)
    assert isinstance(binary.make_loss(), keras.losses.BinaryCrossentropy)
    assert binary.make_loss().get_config()["from_logits"]
    assert binary.make_metrics()[0].get_config()["threshold"] == 0.0
    assert isinstance(multi.make_loss(), keras.losses.SparseCategoricalCrossentropy)
    # one logit of +0.1 is class 1 (sigmoid 0.52): threshold 0 on logits counts it right
    metric = binary.make_metrics()[0]
    metric.update_state(np.array([[1.0], [0.0]]), np.array([[0.1], [-0.1]]))
    assert metric.result() == 1.0


def test_head_checks_its_arguments():
    with pytest.raises(ValueError, match="pooling"):
        ClassifierHead(pooling="mean")
    with pytest.raises(ValueError, match="num_classes"):
        ClassifierHead(num_classes=1)
    with pytest.raises(ValueError, match="made for 3 classes"):
        ClassifierHead(num_classes=3).with_num_classes(2)


def test_class_probabilities_sum_to_one():
    two = ClassProbabilities(["a", "b"])
    p = np.asarray(two(np.array([[2.0], [-1.0]], "float32")))
    assert np.allclose(p.sum(1), 1) and p[0, 1] == pytest.approx(1 / (1 + np.exp(-2)), rel=1e-5)
    three = np.asarray(ClassProbabilities(["a", "b", "c"])(np.array([[1.0, 2.0, 3.0]], "float32")))
    assert np.allclose(three.sum(1), 1) and three.argmax() == 2


@pytest.mark.parametrize("pooling, reduce", [("avg", np.mean), ("max", np.max)])
def test_head_pooling_is_what_it_says(pooling, reduce):
    head = ClassifierHead(num_classes=3, pooling=pooling, dropout=0.0)
    x = np.random.default_rng(0).normal(size=(2, 5, 4, 6)).astype("float32")
    logits = np.asarray(head(x))
    kernel, bias = (np.asarray(w) for w in head.logits.weights)
    np.testing.assert_allclose(logits, reduce(x, axis=(1, 2)) @ kernel + bias, rtol=1e-5, atol=1e-6)
