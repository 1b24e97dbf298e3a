"""Experiment trackers see a two-phase run as one run: TensorBoard's log and MLflow's run (local file
store) hold every epoch of both phases, numbered on across the boundary, with the phase of each."""

import json

import keras
import pytest

from conftest import make_tree, tiny_trainer
from transferkit import ImageFolder

CNN = dict(backbone="test_cnn", backbone_options={}, unfreeze_from="block2", learning_rate=2e-2,
           fine_tune_lr_factor=0.1, seed=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_tree(tmp_path_factory.mktemp("trackers") / "pets", {"cats": 8, "dogs": 8})
    return ImageFolder(root, image_size=(32, 32), batch_size=4, split=(0.5, 0.5), seed=0)


def _scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """The epoch scalars of every TensorBoard event file under ``folder``, by tag: ``[(step, value), ...]``."""
    import tensorflow as tf

    scalars = {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in (v for v in event.summary.value if v.tag.startswith("epoch_")):
                number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
                scalars.setdefault(value.tag, []).append((event.step, number))
    return scalars


@pytest.mark.parametrize("cache_features", [True, False], ids=["fast", "exact"])
def test_tensorboard_shows_both_phases_as_one_run_with_the_phase_of_each_epoch(data, tmp_path, cache_features):
    trainer = tiny_trainer(**CNN, cache_features=cache_features)
    result = trainer.fit(data, epochs=2, fine_tune_epochs=1, verbose=0,
                         callbacks=[keras.callbacks.TensorBoard(str(tmp_path / "logs"))])
    train, validation = _scalars(tmp_path / "logs" / "train"), _scalars(tmp_path / "logs" / "validation")
    assert train["epoch_phase"] == [(0, 1.0), (1, 1.0), (2, 2.0)]
    assert [step for step, _ in train["epoch_loss"]] == [0, 1, 2]
    assert [value for _, value in train["epoch_loss"]] == pytest.approx(result.history["loss"])
    assert [value for _, value in validation["epoch_accuracy"]] == pytest.approx(result.history["val_accuracy"])


@pytest.fixture
def mlflow(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow", reason="MLflow is not installed (pip install -e '.[mlflow]')")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store for local use
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    yield mlflow
    mlflow.set_tracking_uri(None)


def _history(client, run_id, name):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)]


@pytest.mark.parametrize("cache_features", [True, False], ids=["fast", "exact"])
def test_mlflow_logs_both_phases_as_one_run_with_settings_and_phase_boundary(data, mlflow, cache_features):
    from transferkit.training.trackers import MlflowRun

    trainer = tiny_trainer(**CNN, cache_features=cache_features)
    with MlflowRun(trainer, run_name="pets") as tracking:
        result = trainer.fit(data, epochs=2, fine_tune_epochs=1, callbacks=tracking.callbacks, verbose=0)
        tracking.finish(result, {"evaluation": {"accuracy": 0.75, "per_class": {"cats (a)": {"f1": 0.5}}}})
    assert mlflow.active_run() is None  # it started the run, so it ended it
    client = mlflow.MlflowClient()
    [run] = client.search_runs([client.get_experiment_by_name("Default").experiment_id])
    assert run.info.run_id == tracking.run_id and run.info.run_name == "pets" and run.info.status == "FINISHED"
    assert _history(client, run.info.run_id, "phase") == [(0, 1.0), (1, 1.0), (2, 2.0)]
    assert _history(client, run.info.run_id, "val_accuracy") == [
        (step, pytest.approx(value)) for step, value in enumerate(result.history["val_accuracy"])]
    params = run.data.params
    assert params["phase_2_first_epoch"] == "2" and params["unfreeze_from"] == "block2"
    assert float(params["learning_rate"]) == 2e-2 and params["cache_features"] == str(cache_features)
    assert params["head.dropout"] == str(trainer.head.dropout)  # nested settings under dotted names
    assert run.data.metrics["evaluation.accuracy"] == 0.75
    assert run.data.metrics["evaluation.per_class.cats _a_.f1"] == 0.5  # a name MLflow accepts


def test_mlflow_run_joins_the_active_run_and_leaves_it_open(data, mlflow):
    from transferkit.training.trackers import MlflowRun

    trainer = tiny_trainer(**CNN)
    with mlflow.start_run(run_name="mine") as mine:
        with MlflowRun(trainer) as tracking:
            result = trainer.fit(data, epochs=1, fine_tune_epochs=1, callbacks=tracking.callbacks, verbose=0)
            tracking.finish(result)
        assert mlflow.active_run().info.run_id == mine.info.run_id == tracking.run_id
    assert mlflow.MlflowClient().get_run(mine.info.run_id).data.params["phase_2_first_epoch"] == "1"


def test_mlflow_autologging_splits_a_two_phase_run_which_is_why_the_docs_use_the_callback(data, mlflow):
    mlflow.keras.autolog(log_models=False, silent=True)
    try:
        tiny_trainer(**CNN).fit(data, epochs=2, fine_tune_epochs=1, verbose=0)
    finally:
        mlflow.keras.autolog(disable=True)
    client = mlflow.MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("Default").experiment_id])
    assert len(runs) == 2  # one run per phase's fit: the reason the how-to does not use it
    assert all("phase" not in run.data.metrics for run in runs)


def test_train_mlflow_logs_the_run_its_settings_metrics_and_files(tmp_path, mlflow, capsys):
    from transferkit.cli import main

    root = make_tree(tmp_path / "pets", {"cats": 8, "dogs": 8})
    assert main(["train", str(root), "--output", str(tmp_path / "run"), "--backbone", "test_cnn", "--weights", "none",
                 "--image-size", "32", "--batch-size", "8", "--epochs", "1", "--fine-tune-epochs", "1",
                 "--unfreeze-from", "block2", "--mlflow", "--json"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # stdout: still the JSON alone
    client = mlflow.MlflowClient()
    [run] = client.search_runs([client.get_experiment_by_name("Default").experiment_id])
    assert run.info.run_name == "run" and run.data.params["backbone"] == "test_cnn"
    assert _history(client, run.info.run_id, "phase") == [(0, 1.0), (1, 2.0)]
    assert run.data.metrics["evaluation.accuracy"] == pytest.approx(last["evaluation"]["accuracy"])
    logged = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"model.keras", "metrics.json"} <= logged


def test_train_mlflow_without_mlflow_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    import importlib.util

    from transferkit.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    root = make_tree(tmp_path / "pets", {"cats": 4, "dogs": 4})
    assert main(["train", str(root), "--output", str(tmp_path / "run"), "--mlflow"]) == 2
    assert "pip install 'transferkit[mlflow]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_flat_params_nests_with_dots_and_cuts_values_to_what_mlflow_takes():
    from transferkit.training.trackers import flat_params

    params = flat_params({"augmentation": {"layers": ["x" * 7000]}, "image_size": (192, 192), "options": {}})
    assert params["image_size"] == "[192, 192]" and params["options"] == "{}"
    assert len(params["augmentation.layers"]) == 6000 and params["augmentation.layers"].endswith("...")
