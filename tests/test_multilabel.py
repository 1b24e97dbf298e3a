"""Several labels per image: a table read with a separator or a column per class, a split stratified by label
set, a sigmoid per class trained on both paths (and resumed), thresholds chosen on validation and saved in
the model, the metrics that fit, and every downstream piece (evaluate, report, predict, export parity, a
search, warm start); what does not fit yet (the audit) refuses."""

import json

import numpy as np
import pytest
from conftest import Interrupt
from PIL import Image

from transferkit import ImageTable, TwoPhaseTrainer, load_model
from transferkit.data.table import TableError
from transferkit.evaluation.metrics import evaluate
from transferkit.evaluation.multilabel import MultiLabelEvaluation, average_precision, choose_thresholds

CNN = dict(backbone="test_cnn", weights=None, unfreeze_from="block2", learning_rate=5e-2, augmentation=None)
CLASSES = ("red", "blue", "green")


def _photos(root, count=96, seed=0):
    """Images with a red left third, a blue middle third and a green right third, each present or not: the
    label set of image i is the classes whose third is lit (every one of the 8 sets, in turn)."""
    rng = np.random.default_rng(seed)
    rows = []
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        on = [(i >> bit) & 1 for bit in range(3)]
        pixels = rng.integers(40, 90, (36, 36, 3)).astype(np.uint8)
        for third, (lit, channel) in enumerate(zip(on, (0, 2, 1))):
            if lit:
                pixels[:, 12 * third:12 * third + 12, channel] = 240
        Image.fromarray(pixels).save(root / "images" / f"{i:03d}.png")
        rows.append((f"images/{i:03d}.png", [c for c, lit in zip(CLASSES, on) if lit]))
    return rows


def _table(root, rows, kind="separator"):
    if kind == "separator":
        text = ["path,label"] + [f"{p},{';'.join(labels) or 'none'}" for p, labels in rows]
    else:
        text = ["path," + ",".join(CLASSES)] + [p + "," + ",".join("1" if c in labels else "0" for c in CLASSES)
                                                for p, labels in rows]
    (root / "labels.csv").write_text("\n".join(text) + "\n")
    return root / "labels.csv"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("several")
    rows = _photos(root)
    return ImageTable(_table(root, rows, "columns"), label_columns=list(CLASSES), image_size=(32, 32), batch_size=8,
                      split=(0.5, 0.25, 0.25), seed=1)


@pytest.fixture(scope="module")
def trained(data):
    trainer = TwoPhaseTrainer(seed=0, **CNN)
    return trainer, trainer.fit(data, epochs=8, fine_tune_epochs=2, verbose=0)


def test_a_table_gives_a_row_of_labels_per_image_either_way(tmp_path):
    rows = _photos(tmp_path, 24)
    by_columns = ImageTable(_table(tmp_path, rows, "columns"), label_columns=list(CLASSES), image_size=(16, 16),
                            split=(0.5, 0.5), seed=0)
    assert by_columns.multi_label and by_columns.class_names == list(CLASSES)
    wanted = {p: labels for p, labels in rows}
    for split in ("train", "validation"):
        names = [f.relative_to(tmp_path).as_posix() for f in by_columns.files(split)]
        got = by_columns.labels(split)
        assert got.shape == (len(names), 3)
        assert [[c for c, on in zip(CLASSES, row) if on] for row in got] == [wanted[n] for n in names]
    # a separator: the label sets as written ("none" is then a label of its own), classes sorted
    separated = ImageTable(_table(tmp_path, rows), label_separator=";", image_size=(16, 16), split=(0.5, 0.5), seed=0)
    assert separated.class_names == ["blue", "green", "none", "red"]
    assert separated.report.counts["train"]["red"] + separated.report.counts["validation"]["red"] == 12
    # every label set (8 of them, 3 images each) is split by the fractions: stratified by set
    sets = [tuple(row) for row in by_columns.labels("train")]
    assert sorted(sets.count(s) for s in set(sets)) in ([1] * 4 + [2] * 4, [2] * 8)
    assert len(set(sets)) == 8
    record = by_columns.split_record()
    assert record["columns"]["label_columns"] == list(CLASSES)
    with pytest.raises(ValueError, match="class_weights balance one label per image"):
        by_columns.class_weights


def test_bad_rows_of_several_labels_are_named_by_line(tmp_path):
    _photos(tmp_path, 4)
    (tmp_path / "bad.csv").write_text("path,label\nimages/000.png,red;;blue\nimages/001.png,red\n"
                                      "images/002.png,blue\nimages/003.png,red;blue\n")
    with pytest.raises(TableError, match=r"line 2: images/000.png has an empty label in 'red;;blue'"):
        ImageTable(tmp_path / "bad.csv", label_separator=";", image_size=(16, 16))
    (tmp_path / "cols.csv").write_text("path,red,blue\nimages/000.png,1,maybe\nimages/001.png,0,1\n"
                                       "images/002.png,1,0\nimages/003.png,yes,no\n")
    with pytest.raises(TableError, match=r"line 2: images/000.png has 'maybe' in column 'blue' \(use 1 or 0\)"):
        ImageTable(tmp_path / "cols.csv", label_columns=["red", "blue"], image_size=(16, 16))
    with pytest.raises(ValueError, match="not both"):
        ImageTable(tmp_path / "cols.csv", label_columns=["red", "blue"], label_separator=";")
    with pytest.raises(TableError, match="no column 'green'"):
        ImageTable(tmp_path / "cols.csv", label_columns=["red", "green"], image_size=(16, 16))


def test_average_precision_and_thresholds_against_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(20):
        labels = rng.random(30) < 0.4
        labels[:2] = [True, False]
        scores = np.round(rng.random(30), 1)  # ties
        # average precision: the precision at each positive's score, averaged over positives
        expected = np.mean([np.mean(labels[scores >= s]) for s in scores[labels]])
        assert average_precision(labels, scores) == pytest.approx(expected)
        threshold = choose_thresholds(labels[:, None], scores[:, None])[0]

        def f1(t):
            said = scores >= t
            return 2 * np.sum(said & labels) / (said.sum() + labels.sum())

        assert all(f1(threshold) >= f1(t) - 1e-12 for t in np.linspace(0, 1.01, 203))  # none beats it
    assert choose_thresholds(np.zeros((4, 1)), np.random.default_rng(0).random((4, 1))) == [0.5]  # no positives


def test_the_metrics_of_several_labels():
    labels = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    probabilities = np.array([[.9, .6], [.7, .6], [.3, .8], [.1, .4]])
    ev = MultiLabelEvaluation(["a", "b"], labels, probabilities, thresholds=[0.5, 0.5])
    assert ev.accuracy == 0.75  # image 0 gets b too; the others are exactly right
    assert ev.per_class["a"]["f1"] == 1.0 and ev.per_class["b"]["precision"] == pytest.approx(2 / 3)
    assert ev.micro_f1 == pytest.approx(2 * 4 / (5 + 4)) and ev.macro_f1 == pytest.approx((1 + 0.8) / 2)
    assert ev.mean_average_precision == pytest.approx((1 + (1 + 2 / 3) / 2) / 2)
    assert MultiLabelEvaluation(["a", "b"], labels, probabilities, thresholds=[0.5, 0.85]).accuracy == 0.5


def test_a_sigmoid_per_class_learns_and_keeps_its_thresholds(trained, data, tmp_path):
    trainer, result = trained
    classifier = result.classifier
    assert classifier.multi_label and trainer.parts.head.units == 3
    assert result.final("val_map", 1) is not None and result.final("val_map") > 0.9
    images = data.images("test")
    probabilities = classifier.predict(images)
    assert probabilities.shape == (len(images), 3) and not np.allclose(probabilities.sum(axis=1), 1.0)
    validation = MultiLabelEvaluation(data.class_names, data.labels("validation"),
                                      classifier.predict(data.images("validation")))
    assert classifier.thresholds == choose_thresholds(validation.labels, validation.probabilities)
    evaluation = evaluate(classifier, data, split="test")
    assert isinstance(evaluation, MultiLabelEvaluation) and evaluation.thresholds == classifier.thresholds
    assert evaluation.mean_average_precision > 0.9 and evaluation.accuracy > 0.5  # chance: 1/8
    sets = classifier.predict_classes(images)
    assert sets == [[c for c, on in zip(data.class_names, row) if on] for row in probabilities
                    >= np.asarray(classifier.thresholds)]
    loaded = load_model(classifier.save(tmp_path / "several.keras"))
    assert loaded.multi_label and loaded.thresholds == classifier.thresholds
    np.testing.assert_allclose(loaded.predict(images), probabilities, atol=1e-6)


def test_the_exact_path_learns_too_and_a_resumed_run_ends_as_the_whole_one(data, tmp_path):
    exact = TwoPhaseTrainer(seed=0, cache_features=False, **CNN).fit(data, epochs=8, fine_tune_epochs=2, verbose=0)
    assert exact.final("val_map") > 0.9
    whole = TwoPhaseTrainer(seed=2, **CNN).fit(data, epochs=2, fine_tune_epochs=2, verbose=0)
    with pytest.raises(KeyboardInterrupt):
        TwoPhaseTrainer(seed=2, **CNN).fit(data, epochs=2, fine_tune_epochs=2, verbose=0, callbacks=[Interrupt(2)],
                                           checkpoint_dir=tmp_path)
    resumed = TwoPhaseTrainer(seed=2, **CNN).fit(data, epochs=2, fine_tune_epochs=2, verbose=0, checkpoint_dir=tmp_path)
    assert 0 < resumed.epochs_trained < 4  # it continued, it did not start over
    images = data.images("test")
    np.testing.assert_allclose(resumed.classifier.predict(images), whole.classifier.predict(images), atol=1e-6)
    assert resumed.classifier.thresholds == whole.classifier.thresholds


def test_the_command_line_trains_predicts_evaluates_reports_and_exports(data, tmp_path, capsys):
    from transferkit.cli import main

    table = str(data.table_path)
    out = tmp_path / "run"
    assert main(["train", str(data.root), "--labels", table, "--label-columns", ",".join(CLASSES), "--backbone",
                 "test_cnn", "--weights", "none", "--unfreeze-from", "block2", "--learning-rate", "0.05",
                 "--augmentation", "none", "--image-size", "32", "--batch-size", "8", "--epochs", "3",
                 "--fine-tune-epochs", "1", "--seed", "1", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "validation mAP after phase 2" in printed and "threshold" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["evaluation"]["task"] == "multi_label" and metrics["evaluation"]["map"] > 0.8
    report = (out / "report.html").read_text()
    assert "mAP, test" in report and "precision_recall.png" not in report  # pictures are inlined
    assert (out / "precision_recall.png").is_file()
    image = data.files("test")[0]
    assert main(["predict", str(out), str(image), "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    classifier = load_model(out)
    expected = classifier.predict_classes([image])[0]
    assert row["labels"] == expected and set(row["probabilities"]) == set(CLASSES)
    # evaluate reads the table as training did (the recorded label columns), on the recorded test files
    assert main(["evaluate", str(out), str(data.root), "--labels", table, "--split", "test", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["map"] == pytest.approx(metrics["evaluation"]["map"])
    assert main(["audit", str(data.root), "--labels", table, "--label-columns", ",".join(CLASSES), "--weights",
                 "none"]) == 1
    assert "several labels per image" in capsys.readouterr().err


def test_an_export_keeps_the_labels_and_thresholds_and_agrees(trained, data, tmp_path):
    pytest.importorskip("tensorflow")
    from transferkit.export import check_parity, export, load_exported

    classifier = trained[1].classifier
    path = export(classifier, tmp_path / "several.tflite", format="tflite")
    exported = load_exported(path)
    assert exported.multi_label and exported.thresholds == pytest.approx(classifier.thresholds)
    parity = check_parity(classifier, exported, data, split="test", verbose=0)
    assert parity.agreement == 1.0 and parity.exported_accuracy == parity.keras_accuracy
    assert parity.keras_accuracy == pytest.approx(evaluate(classifier, data, split="test").accuracy)
    assert exported.predict_classes(data.images("test")) == classifier.predict_classes(data.images("test"))


def test_a_search_scores_trials_by_validation_map(data, tmp_path):
    from transferkit.tuning import tune

    settings = dict(max_trials=2, verbose=0, isolate_trials=False, epochs=2, fine_tune_epochs=1,
                    unfreeze_points=["block2"], hidden_units=(0,),
                    **{k: v for k, v in CNN.items() if k not in ("unfreeze_from", "learning_rate")})
    result = tune(data, tmp_path / "map", **settings)
    assert result.tuner.oracle.objective.name == "final_val_map"
    assert all(t["score"] is not None for t in result.trials)
    assert result.classifier.multi_label and result.classifier.thresholds is not None
    by_f1 = tune(data, tmp_path / "f1", metric="val_macro_f1", **settings)
    assert by_f1.tuner.oracle.objective.name == "final_val_macro_f1"
    assert all(0.0 <= t["score"] <= 1.0 for t in by_f1.trials) and by_f1.trials[0]["score"] != result.trials[0]["score"]


def test_a_warm_start_continues_several_labels_and_refuses_another_task(trained, data, tmp_path):
    from conftest import make_tree

    from transferkit import ImageFolder
    from transferkit.training.warm_start import start_from

    classifier = trained[1].classifier
    trainer = TwoPhaseTrainer(seed=5, **CNN)
    trainer.build(data.class_names, data.image_size, multi_label=True)
    start_from(trainer, classifier)
    images = data.images("test")
    np.testing.assert_allclose(trainer.classifier.predict(images), classifier.predict(images), atol=1e-6)
    single = ImageFolder(make_tree(tmp_path / "one", {"blue": 8, "green": 8, "red": 8}), image_size=(32, 32),
                         batch_size=8, split=(0.5, 0.5), seed=0)
    with pytest.raises(ValueError, match="trained for several labels per image, the data has one label per image"):
        TwoPhaseTrainer(seed=0, **CNN).fit(single, epochs=1, fine_tune_epochs=0, verbose=0, initial_model=classifier)
    with pytest.raises(ValueError, match="trained for several labels per image, but the data has one label"):
        evaluate(classifier, ImageFolder(single.root, image_size=(32, 32), split=(0.5, 0.5), seed=0))
