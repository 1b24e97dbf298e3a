"""The newer keras.applications families and your own Keras model as backbones: blocks, the unfreeze
point, the fast path's cut, `.keras` files and export, each checked against names chosen here."""

import re

import keras
import numpy as np
import pytest
from conftest import TrainedInPhaseTwo

from transferkit import TwoPhaseTrainer, get_backbone, get_backbone_spec, list_backbones, load_model
from transferkit.models.backbones import backbone_from_model
from transferkit.training.features import split_backbone

# family: (first block, last block, the block phase 2 starts at here, what trains from it on: the names of
# the layers with weights that phase 2 must train, BatchNormalization apart).
FAMILIES = {
    "mobilenet_v3_small": ("expanded_conv", "expanded_conv_10", "expanded_conv_9",
                           r"^(expanded_conv_9_|expanded_conv_10_|conv_1$)"),
    "mobilenet_v3_large": ("expanded_conv", "expanded_conv_14", "expanded_conv_14", r"^(expanded_conv_14_|conv_1$)"),
    "efficientnet_v2_b0": ("block1a", "block6h", "block6g", r"^(block6g_|block6h_|top_conv$)"),
    "efficientnet_v2_b1": ("block1a", "block6i", "block6i", r"^(block6i_|top_conv$)"),
    "efficientnet_v2_b2": ("block1a", "block6j", "block6j", r"^(block6j_|top_conv$)"),
    "efficientnet_v2_b3": ("block1a", "block6l", "block6l", r"^(block6l_|top_conv$)"),
    "convnext_tiny": ("stage_0_block_0", "stage_3_block_2", "stage_3_block_1",
                      r"^(convnext_tiny_stage_3_block_[12]_|layer_normalization(_\d+)?$)"),
}
# One of each family trains end to end, both ways; MobileNetV3 on the fast path in the everyday suite, the rest in
# the slow tier (families).
TRAINED = ["mobilenet_v3_small", pytest.param("efficientnet_v2_b0", marks=pytest.mark.families),
           pytest.param("convnext_tiny", marks=pytest.mark.families)]


def test_the_newer_families_are_registered_and_found_by_pattern():
    assert set(FAMILIES) <= set(list_backbones())
    assert list_backbones("*efficient*") == ["efficientnet_b0"] + [f"efficientnet_v2_b{i}" for i in range(4)]
    assert list_backbones("mobilenet_v3*") == ["mobilenet_v3_large", "mobilenet_v3_small"]
    sizes = {name: get_backbone_spec(name).default_image_size[0] for name in FAMILIES}
    assert sizes == {"mobilenet_v3_small": 224, "mobilenet_v3_large": 224, "efficientnet_v2_b0": 224,
                     "efficientnet_v2_b1": 240, "efficientnet_v2_b2": 260, "efficientnet_v2_b3": 300,
                     "convnext_tiny": 224}
    # they scale their own 0-255 pixels: transferkit must not scale them again
    assert {get_backbone_spec(name).preprocessing for name in FAMILIES} == {"none"}


@pytest.mark.parametrize("name", FAMILIES)
def test_blocks_and_a_cut_through_them_are_exact(name):
    first, last, point, _ = FAMILIES[name]
    model = get_backbone(name, (32, 32, 3), weights=None)
    blocks = get_backbone_spec(name).blocks(model)
    assert list(blocks)[0] == first and list(blocks)[-1] == last
    index = blocks[point]
    assert model.layers[index].name.startswith({"convnext_tiny": "convnext_tiny_"}.get(name, "") + point + "_")
    assert not any(layer.name.startswith(point + "_") for layer in model.layers[:index])
    frozen, top = split_backbone(model, index)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    *crossing, whole = frozen(x)
    expected = np.asarray(model(x))
    np.testing.assert_allclose(np.asarray(top(crossing)), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    np.testing.assert_allclose(np.asarray(whole), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def _backbone_layers_trained(backbone: keras.Model, paths: set) -> set:
    names = {layer.name for layer in backbone.layers}
    return {path.split("/")[-2] for path in paths if path.split("/")[-2] in names}


@pytest.mark.parametrize("name", TRAINED)
@pytest.mark.parametrize("cache_features", [True, pytest.param(False, marks=pytest.mark.families)])
def test_phase_two_trains_exactly_the_layers_from_the_unfreeze_point(name, cache_features, tiny_data, tmp_path):
    _, _, point, trains = FAMILIES[name]
    probe = TrainedInPhaseTwo()
    trainer = TwoPhaseTrainer(backbone=name, weights=None, unfreeze_from=point, cache_features=cache_features,
                              seed=0, ema_window=None)
    result = trainer.fit(tiny_data, epochs=1, fine_tune_epochs=1, verbose=0, callbacks=[probe])
    backbone = trainer.backbone_model
    expected = {layer.name for layer in backbone.layers if layer.weights and re.match(trains, layer.name)
                and not isinstance(layer, keras.layers.BatchNormalization)}
    assert expected and _backbone_layers_trained(backbone, probe.paths) == expected
    assert not any(layer.trainable for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization))
    if cache_features:  # one round trip per family
        path = result.classifier.save(tmp_path / f"{name}.keras")
        again = load_model(path)
        images = tiny_data.images("test")
        np.testing.assert_allclose(again.predict(images), result.classifier.predict(images), atol=1e-6)


@pytest.mark.families
@pytest.mark.parametrize("format", ["tflite", "onnx"])
def test_mobilenet_v3_exports_with_parity(tiny_data, tmp_path, format):
    pytest.importorskip("tensorflow", reason="TFLite and ONNX export need TensorFlow")
    if format == "onnx":
        pytest.importorskip("tf2onnx", reason="tf2onnx is not installed (pip install 'transferkit[onnx]')")
        pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'transferkit[onnx]')")
    from transferkit.export import export
    from transferkit.export.parity import check_parity

    trainer = TwoPhaseTrainer(backbone="mobilenet_v3_small", weights=None, unfreeze_from="expanded_conv_10", seed=0)
    classifier = trainer.fit(tiny_data, epochs=1, fine_tune_epochs=1, verbose=0).classifier
    parity = check_parity(classifier, export(classifier, tmp_path / f"m.{format}", format=format), tiny_data,
                          split="test", verbose=0)
    assert parity.agreement == 1.0 and parity.max_probability_difference < 1e-4


# -- your own model -----------------------------------------------------------------------------


def _own_model(size=None, name="mine"):
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255, name="scale")(inputs)
    for i, filters in enumerate((8, 16, 16), start=1):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", name=f"stage{i}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"stage{i}_bn")(x)
        x = keras.layers.ReLU(name=f"stage{i}_relu")(x)
    return keras.Model(inputs, x, name=name)


def test_your_own_model_trains_as_a_backbone_and_is_never_changed(tiny_data):
    model = _own_model()
    before = [np.array(w) for w in model.get_weights()]
    probe = TrainedInPhaseTwo()
    trainer = TwoPhaseTrainer(backbone=model, unfreeze_from="stage2_conv", seed=0, learning_rate=1e-2)
    result = trainer.fit(tiny_data, epochs=1, fine_tune_epochs=2, verbose=0, callbacks=[probe])
    assert _backbone_layers_trained(trainer.backbone_model, probe.paths) == {"stage2_conv", "stage3_conv"}
    trained = dict(zip([w.path for w in trainer.backbone_model.weights], trainer.backbone_model.get_weights()))
    original = dict(zip([w.path for w in model.weights], before))
    assert not np.array_equal(trained["stage3_conv/kernel"], original["stage3_conv/kernel"])  # it trained ...
    np.testing.assert_array_equal(trained["stage1_conv/kernel"], original["stage1_conv/kernel"])  # ... from there on
    for kept, now in zip(before, model.get_weights()):  # ... on a copy: the model given is as it was
        np.testing.assert_array_equal(kept, now)
    assert result.classifier.predict(tiny_data.images("test")).shape == (8, 2)


def test_your_own_model_with_blocks_and_in_config_and_caches(tiny_data, tmp_path):
    spec = backbone_from_model(_own_model(), block_pattern=r"^(stage\d)_")
    trainer = TwoPhaseTrainer(backbone=spec, unfreeze_from="stage3", weights=None, seed=0)
    trainer.build(["cats", "dogs"], (32, 32))
    assert trainer.backbone_model.layers[trainer.unfreeze_index()].name == "stage3_conv"
    config = trainer.get_config()["backbone"]
    assert config["name"] == "mine" and len(config["digest"]) == 16
    with pytest.raises(ValueError, match="unregistered backbone .*'mine'"):
        TwoPhaseTrainer.from_config(trainer.get_config())
    other = backbone_from_model(_own_model())  # same architecture, other random weights
    assert other.digest != spec.digest and backbone_from_model(spec_model := _own_model()).digest == \
        backbone_from_model(spec_model).digest
    # the digest keys checkpoints and cached features: another network's run is not taken for this one's
    assert TwoPhaseTrainer(backbone=other).run_settings() != TwoPhaseTrainer(backbone=spec).run_settings()


def test_your_own_model_fixed_size_must_match_the_data(tiny_data):
    trainer = TwoPhaseTrainer(backbone=_own_model(size=64), seed=0)
    with pytest.raises(ValueError, match=r"takes images of shape \(64, 64, 3\), the data gives \(32, 32, 3\)"):
        trainer.fit(tiny_data, epochs=1, fine_tune_epochs=0, verbose=0)


@pytest.mark.parametrize("make, message", [
    (lambda: keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35),
     "ends in a classifier top \\(layer 'predictions'"),
    (lambda: keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35, include_top=False,
                                            pooling="avg"), "not a feature map .* without global pooling"),
    (lambda: keras.Sequential([keras.layers.Conv2D(4, 3)]), "no defined inputs and outputs yet"),
    (lambda: keras.Model(inp := keras.Input((32, 32, 1)), keras.layers.Conv2D(4, 3)(inp)), "RGB images"),
])
def test_a_model_that_cannot_be_a_backbone_says_what_to_give(make, message):
    with pytest.raises(ValueError, match=message):
        TwoPhaseTrainer(backbone=make())


def test_a_search_asks_for_a_registered_backbone():
    from transferkit.tuning import TwoPhaseHyperModel

    with pytest.raises(ValueError, match="register it"):
        TwoPhaseHyperModel(["a", "b"], (32, 32), trainer=TwoPhaseTrainer(backbone=_own_model()))


def test_the_command_line_trains_on_a_keras_file_of_your_model(tmp_path, capsys):
    from conftest import make_tree

    from transferkit.cli import main

    root = make_tree(tmp_path / "pets", {"cats": 10, "dogs": 10})
    path = tmp_path / "mine.keras"
    _own_model().save(path)
    before = path.read_bytes()
    assert main(["train", str(root), "--output", str(tmp_path / "run"), "--backbone", str(path), "--image-size", "32",
                 "--batch-size", "8", "--epochs", "1", "--fine-tune-epochs", "1", "--unfreeze-from", "stage3_conv",
                 "--seed", "1"]) == 0
    assert load_model(tmp_path / "run" / "model.keras").predict(np.zeros((1, 32, 32, 3), "uint8")).shape == (1, 2)
    assert path.read_bytes() == before
    keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35).save(tmp_path / "top.keras")
    capsys.readouterr()
    assert main(["train", str(root), "--output", str(tmp_path / "run2"), "--backbone", str(tmp_path / "top.keras"),
                 "--image-size", "32"]) == 2
    assert "ends in a classifier top" in capsys.readouterr().err
    assert main(["tune", str(root), "--output", str(tmp_path / "search"), "--backbone", str(path)]) == 2
    assert "registered backbone" in capsys.readouterr().err
