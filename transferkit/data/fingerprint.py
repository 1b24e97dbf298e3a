"""One fingerprint of a list of files, for every cache and checkpoint that depends on them.

A file is known by its resolved path, its size and its modification time (nanoseconds): a file
replaced by another of the same size, or edited in place, changes its fingerprint. The image cache,
the feature cache and the run checkpoint all use `FileList`, so they agree on when data changed.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> (folder / "a.jpg").write_bytes(b"12345")
5
>>> before = FileList.of([folder / "a.jpg"], root=folder)
>>> before.names, before == FileList.of([folder / "a.jpg"], root=folder)
(('a.jpg',), True)
>>> import os; os.utime(folder / "a.jpg", ns=(0, 0))     # the same size, another file
>>> FileList.of([folder / "a.jpg"], root=folder).changes(before.stamps())
['a.jpg: changed (5 bytes, modified at another time)']
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

__all__ = ["FileList", "file_list_of"]


@dataclass(frozen=True)
class FileList:
    """Files in order, each with its size and modification time.

    ``root`` only shortens the names that `stamps` and `changes` give (paths relative to it); the
    digest always hashes resolved paths, so the same files give the same digest from any root.
    """

    paths: tuple[str, ...]
    names: tuple[str, ...]
    sizes: tuple[int, ...]
    mtimes: tuple[int, ...]

    @classmethod
    def of(cls, paths: Iterable[os.PathLike | str], root: os.PathLike | str | None = None) -> FileList:
        paths = [os.fspath(p) for p in paths]  # strings throughout: at 100,000 files Path objects cost ~40 MB
        sizes, mtimes = [], []
        for path in paths:
            stat = os.stat(path)
            sizes.append(stat.st_size)
            mtimes.append(stat.st_mtime_ns)
        names = tuple(_name(p, root) for p in paths)
        return cls(tuple(os.path.realpath(p) for p in paths), names, tuple(sizes), tuple(mtimes))

    def subset(self, positions) -> FileList:
        """The files at ``positions``, in that order (a split of the list, say).

        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> for name in "abc":
        ...     _ = (folder / name).write_bytes(b"x")
        >>> files = FileList.of([folder / n for n in "abc"], root=folder)
        >>> files.subset([2, 0]).names, files.subset([2, 0]) == FileList.of([folder / "c", folder / "a"], root=folder)
        (('c', 'a'), True)
        """
        positions = [int(i) for i in positions]
        return FileList(*(tuple(values[i] for i in positions) for values in
                          (self.paths, self.names, self.sizes, self.mtimes)))

    def __add__(self, other: FileList) -> FileList:
        """These files, then ``other``'s."""
        return FileList(self.paths + other.paths, self.names + other.names, self.sizes + other.sizes,
                        self.mtimes + other.mtimes)

    def digest(self, *context) -> str:
        """A hex digest of ``context`` (JSON-friendly values: the settings the caller adds) and the files."""
        digest = hashlib.sha256()
        if context:
            digest.update(repr(context).encode("utf-8", "surrogateescape"))
        for path, size, mtime in zip(self.paths, self.sizes, self.mtimes):
            digest.update(f"{path}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
        return digest.hexdigest()

    def stamps(self) -> dict[str, list[int]]:
        """``{name: [size, mtime_ns]}``, JSON-friendly, for a record that must later say which file changed."""
        return {name: [size, mtime] for name, size, mtime in zip(self.names, self.sizes, self.mtimes)}

    def changes(self, saved: dict[str, list[int]], limit: int = 5) -> list[str]:
        """How these files differ from ``saved`` (`stamps` of an earlier list), each file named;
        at most ``limit`` lines, then a count of the rest."""
        current = self.stamps()
        lines = []
        for name in current:
            if name not in saved:
                lines.append(f"{name}: added")
            elif list(saved[name]) != current[name]:
                size, mtime = current[name]
                what = "modified at another time" if saved[name][0] == size else f"{saved[name][0]} bytes then"
                lines.append(f"{name}: changed ({size} bytes, {what})")
        lines += [f"{name}: gone" for name in saved if name not in current]
        if len(lines) > limit:
            lines = lines[:limit] + [f"and {len(lines) - limit} more"]
        return lines


def _name(path: os.PathLike | str, root) -> str:
    path = Path(path)
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return path.as_posix()


def file_list_of(data, split: str) -> FileList:
    """The `FileList` of ``data``'s ``split``: the one an `ImageFolder` took when it read its files
    (``data.file_list``), else one taken now of ``data.files(split)``."""
    if hasattr(data, "file_list"):
        return data.file_list(split)
    return FileList.of(data.files(split), root=getattr(data, "root", None))
