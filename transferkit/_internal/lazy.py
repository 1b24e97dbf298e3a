"""Packages that name their public objects up front and import each on first use, so that importing
a package (``transferkit``, ``transferkit.data``) loads neither TensorFlow nor anything it does not need."""

from __future__ import annotations

import importlib
import warnings

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str], deprecated: dict[str, str] | None = None):
    """``__getattr__``, ``__dir__`` and ``__all__`` for ``package``: ``exports`` maps each public name to
    the submodule (relative to ``package``) that defines it; ``deprecated`` maps old names to the
    module that now holds them (absolute), reached with a ``DeprecationWarning``.

    >>> getattr_, dir_, all_ = lazy_exports("transferkit.data", {"stratified_split": "split"})
    >>> getattr_("stratified_split").__module__, all_
    ('transferkit.data.split', ['stratified_split'])
    """
    deprecated = deprecated or {}
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name):
        if name in exports:
            value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
            namespace[name] = value
            return value
        if name in deprecated:
            warnings.warn(f"{package}.{name} has moved to {deprecated[name]}.{name}; the old name goes in the "
                          "next release.", DeprecationWarning, stacklevel=2)
            return getattr(importlib.import_module(deprecated[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted({*namespace, *exports})

    return __getattr__, __dir__, sorted(exports, key=str.lower)
