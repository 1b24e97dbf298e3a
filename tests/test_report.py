"""report.html: one self-contained page per run, rebuilt by `transferkit report`, rendered by Chromium."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from transferkit.cli import main
from transferkit.export import export
from transferkit.export.parity import PARITY_SUFFIX, check_parity
from transferkit.evaluation.report import REPORT_FILE, write_report
from transferkit.evaluation.run import save_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def run_dir(trained, tiny_data, tmp_path_factory):
    trainer, result = trained
    folder = tmp_path_factory.mktemp("run")
    save_run(trainer, result, tiny_data, folder, split="test")
    return folder


def test_a_run_writes_a_self_contained_report(run_dir):
    page = (run_dir / REPORT_FILE).read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for title in ("Settings", "Data and split", "Training curves", "Per-class results", "Calibration", "Top losses",
                  "Grad-CAM", "Export parity", "Timings"):
        assert f"<h2>{title}" in page, title
    assert "<script" not in page.lower() and "<link" not in page.lower() and "url(" not in page
    assert not re.search(r"""(src|href)\s*=\s*(?!["']?data:)""", page), "only data: URIs may be referenced"
    assert page.count('src="data:image/png;base64,') == 4  # curves, confusion matrix, reliability, Grad-CAM
    thumbnails = page.count('src="data:image/jpeg;base64,')
    assert thumbnails == len(metrics["evaluation"]["top_losses"]) > 0  # one per top loss, read from its file
    ece = metrics["evaluation"]["calibration"]["ece"]
    assert f"{ece:.4f}" in page
    for name, row in metrics["evaluation"]["per_class"].items():
        assert f"<td class=\"name\">{name}</td><td>{row['precision']:.3f}</td>" in page
    assert f"{metrics['phase_seconds'][0]:.1f} s" in page


def test_the_settings_read_as_written_and_say_what_was_run(run_dir, trained, tiny_data):
    page = (run_dir / REPORT_FILE).read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    settings = page[page.index("<h2>Settings"):page.index("<h2>Data and split")]
    assert "ClassifierHead(pooling=&#x27;avg&#x27;, dropout=" in settings and "&quot;name&quot;" not in settings
    assert "32 x 32 (the data&#x27;s)" in settings
    run = metrics["run"]  # the same record a checkpoint must match
    assert (run["epochs"], run["fine_tune_epochs"], run["data"]["batch_size"]) == (
        len(trained[1].history["loss"][:trained[1].phase_boundary]), len(trained[1].history["loss"]) -
        trained[1].phase_boundary, tiny_data.batch_size)
    assert f"<td class=\"name\">batch_size</td><td>{tiny_data.batch_size}</td>" in settings
    # a word as written (adam), not as JSON ("adam"): found by the mutation sample
    assert "<td class=\"name\">optimizer</td><td>adam</td>" in settings


def test_calibration_is_recorded_and_consistent(run_dir):
    calibration = json.loads((run_dir / "metrics.json").read_text())["evaluation"]["calibration"]
    counts = [b["count"] for b in calibration["bins"]]
    gaps = [b["count"] * abs(b["accuracy"] - b["confidence"]) for b in calibration["bins"]]
    assert abs(calibration["ece"] - sum(gaps) / sum(counts)) < 1e-9
    assert (run_dir / "reliability.png").stat().st_size > 1000


def test_report_command_rebuilds_it_with_the_export_parity(run_dir, tiny_data, capsys):
    from transferkit import load_model

    classifier = load_model(run_dir / "model.keras")
    first = (run_dir / REPORT_FILE).read_text()
    (run_dir / REPORT_FILE).unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / REPORT_FILE).read_text() == first  # the same page from the same files
    exported = export(classifier, run_dir / "model.tflite", format="tflite", metadata=False)
    check_parity(classifier, exported, tiny_data, split="test", verbose=0).save(run_dir / f"model{PARITY_SUFFIX}")
    write_report(run_dir)
    page = (run_dir / REPORT_FILE).read_text()
    assert "No export has been checked yet" in first and "No export has been checked yet" not in page
    assert "<td class=\"name\">tflite</td><td>8</td>" in page
    assert main(["report", str(run_dir / "nothing")]) == 1
    assert "metrics.json is missing" in capsys.readouterr().err


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1100,4000",
                    f"--screenshot={shot}", (run_dir / REPORT_FILE).as_uri()],
                   check=True, capture_output=True, timeout=120)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (4000, 1100)
    header = pixels[:40, :, :].reshape(-1, 3)
    assert (np.abs(header.astype(int) - [0x24, 0x29, 0x2F]).sum(axis=1) < 10).mean() > 0.8  # styled dark header
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colours > 2000, f"only {colours} colours: the pictures did not render"
