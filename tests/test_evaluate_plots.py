import numpy as np
import pytest
from PIL import Image

from transferkit.evaluation import plots
from transferkit.evaluation.metrics import Evaluation, evaluate, roc_auc


def hand_case():
    # 3 cats, 3 dogs. Predictions: cats -> cat, cat, dog(0.9); dogs -> dog, dog, cat(0.6).
    probabilities = np.array([[.8, .2], [.7, .3], [.1, .9], [.3, .7], [.2, .8], [.6, .4]])
    return Evaluation(["cat", "dog"], np.array([0, 0, 0, 1, 1, 1]), probabilities)


def test_numbers_on_a_hand_checked_case():
    ev = hand_case()
    assert ev.accuracy == pytest.approx(4 / 6)
    assert ev.confusion_matrix.tolist() == [[2, 1], [1, 2]]
    for name in ("cat", "dog"):
        row = ev.per_class[name]
        assert row["precision"] == pytest.approx(2 / 3) and row["recall"] == pytest.approx(2 / 3)
        assert row["f1"] == pytest.approx(2 / 3) and row["support"] == 3
    # dog scores: cats .2 .3 .9, dogs .7 .8 .4 -> 6 of 9 (dog, cat) pairs ordered right
    assert ev.roc_auc == pytest.approx(6 / 9)
    top = ev.top_losses(2)
    assert [t.index for t in top] == [2, 5]
    assert top[0].true == "cat" and top[0].predicted == "dog" and top[0].probability == pytest.approx(0.9)
    assert top[0].loss == pytest.approx(-np.log(0.1))
    assert ev.most_confused() == [("cat", "dog", 1), ("dog", "cat", 1)]
    assert "accuracy 0.6667" in str(ev)


def test_roc_auc_edge_cases():
    assert roc_auc(np.array([1, 1]), np.array([0.2, 0.3])) is None
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    assert roc_auc(np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.2, 0.8])) == 1.0


def test_multiclass_has_no_auc_and_a_full_matrix():
    ev = Evaluation(["a", "b", "c"], np.array([0, 1, 2, 2]), np.eye(3)[[0, 1, 1, 2]])
    assert ev.roc_auc is None and ev.confusion_matrix.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert ev.per_class["c"]["recall"] == 0.5 and ev.per_class["b"]["precision"] == 0.5


def test_evaluate_a_trained_model(trained, tiny_data):
    trainer, result = trained
    ev = evaluate(result.classifier, tiny_data, split="test")
    probabilities = trainer.predict(tiny_data.images("test"))
    np.testing.assert_allclose(ev.probabilities, probabilities, atol=1e-5)
    assert np.array_equal(ev.labels, tiny_data.labels("test"))
    assert ev.files == tiny_data.files("test")
    top = ev.top_losses(3)
    assert all(t.image is not None and t.image.shape == (32, 32, 3) for t in top)
    assert top[0].file == tiny_data.files("test")[top[0].index]
    assert evaluate(trainer.classifier, tiny_data.test).accuracy == ev.accuracy  # plain dataset works too
    summary = ev.to_dict()
    assert summary["count"] == len(ev.labels) and len(summary["top_losses"]) <= 9


def assert_png(path, min_side=200):
    assert path.exists() and path.stat().st_size > 5000
    with Image.open(path) as img:
        assert img.format == "PNG" and min(img.size) >= min_side


def test_every_picture_is_written(trained, tiny_data, tmp_path):
    trainer, result = trained
    ev = evaluate(result.classifier, tiny_data, split="test")
    images = tiny_data.images("test")[:4]
    paths = [plots.plot_history(result.history, result.phase_boundary, tmp_path / "training_curves.png")]
    paths += ev.plot(tmp_path)
    paths.append(plots.plot_predictions(trainer.classifier, images, tmp_path / "p.png", labels=[0, 1, 0, 1]))
    paths.append(plots.plot_gradcam(trainer.classifier, images, tmp_path / "g.png"))
    assert [p.name for p in paths] == ["training_curves.png", "confusion_matrix.png", "top_losses.png", "reliability.png",
                                      "p.png", "g.png"]
    for path in paths:
        assert_png(path)


def test_gradcam_maps_are_normalised_and_point_at_the_evidence(trained, tiny_data):
    trainer, _ = trained
    maps = plots.gradcam(trainer.classifier, tiny_data.images("test")[:3])
    assert maps.shape == (3, 32, 32) and maps.min() >= 0 and maps.max() <= 1 + 1e-6
    assert (maps.max(axis=(1, 2)) > 0.5).all()  # each map has a peak (1 before resizing): not all zero
    # Half the image in a class's colour, half in a neutral grey: the map should weigh the coloured half.
    image = np.full((32, 32, 3), 128, np.float32)
    image[:, :16] = tiny_data.images("test")[0][:, :16]
    heat = plots.gradcam(trainer.classifier, image[None])[0]
    assert heat[:, :14].mean() > heat[:, 18:].mean()


def test_predict_runs_keras_at_the_batch_size_asked_for(trained, tiny_data, monkeypatch):
    """A batch size bounds the memory a prediction takes; Keras's own default (32) is not it (found by the
    mutation sample: a classifier ignoring ``batch_size`` predicted the same probabilities)."""
    trainer, _ = trained
    classifier = trainer.classifier
    asked, predict = [], classifier.model.predict

    def spy(x, batch_size=None, **kwargs):
        asked.append(batch_size)
        return predict(x, batch_size=batch_size, **kwargs)

    monkeypatch.setattr(classifier.model, "predict", spy)
    images = tiny_data.images("test")
    small = classifier.predict(images, batch_size=3)
    assert asked == [3]
    np.testing.assert_allclose(small, classifier.predict(images, batch_size=32), atol=1e-5)


def test_images_of_another_size_are_refused_naming_both_sizes(trained):
    """Found untested by the mutation sample (the message could name the width twice)."""
    classifier = trained[0].classifier
    with pytest.raises(ValueError, match=r"Images are 20x24 but this model takes 32x32; pass file paths"):
        classifier.predict(np.zeros((2, 20, 24, 3), np.uint8))
