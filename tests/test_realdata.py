"""Real-data tier: the shared cats-vs-dogs photos and MobileNetV2 ImageNet weights.

Skipped, with the reason, where ../shared is absent (a user's fresh clone). Run alone with
``pytest -m realdata``.
"""

import numpy as np
import pytest

from conftest import SHARED

DATA = SHARED / "data" / "cats_vs_dogs"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not (DATA.is_dir() and WEIGHTS.is_file()),
                       reason=f"real data/weights not found at {DATA} and {WEIGHTS} (only on the project's machines)"),
]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    from transferkit import ImageFolder, TwoPhaseTrainer

    data = ImageFolder(DATA, image_size=(128, 128), batch_size=32, seed=42)
    trainer = TwoPhaseTrainer(weights=WEIGHTS, unfreeze_from="block_13", learning_rate=1e-3, seed=42)
    result = trainer.fit(data, epochs=1, fine_tune_epochs=0, verbose=0)
    return data, trainer, result, tmp_path_factory.mktemp("real")


def test_real_photos_are_all_readable(real_run):
    data, *_ = real_run
    assert data.report.counts == {"train": {"cats": 1000, "dogs": 1000}, "validation": {"cats": 400, "dogs": 400}}
    assert data.report.skipped == []


def test_one_short_phase_learns_well_above_chance(real_run):
    data, trainer, result, _ = real_run
    accuracy = result.history["val_accuracy"][-1]
    print(f"real-data tier: validation accuracy after one phase-1 epoch at 128 px: {accuracy:.4f}")
    assert accuracy > 0.85


def test_real_model_round_trips_and_exports(real_run):
    from transferkit import load_model
    from transferkit.export import TFLiteClassifier, export

    data, trainer, _, folder = real_run
    files = data.files("validation")[::100]
    loaded = load_model(trainer.save(folder / "real.keras"))
    expected = trainer.predict(files)
    np.testing.assert_allclose(loaded.predict(files), expected, atol=1e-5)
    lite = TFLiteClassifier(export(loaded, folder / "real.tflite", format="tflite"))
    np.testing.assert_allclose(lite.predict(files), expected, atol=1e-4)
    int8 = TFLiteClassifier(export(loaded, folder / "real_int8.tflite", format="tflite", quantize="int8",
                                   representative_images=data.images("train", np.arange(0, 2000, 20))))
    agree = np.mean(int8.predict(files).argmax(1) == expected.argmax(1))
    assert agree >= 0.75
