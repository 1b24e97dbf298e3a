"""The ``transferkit`` command line, one module per command (``transferkit.cli.train``, ...).

>>> from transferkit.cli import build_parser
>>> build_parser().parse_args(["backbones"]).command
'backbones'
"""

# Imported at once (argparse and the options only): ``main`` names both the function and its module,
# and an import of the module would otherwise leave the package's ``main`` bound to the module.
from transferkit.cli.main import COMMANDS, build_parser, main
from transferkit.cli.options import UsageError

__all__ = ["main", "build_parser", "COMMANDS", "UsageError"]
