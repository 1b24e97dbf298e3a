"""The modules' names before the packages (``transferkit.trainer``, ``transferkit.evaluate``, ...):
importing one gives the module at its new place, with a ``DeprecationWarning`` that names it. They
go in the next release.

>>> import sys, warnings
>>> _ = sys.modules.pop("transferkit.trainer", None)  # not imported under its old name yet
>>> with warnings.catch_warnings(record=True) as caught:
...     warnings.simplefilter("always")
...     import transferkit.trainer as old
>>> old.__name__, caught[0].category.__name__
('transferkit.training.trainer', 'DeprecationWarning')
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

#: Old module -> its new place.
MOVED = {
    "augment": "transferkit.models.augment",
    "backbones": "transferkit.models.backbones",
    "head": "transferkit.models.head",
    "model": "transferkit.models.classifier",
    "images": "transferkit.data.images",
    "trainer": "transferkit.training.trainer",
    "features": "transferkit.training.features",
    "checkpoint": "transferkit.training.checkpoint",
    "callbacks": "transferkit.training.callbacks",
    "distribute": "transferkit.training.distribute",
    "trial_runner": "transferkit.tuning.trial_runner",
    "evaluate": "transferkit.evaluation.metrics",
    "plots": "transferkit.evaluation.plots",
    "report": "transferkit.evaluation.report",
    "run": "transferkit.evaluation.run",
    "parity": "transferkit.export.parity",
    "tflite_metadata": "transferkit.export.tflite_metadata",
    "npyfile": "transferkit._internal.npyfile",
    "progress": "transferkit._internal.progress",
    "memory": "transferkit._internal.memory",
}


def _caller_stacklevel() -> int:
    """How many frames up the ``import`` statement is, past the import machinery and this module."""
    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_code.co_filename.startswith("<frozen importlib")
                                 or frame.f_code.co_filename == __file__):
        frame, level = frame.f_back, level + 1
    return level


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        name = module.__name__
        warnings.warn(f"{name} has moved to {self.target}; import it from there (the old name goes in the next "
                      "release).", DeprecationWarning, stacklevel=_caller_stacklevel())
        sys.modules[name] = importlib.import_module(self.target)  # the import statement then gets this module


class MovedModules(importlib.abc.MetaPathFinder):
    """Finds ``transferkit.<old name>`` and loads the module from its new place."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, leaf = fullname.rpartition(".")
        if package == "transferkit" and leaf in MOVED:
            return importlib.machinery.ModuleSpec(fullname, _Alias(MOVED[leaf]))
        return None


def install() -> None:
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())
