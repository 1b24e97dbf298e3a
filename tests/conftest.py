"""Shared fixtures: small generated image trees, and one tiny trained model reused by many tests."""

import importlib.util
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if importlib.util.find_spec("tensorflow") is not None:  # the suite runs on TensorFlow unless told otherwise
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import transferkit  # noqa: E402,F401 - where TensorFlow is absent, transferkit chooses JAX (or PyTorch) first
import keras
import numpy as np
import pytest
from PIL import Image

collect_ignore = ["distributed_search.py", "cli_with_test_cnn.py", "cache_writer.py", "slow_trial.py", "backend_run.py",
                  "devices_run.py", "processes_run.py"]  # a script the distributed tuning test runs, not a module

#: Tiers that start processes or train for minutes: each is also marked ``slow``, so `make test` leaves them
#: to `make test-slow` (CI runs both; ``-m killresume`` and the like still run one alone).
SLOW_TIERS = ("killresume", "backends", "devices", "processes", "searchprocesses", "families")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(item.get_closest_marker(name) for name in SLOW_TIERS):
            item.add_marker(pytest.mark.slow)


REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"

# Each class gets its own colour, so a tiny model can learn them in a step or two.
COLOURS = [(220, 40, 40), (40, 40, 220), (40, 200, 40), (200, 200, 40)]


class Interrupt(keras.callbacks.Callback):
    """Stops the run like a kill would, after epoch ``at`` (0-based, counted over both phases)."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt


def make_image(path: Path, colour, size=(40, 36), seed=0, mode="RGB", fmt=None):
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path


def make_tree(root: Path, counts: dict, ext=".png", size=(40, 36)) -> Path:
    """``root/<class>/<i><ext>`` with ``counts[class]`` images of that class's colour."""
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            make_image(root / name / f"{name}_{i:03d}{ext}", COLOURS[c], size=size, seed=c * 1000 + i)
    return root


@pytest.fixture
def two_class_tree(tmp_path):
    return make_tree(tmp_path / "pets", {"cats": 12, "dogs": 12})


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    from transferkit import ImageFolder

    root = make_tree(tmp_path_factory.mktemp("tiny") / "pets", {"cats": 16, "dogs": 16})
    return ImageFolder(root, image_size=(32, 32), batch_size=8, split=(0.5, 0.25, 0.25), seed=3)


def _register_test_cnn():
    """A small CNN backbone: random MobileNetV2 features vanish (about 1e-12) with frozen BatchNorm, so
    tests that need a model whose outputs depend on its input use this instead."""
    import keras

    from transferkit import register_backbone

    @register_backbone("test_cnn", default_image_size=(32, 32), block_pattern=r"^(block\d)_", override=True)
    def test_cnn(input_shape, weights, **options):
        inputs = keras.Input(input_shape)
        x = inputs
        for i, filters in enumerate((8, 16), start=1):
            x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", name=f"block{i}_conv")(x)
            x = keras.layers.BatchNormalization(name=f"block{i}_bn")(x)
            x = keras.layers.ReLU(name=f"block{i}_relu")(x)
        model = keras.Model(inputs, x, name="test_cnn")
        if weights is not None:
            model.load_weights(weights)
        return model


_register_test_cnn()


class UsesTestCNN(keras.callbacks.Callback):
    """Does nothing; a spawned trial process that unpickles it imports this file, which registers
    "test_cnn" there too (pass it in a search's callbacks)."""


def tiny_trainer(**overrides):
    from transferkit import TwoPhaseTrainer

    # The rates the tests that use this were measured with (not the library's defaults, which move).
    settings = dict(weights=None, backbone_options={"alpha": 0.35}, unfreeze_from="block_15",
                    learning_rate=1e-3, fine_tune_lr_factor=0.03, seed=0)
    settings.update(overrides)
    return TwoPhaseTrainer(**settings)


@pytest.fixture(scope="session")
def trained(tiny_data):
    """A small binary run on the test CNN, shared by the tests that only read its results."""
    trainer = tiny_trainer(backbone="test_cnn", backbone_options={}, unfreeze_from="block2", learning_rate=5e-2)
    result = trainer.fit(tiny_data, epochs=4, fine_tune_epochs=1, verbose=0)
    return trainer, result


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Captured output that holds undecodable file names (the bad-input tests make some) as backslash escapes,
    so that pytest-xdist can send the report from its worker."""
    outcome = yield
    report = outcome.get_result()
    report.sections = [(title, text.encode("utf-8", "backslashreplace").decode("utf-8"))
                       for title, text in report.sections]



from transferkit.training import PhaseCallback  # noqa: E402  (after the backend is chosen, above)


class TrainedInPhaseTwo(PhaseCallback):
    """The paths of the variables phase 2's model trains (``paths``, read at its first epoch)."""

    phase, paths = 0, None

    def on_phase_begin(self, phase, logs=None):
        self.phase = phase

    def on_epoch_begin(self, epoch, logs=None):
        if self.phase == 2 and self.paths is None:
            self.paths = {v.path for v in self.model.trainable_weights}
