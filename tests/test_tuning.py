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

from transferkit.tuning.search import MemoryLog, TwoPhaseHyperModel, rss_mb, tune

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


@pytest.mark.searchprocesses
def test_memory_stays_flat_over_many_trials(tiny_data, tmp_path):
    """Trials train in worker processes, each reused for 5 trials and then replaced: over 20 trials the
    tuner's process does not grow and no trial peaks far above the first (in one process they would
    grow by tens of MiB per trial, about 700 MiB over 20), with 4 process starts instead of 20."""
    before = rss_mb()
    phase_one = {**TINY, "fine_tune_epochs": 0}  # one fit a trial: 20 trials in about two minutes
    result = tune(tiny_data, tmp_path, max_trials=20, verbose=0, trials_per_process=5, **phase_one)
    after = rss_mb()
    trials = sorted(result.tuner.oracle.trials.values(), key=lambda t: int(t.trial_id))
    peaks = [t.metrics.get_last_value("trial_peak_rss_mb") for t in trials]
    pids = [t.metrics.get_last_value("trial_pid") for t in trials]
    print(f"tuner process RSS {before:.0f} -> {after:.0f} MiB; trial peaks (MiB): {[round(p) for p in peaks]}")
    assert len(peaks) == 20
    assert [len(set(pids[i:i + 5])) for i in range(0, 20, 5)] == [1, 1, 1, 1] and len(set(pids)) == 4
    assert max(peaks) - min(peaks) < 100
    assert after - before < 200


@pytest.mark.searchprocesses  # the control of the test above, run with it
def test_in_one_process_the_same_trials_grow_past_that_bound(tiny_data, tmp_path):
    """The control for the test above: trials trained in the tuner's own process leave tens of MiB
    each behind (measured: about 37 MiB a trial), so the 100 MiB bound on the spread would catch it."""
    memory = MemoryLog()
    tune(tiny_data, tmp_path, max_trials=6, verbose=0, callbacks=[memory], isolate_trials=False, **TINY)
    print(f"in-process RSS at each trial's start (MiB): {[round(r) for r in memory.rss]}")
    assert len(memory.rss) == 6
    assert memory.rss[-1] - memory.rss[0] > 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.searchprocesses
def test_distributed_search_chief_and_two_workers(tiny_data, tmp_path):
    """Two workers run every trial once; the chief's oracle (and only the chief's: the rule is patched
    there alone) stops the odd-numbered trials after their first epoch, and the workers obey it."""
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
    stopped = {r["trial_id"]: r["last_step"] for r in ran}
    assert stopped == {i: 0 if int(i) % 2 else 1 for i in ids}  # epochs 0 and 1, unless the oracle stopped it
    reported = json.loads(outputs[0].strip().splitlines()[-1])
    best_score = max(r["score"] for r in ran)
    assert reported["best_score"] == pytest.approx(best_score)
    assert reported["best_trial"] in {r["trial_id"] for r in ran if r["score"] == best_score}  # ties allowed
    assert (tmp_path / "search" / "results" / "best.keras").exists()
    features = tmp_path / "search" / "dist" / "features"  # the workers' shared cache: complete entries only
    assert list(features.glob("features-*.done")) and not list(features.glob("*partial*"))


def test_tune_command(tiny_data, tmp_path, capsys):
    from transferkit.cli import main

    argv = ["tune", str(tiny_data.root), "--directory", str(tmp_path), "--max-trials", "1", "--epochs", "1",
            "--fine-tune-epochs", "1", "--weights", "none", "--image-size", "32", "--batch-size", "8", "--soup"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Trials (best first)" in out and "unfreeze_from" in out
    assert "Soup of trials 0: val_accuracy" in out and "soup score" in out
    for name in ("best.keras", "tuning.png", "soup.keras", "soup.json"):
        assert (tmp_path / "transferkit-results" / name).exists()


# -- one engine: trials are TwoPhaseTrainer runs on shared cached features ------------------------

CNN_SEARCH = dict(backbone="test_cnn", backbone_options={}, epochs=1, fine_tune_epochs=2, seed=1,
                  augmentation="default", unfreeze_points=["block2", "block2_relu"], hidden_units=(0, 8),
                  learning_rate_range=(1e-2, 5e-2))


@pytest.fixture(scope="module")
def cnn_search(tmp_path_factory):
    """The search settings with one weights file for the test CNN: trials share features only when they
    share the frozen weights (random ones would differ by trial seed)."""
    from transferkit import get_backbone

    path = tmp_path_factory.mktemp("cnn") / "cnn.weights.h5"
    keras.utils.set_random_seed(7)
    get_backbone("test_cnn", (32, 32, 3), weights=None).save_weights(path)
    return {**CNN_SEARCH, "weights": str(path)}


def oracle_trials(result):
    return sorted(result.tuner.oracle.trials.values(), key=lambda t: t.trial_id)


def per_epoch(trial, metric):
    return [(o.step, o.mean()) for o in trial.metrics.get_history(metric)]


def test_a_trial_is_a_plain_trainer_run_on_features_computed_afresh(tiny_data, tmp_path, cnn_search):
    """Three trials in their own processes, sharing one feature cache: each trial's every epoch (as the
    oracle got it) and the best trial's model equal a plain TwoPhaseTrainer run with that trial's
    settings and seed, computing its features in memory."""
    from conftest import UsesTestCNN
    from transferkit import ClassifierHead, TwoPhaseTrainer, load_model
    from transferkit.tuning import trial_seed

    result = tune(tiny_data, tmp_path, max_trials=3, verbose=0, callbacks=[UsesTestCNN()], output=tmp_path / "out",
                  **cnn_search)
    assert len(list((tmp_path / "transferkit" / "features").glob("features-*.done"))) == 3  # pooled + 2 cuts
    compared = 0
    for trial in oracle_trials(result):
        values = trial.hyperparameters.values
        trainer = TwoPhaseTrainer(
            backbone="test_cnn", weights=cnn_search["weights"], augmentation="default", unfreeze_from=values["unfreeze_from"],
            head=ClassifierHead(dropout=values["dropout"], hidden_units=values["hidden_units"] or None),
            learning_rate=values["learning_rate"], fine_tune_lr_factor=values["fine_tune_lr_factor"],
            seed=trial_seed(1, trial.trial_id), augmentation_seed=1)
        history = trainer.fit(tiny_data, epochs=1, fine_tune_epochs=2, verbose=0).history
        assert [s for s, _ in per_epoch(trial, "val_loss")] == [0, 1, 2]
        np.testing.assert_allclose([v for _, v in per_epoch(trial, "val_loss")], history["val_loss"], rtol=1e-4)
        np.testing.assert_allclose([v for _, v in per_epoch(trial, "loss")], history["loss"], rtol=1e-4)
        assert trial.score == pytest.approx(history["val_accuracy"][-1])
        assert trial.metrics.get_best_step("final_val_accuracy") == 3  # the final report, after the epochs
        if trial.trial_id == result.trials[0]["trial_id"]:
            images = tiny_data.images("test")
            np.testing.assert_allclose(result.classifier.predict(images), trainer.predict(images), atol=1e-5)
            saved = load_model(tmp_path / "out" / "best.keras")  # best.keras is the top trial's model
            np.testing.assert_allclose(saved.predict(images), trainer.predict(images), atol=1e-5)
            compared += 1
    assert compared == 1
    # Control: another trial's seed gives another run, so the comparison above can fail.
    other = oracle_trials(result)[0]
    control = TwoPhaseTrainer(backbone="test_cnn", weights=cnn_search["weights"], seed=12345, augmentation_seed=1,
                              unfreeze_from=other.hyperparameters.values["unfreeze_from"],
                              learning_rate=other.hyperparameters.values["learning_rate"])
    assert not np.allclose(control.fit(tiny_data, epochs=1, fine_tune_epochs=2, verbose=0).history["val_loss"],
                           [v for _, v in per_epoch(other, "val_loss")], rtol=1e-4)


def test_the_same_search_twice_gives_the_same_scores(tiny_data, tmp_path, cnn_search):
    from conftest import UsesTestCNN

    def losses(directory, seed):
        result = tune(tiny_data, directory, max_trials=2, verbose=0, callbacks=[UsesTestCNN()],
                      **{**cnn_search, "seed": seed})
        return [t.metrics.get_last_value("final_val_loss") for t in oracle_trials(result)]

    first = losses(tmp_path / "a", 1)
    assert losses(tmp_path / "b", 1) == first  # fresh processes, fresh caches: the same numbers
    assert losses(tmp_path / "c", 2) != first  # another search seed: other numbers


def test_the_cache_is_shared_by_cut_and_one_pass_fills_every_cut(tiny_data, tmp_path, monkeypatch, cnn_search):
    from transferkit.training.features import FrozenFeatures
    from transferkit.training.recipes import CachedRecipe

    fills = []
    real = FrozenFeatures._fill
    monkeypatch.setattr(FrozenFeatures, "_fill", lambda self, *a, **k: fills.append(1) or real(self, *a, **k))
    result = tune(tiny_data, tmp_path, max_trials=4, verbose=0, isolate_trials=False, **cnn_search)
    cuts = {t["hyperparameters"]["unfreeze_from"] for t in result.trials}
    assert len(result.trials) == 4 and cuts == {"block2", "block2_relu"}  # both cuts were trained on
    assert len(fills) == 2  # one pass over the training images and one over the validation images, in all
    cache = tmp_path / "transferkit" / "features"
    assert len(list(cache.glob("features-*.done"))) == 3

    # What the trials shared equals what a run computes afresh, for each cut.
    hypermodel = result.tuner.hypermodel
    for point in ("block2", "block2_relu"):
        hp = kt.HyperParameters()
        hypermodel.trainer_for(hp)
        hp.values["unfreeze_from"] = point
        arrays = []
        for cache_dir in (str(cache), None):
            trainer = hypermodel.trainer_for(hp, seed=5)
            trainer.cache_dir = cache_dir
            trainer.build(tiny_data.class_names, tiny_data.image_size)
            recipe = CachedRecipe(trainer.parts, tiny_data, trainer.unfreeze_index(), [1, 2], trainer.fast_path,
                                  also_cuts=[trainer.unfreeze_index(p) for p in trainer.cache_unfreeze_points],
                                  augmentation_seed=trainer.augmentation_seed, shuffle_seed=trainer.seed,
                                  augmentation_config=trainer.get_config()["augmentation"], verbose=0,
                                  identity={"backbone": trainer.backbone, "backbone_options": trainer.backbone_options,
                                            "weights": trainer.weights, "precision": trainer.precision_policy})
            arrays.append([np.asarray(a[:]) for a in recipe.features.train + recipe.features.validation])
            recipe.close()
        assert len(fills) == 4  # the cached run read, the fresh one computed
        fills.clear(), fills.extend([1, 1])
        for shared, fresh in zip(*arrays):
            np.testing.assert_array_equal(shared, fresh)


class PhasesSeen(keras.callbacks.Callback):
    runs: list = []

    def __deepcopy__(self, memo):  # KerasTuner copies callbacks per trial; keep one record
        return self

    def on_train_begin(self, logs=None):
        PhasesSeen.runs.append([])

    def on_epoch_end(self, epoch, logs=None):
        PhasesSeen.runs[-1].append(logs["phase"])


def test_hyperband_continues_a_trial_with_fine_tuning_from_its_weights(tiny_data, tmp_path, monkeypatch, cnn_search):
    loaded = []
    real_load = keras.Model.load_weights
    monkeypatch.setattr(keras.Model, "load_weights", lambda self, path, *a, **k: loaded.append(path) or
                        real_load(self, path, *a, **k))
    PhasesSeen.runs = []
    result = tune(tiny_data, tmp_path, tuner="hyperband", max_epochs=3, verbose=0, isolate_trials=False,
                  callbacks=[PhasesSeen()], **cnn_search)
    continued = [t for t in oracle_trials(result) if "tuner/trial_id" in t.hyperparameters.values]
    assert continued, "Hyperband continued no trial"
    for trial in continued:
        start = trial.hyperparameters.values["tuner/initial_epoch"]
        end = trial.hyperparameters.values["tuner/epochs"]
        assert [s for s, _ in per_epoch(trial, "val_loss")] == list(range(start, end))  # reported per epoch
        previous = trial.hyperparameters.values["tuner/trial_id"]
        assert any(f"trial_{previous}" in str(path) for path in loaded)  # started from that trial's weights
    assert [2] * (end - start) in PhasesSeen.runs  # a continuation fine-tunes only
    assert [1, 2, 2] in PhasesSeen.runs or [1] in PhasesSeen.runs  # fresh trials start with phase 1


def test_a_trial_the_search_stops_ends_after_that_epoch(tiny_data, tmp_path, monkeypatch, cnn_search):
    from transferkit.tuning.oracles import MedianStopping

    asked = []

    def stop_trial_1(self, trial_id, step, logs):
        asked.append((trial_id, step))
        return trial_id == "1" and step == 0

    monkeypatch.setattr(MedianStopping, "below_median", stop_trial_1)  # the oracle decides
    result = tune(tiny_data, tmp_path, max_trials=2, verbose=0, isolate_trials=False, **cnn_search)
    trials = {t.trial_id: t for t in oracle_trials(result)}
    assert [s for s, _ in per_epoch(trials["1"], "val_loss")] == [0]  # no more epochs after the stop
    assert trials["1"].metrics.get_best_step("final_val_accuracy") == 1
    assert trials["1"].score == pytest.approx(per_epoch(trials["1"], "val_accuracy")[0][1])
    assert [s for s, _ in per_epoch(trials["0"], "val_loss")] == [0, 1, 2]
    assert ("0", 2) in asked and ("1", 1) not in asked


def test_the_median_stopping_rule():
    from types import SimpleNamespace

    from transferkit.tuning.oracles import MedianStopping
    from transferkit.tuning.search import final_objective

    def finished(trial_id, values, status="COMPLETED"):
        history = [SimpleNamespace(step=s, mean=lambda v=v: v) for s, v in enumerate(values)]
        metrics = SimpleNamespace(exists=lambda name: name == "val_accuracy", get_history=lambda name: history)
        return SimpleNamespace(trial_id=trial_id, status=status, metrics=metrics)

    search = MedianStopping.__new__(MedianStopping)  # the rule alone, on a stand-in oracle's trials
    search.stop_below_median_after, search.min_trials_for_median = None, 3
    search.objective = final_objective("val_accuracy")
    search.trials = {
        "0": finished("0", [0.6, 0.8]), "1": finished("1", [0.7, 0.9]), "2": finished("2", [0.5, 0.7]),
        "3": finished("3", [0.1, 0.1], status="RUNNING")}
    assert not search.below_median("4", 0, {"val_accuracy": 0.1})  # the rule is off by default
    search.stop_below_median_after = 1
    assert not search.below_median("4", 0, {"val_accuracy": 0.1})  # too early
    assert search.below_median("4", 1, {"val_accuracy": 0.75})  # median of 0.8, 0.9, 0.7 (running ignored)
    assert not search.below_median("4", 1, {"val_accuracy": 0.8})
    search.min_trials_for_median = 4
    assert not search.below_median("4", 1, {"val_accuracy": 0.1})  # not enough finished trials


def test_a_changed_keras_tuner_gives_a_clear_error(monkeypatch):
    from transferkit.tuning import trial_runner

    owner = next(c for c in kt.Tuner.__mro__ if "_run_and_update_trial" in vars(c))
    monkeypatch.delattr(owner, "_run_and_update_trial")
    with pytest.raises(RuntimeError, match=r"keras-tuner .* has changed the internal API.*keras-tuner>=1.4,<1.5"):
        trial_runner.private_api()


def test_an_interrupted_trial_in_a_reused_worker_kills_the_worker():
    """An interrupted search does not wait for its trial: the worker, asleep for 300 s, is killed."""
    import multiprocessing
    import time

    from slow_trial import SlowTrial
    from transferkit.tuning.trial_runner import WorkerProcess

    def interrupt(step, logs):
        raise KeyboardInterrupt

    worker = WorkerProcess(data=None)
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        worker.run(SlowTrial(), interrupt)
    assert worker.worn_out  # a failed worker is not given another trial
    worker.close()
    assert time.perf_counter() - start < 60
    assert not [p for p in multiprocessing.active_children() if p.name == "trial-worker"]


def test_fit_without_rebuild_needs_a_built_model(tiny_data):
    from conftest import tiny_trainer

    with pytest.raises(RuntimeError, match="call build"):
        tiny_trainer().fit(tiny_data, epochs=1, fine_tune_epochs=0, rebuild=False)


def test_a_keras_tuner_class_still_searches_for_one_release(tiny_data, tmp_path):
    with pytest.warns(DeprecationWarning, match="a KerasTuner tuner class is deprecated"):
        result = tune(tiny_data, tmp_path, tuner=kt.RandomSearch, max_trials=1, verbose=0, isolate_trials=False,
                      **TINY)
    assert result.best_score is not None and len(result.trials) == 1
    with pytest.raises(ValueError, match="stop_below_median_after needs tuner= a name"), \
            pytest.warns(DeprecationWarning):
        tune(tiny_data, tmp_path / "b", tuner=kt.RandomSearch, max_trials=1, stop_below_median_after=1, **TINY)


def test_a_search_over_backbones_tries_each_with_its_own_unfreeze_points(tiny_data, tmp_path):
    """A space of exactly two trials, one per backbone: the random search must run both."""
    one_value = dict(dropout_range=(0.2, 0.2), hidden_units=(0,), fine_tune_lr_factors=(0.1,),
                     learning_rate_range=(1e-3, 1e-3))
    result = tune(tiny_data, tmp_path, max_trials=3, verbose=0, isolate_trials=False, output=tmp_path / "out",
                  backbones=["mobilenet_v2", "test_cnn"],
                  unfreeze_points={"mobilenet_v2": ["block_16"], "test_cnn": ["block2"]}, **TINY, **one_value)
    tried = sorted((t["hyperparameters"]["backbone"], sorted(k for k in t["hyperparameters"] if "unfreeze" in k))
                   for t in result.trials)
    assert tried == [("mobilenet_v2", ["unfreeze_from_mobilenet_v2"]), ("test_cnn", ["unfreeze_from_test_cnn"])]
    # the feature cache is kept per backbone: each one's pooled features and its one cut
    assert len(list((tmp_path / "transferkit" / "features").glob("features-*.done"))) == 4
    best = result.trials[0]["hyperparameters"]
    assert result.classifier.class_names == ["cats", "dogs"] and "backbone" in result.table()
    trainer = result.tuner.hypermodel.trainer_for(result.tuner.get_best_hyperparameters(1)[0])
    assert trainer.backbone == best["backbone"]
    assert trainer.backbone_options == ({"alpha": 0.35} if best["backbone"] == "mobilenet_v2" else {})
    assert (tmp_path / "out" / "tuning.png").stat().st_size > 0


def test_a_search_over_backbones_checks_what_it_is_given():
    with pytest.raises(KeyError, match="Unknown backbone 'no_such_net'"):
        TwoPhaseHyperModel(["a", "b"], (32, 32), backbones=["mobilenet_v2", "no_such_net"], **TINY)
    with pytest.raises(ValueError, match="unfreeze_points per backbone"):
        TwoPhaseHyperModel(["a", "b"], (32, 32), backbones=["mobilenet_v2", "test_cnn"], unfreeze_points=["block2"],
                           **TINY)
    with pytest.raises(ValueError, match="is one backbone's file"):
        TwoPhaseHyperModel(["a", "b"], (32, 32), backbones=["mobilenet_v2", "test_cnn"],
                           **{**TINY, "weights": "mine.weights.h5"})
    hypermodel = TwoPhaseHyperModel(["a", "b"], (32, 32), backbones=["mobilenet_v2", "test_cnn"], **TINY)
    assert hypermodel.unfreeze_points["mobilenet_v2"] == [f"block_{i}" for i in range(9, 17)]
    assert hypermodel.unfreeze_points["test_cnn"] == ["block2"]


# -- model soups: the best trials' weights, averaged -----------------------------------------------

def test_a_greedy_soup_averages_the_trials_that_do_not_make_it_worse(tiny_data, tmp_path, cnn_search):
    from transferkit.evaluation.metrics import evaluate
    from transferkit.tuning import greedy_soup

    result = tune(tiny_data, tmp_path, max_trials=5, output=tmp_path / "out", verbose=0, isolate_trials=False,
                  **cnn_search)
    best_before = result.classifier.predict_array(tiny_data.images("validation"), batch_size=8)
    soup = greedy_soup(result, tiny_data)

    best_units = result.trials[0]["hyperparameters"]["hidden_units"]
    same = [t["hyperparameters"]["hidden_units"] == best_units for t in result.trials]
    assert [s["trial_id"] for s in soup.steps] == [t["trial_id"] for t in result.trials]
    assert [s["soup_score"] is not None for s in soup.steps] == same  # other heads are skipped, not averaged
    assert True in same[1:] and False in same, "this search's draw mixes both head sizes"
    kept = [s for s in soup.steps if s["kept"]]
    assert [s["trial_id"] for s in kept] == soup.ingredients and soup.ingredients[0] == result.trials[0]["trial_id"]
    assert all(b["soup_score"] >= a["soup_score"] for a, b in zip(kept, kept[1:]))  # never worse on validation
    assert all(s["soup_score"] < soup.steps[0]["soup_score"] or s["kept"] for s in soup.steps if s["soup_score"])
    assert soup.score == kept[-1]["soup_score"]
    assert len(soup.ingredients) >= 2, "this search's draw puts two trials in the soup"

    ingredients = []
    for trial_id in soup.ingredients:
        result.tuner.hypermodel.trial_id = trial_id
        model = result.tuner.load_model(result.tuner.oracle.get_trial(trial_id))
        ingredients.append({v.path: np.array(v) for v in model.weights})
    for variable in soup.classifier.model.weights:
        expected = np.mean([weights[variable.path] for weights in ingredients], axis=0)
        np.testing.assert_allclose(np.array(variable), expected, rtol=1e-5, atol=1e-6)
    assert evaluate(soup.classifier, tiny_data).accuracy == pytest.approx(soup.score)
    # the best trial's classifier still works after the soup's loading
    np.testing.assert_allclose(result.classifier.predict_array(tiny_data.images("validation"), batch_size=8),
                               best_before, rtol=1e-5)
    assert "trial score" in soup.table() and "another architecture" in soup.table()


def test_tune_with_soup_writes_the_soup_beside_the_best_model(tiny_data, tmp_path, cnn_search):
    from transferkit import load_model

    result = tune(tiny_data, tmp_path, max_trials=2, output=tmp_path / "out", verbose=0, isolate_trials=False,
                  soup=True, **cnn_search)
    record = json.loads((tmp_path / "out" / "soup.json").read_text())
    assert record["ingredients"] == result.soup.ingredients and record["metric"] == "val_accuracy"
    images = tiny_data.images("validation")
    np.testing.assert_allclose(load_model(tmp_path / "out" / "soup.keras").predict_array(images, batch_size=8),
                               result.soup.classifier.predict_array(images, batch_size=8), rtol=1e-5)
    assert tmp_path / "out" / "soup.keras" in result.files
