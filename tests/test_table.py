"""Labels from a table (ImageTable, --labels): the same verification, report, split and record as folders,
and every bad row named by its line."""

import json

import numpy as np
import pytest
from conftest import COLOURS, make_image

from transferkit import ImageTable, TwoPhaseTrainer
from transferkit.data.table import TableError


def _photos(root, count=12, classes=("cat", "dog")):
    """``root/images/<i>.png``, image i of class ``classes[i % len(classes)]``, coloured by class."""
    rows = []
    for i in range(count):
        label = classes[i % len(classes)]
        make_image(root / "images" / f"{i:02d}.png", COLOURS[classes.index(label)], seed=i)
        rows.append((f"images/{i:02d}.png", label))
    return rows


def _csv(path, header, rows, sep=","):
    path.write_text("\n".join([sep.join(header)] + [sep.join(map(str, r)) for r in rows]) + "\n")
    return path


def test_a_table_is_split_as_a_folder_is_and_records_it(tmp_path):
    rows = _photos(tmp_path, 20)
    table = _csv(tmp_path / "labels.csv", ["path", "label"], rows)
    data = ImageTable(table, image_size=(16, 16), batch_size=4, split=(0.6, 0.2, 0.2), seed=3)
    assert data.class_names == ["cat", "dog"] and data.root == tmp_path
    assert data.report.counts == {"train": {"cat": 6, "dog": 6}, "validation": {"cat": 2, "dog": 2},
                                  "test": {"cat": 2, "dog": 2}}
    labels = dict(rows)
    for split in ("train", "validation", "test"):
        names = [p.relative_to(tmp_path).as_posix() for p in data.files(split)]
        assert [data.class_names[i] for i in data.labels(split)] == [labels[n] for n in names]
    record = data.split_record()
    assert record["layout"] == "table" and record["table"] == str(table.resolve())
    again = ImageTable(table, image_size=(16, 16), split=record["files"])
    assert all(again.files(s) == data.files(s) for s in ("train", "validation", "test"))
    assert np.array_equal(again.labels("test"), data.labels("test"))


def test_a_split_column_says_each_images_split_and_a_dataframe_serves_too(tmp_path):
    rows = _photos(tmp_path, 12)
    splits = ["train"] * 6 + ["val"] * 4 + ["TEST"] * 2
    table = _csv(tmp_path / "labels.csv", ["label", "path", "split"],
                 [(label, path, split) for (path, label), split in zip(rows, splits)], sep=";")
    data = ImageTable(table, image_size=(16, 16))
    assert {k: sum(v.values()) for k, v in data.report.counts.items()} == {"train": 6, "validation": 4, "test": 2}
    assert data.files("test") == [tmp_path / "images/10.png", tmp_path / "images/11.png"]
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"file": [p for p, _ in rows], "y": [label for _, label in rows], "part": splits})
    from_frame = ImageTable(frame, tmp_path, path_column="file", label_column="y", split_column="part",
                            image_size=(16, 16))
    assert all(from_frame.files(s) == data.files(s) for s in ("train", "validation", "test"))


def test_every_bad_row_is_named_by_its_line_and_nothing_is_read(tmp_path):
    rows = _photos(tmp_path, 8)
    table = _csv(tmp_path / "labels.csv", ["path", "label", "split"], [
        (rows[0][0], "cat", "train"),       # line 2: fine
        ("images/missing.png", "cat", "train"),  # line 3
        (rows[1][0], "", "train"),          # line 4
        (rows[2][0], "cat", "trian"),       # line 5
        ("../outside.png", "cat", "train"),  # line 6
        (rows[0][0], "dog", "train"),       # line 7: line 2's file, another label
        ("", "dog", "train"),               # line 8
        (rows[3][0], "dog", "train"),       # line 9: fine
        (rows[3][0], "dog", "test"),        # line 10: line 9's file, another split
    ])
    with pytest.raises(TableError) as error:
        ImageTable(table, image_size=(16, 16))
    message = str(error.value)
    assert "9 row(s)" not in message and "7 row(s) cannot be used" in message
    for expected in ["line 3: images/missing.png not found", "line 4: images/01.png has an empty label",
                     "line 5: split 'trian' for images/02.png is not one of train, validation, test",
                     "line 6: ../outside.png is not inside", "line 2 and line 7: images/00.png is labelled 'cat' and "
                     "'dog'", "line 8: no path in column 'path'", "line 9 and line 10: images/03.png is in the train "
                     "and the test split"]:
        assert expected in message, message


def test_missing_columns_say_which_there_are(tmp_path):
    table = _csv(tmp_path / "labels.csv", ["filename", "class"], _photos(tmp_path, 4))
    with pytest.raises(TableError, match=r"no column 'path', 'label'; its columns are 'filename', 'class'"):
        ImageTable(table)
    data = ImageTable(table, path_column="filename", label_column="class", image_size=(16, 16), split=(0.5, 0.5))
    assert data.class_names == ["cat", "dog"]


def test_repeated_rows_are_kept_once_and_whole_number_labels_sort_as_numbers(tmp_path):
    rows = [(path, {"cat": 10, "dog": 2}[label]) for path, label in _photos(tmp_path, 8)]
    table = _csv(tmp_path / "labels.csv", ["path", "label"], rows + [rows[0]])
    data = ImageTable(table, image_size=(16, 16), split=(0.5, 0.5))
    assert data.class_names == ["2", "10"]
    assert len(data.files("all")) == 8 and data.report.repeated == ["line 10: images/00.png"]
    assert "repeated rows: 1, each kept once" in str(data.report)


def test_relabelled_rows_are_not_taken_for_the_checkpointed_run(tmp_path):
    rows = [(path, label, "train" if i < 8 else "validation") for i, (path, label) in enumerate(_photos(tmp_path, 12))]
    table = _csv(tmp_path / "labels.csv", ["path", "label", "split"], rows)
    trainer = TwoPhaseTrainer(backbone="test_cnn", weights=None)
    before = trainer._fingerprint(ImageTable(table, image_size=(32, 32)), 1, 1)[0]
    swapped = [(path, "dog" if label == "cat" else "cat", split) if i < 2 else (path, label, split)
               for i, (path, label, split) in enumerate(rows)]
    _csv(table, ["path", "label", "split"], swapped)
    after = trainer._fingerprint(ImageTable(table, image_size=(32, 32)), 1, 1)[0]
    assert before["data"]["files"] == after["data"]["files"] and before["data"]["labels"] != after["data"]["labels"]


def test_the_command_line_trains_and_evaluates_on_a_table(tmp_path, capsys):
    from transferkit.cli import main

    rows = _photos(tmp_path / "photos", 16)
    table = _csv(tmp_path / "labels.csv", ["path", "label"], rows)  # beside the images' root, not in it
    code = main(["train", str(tmp_path / "photos"), "--labels", str(table), "--output", str(tmp_path / "run"),
                 "--backbone", "test_cnn", "--weights", "none", "--image-size", "32", "--epochs", "1",
                 "--fine-tune-epochs", "1", "--batch-size", "4", "--split", "0.5,0.25,0.25"])
    assert code == 0
    out = capsys.readouterr().out
    assert "cat" in out and "dog" in out
    code = main(["evaluate", str(tmp_path / "run"), str(tmp_path / "photos"), "--labels", str(table),
                 "--split", "test", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["class_names"] == ["cat", "dog"] and sum(map(sum, summary["confusion_matrix"])) == 4
    assert main(["train", str(tmp_path / "photos"), "--labels", str(tmp_path / "nope.csv")]) == 2
    assert "--labels" in capsys.readouterr().err


def test_a_table_named_relative_to_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _csv(tmp_path / "labels.csv", ["path", "label"], _photos(tmp_path, 8))
    data = ImageTable("labels.csv", image_size=(16, 16), split=(0.5, 0.5), seed=0)
    assert sorted(p.as_posix() for p in data.files("all")) == [f"images/{i:02d}.png" for i in range(8)]
    assert sorted(data.split_record()["files"]["train"] + data.split_record()["files"]["validation"]) == \
        [f"images/{i:02d}.png" for i in range(8)]
