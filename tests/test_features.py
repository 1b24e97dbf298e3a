"""The fast path: frozen features computed once must be what the network computes, and training on
them must match the exact recipe where the recipes coincide."""

import keras
import numpy as np
import pytest

from conftest import make_image, make_tree, tiny_trainer
from transferkit import ImageFolder, TwoPhaseTrainer
from transferkit.training.features import FrozenFeatures, split_backbone
from transferkit.training.settings import FastPath

CNN = dict(backbone="test_cnn", backbone_options={}, unfreeze_from="block2")


@pytest.fixture
def cnn_data(tmp_path):
    root = make_tree(tmp_path / "pets", {"cats": 8, "dogs": 8})
    return ImageFolder(root, image_size=(32, 32), batch_size=8, split=(0.5, 0.5), seed=0)


def built(data, **overrides):
    trainer = tiny_trainer(**{**CNN, **overrides})
    trainer.build(data.class_names, data.image_size)
    return trainer


def test_split_backbone_at_a_block_boundary_and_at_the_end():
    trainer = tiny_trainer()
    trainer.build(["a", "b"], (32, 32))
    backbone = trainer.backbone_model
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    frozen, top = split_backbone(backbone, trainer.spec.blocks(backbone)["block_13"])
    assert len(frozen.outputs) == 2  # one tensor crosses a block boundary, plus the output
    np.testing.assert_allclose(top(frozen(x)[:-1]), backbone(x), rtol=1e-5, atol=1e-30)
    assert {id(l) for l in top.layers[1:]} <= {id(l) for l in backbone.layers}  # shared, not copied
    frozen, top = split_backbone(backbone, len(backbone.layers))
    assert top is None and len(frozen.outputs) == 1


def test_cached_features_equal_the_networks_outputs(cnn_data):
    trainer = built(cnn_data)
    frozen, _ = split_backbone(trainer.backbone_model, trainer.unfreeze_index())
    cache = FrozenFeatures(cnn_data, trainer.backbone_model, trainer.parts.head.pool, trainer.parts.preprocessing, trainer.parts.augmentation,
                           cut=trainer.unfreeze_index(), views=3, dtype="float32")
    n = len(cnn_data.labels("train"))
    for split, arrays, rows in (("train", cache.train, slice(0, n)), ("validation", cache.validation, slice(None))):
        images = cnn_data.images(split).astype("float32")
        maps = trainer.backbone_model(trainer.parts.preprocessing(images))
        np.testing.assert_allclose(arrays[-1][rows], keras.layers.GlobalAveragePooling2D()(maps), rtol=1e-5, atol=1e-6)
        crossing = frozen(trainer.parts.preprocessing(images))[0]
        np.testing.assert_allclose(arrays[0][rows], crossing, rtol=1e-5, atol=1e-6)
    assert not np.allclose(cache.train[-1][n : 2 * n], cache.train[-1][:n])  # views 1, 2 are augmented
    assert np.array_equal(cache.train_labels, np.tile(cnn_data.labels("train"), 3))
    half = FrozenFeatures(cnn_data, trainer.backbone_model, trainer.parts.head.pool, trainer.parts.preprocessing, None,
                          cut=trainer.unfreeze_index(), views=3)
    assert half.views == 1 and len(half.train[0]) == n  # no augmentation: one view, however many asked
    assert half.train[0].dtype == np.float16
    np.testing.assert_allclose(half.train[-1], cache.train[-1][:n], rtol=2e-3, atol=1e-3)


def test_a_cut_inside_a_residual_block_serves_both_crossing_tensors(cnn_data):
    """MobileNetV2's default cut (layer 100, block_11_expand_relu) is crossed by two tensors, the
    block's input (kept for its residual add) and the current one: phase 2 must be served both, in the
    order the top of the network takes them."""
    trainer = built(cnn_data, backbone="mobilenet_v2", backbone_options={"alpha": 0.35}, unfreeze_from=100)
    backbone = trainer.backbone_model
    _, top = split_backbone(backbone, 100)
    cache = FrozenFeatures(cnn_data, backbone, trainer.parts.head.pool, trainer.parts.preprocessing, None, cut=100,
                           dtype="float32")
    inputs, _ = next(iter(cache.phase_dataset("validation", 2)))
    assert isinstance(inputs, tuple) and len(inputs) == len(top.inputs) == 2
    expected = keras.ops.convert_to_numpy(backbone(trainer.parts.preprocessing(cnn_data.images("validation")
                                                                           .astype("float32"))))
    scale = float(np.abs(expected).max())
    assert scale > 0
    np.testing.assert_allclose(keras.ops.convert_to_numpy(top(list(inputs))), expected, rtol=1e-4,
                               atol=1e-4 * scale)


def test_training_on_cached_features_matches_the_exact_recipe(tmp_path, monkeypatch):
    """Without augmentation or dropout the two recipes do the same arithmetic, batch for batch (several
    batches an epoch, shuffled in the same order), and each run really takes the path it names."""
    root = make_tree(tmp_path / "pets", {"cats": 12, "dogs": 12})
    built_features = []
    real_init = FrozenFeatures.__init__
    monkeypatch.setattr(FrozenFeatures, "__init__",
                        lambda self, *a, **k: built_features.append(1) or real_init(self, *a, **k))
    runs = {}
    for name, cached, seed in (("fast", True, 4), ("exact", False, 4), ("control", True, 5)):
        data = ImageFolder(root, image_size=(32, 32), batch_size=4, split=(0.5, 0.5), seed=0)  # 3 batches/epoch
        trainer = tiny_trainer(**CNN, head={"dropout": 0.0}, augmentation=None, views=1, feature_dtype="float32",
                               cache_features=cached, learning_rate=1e-2, seed=seed)
        before = len(built_features)
        result = trainer.fit(data, epochs=2, fine_tune_epochs=2, verbose=0)
        assert len(built_features) - before == (1 if cached else 0), name  # the path it says it took
        runs[name] = (result.history, trainer.predict(data.images("validation")))
    for key in ("loss", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(runs["fast"][0][key], runs["exact"][0][key], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(runs["fast"][1], runs["exact"][1], rtol=1e-4, atol=1e-6)
    assert runs["fast"][0]["loss"][-1] < runs["fast"][0]["loss"][0] - 1e-3  # it did train
    assert np.ptp(runs["fast"][1][:, 1]) > 1e-2  # and its outputs depend on the image
    # The control (another seed: other initial weights and order) shows the comparison can fail.
    assert not np.allclose(runs["control"][1], runs["exact"][1], rtol=1e-4, atol=1e-6)


def test_feature_cache_is_reused_and_rebuilt_when_anything_changes(tmp_path, monkeypatch, caplog):
    fills = []
    real = FrozenFeatures._fill
    monkeypatch.setattr(FrozenFeatures, "_fill", lambda self, *a, **k: fills.append(1) or real(self, *a, **k))
    root = make_tree(tmp_path / "pets", {"cats": 6, "dogs": 6})
    cache = tmp_path / "cache"

    def fit(size=32, split_seed=0, crop=False, **overrides):
        data = ImageFolder(root, image_size=(size, size), batch_size=4, split=(0.5, 0.5), seed=split_seed,
                           crop_to_aspect_ratio=crop)
        trainer = tiny_trainer(**{**CNN, "cache_dir": cache, **overrides})
        return trainer.fit(data, epochs=1, fine_tune_epochs=1, verbose=0).history

    first = fit()
    assert len(fills) == 2  # train and validation computed
    with caplog.at_level("INFO", logger="transferkit.training.features"):
        assert fit() == first and len(fills) == 2  # same files, weights, settings: reused, same result
    assert "Reusing frozen features" in caplog.text and str(cache) in caplog.text  # says where from
    fit(size=40)
    assert len(fills) == 4  # image size changed
    fit(seed=9)
    assert len(fills) == 6  # other (random) backbone weights and augmentation seed
    fit(views=FastPath.views + 1)
    assert len(fills) == 8  # another number of views
    fit(split_seed=1)
    assert len(fills) == 10  # another split of the same files
    fit(crop=True)
    assert len(fills) == 12  # crop mode (the images differ only because the test images are not square)
    weights = tmp_path / "cnn.weights.h5"
    trained = tiny_trainer(**CNN)
    trained.build(["a", "b"], (32, 32))
    trained.backbone_model.save_weights(weights)
    fit(weights=str(weights))
    assert len(fills) == 14  # a weights file
    make_image(root / "cats" / "cats_000.png", (0, 255, 0), seed=5)
    fit()
    assert len(fills) == 16  # a file changed


def test_the_cache_key_covers_the_cut_and_the_pooling(tmp_path, monkeypatch):
    """block2_bn and block2_relu are cut through tensors of the same shape: a cache of one must not
    serve the other (it did once, and trained on the wrong inputs without a word)."""
    fills = []
    real = FrozenFeatures._fill
    monkeypatch.setattr(FrozenFeatures, "_fill", lambda self, *a, **k: fills.append(1) or real(self, *a, **k))
    root = make_tree(tmp_path / "pets", {"cats": 6, "dogs": 6})
    data = ImageFolder(root, image_size=(32, 32), batch_size=4, split=(0.5, 0.5), seed=0)
    images = data.images("validation")

    def predictions(cache_dir, **overrides):
        trainer = tiny_trainer(**{**CNN, "learning_rate": 2e-2, "cache_dir": cache_dir, **overrides})
        trainer.fit(data, epochs=1, fine_tune_epochs=2, verbose=0)
        return trainer.predict(images)

    cache = tmp_path / "cache"
    predictions(cache, unfreeze_from="block2_bn")
    assert len(fills) == 2
    for overrides in ({"unfreeze_from": "block2_relu"}, {"head": {"pooling": "max"}},
                      {"augmentation": "strong"}, {"feature_dtype": "float32"}):
        cached = predictions(cache, **overrides)
        assert len(fills) == 4, overrides  # computed afresh, not served from another setting's cache
        fills.clear(), fills.extend([1, 1])
        np.testing.assert_allclose(cached, predictions(None, **overrides), atol=1e-6)
        fills.clear(), fills.extend([1, 1])
    predictions(cache, unfreeze_from="block2_bn")
    assert len(fills) == 2  # the first setting's entry is still there and reused


def test_two_processes_filling_one_cache_both_succeed(tmp_path, monkeypatch):
    import subprocess
    import sys

    from conftest import REPO

    root = make_tree(tmp_path / "pets", {"cats": 12, "dogs": 12})
    cache, go = tmp_path / "cache", tmp_path / "go"
    script = REPO / "tests" / "cache_writer.py"
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    writers = [subprocess.Popen([sys.executable, str(script), str(root), str(cache), str(go)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    go.touch()
    outputs = [w.communicate(timeout=300) for w in writers]
    assert [w.returncode for w in writers] == [0, 0], [err[-2000:] for _, err in outputs]
    assert not list(cache.glob("*partial*"))
    assert len(list(cache.glob("images-*.npy"))) == 1
    assert len(list(cache.glob("features-*.done"))) == 2  # the pooled features and the cut's activations

    fills = []
    real = FrozenFeatures._fill
    monkeypatch.setattr(FrozenFeatures, "_fill", lambda self, *a, **k: fills.append(1) or real(self, *a, **k))
    runs = []
    for cache_dir in (cache, None):  # what the writers published, then computed afresh in memory
        data = ImageFolder(root, image_size=(32, 32), batch_size=4, split=(0.5, 0.5), seed=0, cache_dir=cache_dir)
        trainer = TwoPhaseTrainer(backbone="test_cnn", weights=None, unfreeze_from="block2", seed=0,
                                  cache_dir=cache_dir)
        runs.append(trainer.fit(data, epochs=1, fine_tune_epochs=1, verbose=0).history)
        if cache_dir is not None:
            assert fills == []  # reused the writers' entry
    np.testing.assert_allclose(runs[0]["loss"], runs[1]["loss"], rtol=1e-3)
    np.testing.assert_allclose(runs[0]["val_loss"], runs[1]["val_loss"], rtol=1e-3)


def test_an_interrupted_cache_is_not_reused(tmp_path, monkeypatch):
    """Files in cache_dir are published only when complete: a crash mid-way leaves nothing reusable."""
    root = make_tree(tmp_path / "pets", {"cats": 4, "dogs": 4})
    data = ImageFolder(root, image_size=(32, 32), batch_size=4, split=(0.5, 0.5), seed=0)

    def crash(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(FrozenFeatures, "_fill", crash)
    with pytest.raises(KeyboardInterrupt):
        tiny_trainer(**CNN, cache_dir=tmp_path / "c").fit(data, epochs=1, fine_tune_epochs=0, verbose=0)
    assert not list((tmp_path / "c").glob("*.done"))


def test_features_too_big_for_memory_spill_to_a_temporary_folder(tmp_path, monkeypatch, caplog):
    import transferkit.training.features as features_module

    root = make_tree(tmp_path / "pets", {"cats": 6, "dogs": 6})
    data = ImageFolder(root, image_size=(32, 32), batch_size=4, split=(0.5, 0.5), seed=0)
    in_memory = tiny_trainer(**CNN).fit(data, epochs=1, fine_tune_epochs=1, verbose=0).history
    seen = []
    real_fill = FrozenFeatures._fill
    monkeypatch.setattr(FrozenFeatures, "_fill", lambda self, d, arrays, *a: seen.append(arrays) or real_fill(self, d, arrays, *a))
    monkeypatch.setattr(features_module, "available_memory", lambda: 1000)
    with caplog.at_level("WARNING", logger="transferkit.training.features"):
        spilled = tiny_trainer(**CNN).fit(data, epochs=1, fine_tune_epochs=1, verbose=0).history
    assert "more than half the" in caplog.text and "give cache_dir=" in caplog.text
    paths = [array.path for arrays in seen for array in arrays]
    assert paths and all(p.parent.name.startswith("transferkit-features-") for p in paths)  # files, not memory
    assert not paths[0].parent.exists()  # the temporary folder is gone after fit
    np.testing.assert_allclose(spilled["loss"], in_memory["loss"], rtol=1e-4)
    np.testing.assert_allclose(spilled["val_accuracy"], in_memory["val_accuracy"])


def test_random_views_and_mirrored_activations_serve_the_cached_rows(cnn_data):
    """Each pass serves every training image once, with its label, as one of its cached views (drawn per
    image), and mirrored activations are exactly the cached maps flipped left-right."""
    trainer = built(cnn_data)
    frozen, _ = split_backbone(trainer.backbone_model, trainer.unfreeze_index())
    cache = FrozenFeatures(cnn_data, trainer.backbone_model, trainer.parts.head.pool, trainer.parts.preprocessing, trainer.parts.augmentation,
                           cut=trainer.unfreeze_index(), views=3, dtype="float32", seed=1)
    n = cache.n_train
    stored = np.asarray(cache.train[0][:]).reshape(3, n, -1)
    labels = cnn_data.labels("train")
    views_seen, mirrored_seen = set(), 0
    for mirror in (False, True):
        dataset = cache.phase_dataset("train", 2, random_views=True, mirror=mirror)
        for _ in range(3):  # three passes
            served = []
            for x, y in dataset:
                for row, label in zip(np.asarray(x), np.asarray(y)):
                    served.append((row, int(label)))
            assert len(served) == n
            matched = []
            for row, label in served:
                flat, flipped = row.reshape(-1), row[:, ::-1].reshape(-1)
                hits = [(v, i, False) for v in range(3) for i in range(n) if np.array_equal(stored[v, i], flat)]
                hits += [(v, i, True) for v in range(3) for i in range(n) if np.array_equal(stored[v, i], flipped)]
                assert hits, "a served row is neither a cached view nor its mirror image"
                v, i, was_mirrored = hits[0]
                assert labels[i] == label and (mirror or not was_mirrored)
                matched.append(i)
                views_seen.add(v)
                mirrored_seen += was_mirrored and not np.array_equal(flat, flipped)
            assert sorted(matched) == list(range(n))  # every image once per pass
    assert views_seen == {0, 1, 2} and mirrored_seen > 0


def test_feature_extraction_shows_its_progress_unless_quiet(cnn_data, capsys):
    trainer = built(cnn_data)
    for verbose in (1, 0):
        FrozenFeatures(cnn_data, trainer.backbone_model, trainer.parts.head.pool, trainer.parts.preprocessing,
                       trainer.parts.augmentation, cut=trainer.unfreeze_index(), views=2, verbose=verbose).close()
        shown = capsys.readouterr().err
        if verbose:  # 8 training images x 2 views, then the 8 validation images
            assert "Computing frozen features: 16/16 image views (100%)" in shown
            assert "Computing frozen features: 8/8 image views (100%)" in shown
        else:
            assert "Computing frozen features" not in shown
