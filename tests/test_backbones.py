import subprocess
import sys
import textwrap

import keras
import pytest

from transferkit import (WeightsUnavailableError, get_backbone, get_backbone_spec, list_backbones,
                         register_backbone)


def test_builtin_backbones_are_registered():
    assert {"mobilenet_v2", "efficientnet_b0", "resnet50_v2"} <= set(list_backbones())
    assert list_backbones("mobilenet_v2*") == ["mobilenet_v2"]


def test_mobilenet_v2_layers_and_blocks():
    model = get_backbone("mobilenet_v2", (160, 160, 3), weights=None)
    blocks = get_backbone_spec("mobilenet_v2").blocks(model)
    assert len(model.layers) == 154
    assert list(blocks) == [f"block_{i}" for i in range(1, 17)]
    assert model.layers[blocks["block_11"]].name == "block_11_expand"
    assert blocks["block_11"] < 100 < blocks["block_12"]  # index 100 cuts block_11 in half


@pytest.mark.parametrize("name, first, last", [("efficientnet_b0", "block1a", "block7a"),
                                               ("resnet50_v2", "conv2_block1", "conv5_block3")])
def test_other_backbones_have_blocks(name, first, last):
    model = get_backbone(name, (32, 32, 3), weights=None)
    blocks = list(get_backbone_spec(name).blocks(model))
    assert blocks[0] == first and blocks[-1] == last


def test_constructor_options_pass_through():
    slim = get_backbone("mobilenet_v2", (32, 32, 3), weights=None, alpha=0.35)
    wide = get_backbone("mobilenet_v2", (32, 32, 3), weights=None)
    assert slim.count_params() < wide.count_params() / 3


def test_weights_from_a_file(tmp_path):
    source = get_backbone("mobilenet_v2", (32, 32, 3), weights=None, alpha=0.35)
    path = tmp_path / "w.weights.h5"
    source.save_weights(path)
    loaded = get_backbone("mobilenet_v2", (32, 32, 3), weights=path, alpha=0.35)
    for a, b in zip(source.weights, loaded.weights):
        assert (keras.ops.convert_to_numpy(a) == keras.ops.convert_to_numpy(b)).all()


def test_missing_or_wrong_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        get_backbone("mobilenet_v2", (32, 32, 3), weights=tmp_path / "nope.h5")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(WeightsUnavailableError, match="bad.h5"):
        get_backbone("mobilenet_v2", (32, 32, 3), weights=bad)


def test_failed_download_says_how_to_work_offline(tmp_path, monkeypatch):
    import urllib.error

    from keras.src.utils import file_utils

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def offline(*args, **kwargs):  # what get_file raises when the network is unreachable
        raise Exception("URL fetch failure on https://example: None -- [Errno -2] Name or service not known") \
            from urllib.error.URLError("no network")

    monkeypatch.setattr(file_utils, "get_file", offline)
    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(WeightsUnavailableError) as info:
        get_backbone("mobilenet_v2", (96, 96, 3), weights="imagenet")
    message = str(info.value)
    assert "weights=PATH in Python, --weights PATH on the command line" in message and str(tmp_path) in message
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5" in message  # the file Keras wants


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(KeyError, match="mobilenet_v2"):
        get_backbone_spec("alexnet")


def test_register_backbone_decorator_and_duplicates():
    @register_backbone("test_tiny", default_image_size=(32, 32), block_pattern=r"^(stage\d)_", override=True)
    def tiny(input_shape, weights, **options):
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(4, 3, name="stage1_conv")(inputs)
        return keras.Model(inputs, keras.layers.Conv2D(4, 3, name="stage2_conv")(x))

    assert "test_tiny" in list_backbones()
    assert get_backbone_spec("test_tiny").blocks(get_backbone("test_tiny", weights=None)) == {"stage1": 1, "stage2": 2}
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("test_tiny")(lambda input_shape, weights: None)


PLUGIN_MODULE = '''
import keras
from transferkit import BackboneSpec

def build(input_shape, weights, **options):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(options.get("width", 4), 3, name="part1_conv")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(4, 3, name="part2_conv")(x), name="plugin_net")

SPEC = BackboneSpec(name="plugin_net", build=build, default_image_size=(32, 32), block_pattern=r"^(part\\d)_")
'''


def test_entry_point_plugin_from_an_installed_distribution(tmp_path):
    """Build and install a real plugin package, then use its backbone from a fresh interpreter."""
    source = tmp_path / "src"
    (source / "tk_plugin_demo").mkdir(parents=True)
    (source / "tk_plugin_demo" / "__init__.py").write_text(PLUGIN_MODULE)
    (source / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=64"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "tk-plugin-demo"
        version = "0.1"
        [project.entry-points."transferkit.backbones"]
        plugin_net = "tk_plugin_demo:SPEC"
        [tool.setuptools]
        packages = ["tk_plugin_demo"]
    """))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(source)], check=True)
    check = ("import sys; sys.path.insert(0, sys.argv[1]); import transferkit as tk; "
             "print(tk.list_backbones('plugin*')); m = tk.get_backbone('plugin_net', weights=None, width=6); "
             "print(m.name, m.layers[1].filters, tk.get_backbone_spec('plugin_net').blocks(m))")
    out = subprocess.run([sys.executable, "-c", check, str(target)], capture_output=True, text=True, check=True)
    assert "['plugin_net']" in out.stdout
    assert "plugin_net 6 {'part1': 1, 'part2': 2}" in out.stdout


def test_auto_unfreeze_point_comes_from_the_backbone():
    from conftest import tiny_trainer

    trainer = tiny_trainer(unfreeze_from="auto")
    trainer.build(["a", "b"], (32, 32))
    layers = [layer.name for layer in trainer.backbone_model.layers]
    assert trainer.spec.default_unfreeze == "block_13" and trainer.unfreeze_index() == layers.index("block_13_expand")
    cnn = tiny_trainer(backbone="test_cnn", backbone_options={}, unfreeze_from="auto")
    cnn.build(["a", "b"], (32, 32))  # no default given: the first block in the top third
    layers = [layer.name for layer in cnn.backbone_model.layers]
    assert cnn.unfreeze_index() == layers.index("block2_conv")
