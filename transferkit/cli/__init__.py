"""The ``transferkit`` command line, one module per command (``transferkit.cli.train``, ...).

>>> from transferkit.cli import build_parser
>>> build_parser().parse_args(["backbones"]).command
'backbones'
"""

from transferkit._internal.lazy import lazy_exports as _lazy_exports

__getattr__, __dir__, __all__ = _lazy_exports(__name__, {
    "main": "main", "build_parser": "main", "COMMANDS": "main", "UsageError": "options",
})
