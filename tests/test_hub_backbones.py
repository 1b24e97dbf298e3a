"""keras-hub presets as backbones, loaded as a user would: small random-weight networks saved with
``save_to_preset`` into a temporary directory (these machines cannot download presets)."""

import builtins
import subprocess
import sys

import numpy as np
import pytest

from transferkit import TwoPhaseTrainer, WeightsUnavailableError, get_backbone, get_backbone_spec, load_model

keras_hub = pytest.importorskip("keras_hub", reason="keras-hub is not installed (pip install 'transferkit[hub]')")

SCALE = [1 / (255 * 0.229), 1 / (255 * 0.224), 1 / (255 * 0.225)]
OFFSET = [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225]


@pytest.fixture(scope="module")
def resnet_preset(tmp_path_factory):
    """A ResNet-10-like keras-hub backbone with its image converter, as a local preset directory."""
    folder = tmp_path_factory.mktemp("hub") / "tiny_resnet"
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block")
    backbone.save_to_preset(str(folder))
    keras_hub.layers.ResNetImageConverter(image_size=(160, 160), scale=SCALE, offset=OFFSET).save_to_preset(str(folder))
    return str(folder), backbone


def test_a_preset_directory_is_a_backbone_with_its_converter_size_and_blocks(resnet_preset):
    folder, original = resnet_preset
    spec = get_backbone_spec(folder)
    assert spec.default_image_size == (160, 160)
    assert spec.preprocessing == {"scale": pytest.approx(SCALE), "offset": pytest.approx(OFFSET)}
    model = get_backbone(folder, (64, 64, 3))
    assert list(spec.blocks(model)) == ["stack0_block0", "stack1_block0", "stack2_block0", "stack3_block0"]
    assert model.layers[spec.blocks(model)["stack2_block0"]].name.startswith("stack2_block0_")
    for mine, theirs in zip(model.get_weights(), original.get_weights()):  # "imagenet": the preset's weights
        np.testing.assert_array_equal(mine, theirs)
    fresh = get_backbone(folder, (64, 64, 3), weights=None)
    assert not all(np.array_equal(a, b) for a, b in zip(fresh.get_weights(), original.get_weights()))
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(spec.preprocessing_layer()(x)), x * np.array(SCALE) + np.array(OFFSET),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.families
def test_a_preset_trains_both_ways_and_round_trips(resnet_preset, tiny_data, tmp_path):
    folder, _ = resnet_preset
    for cache_features in (True, False):
        trainer = TwoPhaseTrainer(backbone=folder, unfreeze_from="stack3_block0", seed=0,
                                  cache_features=cache_features)
        result = trainer.fit(tiny_data, epochs=1, fine_tune_epochs=1, verbose=0)
        trainable = {layer.name for layer in trainer.backbone_model.layers if layer.trainable and layer.weights}
        assert trainable == {"stack3_block0_0_conv", "stack3_block0_1_conv", "stack3_block0_2_conv"}
    assert TwoPhaseTrainer.from_config(trainer.get_config()).get_config() == trainer.get_config()
    path = result.classifier.save(tmp_path / "hub.keras")
    images = tiny_data.images("test")
    np.testing.assert_allclose(load_model(path).predict(images), result.classifier.predict(images), atol=1e-6)
    without_hub = ("import sys; sys.modules['keras_hub'] = None; from transferkit import load_model; "
                   f"print(load_model({str(path)!r}).class_names)")
    run = subprocess.run([sys.executable, "-c", without_hub], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "['cats', 'dogs']" in run.stdout, run.stderr[-2000:]


def test_a_preset_that_cannot_be_had_names_it_and_the_cache(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", offline)
    with pytest.raises(WeightsUnavailableError, match=r"'keras_hub:resnet_18_imagenet_not_cached'.*kagglehub's cache"):
        TwoPhaseTrainer(backbone="keras_hub:resnet_18_imagenet_not_cached")


def test_without_keras_hub_the_error_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_hub(name, *args, **kwargs):
        if name == "keras_hub":
            raise ImportError("No module named 'keras_hub'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_hub)
    with pytest.raises(ImportError, match=r"transferkit\[hub\]"):
        TwoPhaseTrainer(backbone="keras_hub:efficientnet_b0_ra_imagenet_x")


@pytest.mark.families
@pytest.mark.parametrize("format", ["tflite", "onnx"])
def test_a_preset_exports_with_parity(resnet_preset, tiny_data, tmp_path, format):
    if format == "onnx":
        pytest.importorskip("tf2onnx", reason="tf2onnx is not installed (pip install 'transferkit[onnx]')")
        pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'transferkit[onnx]')")
    from transferkit.export import export
    from transferkit.export.parity import check_parity

    trainer = TwoPhaseTrainer(backbone=resnet_preset[0], unfreeze_from="stack3_block0", seed=0)
    classifier = trainer.fit(tiny_data, epochs=1, fine_tune_epochs=1, verbose=0).classifier
    parity = check_parity(classifier, export(classifier, tmp_path / f"m.{format}", format=format), tiny_data,
                          split="test", verbose=0)
    assert parity.agreement == 1.0 and parity.max_probability_difference < 1e-4


@pytest.fixture(scope="module")
def transformer_presets(tmp_path_factory):
    """A small ViT (with its image converter) and a small DINOv2 (without one), as local preset directories."""
    folder = tmp_path_factory.mktemp("hub_transformers")
    vit = keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=3, num_heads=2,
                                       hidden_dim=16, mlp_dim=32)
    vit.save_to_preset(str(folder / "vit"))
    keras_hub.layers.ViTImageConverter(image_size=(32, 32), scale=1 / 255).save_to_preset(str(folder / "vit"))
    dino = keras_hub.models.DINOV2Backbone(patch_size=8, num_layers=3, hidden_dim=16, num_heads=2,
                                           intermediate_dim=32, image_shape=(32, 32, 3),
                                           position_embedding_shape=(32, 32, 3))
    dino.save_to_preset(str(folder / "dino"))
    return {"vit": (str(folder / "vit"), vit), "dino": (str(folder / "dino"), dino)}


#: preset: its encoder blocks, the unfreeze point the tests use, and the layers from it on that hold weights.
TRANSFORMERS = {
    "vit": (["transformer_block_1", "transformer_block_2", "transformer_block_3"], "transformer_block_3",
            {"transformer_block_3", "ln"}),
    "dino": (["layers_0", "layers_1", "layers_2"], "layers_2", {"layers_2", "dinov2_backbone_layernorm"}),
}


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_a_transformer_preset_has_its_encoder_blocks_and_a_cut_between_them_is_exact(transformer_presets, name):
    from transferkit.training.features import split_backbone

    folder, original = transformer_presets[name]
    blocks, point, _ = TRANSFORMERS[name]
    spec = get_backbone_spec(folder)
    assert spec.default_image_size == (32, 32)
    assert spec.preprocessing == ({"scale": pytest.approx(1 / 255), "offset": 0.0} if name == "vit" else "none")
    model = get_backbone(folder, (32, 32, 3))
    assert list(spec.blocks(model)) == blocks
    assert model.layers[spec.blocks(model)[point]].name == point
    x = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    tokens = np.asarray(original(x))  # (2, 17, 16): the class token and 16 patches
    mapped = np.asarray(model(x))  # the mean token's map: what the head's average pooling averages
    assert mapped.shape == (2, 1, 17, 16)
    np.testing.assert_allclose(mapped[:, 0], tokens, rtol=1e-5, atol=1e-6)
    frozen, top = split_backbone(model, spec.blocks(model)[point])
    *crossing, whole = frozen(x)
    np.testing.assert_allclose(np.asarray(top(crossing)), mapped, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(whole), mapped, rtol=1e-5, atol=1e-6)
    first = np.asarray(get_backbone(folder, (32, 32, 3), token_pooling="cls")(x))
    np.testing.assert_allclose(first[:, 0, 0], tokens[:, 0], rtol=1e-5, atol=1e-6)


def _trained_layers(backbone, paths) -> set:
    """The backbone layers the variable ``paths`` belong to (a block's variables sit inside its sublayers)."""
    names = {layer.name for layer in backbone.layers}
    return {next(part for part in path.split("/") if part in names) for path in paths
            if any(part in names for part in path.split("/"))}


@pytest.mark.parametrize("name", TRANSFORMERS)
@pytest.mark.parametrize("cache_features", [True, pytest.param(False, marks=pytest.mark.families)])
def test_a_transformer_preset_trains_exactly_its_blocks_from_the_unfreeze_point(transformer_presets, name,
                                                                               cache_features, tiny_data, tmp_path):
    from conftest import TrainedInPhaseTwo

    folder, _ = transformer_presets[name]
    _, point, trains = TRANSFORMERS[name]
    probe = TrainedInPhaseTwo()
    trainer = TwoPhaseTrainer(backbone=folder, unfreeze_from=point, seed=0, cache_features=cache_features)
    result = trainer.fit(tiny_data, epochs=1, fine_tune_epochs=1, verbose=0, callbacks=[probe])
    assert _trained_layers(trainer.backbone_model, probe.paths) == trains
    path = result.classifier.save(tmp_path / f"{name}.keras")
    images = tiny_data.images("test")
    np.testing.assert_allclose(load_model(path).predict(images), result.classifier.predict(images), atol=1e-6)


def test_a_keras_hub_instance_is_a_backbone_with_its_blocks(transformer_presets, tiny_data):
    _, vit = transformer_presets["vit"]
    before = [np.array(w) for w in vit.get_weights()]
    spec = get_backbone_spec(vit)
    assert list(spec.blocks(get_backbone(spec, (32, 32, 3)))) == TRANSFORMERS["vit"][0]
    trainer = TwoPhaseTrainer(backbone=vit, unfreeze_from="transformer_block_2", seed=0,
                              backbone_options={"token_pooling": "cls"})
    trainer.fit(tiny_data, epochs=1, fine_tune_epochs=1, verbose=0)
    assert trainer.backbone_model.get_layer("tokens_as_map").pooling == "cls"
    assert all(np.array_equal(a, b) for a, b in zip(before, vit.get_weights()))  # the user's network: untouched


def test_token_pooling_is_checked(transformer_presets, resnet_preset):
    with pytest.raises(ValueError, match=r"token_pooling='max': use one of 'mean', 'cls'"):
        get_backbone(transformer_presets["vit"][0], (32, 32, 3), token_pooling="max")
    with pytest.raises(TypeError, match=r"token_pooling='cls' applies to transformer backbones.*feature map"):
        get_backbone(resnet_preset[0], (64, 64, 3), token_pooling="cls")
