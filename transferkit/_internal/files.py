"""Files written so that readers never see a part, and paths shown as printable text."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

__all__ = ["unique_partial", "write_atomically", "display_path"]


def unique_partial(path: Path) -> Path:
    """A temporary name beside ``path`` that no other process or thread uses."""
    return path.with_name(f"{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial{path.suffix}")


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a part."""
    partial = unique_partial(path)
    partial.write_text(text)
    os.replace(partial, path)


def display_path(path) -> str:
    """A path as printable text, also when its name is not valid UTF-8 (bad bytes shown as \\xNN)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
