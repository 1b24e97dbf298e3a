"""The two input pipelines (tf.data and the PyDataset that needs no TensorFlow) serve the same batches
in the same order, pass after pass; training on either gives the same model."""

import keras
import numpy as np
import pytest

from conftest import make_tree, tiny_trainer
from transferkit import ImageFolder
from transferkit._internal.npyfile import NpyFile
from transferkit.data.pipeline import (ArrayBatches, PassClock, array_dataset, batch_size_of, full_batches_forever,
                                       images_only, pipeline_kind)

tf_installed = pytest.mark.skipif(not __import__("importlib").util.find_spec("tensorflow"),
                                  reason="TensorFlow is not installed: only the PyDataset pipeline exists here")


def passes(dataset, count):
    """``count`` passes of a dataset, each a list of (inputs..., labels) NumPy batches."""
    out = []
    for _ in range(count):
        batches = []
        for x, y in dataset:
            xs = x if isinstance(x, tuple) else (x,)
            batches.append(tuple(np.asarray(a) for a in xs) + (np.asarray(y),))
        out.append(batches)
    return out


def assert_same_passes(a, b):
    assert len(a) == len(b)
    for pass_a, pass_b in zip(a, b):
        assert len(pass_a) == len(pass_b)
        for batch_a, batch_b in zip(pass_a, pass_b):
            for x, y in zip(batch_a, batch_b):
                assert x.dtype == y.dtype and x.shape == y.shape
                np.testing.assert_array_equal(x, y)


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (11, 4, 5, 3)).astype(np.uint8)
    pooled = rng.normal(size=(11, 6)).astype(np.float16)
    return pixels, pooled, (np.arange(11) % 3).astype(np.int64)


CASES = {
    "in order": dict(indices=np.arange(11)),
    "some rows, in order": dict(indices=np.array([7, 2, 9])),
    "shuffled by pass": dict(indices=np.arange(11), shuffle_seed=4),
    "from pass 3": dict(indices=np.arange(11), shuffle_seed=4, start_pass=3),
    "a view per pass": dict(indices=np.arange(22).reshape(2, 11) % 11, shuffle_seed=1),
    "chosen rows per pass": dict(indices=lambda k, rng: rng.choice(11, 6, replace=False), shuffle_seed=2),
    "mirrored": dict(indices=np.arange(11), shuffle_seed=4, mirror=True),
}


@tf_installed
@pytest.mark.parametrize("case", CASES)
def test_both_pipelines_serve_the_same_batches_pass_after_pass(arrays, case):
    made = {kind: array_dataset(arrays, batch_size=4, kind=kind, **CASES[case]) for kind in ("tf.data", "pydataset")}
    assert isinstance(made["pydataset"], ArrayBatches) and hasattr(made["tf.data"], "element_spec")
    seen = {kind: passes(dataset, 3) for kind, dataset in made.items()}
    assert_same_passes(seen["tf.data"], seen["pydataset"])
    first = seen["pydataset"][0]
    assert first[0][0].dtype == np.float32 and first[0][-1].dtype == np.int32
    if "shuffle_seed" in CASES[case]:  # the control: passes differ, so the comparison above saw the shuffling
        assert not all(np.array_equal(a[-1], b[-1]) for a, b in zip(seen["pydataset"][0], seen["pydataset"][1]))


def test_the_pydataset_pipeline_takes_rows_on_disk_and_a_clock(arrays, tmp_path):
    pixels, _, labels = arrays
    on_disk = NpyFile.create(tmp_path / "pixels.npy", pixels.shape, pixels.dtype)
    on_disk[:] = pixels
    on_disk.close()
    on_disk = NpyFile(tmp_path / "pixels.npy")
    clock = PassClock(0)
    from_disk = array_dataset((on_disk, labels), np.arange(11), 4, shuffle_seed=3, start_pass=clock, kind="pydataset")
    in_memory = array_dataset((pixels, labels), np.arange(11), 4, shuffle_seed=3, start_pass=5, kind="pydataset")
    clock.value = 5  # the trainer sets the pass at each epoch's start
    assert_same_passes(passes(from_disk, 1), passes(in_memory, 1))
    assert_same_passes(passes(from_disk, 1), passes(from_disk, 1))  # the clock, not the iterations, says which pass
    assert len(from_disk) == 3 and batch_size_of(from_disk) == 4
    assert [b[0].shape[0] for b in images_only(from_disk)] == [4, 4, 3]
    np.testing.assert_array_equal(next(iter(images_only(from_disk, mirror=True)))[0],
                                  next(iter(from_disk))[0][:, :, ::-1])
    regrouped = full_batches_forever(in_memory, 5)
    assert [len(next(regrouped)[1]) for _ in range(5)] == [5] * 5  # across passes, without end


def test_with_the_trainers_clock_epoch_e_trains_on_pass_e(arrays):
    """The trainer sets a PassClock at each epoch's start (Keras's JAX trainer begins an epoch it does not
    use, so counting iterations would shift the passes): Keras's fit then sees pass e in epoch e."""
    pixels, _, labels = arrays
    seen = []
    clock = PassClock(0)
    dataset = array_dataset((pixels, labels), np.arange(11), 11, shuffle_seed=7, start_pass=clock, kind="pydataset")
    fresh = array_dataset((pixels, labels), np.arange(11), 11, shuffle_seed=7, kind="pydataset")
    expected = [batches[0][-1] for batches in passes(fresh, 3)]  # one batch a pass: its labels
    original = dataset.__class__.__getitem__

    def getitem(self, index):
        batch = original(self, index)
        seen.append((clock.value, np.asarray(batch[1])))
        return batch

    dataset.__class__.__getitem__ = getitem
    try:
        model = keras.Sequential([keras.Input((4, 5, 3)), keras.layers.Flatten(), keras.layers.Dense(3)])
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        set_clock = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs=None: setattr(clock, "value",
                                                                                                  epoch))
        model.fit(dataset, epochs=3, verbose=0, callbacks=[set_clock])
    finally:
        dataset.__class__.__getitem__ = original
    assert len(seen) >= 3
    for epoch, want in enumerate(expected):  # the last batch read in each epoch is that epoch's pass
        got = [labels for k, labels in seen if k == epoch][-1]
        np.testing.assert_array_equal(got, want)


def test_the_pipeline_is_chosen_by_backend_or_by_hand(monkeypatch):
    monkeypatch.delenv("TRANSFERKIT_PIPELINE", raising=False)
    assert pipeline_kind() == ("tf.data" if keras.backend.backend() == "tensorflow" else "pydataset")
    monkeypatch.setenv("TRANSFERKIT_PIPELINE", "pydataset")
    assert pipeline_kind() == "pydataset"
    monkeypatch.setenv("TRANSFERKIT_PIPELINE", "grain")
    with pytest.raises(ValueError, match="TRANSFERKIT_PIPELINE.*tf.data, pydataset"):
        pipeline_kind()


@tf_installed
@pytest.mark.parametrize("cache_features", [True, False])
def test_training_on_either_pipeline_gives_the_same_model(tmp_path, monkeypatch, cache_features):
    """Without augmentation (whose random streams differ inside and outside tf.data) the two pipelines feed
    the same batches, so a seeded run ends with the same weights."""
    root = make_tree(tmp_path / "pets", {"cats": 10, "dogs": 10})
    predictions = {}
    for kind in ("tf.data", "pydataset"):
        monkeypatch.setenv("TRANSFERKIT_PIPELINE", kind)
        data = ImageFolder(root, image_size=(32, 32), batch_size=4, split=(0.6, 0.4), seed=0)
        assert isinstance(data.train, ArrayBatches) == (kind == "pydataset")
        trainer = tiny_trainer(backbone="test_cnn", backbone_options={}, unfreeze_from="block2", learning_rate=2e-2,
                               seed=3, augmentation=None, cache_features=cache_features)
        trainer.fit(data, epochs=2, fine_tune_epochs=1, verbose=0)
        predictions[kind] = trainer.predict(data.images("validation"))
        predictions[kind + " dataset"] = trainer.classifier.predict(data.validation)
    np.testing.assert_allclose(predictions["tf.data"], predictions["pydataset"], atol=1e-5)
    np.testing.assert_allclose(predictions["pydataset dataset"], predictions["pydataset"], atol=1e-5)
    assert np.ptp(predictions["pydataset"][:, 1]) > 1e-3  # the outputs depend on the input


def test_augmented_views_on_the_pydataset_pipeline_repeat_with_the_seed(tmp_path, monkeypatch):
    """Outside tf.data the augmentation runs eagerly; seeded, the cached views repeat, and they differ
    from the plain image (the control)."""
    from transferkit.models.augment import augmentation
    from transferkit.training.features import _view_batches

    monkeypatch.setenv("TRANSFERKIT_PIPELINE", "pydataset")
    root = make_tree(tmp_path / "pets", {"cats": 4, "dogs": 4})
    data = ImageFolder(root, image_size=(32, 32), batch_size=4, split=(0.5, 0.5), seed=0)
    views = []
    for _ in range(2):
        keras.utils.set_random_seed(1)
        views.append(np.concatenate(list(_view_batches(data.dataset("train"), augmentation("default", seed=1)))))
    plain = np.concatenate(list(_view_batches(data.dataset("train"), None)))
    np.testing.assert_array_equal(views[0], views[1])
    assert views[0].shape == plain.shape and np.abs(views[0] - plain).mean() > 1.0


def test_each_process_gets_its_part_of_every_whole_batch(arrays):
    """Without tf.data to shard, several processes each take their part of every batch: together the parts
    are the one-process batches, a last batch that would not split evenly is left out."""
    from transferkit.training import distribute

    pixels, _, labels = arrays
    whole = array_dataset((pixels, labels), np.arange(11), 4, shuffle_seed=2, start_pass=PassClock(1), kind="pydataset")
    parts = [whole.shard(i, 2) for i in range(2)]
    assert len(whole) == 3 and [len(p) for p in parts] == [2, 2]
    for b, (x, y) in enumerate(whole):
        if b == 2:
            break
        np.testing.assert_array_equal(np.concatenate([parts[0][b][1], parts[1][b][1]]), y)
        np.testing.assert_array_equal(np.concatenate([parts[0][b][0], parts[1][b][0]]), x)

    class TwoProcesses:  # what even_batches reads of a keras.distribution.DataParallel over two processes
        num_processes, device_mesh, distribute_dataset, scope, auto_shard_dataset = 2, None, None, None, True

    two = TwoProcesses()
    mine = distribute.even_batches(whole, two, 4)
    assert two.auto_shard_dataset is False and len(mine) == 2 and len(mine[0][1]) == 2  # Keras must not shard it
    with pytest.raises(ValueError, match="multiple of 2"):
        distribute.even_batches(array_dataset((pixels, labels), np.arange(11), 3, kind="pydataset"), two, 3)
