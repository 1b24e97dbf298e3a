import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import keras_tuner as kt
import numpy as np
import pytest

from transferkit.tuning import MemoryLog, TwoPhaseHyperModel, rss_mb, tune

TINY = dict(weights=None, backbone_options={"alpha": 0.35}, epochs=1, fine_tune_epochs=1, seed=1,
            augmentation=None)


def test_default_unfreeze_points_are_upper_blocks():
    hypermodel = TwoPhaseHyperModel(["a", "b"], (32, 32), **TINY)
    assert hypermodel.unfreeze_points == [f"block_{i}" for i in range(9, 17)]


class PhaseTwoProbe(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.trainable = []

    def on_epoch_begin(self, epoch, logs=None):  # one epoch a phase here
        self.trainable.append(len(self.model.trainable_weights))


@pytest.mark.parametrize("point", ["block_16", "block_12"])
def test_the_chosen_unfreeze_point_decides_what_trains(tiny_data, point):
    hypermodel = TwoPhaseHyperModel(tiny_data.class_names, tiny_data.image_size, **TINY)
    hp = kt.HyperParameters()
    hypermodel.trainer_for(hp)  # registers the search space
    hp.values["unfreeze_from"] = point
    model = hypermodel.build(hp)
    probe = PhaseTwoProbe()
    scores = hypermodel.fit(hp, model, tiny_data, callbacks=[probe], verbose=0)
    backbone = hypermodel.trainer.backbone_model
    start = [l.name for l in backbone.layers].index(f"{point}_expand")
    expected = sum(len(l.trainable_weights) for l in backbone.layers[start:]
                   if not isinstance(l, keras.layers.BatchNormalization)) + 2
    assert probe.trainable == [2, expected]
    assert all(not l.trainable for l in backbone.layers[:start])
    assert set(scores) >= {"final_val_accuracy", "final_val_loss", "final_loss"}


def test_search_completes_and_best_hyperparameters_rebuild(tiny_data, tmp_path):
    result = tune(tiny_data, tmp_path, max_trials=2, output=tmp_path / "out", verbose=0, isolate_trials=False, **TINY)
    assert len(result.trials) == 2 and all(t["score"] is not None for t in result.trials)
    assert result.trials[0]["score"] >= result.trials[1]["score"]
    for name in ("best.keras", "trials.json", "tuning.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert result.classifier.class_names == ["cats", "dogs"]
    hp = result.tuner.get_best_hyperparameters(1)[0]
    trainer = result.tuner.hypermodel.trainer_for(hp)
    assert trainer.unfreeze_from == result.best_hyperparameters["unfreeze_from"]
    rerun = trainer.fit(tiny_data, epochs=1, fine_tune_epochs=1, verbose=0)
    assert len(rerun.history["loss"]) == 2
    assert "unfreeze_from" in result.table() and result.trials[0]["trial_id"] in result.table()


def test_an_interrupted_search_resumes(tiny_data, tmp_path):
    memory = MemoryLog()  # in-process trials, so the log sees every phase that runs
    first = tune(tiny_data, tmp_path, max_trials=2, verbose=0, callbacks=[memory], isolate_trials=False, **TINY)
    ids = {t["trial_id"]: t["score"] for t in first.trials}
    runs_before = len(memory.rss)
    second = tune(tiny_data, tmp_path, max_trials=3, verbose=0, callbacks=[memory], isolate_trials=False, **TINY)
    assert len(second.trials) == 3
    assert {t["trial_id"]: t["score"] for t in second.trials if t["trial_id"] in ids} == ids
    assert len(memory.rss) - runs_before == 1  # one new trial (one run over both phases), the old ones not rerun


@pytest.mark.parametrize("tuner", ["bayesian", "hyperband"])
def test_other_tuners(tiny_data, tmp_path, tuner):
    result = tune(tiny_data, tmp_path, tuner=tuner, max_trials=2, max_epochs=2, verbose=0, isolate_trials=False, **TINY)
    assert result.best_score is not None and result.classifier is not None


def test_memory_stays_flat_over_many_trials(tiny_data, tmp_path):
    """Each trial trains in its own process: the tuner's process does not grow, and every trial
    peaks at about the same memory (in one process they would grow by tens of MiB per trial)."""
    before = rss_mb()
    result = tune(tiny_data, tmp_path, max_trials=6, verbose=0, **TINY)
    after = rss_mb()
    trials = sorted(result.tuner.oracle.trials.values(), key=lambda t: t.trial_id)
    peaks = [t.metrics.get_last_value("trial_peak_rss_mb") for t in trials]
    print(f"tuner process RSS {before:.0f} -> {after:.0f} MiB; trial peaks (MiB): {[round(p) for p in peaks]}")
    assert len(peaks) == 6
    assert max(peaks) - min(peaks) < 100
    assert after - before < 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_search_chief_and_two_workers(tiny_data, tmp_path):
    script = Path(__file__).with_name("distributed_search.py")
    port = str(free_port())
    common = {**os.environ, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": port}
    argv = [sys.executable, str(script), str(tiny_data.root), str(tmp_path / "search"), str(tmp_path)]
    processes, logs = [], []
    for tuner_id in ("chief", "tuner0", "tuner1"):
        logs.append(open(tmp_path / f"{tuner_id}.log", "w+"))
        processes.append(subprocess.Popen(argv, env={**common, "KERASTUNER_TUNER_ID": tuner_id},
                                          stdout=logs[-1], stderr=subprocess.STDOUT, text=True))
    try:
        for p in processes:
            p.wait(timeout=600)
    finally:
        for p in processes:
            p.kill()
    outputs = [(tmp_path / f"{name}.log").read_text() for name in ("chief", "tuner0", "tuner1")]
    for p, out in zip(processes, outputs):
        assert p.returncode == 0, out[-3000:]
    ran = [json.loads(line) for f in sorted(tmp_path.glob("ran-*.jsonl")) for line in f.read_text().splitlines()]
    ids = [r["trial_id"] for r in ran]
    assert len(ids) == 4 and len(set(ids)) == 4  # every trial ran exactly once
    assert {r["tuner_id"] for r in ran} <= {"tuner0", "tuner1"}
    reported = json.loads(outputs[0].strip().splitlines()[-1])
    best_score = max(r["score"] for r in ran)
    assert reported["best_score"] == pytest.approx(best_score)
    assert reported["best_trial"] in {r["trial_id"] for r in ran if r["score"] == best_score}  # ties allowed
    assert (tmp_path / "search" / "results" / "best.keras").exists()


def test_tune_command(tiny_data, tmp_path, capsys):
    from transferkit.cli import main

    argv = ["tune", str(tiny_data.root), "--directory", str(tmp_path), "--max-trials", "1", "--epochs", "1",
            "--fine-tune-epochs", "1", "--weights", "none", "--image-size", "32", "--batch-size", "8"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Trials (best first)" in out and "unfreeze_from" in out
    assert (tmp_path / "transferkit-results" / "best.keras").exists()
    assert (tmp_path / "transferkit-results" / "tuning.png").exists()
