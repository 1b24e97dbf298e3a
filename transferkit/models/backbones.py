"""The backbone registry: named pretrained feature extractors, with their preprocessing and blocks.

>>> list_backbones("mobilenet*")
['mobilenet_v2', 'mobilenet_v3_large', 'mobilenet_v3_small']
>>> backbone = get_backbone("mobilenet_v2", input_shape=(96, 96, 3), weights=None, alpha=0.35)
>>> get_backbone_spec("mobilenet_v2").blocks(backbone)["block_11"]
98

Your own network is a backbone too: `backbone_from_model` (or ``TwoPhaseTrainer(backbone=model)``).

Third-party packages add backbones through the ``transferkit.backbones`` entry-point group: the
entry point names a `BackboneSpec`, or a module whose import calls `register_backbone`.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from transferkit.models._errors import WeightsUnavailableError
from transferkit.models.tokens import TokensAsMap

__all__ = [
    "BackboneSpec",
    "WeightsUnavailableError",
    "backbone_from_model",
    "register_backbone",
    "get_backbone",
    "get_backbone_spec",
    "list_backbones",
]

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "transferkit.backbones"

_REGISTRY: dict[str, "BackboneSpec"] = {}
_plugins_loaded = False


def _preprocessing_layer(mode) -> keras.layers.Layer | None:
    if isinstance(mode, dict):  # a keras-hub image converter's: pixels * scale + offset, per channel or not
        return keras.layers.Rescaling(mode.get("scale", 1.0), offset=mode.get("offset", 0.0), name="preprocessing")
    if mode == "tf":  # [-1, 1], as keras.applications' "tf" preprocess_input
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocessing")
    if mode == "torch":  # ImageNet mean/std on [0, 1]
        mean = [0.485 * 255, 0.456 * 255, 0.406 * 255]
        variance = [(0.229 * 255) ** 2, (0.224 * 255) ** 2, (0.225 * 255) ** 2]
        return keras.layers.Normalization(mean=mean, variance=variance, name="preprocessing")
    if mode == "none":  # the network scales its own 0-255 input
        return None
    raise ValueError(f"Unknown preprocessing mode {mode!r}; use 'tf', 'torch' or 'none'.")


@dataclass(frozen=True)
class BackboneSpec:
    """What transferkit needs to know about a backbone.

    Attributes:
        name: registry name.
        build: ``build(input_shape, weights, **options) -> keras.Model``, the network without its
            classifier top; ``weights`` is ``"imagenet"``, ``None`` or a file path.
        default_image_size: (height, width) the pretrained weights were trained at.
        preprocessing: ``"tf"`` (scale 0-255 to [-1, 1]), ``"torch"`` (ImageNet mean/std),
            ``"none"`` (the network does its own), or ``{"scale": ..., "offset": ...}`` (0-255 pixels
            times scale plus offset, each a number or one per channel: a keras-hub preset's).
        block_pattern: regular expression whose first group names a layer's block; the blocks are
            the unfreeze points offered besides plain layer indices.
        weights_hint: file name Keras caches the ImageNet weights under, for error messages; or a
            function of the input shape and the constructor's options that returns it.
        default_unfreeze: where fine-tuning starts when the trainer is given ``unfreeze_from="auto"``:
            a block or layer name, or a layer index (None: the first block in the top third).
        digest: for a backbone that is not in the registry (`backbone_from_model`), what identifies its
            architecture and weights in checkpoints and feature caches; empty for registered ones.
    """

    name: str
    build: Callable[..., keras.Model]
    default_image_size: tuple[int, int] = (224, 224)
    preprocessing: str | dict = "tf"
    block_pattern: str | None = None
    description: str = ""
    weights_hint: str | Callable[[tuple, dict], str] = ""
    options: dict = field(default_factory=dict)
    default_unfreeze: int | str | None = None
    digest: str = ""

    def preprocessing_layer(self) -> keras.layers.Layer | None:
        """A fresh Keras layer mapping 0-255 pixels to what the backbone expects (None if nothing)."""
        return _preprocessing_layer(self.preprocessing)

    def unfreeze_point(self, model: keras.Model) -> int | str:
        """``default_unfreeze``, or the first block that starts in the top third of ``model``'s layers."""
        if self.default_unfreeze is not None:
            return self.default_unfreeze
        cut = 2 * len(model.layers) // 3
        upper = [name for name, index in self.blocks(model).items() if index >= cut]
        return upper[0] if upper else cut

    def blocks(self, model: keras.Model) -> dict[str, int]:
        """``{block name: index of its first layer in model.layers}``, in network order."""
        if not self.block_pattern:
            return {}
        pattern = re.compile(self.block_pattern)
        found: dict[str, int] = {}
        for index, layer in enumerate(model.layers):
            match = pattern.match(layer.name)
            if match and match.group(1) not in found:
                found[match.group(1)] = index
        return found


def register_backbone(
    name: str,
    *,
    default_image_size: tuple[int, int] = (224, 224),
    preprocessing: str = "tf",
    block_pattern: str | None = None,
    description: str = "",
    weights_hint: str | Callable[[tuple, dict], str] = "",
    default_unfreeze: int | str | None = None,
    override: bool = False,
):
    """Decorator registering ``build(input_shape, weights, **options)`` under ``name``.

    >>> @register_backbone("tiny_cnn", default_image_size=(32, 32), preprocessing="tf",
    ...                    block_pattern=r"^(block\\d+)_", override=True)
    ... def tiny_cnn(input_shape, weights, **options):
    ...     inputs = keras.Input(input_shape)
    ...     x = keras.layers.Conv2D(4, 3, name="block1_conv")(inputs)
    ...     x = keras.layers.Conv2D(4, 3, name="block2_conv")(x)
    ...     return keras.Model(inputs, x, name="tiny_cnn")
    >>> "tiny_cnn" in list_backbones()
    True
    """
    _preprocessing_layer(preprocessing)  # fail at registration, not at training time

    def decorator(build):
        spec = BackboneSpec(
            name=name,
            build=build,
            default_image_size=tuple(default_image_size),
            preprocessing=preprocessing,
            block_pattern=block_pattern,
            description=description or (build.__doc__ or "").strip().split("\n")[0],
            weights_hint=weights_hint,
            default_unfreeze=default_unfreeze,
        )
        _add(spec, override)
        return build

    return decorator


def _add(spec: BackboneSpec, override: bool = False) -> None:
    if spec.name in _REGISTRY and not override and _REGISTRY[spec.name].build is not spec.build:
        raise ValueError(f"A backbone named {spec.name!r} is already registered; pass override=True to replace it.")
    _REGISTRY[spec.name] = spec


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not take the registry down with it
            log.warning("Backbone plugin %r (%s) failed to load: %s", ep.name, ep.value, exc)
            continue
        if isinstance(obj, BackboneSpec):
            _add(obj)


def list_backbones(pattern: str = "*") -> list[str]:
    """Registered backbone names matching a shell-style ``pattern``, sorted."""
    _load_plugins()
    return sorted(fnmatch.filter(_REGISTRY, pattern))


def get_backbone_spec(name: str | BackboneSpec | keras.Model) -> BackboneSpec:
    """The registered backbone ``name``; a `BackboneSpec` as it is; a Keras model through `backbone_from_model`."""
    if isinstance(name, BackboneSpec):
        return name
    if isinstance(name, keras.Model):
        return backbone_from_model(name)
    if not isinstance(name, str):
        _check_feature_extractor(name)  # names what to give instead
    from transferkit.models import hub

    if hub.is_preset(name):
        return _preset_backbone(name)
    _load_plugins()
    if name not in _REGISTRY:
        raise KeyError(f"Unknown backbone {name!r}; registered: {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[name]


def get_backbone(
    name: str | BackboneSpec | keras.Model,
    input_shape: tuple[int, int, int] | None = None,
    weights: str | os.PathLike | None = "imagenet",
    **options,
) -> keras.Model:
    """Build backbone ``name`` (no classifier top) for ``input_shape`` with ``weights``.

    ``weights`` is ``"imagenet"`` (downloaded into, or found in, the Keras cache), ``None``
    (random initialisation) or the path of a Keras weights file for this backbone. Extra keyword
    ``options`` go to the constructor (e.g. MobileNetV2's ``alpha``). For a model given as the backbone
    (`backbone_from_model`), ``"imagenet"`` means the weights it came with.
    """
    spec = get_backbone_spec(name)
    name = spec.name
    if input_shape is None:
        input_shape = (*spec.default_image_size, 3)
    if weights is not None and weights != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"Weights file not found: {path}. Give the path of an existing file, 'imagenet' or none "
                "(weights= in Python, --weights on the command line)."
            )
        try:
            return spec.build(tuple(input_shape), str(path), **options)
        except (ValueError, OSError, KeyError) as exc:
            raise WeightsUnavailableError(
                f"Could not load {path} into backbone {name!r} ({exc}). The file must hold this backbone's "
                "weights without the classifier top (include_top=False), for the same options (e.g. alpha)."
            ) from exc
    if weights == "imagenet":
        try:
            return spec.build(tuple(input_shape), "imagenet", **options)
        except WeightsUnavailableError:
            raise
        except Exception as exc:
            if not _is_download_failure(exc):
                raise
            cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
            expected = spec.weights_hint(tuple(input_shape), options) if callable(spec.weights_hint) \
                else spec.weights_hint
            hint = f", {expected}," if expected else ""
            raise WeightsUnavailableError(
                f"Could not download the ImageNet weights for backbone {name!r}: {exc}. Either give the path of "
                "this backbone's Keras weights without the top (weights=PATH in Python, --weights PATH on the "
                f"command line), or put the file Keras expects{hint} into the Keras cache at {cache}/."
            ) from exc
    return spec.build(tuple(input_shape), None, **options)


def backbone_from_model(model: keras.Model, *, preprocessing: str = "none", block_pattern: str | None = None,
                        default_unfreeze: int | str | None = None) -> BackboneSpec:
    """Your own Keras model as a backbone: an image in, a feature map ``(batch, height, width, channels)`` out,
    or a transformer's tokens ``(batch, tokens, dim)`` (pooled as ``backbone_options={"token_pooling": ...}``
    says: ``"mean"``, the default, or ``"cls"``, the first token).

    The trainer builds a copy of ``model`` for every model it makes (the network's architecture, with the
    weights ``model`` holds now), so training never changes ``model`` itself. ``preprocessing`` says what
    the copy receives: ``"none"`` (0-255 pixels: the model scales them itself), ``"tf"`` ([-1, 1]) or
    ``"torch"`` (ImageNet mean and std). ``block_pattern`` names its blocks as for `register_backbone`;
    without one, ``unfreeze_from`` takes layer indices and names, and ``"auto"`` the top third.

    >>> inputs = keras.Input((32, 32, 3))
    >>> x = keras.layers.Conv2D(8, 3, name="stage1_conv")(keras.layers.Rescaling(1 / 255)(inputs))
    >>> x = keras.layers.Conv2D(8, 3, name="stage2_conv")(x)
    >>> spec = backbone_from_model(keras.Model(inputs, x, name="mine"), block_pattern=r"^(stage\\d+)_")
    >>> spec.name, spec.blocks(get_backbone(spec, weights=None))
    ('mine', {'stage1': 2, 'stage2': 3})
    """
    from transferkit.models import hub

    _check_feature_extractor(model)
    _preprocessing_layer(preprocessing)
    if block_pattern is None and hub.unrolls(model):  # a keras-hub ViT or DINOv2: its encoder blocks
        block_pattern = hub.block_pattern_of(hub.unrolled(model))
    weights = [np.array(w) for w in model.get_weights()]  # as they are now, whatever happens to model later
    config = keras.saving.serialize_keras_object(model)
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for w in weights:
        digest.update(np.ascontiguousarray(w).tobytes())
    fixed = tuple(model.inputs[0].shape[1:])

    def build(input_shape, weights_arg, token_pooling=None, **options):
        if options:
            raise TypeError(f"backbone_options {sorted(options)} do not apply to a model given as the backbone.")
        return copy_model(model, input_shape, weights if weights_arg == "imagenet" else weights_arg, token_pooling)

    blocks = f"blocks {block_pattern!r}" if block_pattern else "no blocks"
    return BackboneSpec(name=model.name, build=build, default_image_size=(fixed[0] or 224, fixed[1] or 224),
                        preprocessing=preprocessing, block_pattern=block_pattern, default_unfreeze=default_unfreeze,
                        description=f"your model {model.name!r} ({len(model.layers)} layers, {blocks})",
                        digest=digest.hexdigest()[:16])


def copy_model(model: keras.Model, input_shape: tuple, weights, token_pooling: str | None = None) -> keras.Model:
    """A functional copy of ``model`` on ``input_shape`` with ``weights``: a list of arrays, a weights file,
    or None (a fresh initialisation). A transformer's tokens come out as a map (`TokensAsMap`, pooled as
    ``token_pooling`` says: ``"mean"``, the default, or ``"cls"``)."""
    from transferkit.models import hub

    fixed = tuple(model.inputs[0].shape[1:])
    if any(f is not None and f != s for f, s in zip(fixed, input_shape)):
        raise ValueError(f"The backbone model {model.name!r} takes images of shape {fixed}, the data gives "
                         f"{tuple(input_shape)}: give the data that size (image_size=...) or build the model "
                         "with keras.Input((None, None, 3)).")
    if hub.unrolls(model):  # a new instance from its own config: its inner layers' configs do not rebuild them
        fresh = type(model).from_config(model.get_config())
        if isinstance(weights, list):
            fresh.set_weights(weights)
        copy = hub.unrolled(fresh)
    else:
        copy = keras.models.clone_model(model, input_tensors=keras.Input(tuple(input_shape)))
        if isinstance(weights, list):
            copy.set_weights(weights)
    if weights is not None and not isinstance(weights, list):
        copy.load_weights(weights)
    if len(copy.outputs[0].shape) == 3:
        pooled = TokensAsMap(token_pooling or "mean", name="tokens_as_map")(copy.outputs[0])
        copy = keras.Model(copy.inputs[0], pooled, name=copy.name)
    elif token_pooling is not None:
        raise TypeError(f"token_pooling={token_pooling!r} applies to transformer backbones, whose output is tokens; "
                        f"{model.name!r} gives a feature map.")
    return copy


@functools.lru_cache(maxsize=16)
def _preset_backbone(name: str) -> BackboneSpec:
    """The `BackboneSpec` of keras-hub preset ``name`` (`transferkit.models.hub`; its configuration is read
    here, its weights when a model is built). ``weights="imagenet"`` gives the preset's own weights, ``None``
    a fresh initialisation, a path those weights."""
    from transferkit.models import hub

    network = hub.network(name, load_weights=False)
    try:
        _check_feature_extractor(network)
    except ValueError as exc:
        raise ValueError(f"keras-hub preset {name!r} cannot be a backbone yet: {exc}") from None
    preprocessing, size = hub.preprocessing(name)
    fixed = tuple(network.inputs[0].shape[1:3])
    size = size or (fixed if None not in fixed else None)  # a ViT's input size is part of its architecture

    def build(input_shape, weights, token_pooling=None, **options):
        if options:
            raise TypeError(f"backbone_options {sorted(options)} do not apply to a keras-hub preset (it takes "
                            "token_pooling, for transformers).")
        source = hub.network(name, load_weights=weights == "imagenet")
        return copy_model(source, input_shape, source.get_weights() if weights == "imagenet" else weights,
                          token_pooling)

    laid_out = hub.unrolled(network)
    return BackboneSpec(name=name, build=build, default_image_size=size or (224, 224), preprocessing=preprocessing,
                        block_pattern=hub.block_pattern_of(laid_out),
                        description=f"keras-hub preset ({type(network).__name__}, {len(laid_out.layers)} layers)")


def _check_feature_extractor(model) -> None:
    """A clear error for a model that cannot serve as a backbone (and what to give instead)."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"backbone={model!r}: give a registered name (list_backbones()), a BackboneSpec or a "
                        "keras.Model.")
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise ValueError(f"The backbone model {model.name!r} has no defined inputs and outputs yet: build it on an "
                         "input first (keras.Input((height, width, 3)) at the start of a Sequential or functional "
                         "model). Subclassed models are not supported as backbones.")
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"The backbone model {model.name!r} has {len(inputs)} inputs and {len(outputs)} outputs; "
                         "a backbone takes one image and gives one feature map.")
    shape_in, shape_out = tuple(inputs[0].shape), tuple(outputs[0].shape)
    if len(shape_in) != 4 or shape_in[-1] != 3:
        raise ValueError(f"The backbone model {model.name!r} takes inputs of shape {shape_in}; a backbone takes "
                         "RGB images, (batch, height, width, 3).")
    if len(shape_out) == 4:
        return
    last = model.layers[-1]
    if len(shape_out) == 2 and isinstance(last, keras.layers.Dense):
        raise ValueError(f"The backbone model {model.name!r} ends in a classifier top (layer {last.name!r}, output "
                         f"{shape_out}). Give the network without it (include_top=False for keras.applications, or "
                         "keras.Model(model.input, model.get_layer(NAME).output) at its last feature map): "
                         "transferkit adds its own head.")
    if len(shape_out) == 3:  # a transformer's tokens: copy_model lays them out as a map
        return
    raise ValueError(f"The backbone model {model.name!r} gives outputs of shape {shape_out}, not a feature map "
                     "(batch, height, width, channels). Give the network up to its last feature map, without global "
                     "pooling (pooling=None for keras.applications): the head pools it.")


def _is_download_failure(exc: BaseException) -> bool:
    import urllib.error

    while exc is not None:
        if isinstance(exc, (urllib.error.URLError, ConnectionError, TimeoutError)):
            return True
        if "URL fetch failure" in str(exc) or "fetch failure" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


# -- built-in backbones (keras.applications) ----------------------------------------------------


def _mobilenet_v2_weights_file(input_shape: tuple, alpha: float) -> str:
    """The file ``keras.applications.MobileNetV2`` downloads: square sizes it has weights for keep
    theirs, any other size gets the 224 px file."""
    size = input_shape[0] if input_shape[0] == input_shape[1] and input_shape[0] in (96, 128, 160, 192, 224) else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{size}_no_top.h5"


@register_backbone(
    "mobilenet_v2",
    default_image_size=(224, 224),
    preprocessing="tf",
    block_pattern=r"^(block_\d+)_",
    weights_hint=lambda shape, options: _mobilenet_v2_weights_file(shape, options.get("alpha", 1.0)),
    default_unfreeze="block_13",  # the last two stages; the tutorial's 100 cuts block_11 in half
)
def _mobilenet_v2(input_shape, weights, **options):
    """MobileNetV2 (keras.applications); 154 layers at alpha 1.0, blocks block_1 ... block_16."""
    return keras.applications.MobileNetV2(include_top=False, input_shape=input_shape, weights=weights, **options)


def _application(name: str, constructor: str, *, size: int, preprocessing: str, block_pattern: str,
                 weights_hint, description: str, default_unfreeze=None) -> None:
    """Register ``keras.applications.<constructor>`` (without its top) as backbone ``name``."""

    def build(input_shape, weights, **options):
        return getattr(keras.applications, constructor)(include_top=False, input_shape=input_shape, weights=weights,
                                                        **options)

    register_backbone(name, default_image_size=(size, size), preprocessing=preprocessing, block_pattern=block_pattern,
                      description=description, weights_hint=weights_hint, default_unfreeze=default_unfreeze)(build)


def _mobilenet_v3_weights_file(kind: str):
    def hint(shape, options):
        minimalistic = "_minimalistic" if options.get("minimalistic") else ""
        return f"weights_mobilenet_v3_{kind}{minimalistic}_224_{options.get('alpha', 1.0)}_float_no_top_v2.h5"

    return hint


_application("efficientnet_b0", "EfficientNetB0", size=224, preprocessing="none", block_pattern=r"^(block\d+[a-z])_",
             weights_hint="efficientnetb0_notop.h5",
             description="EfficientNetB0 (keras.applications); rescales its own 0-255 input; blocks block1a ... block7a.")
_application("resnet50_v2", "ResNet50V2", size=224, preprocessing="tf", block_pattern=r"^(conv\d_block\d+)_",
             weights_hint="resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
             description="ResNet50V2 (keras.applications); blocks conv2_block1 ... conv5_block3.")
# The newer families scale their own 0-255 input (include_preprocessing), hence preprocessing "none".
for _kind in ("small", "large"):
    _application(f"mobilenet_v3_{_kind}", f"MobileNetV3{_kind.title()}", size=224, preprocessing="none",
                 block_pattern=r"^(expanded_conv(?:_\d+)?)_", weights_hint=_mobilenet_v3_weights_file(_kind),
                 description=f"MobileNetV3{_kind.title()} (keras.applications); blocks expanded_conv, "
                             f"expanded_conv_1 ... expanded_conv_{10 if _kind == 'small' else 14}.")
for _variant, _size, _last in (("b0", 224, "6h"), ("b1", 240, "6i"), ("b2", 260, "6j"), ("b3", 300, "6l")):
    _application(f"efficientnet_v2_{_variant}", f"EfficientNetV2{_variant.upper()}", size=_size, preprocessing="none",
                 block_pattern=r"^(block\d+[a-z])_", weights_hint=f"efficientnetv2-{_variant}_notop.h5",
                 description=f"EfficientNetV2{_variant.upper()} (keras.applications); blocks block1a ... block{_last}.")
_application("convnext_tiny", "ConvNeXtTiny", size=224, preprocessing="none",
             block_pattern=r"^convnext_tiny_(stage_\d+_block_\d+|downsampling_block_\d+)_?",
             weights_hint="convnext_tiny_notop.h5",
             description="ConvNeXtTiny (keras.applications); blocks stage_0_block_0 ... stage_3_block_2, and "
                         "downsampling_block_N before stage N+1.")
