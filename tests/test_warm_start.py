"""Starting from a trained classifier: every weight (and each known class's logits) carried over, the
recorded split kept for new images, a run fingerprint that knows the start, clear errors."""

import numpy as np
import pytest
from conftest import make_tree

from transferkit import ImageFolder, TwoPhaseTrainer

SETTINGS = dict(backbone="test_cnn", weights=None, unfreeze_from="block2", augmentation=None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = make_tree(tmp_path_factory.mktemp("warm") / "pets", {"cats": 16, "dogs": 16})
    data = ImageFolder(root, image_size=(32, 32), batch_size=8, split=(0.5, 0.25, 0.25), seed=3)
    result = TwoPhaseTrainer(seed=0, **SETTINGS).fit(data, epochs=2, fine_tune_epochs=1, verbose=0)
    return data, result.classifier, result.classifier.save(tmp_path_factory.mktemp("model") / "pets.keras")


def test_the_same_classes_start_exactly_where_the_model_ended(trained):
    from transferkit.training.warm_start import start_from

    data, classifier, path = trained
    trainer = TwoPhaseTrainer(seed=7, **SETTINGS)
    trainer.build(data.class_names, data.image_size)
    images = data.images("test")
    assert not np.allclose(trainer.classifier.predict(images), classifier.predict(images), atol=1e-4)  # control
    start_from(trainer, path)
    np.testing.assert_allclose(trainer.classifier.predict(images), classifier.predict(images), atol=1e-6)


def test_more_classes_keep_the_known_classes_odds(trained, tmp_path):
    from transferkit.training.warm_start import start_from

    data, classifier, path = trained
    three = ImageFolder(make_tree(tmp_path / "three", {"birds": 16, "cats": 16, "dogs": 16}), image_size=(32, 32),
                        batch_size=8, split=(0.5, 0.5), seed=3)
    trainer = TwoPhaseTrainer(seed=7, **SETTINGS)
    trainer.build(three.class_names, three.image_size)
    start_from(trainer, path)
    images = data.images("test")
    before, after = classifier.predict(images), trainer.classifier.predict(images)
    # the two known classes, in their new places (1, 2), keep their ratio: softmax((0, z)) is sigmoid(z)
    np.testing.assert_allclose(after[:, 2] / after[:, 1], before[:, 1] / before[:, 0], rtol=1e-4)
    result = trainer.fit(three, epochs=1, fine_tune_epochs=1, verbose=0, initial_model=classifier)
    assert result.classifier.class_names == ["birds", "cats", "dogs"] and "initial_model" in result.run["data"]


def test_what_cannot_start_a_run_says_why(trained, tmp_path):
    data, classifier, path = trained
    others = ImageFolder(make_tree(tmp_path / "others", {"cats": 8, "owls": 8}), image_size=(32, 32), batch_size=4,
                         split=(0.5, 0.5), seed=0)
    with pytest.raises(ValueError, match=r"knows classes the data does not have \(dogs\)"):
        TwoPhaseTrainer(seed=0, **SETTINGS).fit(others, epochs=1, fine_tune_epochs=0, verbose=0, initial_model=path)
    wider = TwoPhaseTrainer(seed=0, **{**SETTINGS, "head": {"hidden_units": 8}})
    with pytest.raises(ValueError, match="another network than this trainer builds"):
        wider.fit(data, epochs=1, fine_tune_epochs=0, verbose=0, initial_model=path)


def test_the_recorded_split_keeps_its_files_and_new_ones_are_counted(trained, tmp_path):
    import shutil

    data, classifier, _ = trained
    root = tmp_path / "pets"
    shutil.copytree(data.root, root)
    make_tree(tmp_path / "more", {"cats": 8, "dogs": 8})
    for folder in ("cats", "dogs"):
        for file in (tmp_path / "more" / folder).iterdir():
            shutil.copy(file, root / folder / f"new_{file.name}")
    grown = ImageFolder(root, image_size=(32, 32), batch_size=8, split=(0.5, 0.25, 0.25), seed=3,
                        recorded_split=classifier.split)
    record = grown.split_record()["files"]
    for split, names in classifier.split["files"].items():
        assert set(names) <= set(record[split])  # every recorded file where it was
    assert sum(grown.report.new.values()) == 16 and "new since the recorded split: 16 file(s)" in str(grown.report)
    plain = ImageFolder(root, image_size=(32, 32), batch_size=8, split=(0.5, 0.25, 0.25), seed=3).split_record()
    moved = [n for split, names in classifier.split["files"].items() for n in names if n not in plain["files"][split]]
    assert moved  # control: the rule alone moves some recorded files
    assert sum(n.split("/")[-1].startswith("new_") for names in record.values() for n in names) == 16


def test_the_command_line_continues_a_run_on_more_images(trained, tmp_path, capsys):
    from transferkit.cli import main

    data, _, path = trained
    code = main(["train", str(data.root), "--init-from", str(path), "--output", str(tmp_path / "run"),
                 "--backbone", "test_cnn", "--weights", "none", "--image-size", "32", "--batch-size", "8",
                 "--augmentation", "none", "--unfreeze-from", "block2", "--epochs", "1", "--fine-tune-epochs", "1",
                 "--split", "0.5,0.25,0.25", "--seed", "3"])
    assert code == 0
    assert "new since the recorded split: 0 file(s)" in capsys.readouterr().out
    assert main(["train", str(data.root), "--init-from", str(tmp_path / "nope.keras")]) == 2
    assert "--init-from: Model file not found" in capsys.readouterr().err
