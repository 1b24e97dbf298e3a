"""The package itself: its rooms and their public names, the old module names (deprecated, still
working), the backend choice it leaves to the user, and settings that round-trip."""

import json
import os
import subprocess
import sys

import keras
import pytest

from conftest import REPO

PACKAGES = ("data", "models", "training", "tuning", "evaluation", "export", "audit", "cli")


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_gives_its_public_names(package):
    import importlib

    module = importlib.import_module(f"transferkit.{package}")
    assert module.__all__, package
    for name in module.__all__:
        value = getattr(module, name)
        assert value is not None
        defined_in = getattr(value, "__module__", None)
        if defined_in is not None and isinstance(value, type):
            assert defined_in.startswith(f"transferkit.{package}."), (name, defined_in)
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"):
        getattr(module, "nothing_here")


@pytest.mark.parametrize("old, new", [("trainer", "transferkit.training.trainer"),
                                      ("evaluate", "transferkit.evaluation.metrics"),
                                      ("plots", "transferkit.evaluation.plots"),
                                      ("model", "transferkit.models.classifier"),
                                      ("features", "transferkit.training.features")])
def test_an_old_module_name_still_imports_with_a_deprecation_warning(old, new):
    import importlib

    sys.modules.pop(f"transferkit.{old}", None)
    with pytest.warns(DeprecationWarning, match=rf"transferkit.{old} has moved to {new}"):
        module = importlib.import_module(f"transferkit.{old}")
    assert module is importlib.import_module(new)  # the same module: patching one patches the other


def test_an_old_name_from_data_warns_and_works():
    import transferkit.data

    with pytest.warns(DeprecationWarning, match="transferkit._internal.files"):
        write_atomically = transferkit.data.write_atomically
    from transferkit._internal.files import write_atomically as moved

    assert write_atomically is moved


def _backend_in_a_fresh_process(tmp_path, keras_json=None, env_backend=None) -> str:
    home = tmp_path / "home"
    (home / ".keras").mkdir(parents=True, exist_ok=True)
    if keras_json is not None:
        (home / ".keras" / "keras.json").write_text(json.dumps(keras_json))
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "KERAS_HOME")}
    env.update(HOME=str(home), PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    if env_backend:
        env["KERAS_BACKEND"] = env_backend
    code = "import transferkit, keras; print(keras.backend.backend())"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.split()[-1]


def test_keras_json_chooses_the_backend_and_transferkit_does_not_override_it(tmp_path):
    pytest.importorskip("jax", reason="jax is not installed: nothing but TensorFlow to choose")
    assert _backend_in_a_fresh_process(tmp_path, {"backend": "jax"}) == "jax"
    assert _backend_in_a_fresh_process(tmp_path, {"backend": "jax"}, env_backend="tensorflow") == "tensorflow"


def test_without_a_choice_transferkit_picks_tensorflow(tmp_path):
    assert _backend_in_a_fresh_process(tmp_path, {"floatx": "float32"}) == "tensorflow"


# -- settings that round-trip -----------------------------------------------------------------------


def _round_trip(trainer):
    """keras-hub's run_serialization_test, for the trainer: config -> object -> the same config, also
    through JSON (what metrics.json and checkpoints hold)."""
    from transferkit import TwoPhaseTrainer

    config = trainer.get_config()
    again = TwoPhaseTrainer.from_config(config)
    assert type(again) is type(trainer)
    assert again.get_config() == config
    through_json = TwoPhaseTrainer.from_config(json.loads(json.dumps(config)))
    assert json.dumps(through_json.get_config(), sort_keys=True) == json.dumps(config, sort_keys=True)
    return again


@pytest.mark.parametrize("arguments", [
    {},
    {"weights": None, "head": {"dropout": 0.4, "hidden_units": 64}, "unfreeze_from": "block_13"},
    {"weights": "/data/weights/mobilenet_v2.h5", "unfreeze_from": 100, "image_size": (160, 160)},
    {"augmentation": {"preset": "light", "rotation": 0.05}, "cache_features": False, "optimizer": "sgd"},
    {"augmentation": None, "views": 5, "random_views": False, "feature_dtype": "float32", "cache_dir": "/tmp/c"},
    {"mixed_precision": "mixed_bfloat16", "seed": 3, "augmentation_seed": 9, "label_smoothing": 0.1},
    {"backbone_options": {"alpha": 0.35}, "cache_unfreeze_points": ["block_13", 120], "freeze_batchnorm": False},
], ids=["defaults", "head-dict", "weights-path", "preset-dict", "no-augmentation", "precision", "options"])
def test_a_trainer_round_trips_through_its_config(arguments):
    from transferkit import TwoPhaseTrainer

    _round_trip(TwoPhaseTrainer(**arguments))


def test_a_keras_layer_as_augmentation_round_trips():
    from transferkit import TwoPhaseTrainer

    layer = keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.05)])
    again = _round_trip(TwoPhaseTrainer(augmentation=layer, weights=None))
    assert isinstance(again.augmentation, keras.layers.Layer)
    assert [type(l).__name__ for l in again.augmentation.layers] == ["RandomFlip", "RandomRotation"]


def test_recipe_and_fast_path_objects_are_the_same_as_their_arguments():
    from transferkit import TwoPhaseTrainer
    from transferkit.training import FastPath, Recipe

    grouped = TwoPhaseTrainer(weights=None, recipe=Recipe(unfreeze_from=100, fine_tune_lr_factor=0.1),
                              fast_path={"cache_features": False, "views": 2})
    flat = TwoPhaseTrainer(weights=None, unfreeze_from=100, fine_tune_lr_factor=0.1, cache_features=False, views=2)
    unnamed = lambda t: {**t.get_config(), "head": {**t.get_config()["head"], "name": None}}  # noqa: E731
    assert unnamed(grouped) == unnamed(flat)
    assert grouped.recipe == flat.recipe == Recipe(unfreeze_from=100, fine_tune_lr_factor=0.1)
    assert grouped.fast_path == FastPath(cache_features=False, views=2)
    with pytest.raises(ValueError, match="learning_rate given both as an argument and in the Recipe"):
        TwoPhaseTrainer(recipe=Recipe(learning_rate=1e-3), learning_rate=1e-2)
    with pytest.raises(TypeError, match="recipe= takes a Recipe"):
        TwoPhaseTrainer(recipe=0.1)


def test_presets_name_whole_settings():
    from transferkit import TwoPhaseTrainer
    from transferkit.training.settings import PRESETS

    seed = TwoPhaseTrainer.from_preset("seed_project", weights=None)
    assert (seed.image_size, seed.unfreeze_from, seed.fine_tune_lr_factor, seed.cache_features) == \
        ((160, 160), 100, 0.1, False)
    assert (seed.freeze_batchnorm, seed.fine_tune_optimizer) == (False, "rmsprop")  # as the seed's Keras 3 code
    assert seed.augmentation == {"preset": "default", "plain_fraction": 0}  # every image augmented, as the tutorial
    unnamed = lambda t: {**t.get_config(), "head": {**t.get_config()["head"], "name": None}}  # noqa: E731
    assert unnamed(TwoPhaseTrainer.from_preset("default")) == unnamed(TwoPhaseTrainer())
    assert TwoPhaseTrainer.from_preset("seed_project", unfreeze_from="block_13").unfreeze_from == "block_13"
    with pytest.raises(ValueError, match="choose one of default, seed_project"):
        TwoPhaseTrainer.from_preset("tutorial")
    assert set(PRESETS) == {"default", "seed_project"}


def test_the_trainer_signature_takes_its_defaults_from_the_settings():
    import inspect

    from transferkit import TwoPhaseTrainer
    from transferkit.training import FastPath, Recipe

    parameters = inspect.signature(TwoPhaseTrainer).parameters
    for kind in (Recipe, FastPath):
        for name in kind.names():
            assert parameters[name].default == getattr(kind(), name), name



def test_the_docs_name_the_pythons_pyproject_allows():
    import re

    import tomllib

    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    low, high = re.fullmatch(r">=3\.(\d+),<3\.(\d+)", requires.replace(" ", "")).groups()
    text = (REPO / "docs" / "getting-started.md").read_text()
    assert f"Python 3.{low} to 3.{int(high) - 1}" in text, requires
