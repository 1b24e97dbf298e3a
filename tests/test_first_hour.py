"""What a new user meets in the first hour: re-runs, overwrites and resumes that must not give a wrong
result silently, errors that say what is wrong, and output that fits pipes and logs. Each test runs
the real commands on tiny data (the small test CNN at 32 px)."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, make_tree
from transferkit import ImageFolder, load_model
from transferkit.cli import build_parser, main

CNN = ["--backbone", "test_cnn", "--weights", "none", "--unfreeze-from", "block2", "--batch-size", "4",
       "--epochs", "1", "--fine-tune-epochs", "1", "--split", "0.6,0.2,0.2", "--seed", "1"]


def train(root, output, *extra, size="32"):
    return main(["train", str(root), "--output", str(output), "--image-size", size, *CNN, *extra])


@pytest.fixture(scope="module")
def pets(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("first_hour") / "pets", {"cats": 10, "dogs": 10})


@pytest.fixture(scope="module")
def run(pets, tmp_path_factory):
    """One finished run, trained by the command; tests that change it work on a copy."""
    output = tmp_path_factory.mktemp("run") / "run"
    assert train(pets, output) == 0
    return output


def _copy(run, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(run, tmp_path / "run"))


# -- 1. a search started again with other settings ---------------------------------------------------


def test_a_search_is_not_continued_with_other_settings_or_data(pets, tmp_path):
    from transferkit.tuning import tune

    small = ImageFolder(pets, image_size=(32, 32), batch_size=4, split=(0.6, 0.4), seed=0)
    options = dict(max_trials=1, epochs=1, fine_tune_epochs=0, backbone="test_cnn", weights=None, seed=1,
                   isolate_trials=False, verbose=0, unfreeze_points=["block2"])
    first = tune(small, tmp_path / "search", **options)
    again = tune(small, tmp_path / "search", **options)  # control: the same search continues (done already)
    assert again.best_score == first.best_score
    larger = ImageFolder(pets, image_size=(40, 40), batch_size=4, split=(0.6, 0.4), seed=0)
    with pytest.raises(ValueError, match=r"started with other settings: hypermodel.image_size: \[32, 32\] there, "
                                         r"\[40, 40\] now.*--overwrite"):
        tune(larger, tmp_path / "search", **options)
    with pytest.raises(ValueError, match=r"hypermodel.base.learning_rate"):
        tune(small, tmp_path / "search", **{**options, "learning_rate": 0.5})
    other_split = ImageFolder(pets, image_size=(32, 32), batch_size=4, split=(0.5, 0.5), seed=0)
    with pytest.raises(ValueError, match=r"data.files.train"):
        tune(other_split, tmp_path / "search", **options)
    fresh = tune(larger, tmp_path / "search", **options, overwrite=True)
    assert fresh.classifier.image_size == (40, 40)
    assert load_model(fresh.files[0]).image_size == (40, 40) if fresh.files else True


def test_tune_command_refuses_a_changed_search(pets, tmp_path, capsys, monkeypatch):
    import transferkit.tuning

    real = transferkit.tuning.tune  # trials in this process: a spawned one would not know the test CNN
    monkeypatch.setattr(transferkit.tuning, "tune", lambda *a, **k: real(*a, **k, isolate_trials=False))
    argv = ["tune", str(pets), "--directory", str(tmp_path / "t"), "--max-trials", "1", "--epochs", "1",
            "--fine-tune-epochs", "0", "--backbone", "test_cnn", "--weights", "none", "--batch-size", "4",
            "--split", "0.6,0.4"]
    assert main([*argv, "--image-size", "32"]) == 0
    capsys.readouterr()
    assert main([*argv, "--image-size", "40"]) == 1
    error = capsys.readouterr().err
    assert "image_size: [32, 32] there, [40, 40] now" in error and "--overwrite" in error
    assert not (tmp_path / "t" / "transferkit-results" / "best.keras").exists() or \
        load_model(tmp_path / "t" / "transferkit-results" / "best.keras").image_size == (32, 32)


# -- 2 to 4. the run folder: overwrite, resume a finished run, resume nothing -------------------------


def test_overwrite_removes_the_earlier_run_and_its_exports_but_nothing_else(run, pets, tmp_path, capsys):
    folder = _copy(run, tmp_path)
    assert main(["export", str(folder / "model.keras"), "--quantize", "float16", "--data-dir", str(pets)]) == 0
    assert main(["export", str(folder), "--format", "savedmodel", "--data-dir", str(pets)]) == 0
    exported = sorted(p.name for p in folder.iterdir())
    assert {"model_float16.tflite", "model_float16.tflite.parity.json", "model_float16.labels.txt",
            "model_savedmodel", "model_savedmodel.parity.json"} <= set(exported), exported
    (folder / "notes.txt").write_text("mine")
    (folder / "model_v0.tflite").write_bytes(b"a file of the user's, with no transferkit sidecar")
    capsys.readouterr()
    assert train(pets, folder, "--overwrite") == 0
    printed = capsys.readouterr().out
    assert "Removed the earlier run" in printed and "model_float16.tflite" in printed
    left = {p.name for p in folder.iterdir()}
    assert not any(name.endswith((".parity.json", ".labels.txt")) or "float16" in name or "savedmodel" in name
                   for name in left), left
    assert {"notes.txt", "model_v0.tflite", "model.keras", "report.html"} <= left
    report = (folder / "report.html").read_text()
    assert "No export has been checked yet" in report and "tflite float16" not in report  # no old parity rows


def test_resume_of_a_finished_run_keeps_its_record(run, pets, tmp_path, capsys):
    folder = _copy(run, tmp_path)
    before = {name: (folder / name).read_bytes() for name in ("metrics.json", "report.html", "model.keras")}
    assert json.loads(before["metrics.json"])["phase_seconds"][0] > 0
    capsys.readouterr()
    assert train(pets, folder, "--resume") == 0
    printed = capsys.readouterr().out
    assert "has finished all its epochs: nothing to resume" in printed and "Epoch" not in printed
    assert {name: (folder / name).read_bytes() for name in before} == before
    assert train(pets, folder, "--resume", "--learning-rate", "0.5") == 2  # finished with other settings
    error = capsys.readouterr().err
    assert "finished with other settings: settings.recipe.learning_rate" in error or "learning_rate" in error
    assert "--overwrite" in error


def test_resume_with_nothing_to_resume_says_so(run, pets, tmp_path, capsys):
    assert train(pets, tmp_path / "typo", "--resume") == 0
    assert "Nothing to resume in" in capsys.readouterr().out
    assert (tmp_path / "typo" / "model.keras").exists()
    folder = _copy(run, tmp_path)
    import shutil

    shutil.rmtree(folder / "checkpoint")  # a finished run without its checkpoint: nothing to continue
    assert train(pets, folder, "--resume") == 1
    assert "holds a finished run but no checkpoint to resume; pass --overwrite" in capsys.readouterr().err


# -- 5 and 6. predict: missing files, order, run folders -----------------------------------------------


def test_predict_names_a_missing_file_and_keeps_the_order(run, pets, tmp_path, capsys):
    cats = sorted((pets / "cats").iterdir())[:2]
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"not a jpeg")
    files = [cats[0], tmp_path / "nothere.jpg", corrupt, cats[1]]
    capsys.readouterr()
    assert main(["predict", str(run), *map(str, files), "--json"]) == 1  # the run folder: its model.keras
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["file"] for row in rows] == [str(f) for f in files]  # in the order given
    assert rows[1]["error"] == "no such file" and "corrupt" not in rows[1]["error"]
    assert "corrupt or truncated" in rows[2]["error"] or "not an image" in rows[2]["error"]
    assert "class" in rows[0] and "class" in rows[3]


def test_a_run_folder_is_taken_where_a_model_is_expected(run, pets, tmp_path, capsys):
    assert main(["evaluate", str(run), str(pets), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 20
    folder = _copy(run, tmp_path)
    assert main(["export", str(folder), "--format", "keras"]) == 0
    assert (folder / "model_export.keras").exists()  # beside the run's model, as for the file
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", str(empty), str(next((pets / "cats").iterdir()))]) == 1
    assert "is a folder without a model: give a .keras file, or a run folder holding model.keras" in \
        capsys.readouterr().err
    assert main(["evaluate", str(run / "modle.keras"), str(pets)]) == 1
    assert f"did you mean {run / 'model.keras'}?" in capsys.readouterr().err


# -- 7. usage errors before TensorFlow loads; evaluate decodes only the split it scores -----------------


def test_usage_errors_exit_2_before_tensorflow_loads(pets, tmp_path):
    probe = ("import sys; from transferkit.cli import main\n"
             f"code = main(sys.argv[1:])\n"
             "print(code, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    for argv in (["train", str(pets), "--image-size", "0"], ["train", str(pets), "--epochs", "-1"],
                 ["tune", str(pets), "--max-trials", "0"], ["predict", "m.keras", "x.jpg", "--batch-size", "0"],
                 ["export", "m.keras", "--integer-io", "uint8"], ["audit", str(pets), "--folds", "1"]):
        shown = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=120,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
        assert shown.stdout.split() == ["2", "False", "False"], (argv, shown.stdout, shown.stderr[-2000:])
        assert "error: --" in shown.stderr, shown.stderr
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["evaluate", "m.keras", str(pets), "--split", "tes"])
    assert exit_.value.code == 2


def test_evaluate_of_one_split_decodes_only_its_files(run, pets, tmp_path, capsys):
    model = load_model(run / "model.keras")
    train_file = pets / model.split["files"]["train"][0]
    saved = train_file.read_bytes()
    try:
        train_file.write_bytes(b"broken")  # decoding the whole folder would skip it and say so
        assert main(["evaluate", str(run), str(pets), "--split", "test", "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["count"] == len(model.split["files"]["test"]) and summary["skipped"] == []
        assert main(["evaluate", str(run), str(pets), "--json"]) == 0  # control: all of it meets the file
        assert [Path(s[0]).name for s in json.loads(capsys.readouterr().out)["skipped"]] == [train_file.name]
    finally:
        train_file.write_bytes(saved)


# -- 9. a search started from a script without the __main__ guard --------------------------------------


@pytest.mark.parametrize("guarded", [False, True])
def test_a_script_without_the_main_guard_is_told_before_any_trial(tmp_path, guarded):
    call = "check_main_module_is_guarded()\nprint('checked')"
    body = f"if __name__ == '__main__':\n    " + call.replace("\n", "\n    ") if guarded else call
    script = tmp_path / "search.py"
    script.write_text(f"from transferkit.tuning.trial_runner import check_main_module_is_guarded\n{body}\n")
    shown = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    if guarded:
        assert shown.returncode == 0 and "checked" in shown.stdout, shown.stderr[-2000:]
    else:
        assert shown.returncode == 1 and "checked" not in shown.stdout
        assert f"{script}, line 2:" in shown.stderr and 'if __name__ == "__main__":' in shown.stderr


def test_a_trial_process_that_died_says_how():
    from transferkit.tuning.trial_runner import _ending

    assert _ending(-9) == "killed by SIGKILL (out of memory, most likely)"
    assert "out of memory" not in _ending(1) and "exit code 1" in _ending(1)
    assert _ending(-15) == "killed by SIGTERM"


# -- 10. an export that disagrees with its model -----------------------------------------------------


def test_an_export_below_the_agreement_threshold_exits_1(run, pets, tmp_path, capsys, monkeypatch):
    import transferkit.export.parity as parity_module

    real = parity_module.check_parity

    def disagreeing(classifier, exported, data, split="validation", verbose=1):
        parity = real(classifier, exported, data, split=split, verbose=verbose)
        parity.exported = parity.exported.copy()
        flip = np.arange(len(parity.labels)) % 4 == 0  # a quarter of the images change class
        parity.exported[flip] = parity.exported[flip][:, ::-1]
        return parity

    folder = _copy(run, tmp_path)
    assert main(["export", str(folder), "--data-dir", str(pets)]) == 0  # control: float32 agrees
    monkeypatch.setattr(parity_module, "check_parity", disagreeing)
    capsys.readouterr()
    assert main(["export", str(folder), "--data-dir", str(pets), "--overwrite"]) == 1
    error = capsys.readouterr().err
    assert "gives the Keras model's class on only 75.0%" in error and "--min-agreement 98%" in error
    assert (folder / "model.tflite").exists()  # written, and said to be wrong
    assert main(["export", str(folder), "--data-dir", str(pets), "--overwrite", "--min-agreement", "0.7"]) == 0


# -- 11. --json: only JSON on stdout; plain lines in a log -----------------------------------------


def test_json_output_is_only_json_and_logs_have_no_ansi_codes(pets, tmp_path, capsys):
    assert train(pets, tmp_path / "j", "--json") == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1 and json.loads(captured.out)["split"] == "test"
    assert "Phase 1" in captured.err and "val_accuracy" in captured.err and "cats" in captured.err  # all else
    assert train(pets, tmp_path / "plain", "--epochs", "2") == 0
    captured = capsys.readouterr()
    assert "Epoch 2/2" in captured.out and " - loss: " in captured.out and "\x1b[" not in captured.out + captured.err
    assert "━" not in captured.out  # one plain line an epoch (Keras's verbose=2), not bars


# -- 12. log noise, and class names no font can draw -----------------------------------------------


def test_native_log_lines_are_hidden_unless_verbose(run, pets, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    argv = [sys.executable, "-m", "transferkit.cli", "export", str(run / "model.keras"), "--quantize", "int8", "--data-dir",
            str(pets), "--output"]
    quiet = subprocess.run([*argv, str(tmp_path / "q.tflite")], capture_output=True, text=True, timeout=300, env=env)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    for noise in ("XNNPACK", "fully_quantize", "cuInit", "oneDNN", "retracing"):
        assert noise not in quiet.stderr, quiet.stderr[-3000:]
    loud = subprocess.run([*argv, str(tmp_path / "v.tflite"), "--verbose"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert loud.returncode == 0 and "XNNPACK" in loud.stderr  # control: the lines exist, and --verbose shows them


def test_class_names_no_font_can_draw_are_said_once(tmp_path):
    from transferkit.evaluation import plots

    plots._UNDRAWABLE_SAID.clear()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for _ in range(2):
            plots.plot_gallery(np.zeros((2, 8, 8, 3), np.uint8), ["猫", "🐶"], tmp_path / "g.png", "ok")
    messages = [str(w.message) for w in seen]
    assert not [m for m in messages if "Glyph" in m], messages  # matplotlib's per-glyph warnings
    said = [m for m in messages if "No installed font has the characters" in m]
    assert len(said) <= 1 and (tmp_path / "g.png").stat().st_size > 0
    if said:  # no font here has them: say which, once
        assert "猫" in said[0] and "🐶" in said[0] and "fonts-noto-cjk" in said[0]


# -- 13. --exclude takes the paths the audit prints -------------------------------------------------


def test_exclusions_as_printed_relative_to_the_current_folder(pets, tmp_path, monkeypatch):
    monkeypatch.chdir(pets.parent)
    first, second = sorted((pets / "cats").iterdir())[:2]
    data = ImageFolder(pets, image_size=(8, 8), exclude=[f"pets/cats/{first.name}", f"cats/{second.name}"])
    assert sorted(Path(p).name for p in data.report.excluded) == sorted([first.name, second.name])
    with pytest.raises(ValueError, match="relative to that folder, or to the current one"):
        ImageFolder(pets, image_size=(8, 8), exclude=["elsewhere/cats/x.png"])


# -- 14. sizes as HEIGHTxWIDTH ----------------------------------------------------------------------


def test_image_size_takes_height_by_width(pets, tmp_path, capsys):
    parsed = build_parser().parse_args(["train", "d", "--image-size", "48x32"])
    assert parsed.image_size == (48, 32)
    assert build_parser().parse_args(["train", "d", "--image-size", "40"]).image_size == (40, 40)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "d", "--image-size", "48by32"])
    assert "HEIGHTxWIDTH" in capsys.readouterr().err
    assert train(pets, tmp_path / "wide", size="48x32") == 0
    assert load_model(tmp_path / "wide" / "model.keras").image_size == (48, 32)


# -- 15. help and messages in the command line's words --------------------------------------------


def _help(command: str) -> str:
    import contextlib
    import io

    text = io.StringIO()
    with contextlib.redirect_stdout(text), pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    return " ".join(text.getvalue().split())


def test_help_shows_defaults_as_typed_and_only_once():
    export_help, train_help = _help("export"), _help("train")
    assert "do not pack the class names inside the file (packing needs transferkit[export])" in export_help
    assert "(default: True)" not in export_help and "(default: None)" not in export_help
    assert export_help.count("(default: next to MODEL, by format)") == 1
    assert "(default: 0.8,0.1,0.1)" in train_help and "(0.8, 0.1, 0.1)" not in train_help
    assert "(default: 224x224)" in train_help and "(default: False)" not in train_help


def test_backbones_say_what_size_training_uses(capsys):
    assert main(["backbones"]) == 0
    printed = capsys.readouterr().out
    assert "pretrained at" in printed and "--image-size (default 224x224)" in printed


def test_the_download_error_names_the_exact_file(monkeypatch):
    import urllib.error

    from transferkit.models import backbones

    spec = backbones.get_backbone_spec("mobilenet_v2")

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    import dataclasses

    monkeypatch.setattr(backbones, "get_backbone_spec", lambda name: dataclasses.replace(spec, build=offline))
    for shape, options, name in (((192, 192, 3), {"alpha": 0.35}, "kernels_0.35_192_no_top.h5"),
                                 ((200, 200, 3), {}, "kernels_1.0_224_no_top.h5")):
        with pytest.raises(backbones.WeightsUnavailableError) as error:
            backbones.get_backbone("mobilenet_v2", shape, weights="imagenet", **options)
        message = str(error.value)
        assert f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{name.split('kernels_')[1]}" in message
        assert "<alpha>" not in message and "--weights PATH" in message
