"""Reading keras-hub presets, for `transferkit.models.backbones` to serve as backbones: ``backbone="keras_hub:<preset>"``, ``"hf://<owner>/<model>"``,
``"kaggle://..."`` or the path of a local preset directory (what ``save_to_preset`` writes).

The preset's image converter gives the preprocessing (its scale and offset on 0-255 pixels) and the
default image size; the blocks offered as unfreeze points come from the network's layer names (its
stages' blocks, ``stack2_block0`` in a ResNet; a transformer's encoder blocks, ``transformer_block_9`` in a
ViT, ``layers_9`` in a DINOv2). The CNN families (ResNet, EfficientNet, MobileNet, CSPNet, DenseNet, ...)
give a feature map; ViT and DINOv2 give tokens, which the head pools (`transferkit.models.tokens`).
ViT and DINOv2 keep all their encoder blocks inside one layer; `unrolled` lays them out as layers of
their own, so that each block is an unfreeze point and the fast path can cut between them.

Needs the ``hub`` extra: ``pip install 'transferkit[hub]'``.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import keras

from transferkit.models._errors import WeightsUnavailableError

__all__ = ["is_preset", "network", "unrolled", "preprocessing", "block_pattern_of", "BLOCK_PATTERNS"]

PREFIX = "keras_hub:"
REMOTE = ("hf://", "kaggle://", "modelscope://")

#: Block names in keras-hub image backbones, tried in order; the one that finds most blocks is used.
BLOCK_PATTERNS = (
    r"^(stack\d+_block\d+)_",  # ResNet, CSPNet
    r"^(block\d+[a-z])_",  # EfficientNet
    r"^(stage_?\d+_block_?\d+)_",
    r"^(stack\d+_block\d+)",
    r"^((?:[a-z]+_)*?block_?\d+)_",  # MobileNet and the like: block0_..., inverted_residual_block_3_...
    r"^(transformer_block_\d+)$",  # ViT, unrolled
    r"^(layers_\d+)$",  # DINOv2, unrolled
)


def is_preset(name: str) -> bool:
    """Whether ``name`` names a keras-hub preset rather than a registered backbone."""
    if name.startswith((PREFIX, *REMOTE)):
        return True
    path = Path(name).expanduser()
    return path.is_dir() and (path / "config.json").is_file()


def _preset_handle(name: str) -> str:
    return name[len(PREFIX):] if name.startswith(PREFIX) else name


def _keras_hub():
    try:
        import keras_hub
    except ImportError as exc:
        raise ImportError(f"keras-hub presets as backbones need keras-hub ({exc}): pip install 'transferkit[hub]'"
                          ) from exc
    return keras_hub


def _caches() -> str:
    kaggle = os.environ.get("KAGGLEHUB_CACHE", str(Path.home() / ".cache" / "kagglehub"))
    hugging_face = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
    return f"kagglehub's cache ({kaggle}) and Hugging Face's ({hugging_face})"


def _load(name: str, what: str, loader):
    try:
        return loader(_preset_handle(name))
    except ImportError:
        raise
    except Exception as exc:
        local = Path(name).expanduser().is_dir()
        where = (f"the preset directory {name} could not be read" if local else
                 f"it was neither in {_caches()} nor downloadable")
        raise WeightsUnavailableError(
            f"Could not load the {what} of keras-hub preset {name!r}: {where} ({type(exc).__name__}: {exc}). Offline, "
            "give the path of a local preset directory (keras_hub's save_to_preset writes one).") from exc


@functools.lru_cache(maxsize=16)
def network(name: str, load_weights: bool) -> keras.Model:
    """The preset's backbone network (with its weights or without), loaded once per process."""
    keras_hub = _keras_hub()
    return _load(name, "network", lambda handle: keras_hub.models.Backbone.from_preset(handle,
                                                                                      load_weights=load_weights))


def unrolls(network: keras.Model) -> bool:
    """Whether `unrolled` lays ``network``'s blocks out (keras-hub's ViT and DINOv2)."""
    return type(network).__name__ in _UNROLLED and type(network).__module__.startswith("keras_hub.")


_UNROLLED = ("ViTBackbone", "DINOV2Backbone")


def unrolled(network: keras.Model) -> keras.Model:
    """``network`` with its encoder blocks as layers of their own, for the families that keep them inside one
    layer (keras-hub's ``ViTBackbone`` and ``DINOV2Backbone``); the same layers, so the same weights. Any
    other network as it is.

    The unrolled network computes what the original does: the ViT's encoder is dropout, its blocks in turn
    and a LayerNormalization; the DINOv2's embeddings, its blocks in turn and its final LayerNormalization.
    """
    if not unrolls(network):
        return network
    family = type(network).__name__
    images = keras.Input(tuple(network.inputs[0].shape[1:]), name="images")
    if family == "ViTBackbone":
        from transferkit.models.hub_layers import rebuildable

        encoder = network.get_layer("vit_encoder")
        x = rebuildable(network.get_layer("vit_patching_and_embedding"), images.shape)(images)
        x = encoder.dropout(x)
        for block in encoder.encoder_layers:
            x = rebuildable(block, x.shape)(x)
        return keras.Model(images, encoder.layer_norm(x), name=network.name)
    x = network.embeddings(images)
    for block in network.encoder.layers:
        x = block(x)
    return keras.Model(images, network.layernorm(x), name=network.name)


def preprocessing(name: str) -> tuple[dict | str, tuple[int, int] | None]:
    """The preset's image converter as a preprocessing spec, and its image size (None, None without one)."""
    keras_hub = _keras_hub()
    try:
        converter = keras_hub.layers.ImageConverter.from_preset(_preset_handle(name))
    except Exception:  # a preset without an image converter: the network gets 0-255 pixels
        return "none", None
    scale, offset = converter.scale, converter.offset
    as_list = (lambda v: [float(x) for x in v] if isinstance(v, (list, tuple)) else float(v))
    preprocessing = "none" if scale is None and offset is None else {
        "scale": 1.0 if scale is None else as_list(scale), "offset": 0.0 if offset is None else as_list(offset)}
    size = tuple(int(s) for s in converter.image_size) if converter.image_size else None
    return preprocessing, size


def block_pattern_of(model: keras.Model) -> str | None:
    """The first of `BLOCK_PATTERNS` that finds the most blocks (at least two) in ``model``'s layer names."""
    best, count = None, 1
    for pattern in BLOCK_PATTERNS:
        compiled = re.compile(pattern)
        found = {m.group(1) for layer in model.layers if (m := compiled.match(layer.name))}
        if len(found) > count:
            best, count = pattern, len(found)
    return best
