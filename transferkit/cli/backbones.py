"""List the registered backbones.

Registered backbones, with the image size their ImageNet weights were trained at, where fine-tuning
starts by default, and their preprocessing. transferkit trains every backbone at --image-size
(default 224x224), whatever size its weights were trained at. Besides these, --backbone takes a
keras-hub image preset (keras_hub:NAME, hf://OWNER/MODEL, or a preset directory; the hub extra) and
a .keras file of your own feature extractor.
"""

from __future__ import annotations

import json

from transferkit.cli.options import command_parser, data_defaults


def add_parser(commands) -> None:
    p = command_parser(commands, "backbones", __doc__)
    p.add_argument("--json", action="store_true", help="print a JSON list instead of the table")


def run(args) -> int:
    from transferkit import get_backbone_spec, list_backbones

    names = list_backbones()
    if args.json:
        specs = [get_backbone_spec(name) for name in names]
        rows = [{"name": name, "default_image_size": list(spec.default_image_size),
                 "default_unfreeze": spec.default_unfreeze, "preprocessing": spec.preprocessing,
                 "description": spec.description} for name, spec in zip(names, specs)]
        print(json.dumps(rows, indent=2), file=args.stdout)
        return 0
    width = max(len(n) for n in names)
    print(f"{'name':<{width}}  pretrained at  {'unfreeze':<9}  preprocessing  description")
    for name in names:
        spec = get_backbone_spec(name)
        size = "x".join(map(str, spec.default_image_size))
        unfreeze = "top third" if spec.default_unfreeze is None else str(spec.default_unfreeze)
        print(f"{name:<{width}}  {size:<13}  {unfreeze:<9}  {spec.preprocessing:<13}  {spec.description}")
    size = "x".join(map(str, data_defaults()["image_size"]))
    print(f"\ntrain and tune use --image-size (default {size}) for every backbone. --backbone also takes a keras-hub "
          "preset (keras_hub:NAME, hf://OWNER/MODEL, a preset directory) or a .keras file of your own model.")
    return 0
