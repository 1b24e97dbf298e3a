"""keras-hub layers whose own configs do not rebuild them, with configs that do: what an unrolled ViT
(`transferkit.models.hub.unrolled`) needs to be saved and loaded as a ``.keras`` file. Imports keras_hub.

keras-hub 0.32's ViT layers give configs their constructors refuse (the patch embedding's ``num_patches``
and ``num_positions``, an encoder block's ``key_dim``) and leave out some they take (the patch embedding's
``use_patch_bias`` and ``data_format``). Inside a ``ViTBackbone``, which rebuilds them from its own config,
that does not matter; as layers of a saved model it does.
"""

from __future__ import annotations

import keras
from keras_hub.src.models.vit.vit_layers import ViTEncoderBlock, ViTPatchingAndEmbedding

__all__ = ["ViTPatchEmbedding", "ViTBlock", "rebuildable"]


def _patch_embedding_config(layer: ViTPatchingAndEmbedding) -> dict:
    config = {k: v for k, v in ViTPatchingAndEmbedding.get_config(layer).items()
              if k not in ("num_patches", "num_positions")}
    return {**config, "use_patch_bias": layer.use_patch_bias, "data_format": layer.data_format}


def _block_config(layer: ViTEncoderBlock) -> dict:
    return {k: v for k, v in ViTEncoderBlock.get_config(layer).items() if k != "key_dim"}


@keras.saving.register_keras_serializable(package="transferkit")
class ViTPatchEmbedding(ViTPatchingAndEmbedding):
    """keras-hub's ViT patch embedding, with a config that rebuilds it."""

    def get_config(self):
        return _patch_embedding_config(self)


@keras.saving.register_keras_serializable(package="transferkit")
class ViTBlock(ViTEncoderBlock):
    """keras-hub's ViT encoder block, with a config that rebuilds it."""

    def get_config(self):
        return _block_config(self)


_FIXED = {ViTPatchingAndEmbedding: (ViTPatchEmbedding, _patch_embedding_config),
          ViTEncoderBlock: (ViTBlock, _block_config)}


def rebuildable(layer: keras.layers.Layer, input_shape) -> keras.layers.Layer:
    """``layer`` as it is, or, for the keras-hub layers above, a copy of it (with its weights) whose config
    rebuilds it."""
    if type(layer) not in _FIXED:
        return layer
    fixed, config = _FIXED[type(layer)]
    copy = fixed.from_config(config(layer))
    copy.build(input_shape)
    copy.set_weights(layer.get_weights())
    return copy
