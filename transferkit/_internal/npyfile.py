"""A ``.npy`` file read and written a row at a time with positioned I/O, never memory-mapped.

Rows of a memory-mapped file stay in the process's resident memory once touched (until the kernel
wants the memory back), so an epoch over a 6 GB memory-mapped cache shows as 6 GB of RSS.
Rows read with ``pread`` go through the kernel's page cache, which the process does not hold: its
resident memory stays the size of the batches in flight, however large the file.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "rows.npy"
>>> rows = NpyFile.create(path, (4, 2), "float16")
>>> rows[1:3] = [[1, 2], [3, 4]]
>>> rows[np.array([2, 1])].tolist()
[[3.0, 4.0], [1.0, 2.0]]
>>> np.load(path).tolist()[0]  # an ordinary .npy file
[0.0, 0.0]
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

__all__ = ["NpyFile"]


class NpyFile:
    """Rows of a C-ordered ``.npy`` file on disk, indexed like an array along the first axis.

    ``file[i]``, ``file[a:b]`` and ``file[index_array]`` read those rows into a new array;
    ``file[i] = ...`` and ``file[a:b] = ...`` write them (files opened with ``writable=True``).
    Safe to use from several threads. Pickles as its path.
    """

    def __init__(self, path: os.PathLike | str, writable: bool = False):
        self.path = Path(path)
        self.writable = writable
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran_order, dtype = read_header(f)
            self._offset = f.tell()
        if fortran_order or dtype.hasobject or not shape:
            raise ValueError(f"{self.path}: need a C-ordered array of numbers with at least one axis.")
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fd = os.open(self.path, (os.O_RDWR if writable else os.O_RDONLY) | getattr(os, "O_BINARY", 0))
        self._lock = threading.Lock()  # for platforms without positioned I/O (Windows)

    @classmethod
    def create(cls, path: os.PathLike | str, shape, dtype) -> NpyFile:
        """A new zero-filled file of ``shape`` and ``dtype`` (sparse on disk until written), open to write."""
        shape, dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        with open(path, "wb") as f:
            np.lib.format.write_array_header_2_0(f, header)
            f.truncate(f.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
        return cls(path, writable=True)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return self._row_bytes * self.shape[0]

    def _rows(self, key) -> tuple[np.ndarray | None, int, int]:
        """``(indices, None, None)`` for scattered rows, or ``(None, start, stop)`` for a contiguous run."""
        n = self.shape[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                return None, start, max(start, stop)
            key = np.arange(start, stop, step)
        if isinstance(key, (int, np.integer)):
            key = int(key)
            if not -n <= key < n:
                raise IndexError(f"row {key} is out of range for {self.path} with {n} rows")
            key %= n
            return None, key, key + 1
        indices = np.asarray(key)
        if indices.dtype == bool or not np.issubdtype(indices.dtype, np.integer) or indices.ndim != 1:
            raise IndexError(f"index {NpyFile.__name__} rows with an int, a slice or a 1-D integer array, not {key!r}")
        if indices.size and (indices.min() < -n or indices.max() >= n):
            raise IndexError(f"row indices out of range for {self.path} with {n} rows")
        return indices % n if indices.size else indices.astype(np.int64), None, None

    def _read_into(self, offset: int, buffer: memoryview) -> None:
        while len(buffer):
            if hasattr(os, "preadv"):
                count = os.preadv(self._fd, [buffer], offset)
            else:
                with self._lock:
                    os.lseek(self._fd, offset, os.SEEK_SET)
                    data = os.read(self._fd, len(buffer))
                buffer[: len(data)], count = data, len(data)
            if count == 0:
                raise OSError(f"{self.path} is shorter than its header says (cut short?); delete it to rebuild.")
            buffer, offset = buffer[count:], offset + count

    def _write(self, offset: int, data: memoryview) -> None:
        while len(data):
            if hasattr(os, "pwrite"):
                written = os.pwrite(self._fd, data, offset)
            else:
                with self._lock:
                    os.lseek(self._fd, offset, os.SEEK_SET)
                    written = os.write(self._fd, data)
            data, offset = data[written:], offset + written

    def __getitem__(self, key) -> np.ndarray:
        indices, start, stop = self._rows(key)
        if indices is None:
            out = np.empty((stop - start, *self.shape[1:]), self.dtype)
            if out.size:
                self._read_into(self._offset + start * self._row_bytes, memoryview(out).cast("B"))
            return out if isinstance(key, slice) else out[0]
        out = np.empty((len(indices), *self.shape[1:]), self.dtype)
        if not out.size:
            return out
        buffer, size = memoryview(out).cast("B"), self._row_bytes
        for j, i in enumerate(indices.tolist()):
            self._read_into(self._offset + i * size, buffer[j * size : (j + 1) * size])
        return out

    def __setitem__(self, key, value) -> None:
        if not self.writable:
            raise PermissionError(f"{self.path} was opened read-only.")
        indices, start, stop = self._rows(key)
        if indices is not None:
            raise IndexError("write rows with an int or a slice of step 1")
        block = np.ascontiguousarray(np.broadcast_to(np.asarray(value, self.dtype), (stop - start, *self.shape[1:])))
        if block.size:
            self._write(self._offset + start * self._row_bytes, memoryview(block).cast("B"))

    def __array__(self, dtype=None, copy=None):
        rows = self[:]
        return rows if dtype is None else rows.astype(dtype)

    def close(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        self.close()

    def __getstate__(self):
        return {"path": str(self.path), "writable": self.writable}

    def __setstate__(self, state):
        self.__init__(state["path"], state["writable"])

    def __repr__(self) -> str:
        return f"NpyFile({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"
