"""How the two phases run, given the model `TwoPhaseTrainer.build` made (`BuiltModel`): the exact
recipe (`ExactRecipe`: the whole network on the images every step, fresh augmentation every epoch)
or the fast path (`CachedRecipe`: the frozen layers run once, `transferkit.training.features`).

A recipe knows the built model and the data, not the trainer: for each phase it gives the Keras
model to compile and fit (`model`) and its training and validation datasets (`datasets`); the
trainer compiles, fits, checkpoints and times. ``trains_full_model`` says whether that model is the
full one (else the trainer compiles the full model at the end, for ``model.evaluate()``).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from transferkit.models.classifier import Classifier
from transferkit.models.head import ClassifierHead
from transferkit.training.features import FrozenFeatures, split_backbone
from transferkit.training.settings import FastPath

__all__ = ["BuiltModel", "ExactRecipe", "CachedRecipe"]


@dataclass
class BuiltModel:
    """The pieces of a built two-phase model.

    Attributes:
        model: the training model, raw pixels in (augmented while training), logits out.
        classifier: the `Classifier` sharing its layers (no augmentation; probabilities out).
        backbone: the backbone network (its layers are what phase 2 unfreezes).
        head: the `ClassifierHead`, its ``num_classes`` set from the data.
        preprocessing: the backbone's input preprocessing layer, or None.
        augmentation: the augmentation block the fast path draws its views 1, 2, ... through, or None. The
            training model holds it inside `PartlyAugmented` (each image plain with probability
            ``1 / views``, as view 0 is plain), unless the block names its own ``plain_fraction``.
    """

    model: keras.Model
    classifier: Classifier
    backbone: keras.Model
    head: ClassifierHead
    preprocessing: keras.layers.Layer | None
    augmentation: keras.layers.Layer | None


class ExactRecipe:
    """Each phase trains the full model on the images (fresh augmentation every epoch). ``data`` is an
    `ImageFolder` (whose training order follows the epoch, for resuming), or any object with ``train``
    and ``validation`` datasets."""

    trains_full_model = True

    def __init__(self, built: BuiltModel, data, seed: int | None = None):
        self.built, self.data, self.seed = built, data, seed
        self.batch_size = getattr(data, "batch_size", None)

    def model(self, phase: int) -> keras.Model:
        return self.built.model

    def datasets(self, phase: int, first_pass):
        if hasattr(self.data, "dataset") and hasattr(self.data, "labels"):
            train = self.data.dataset("train", shuffle=True, start_pass=first_pass, seed=self.seed)
            return train, self.data.validation
        return self.data.train, self.data.validation

    def close(self) -> None:
        pass


class CachedRecipe:
    """The frozen layers run once (`FrozenFeatures`): phase 1 trains the head on pooled features and
    phase 2 the unfrozen top and the head on the activations that cross the unfreeze point ``cut``.

    ``fast_path`` gives the views, storage type, cache folder, random views and mirroring;
    ``also_cuts`` are more cut indices to compute in the same pass (a search's). ``identity`` names
    what else the features depend on (backbone, weights, precision), for reusing a cache folder.
    """

    trains_full_model = False

    @staticmethod
    def cannot_serve(data, cut: int) -> str | None:
        """Why this recipe cannot train on ``data`` with the cut at ``cut`` (None when it can)."""
        if not (hasattr(data, "dataset") and hasattr(data, "labels")):
            return (f"the data ({type(data).__name__}) has no dataset() and labels() to compute features from, "
                    "as an ImageFolder has")
        if cut <= 1:
            return f"the unfreeze point (layer {cut}) leaves no frozen layers to compute once"
        return None

    def __init__(self, built: BuiltModel, data, cut: int, phases: list[int], fast_path: FastPath = FastPath(),
                 also_cuts=(), augmentation_seed: int | None = None, shuffle_seed: int | None = None,
                 augmentation_config=None, identity: dict | None = None, distribution=None, verbose: int = 1):
        why = self.cannot_serve(data, cut)
        if why is not None:
            raise ValueError(f"CachedRecipe: {why}.")
        self.built, self.fast_path = built, fast_path
        self.top = split_backbone(built.backbone, cut)[1]
        self.features = FrozenFeatures(
            data, built.backbone, built.head.pool, built.preprocessing, built.augmentation, cut=cut, phases=phases,
            also_cuts=list(also_cuts), views=fast_path.views, dtype=fast_path.feature_dtype,
            cache_dir=fast_path.cache_dir, seed=augmentation_seed, shuffle_seed=shuffle_seed,
            augmentation_config=augmentation_config, verbose=verbose, identity=identity or {},
            distribution=distribution,
        )
        self.batch_size = self.features.batch_size

    def model(self, phase: int) -> keras.Model:
        """Phase 1: the head on pooled features; phase 2: the unfrozen top and the head on the cut's
        activations. Both share their layers with the full model."""
        head = self.built.head
        if phase == 1:
            pooled = keras.Input(self.features.pooled_shape, name="pooled_features")
            return keras.Model(pooled, head(pooled), name="head_on_cached_features")
        return keras.Model(self.top.inputs, head(self.top.output), name="top_on_cached_features")

    def datasets(self, phase: int, first_pass):
        mirror = self.fast_path.mirror_features and self.built.augmentation is not None  # no augmentation: none
        train = self.features.phase_dataset("train", phase, self.fast_path.random_views, mirror, start_pass=first_pass)
        return train, self.features.phase_dataset("validation", phase)

    def close(self) -> None:
        self.features.close()
