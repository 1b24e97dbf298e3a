"""A transformer backbone's tokens as the feature map the head pools.

A ViT or DINOv2 gives tokens, ``(batch, tokens, dim)``; the head pools feature maps,
``(batch, height, width, channels)``. `TokensAsMap` lays the tokens out as a one-row map, so the head's
average pooling is the mean token (``"mean"``), or keeps only the first, class token (``"cls"``).

>>> import numpy as np
>>> tokens = np.arange(12, dtype="float32").reshape(1, 3, 4)
>>> tuple(TokensAsMap("mean")(tokens).shape), tuple(TokensAsMap("cls")(tokens).shape)
((1, 1, 3, 4), (1, 1, 1, 4))
"""

from __future__ import annotations

import keras

__all__ = ["TokensAsMap", "TOKEN_POOLINGS"]

TOKEN_POOLINGS = ("mean", "cls")


@keras.saving.register_keras_serializable(package="transferkit")
class TokensAsMap(keras.layers.Layer):
    """``(batch, tokens, dim)`` to ``(batch, 1, tokens, dim)`` (``"mean"``) or ``(batch, 1, 1, dim)`` (``"cls"``:
    the first token, a ViT's class token)."""

    def __init__(self, pooling: str = "mean", **kwargs):
        super().__init__(**kwargs)
        if pooling not in TOKEN_POOLINGS:
            raise ValueError(f"token_pooling={pooling!r}: use one of {', '.join(map(repr, TOKEN_POOLINGS))}.")
        self.pooling = pooling

    def call(self, tokens):
        if self.pooling == "cls":
            tokens = tokens[:, :1, :]
        return keras.ops.expand_dims(tokens, 1)

    def compute_output_shape(self, input_shape):
        batch, count, dim = input_shape
        return batch, 1, 1 if self.pooling == "cls" else count, dim

    def get_config(self):
        return {**super().get_config(), "pooling": self.pooling}
