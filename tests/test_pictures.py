"""What the pictures show, not only that a PNG was written: each figure is caught as it is saved and its
lines, bars, images and captions are read back against the numbers they draw (checked by breaking the
plots by hand: tests/README.md)."""

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from PIL import Image

from transferkit.evaluation import plots
from transferkit.evaluation.metrics import Evaluation, evaluate


@pytest.fixture
def drawn(monkeypatch):
    """The figures saved during the test, in order (still written to their files)."""
    figures = []
    save = plots._save

    def keep(fig, path):
        figures.append(fig)
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def line(ax, label):
    found = [l for l in ax.get_lines() if l.get_label() == label]
    assert len(found) == 1, [l.get_label() for l in ax.get_lines()]
    return found[0]


def images_of(fig):
    """The pictures of a grid, one list per panel (in reading order), empty panels left out."""
    return [[np.asarray(i.get_array()) for i in ax.get_images()] for ax in fig.axes if ax.get_images()]


def test_training_curves_draw_each_history_and_the_phase_boundary(drawn, tmp_path):
    history = {"accuracy": [0.5, 0.7, 0.8], "val_accuracy": [0.6, 0.65, 0.9], "loss": [0.9, 0.5, 0.4],
               "val_loss": [0.8, 0.7, 0.3]}
    path = plots.plot_history(history, 2, tmp_path / "curves.png")
    accuracy, loss = drawn[0].axes
    for ax, metric in ((accuracy, "accuracy"), (loss, "loss")):
        for label, key in (("training", metric), ("validation", f"val_{metric}")):
            np.testing.assert_array_equal(line(ax, label).get_xdata(), [1, 2, 3])
            np.testing.assert_array_equal(line(ax, label).get_ydata(), history[key])
        assert list(line(ax, "start of fine-tuning").get_xdata()) == [2.5, 2.5]  # between epochs 2 and 3
    with Image.open(path) as image:
        assert image.format == "PNG"


def test_the_confusion_matrix_shows_rows_true_columns_predicted_with_counts(drawn, tmp_path):
    # 3 cats: 2 called cat, 1 dog; 3 dogs: all dogs; 1 bird called cat
    labels = np.array([0, 0, 0, 1, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 1, 1, 0])
    evaluation = Evaluation(["cat", "dog", "bird"], labels, np.eye(3)[predicted] * 0.8 + 0.2 / 3)
    plots.plot_confusion_matrix(evaluation, tmp_path / "cm.png")
    ax = drawn[0].axes[0]
    expected = [[2, 1, 0], [0, 3, 0], [1, 0, 0]]
    np.testing.assert_array_equal(ax.get_images()[0].get_array(), expected)
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): int(t.get_text()) for t in ax.texts}
    assert cells == {(r, c): expected[r][c] for r in range(3) for c in range(3)}  # (true row, predicted column)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat", "dog", "bird"]
    assert ax.get_ylabel() == "true" and ax.get_xlabel() == "predicted"
    assert "71.4%" in ax.get_title()  # 5 of 7


def test_top_losses_show_the_most_confidently_wrong_first_with_their_pictures(drawn, tmp_path):
    rng = np.random.default_rng(0)
    pictures = rng.integers(0, 255, (4, 8, 8, 3), dtype=np.uint8)
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.95, 0.05]])
    evaluation = Evaluation(["cat", "dog"], np.array([0, 0, 1, 1]), probabilities, kept_images=dict(enumerate(pictures)))
    plots.plot_top_losses(evaluation, tmp_path / "top.png", k=3)
    fig = drawn[0]
    titled = [ax for ax in fig.axes if ax.get_images()]
    order = [3, 1, 2]  # dog at 0.05, cat at 0.2, dog at 0.6
    for ax, i in zip(titled, order):
        np.testing.assert_array_equal(ax.get_images()[0].get_array(), pictures[i])
    titles = [ax.get_title() for ax in titled]
    assert titles[0].startswith("true dog / pred cat\np=0.95 loss=3.00")
    assert titles[2].startswith("true dog / pred dog\np=0.60")
    assert [to_rgba(ax.title.get_color()) for ax in titled] == [to_rgba(c) for c in ("red", "red", "green")]


def test_the_reliability_diagram_draws_each_bin_at_its_accuracy(drawn, tmp_path):
    calibration = {"ece": 0.125, "bins": [{"low": 0.5, "high": 0.75, "confidence": 0.6, "accuracy": 0.5, "count": 4},
                                          {"low": 0.75, "high": 1.0, "confidence": 0.9, "accuracy": 1.0, "count": 4}]}
    plots.plot_reliability(calibration, tmp_path / "rel.png")
    ax = drawn[0].axes[0]
    bars = ax.patches
    assert [(b.get_x(), b.get_width(), b.get_height()) for b in bars] == [(0.5, 0.25, 0.5), (0.75, 0.25, 1.0)]
    np.testing.assert_array_equal(line(ax, "mean confidence").get_xdata(), [0.6, 0.9])
    np.testing.assert_array_equal(line(ax, "perfect calibration").get_ydata(), [0, 1])
    assert ax.get_title() == "Reliability (ECE 0.125)"


class FixedAnswers:
    """A classifier that answers the given probabilities, image by image, so that every caption differs."""

    multi_label = False

    def __init__(self, class_names, probabilities):
        self.class_names, self.probabilities = class_names, np.asarray(probabilities)

    def predict(self, images, batch_size=32):
        assert len(images) == len(self.probabilities)
        return self.probabilities


def test_predictions_caption_each_picture_with_its_own_prediction(drawn, tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (4, 8, 8, 3)).astype(np.uint8)
    answers = FixedAnswers(["cat", "dog", "bird"], [[.7, .2, .1], [.1, .6, .3], [.2, .3, .5], [.05, .9, .05]])
    plots.plot_predictions(answers, images, tmp_path / "p.png", labels=[0, 2, 2, 1])
    panels = [ax for ax in drawn[0].axes if ax.get_images()]
    assert len(panels) == 4
    for ax, image in zip(panels, images):
        np.testing.assert_array_equal(ax.get_images()[0].get_array(), image)
    assert [ax.get_title() for ax in panels] == ["cat (0.70)\ntrue cat", "dog (0.60)\ntrue bird",
                                                 "bird (0.50)\ntrue bird", "dog (0.90)\ntrue dog"]
    assert [to_rgba(ax.title.get_color()) for ax in panels] == [to_rgba(c) for c in ("green", "red", "green", "green")]


def test_gradcam_lays_each_picture_s_own_map_over_it(trained, tiny_data, drawn, tmp_path):
    trainer, _ = trained
    images = tiny_data.images("test")[:4]
    plots.plot_gradcam(trainer.classifier, images, tmp_path / "g.png")
    maps = plots.gradcam(trainer.classifier, images)
    probabilities = trainer.classifier.predict(images)
    panels = [ax for ax in drawn[0].axes if ax.get_images()]
    assert len(panels) == 4 and not np.allclose(maps[0], maps[1])
    for ax, image, heat, probs in zip(panels, images, maps, probabilities):
        picture, overlay = ax.get_images()
        np.testing.assert_array_equal(picture.get_array(), image)
        np.testing.assert_allclose(overlay.get_array(), heat)
        assert overlay.get_alpha() == 0.4
        said = int(np.argmax(probs))
        assert ax.get_title() == f"{trainer.classifier.class_names[said]} ({probs[said]:.2f})"


def test_the_precision_recall_curves_mark_each_class_at_its_threshold(drawn, tmp_path):
    from transferkit.evaluation.multilabel import MultiLabelEvaluation

    labels = np.array([[1, 0], [1, 1], [0, 1], [0, 0], [1, 0]])
    probabilities = np.array([[0.9, 0.2], [0.7, 0.8], [0.3, 0.6], [0.4, 0.1], [0.2, 0.3]])
    evaluation = MultiLabelEvaluation(["red", "blue"], labels, probabilities, thresholds=[0.5, 0.5])
    plots.plot_precision_recall(evaluation, tmp_path / "pr.png")
    ax = drawn[0].axes[0]
    red = line(ax, f"red (AP {evaluation.per_class['red']['average_precision']:.3f})")
    # red ranked 0.9 (yes), 0.7 (yes), 0.4 (no), 0.3 (no), 0.2 (yes)
    np.testing.assert_allclose(red.get_xdata(), [1 / 3, 2 / 3, 2 / 3, 2 / 3, 1])
    np.testing.assert_allclose(red.get_ydata(), [1, 1, 2 / 3, 1 / 2, 3 / 5])
    dots = [l for l in ax.get_lines() if l.get_marker() == "o"]
    assert [(l.get_xdata()[0], l.get_ydata()[0]) for l in dots] == [
        (evaluation.per_class[c]["recall"], evaluation.per_class[c]["precision"]) for c in ("red", "blue")]
    assert evaluation.per_class["red"]["recall"] == pytest.approx(2 / 3)  # 0.9 and 0.7 at 0.5


def test_the_tuning_picture_puts_each_trial_at_its_value_and_stars_the_best(drawn, tmp_path):
    trials = [{"score": 0.90, "hyperparameters": {"dropout": 0.1, "unfreeze_from": 100}},
              {"score": 0.95, "hyperparameters": {"dropout": 0.3, "unfreeze_from": 120}},
              {"score": None, "hyperparameters": {"dropout": 0.5, "unfreeze_from": 80}}]
    plots.plot_tuning(trials, "val_accuracy", tmp_path / "t.png")
    dropout = drawn[0].axes[0]
    assert dropout.get_xlabel() == "dropout"
    points, star = dropout.collections
    np.testing.assert_allclose(points.get_offsets(), [[0.1, 0.90], [0.3, 0.95]])  # the unscored trial left out
    np.testing.assert_allclose(star.get_offsets(), [[0.3, 0.95]])
    plots.plot_tuning(trials, "val_loss", tmp_path / "l.png")  # a loss: the lowest is the best
    np.testing.assert_allclose(drawn[1].axes[0].collections[1].get_offsets(), [[0.1, 0.90]])


def test_the_evaluation_pictures_draw_this_evaluation(drawn, tmp_path):
    """`Evaluation.plot` draws the evaluation it belongs to (not a fixed or empty figure)."""
    probabilities = np.array([[.8, .2], [.7, .3], [.1, .9], [.3, .7], [.2, .8], [.6, .4]])
    evaluation = Evaluation(["cat", "dog"], np.array([0, 0, 0, 1, 1, 1]), probabilities,
                            kept_images={i: np.zeros((8, 8, 3), np.uint8) for i in range(6)})
    evaluation.plot(tmp_path)
    confusion = drawn[0].axes[0].get_images()[0].get_array()
    np.testing.assert_array_equal(confusion, evaluation.confusion_matrix)
    assert len([ax for ax in drawn[1].axes if ax.get_images()]) == len(evaluation.top_losses(9))
