"""Checkpoints of a two-phase run, written after every epoch, so a killed run continues where it stopped.

A checkpoint folder holds ``checkpoint.json`` (the run's fingerprint, the phase, the epochs done and
the history so far) and the ``.npz`` file it names (every variable of the training model, random
seed states included, and the optimizer's). Both are written under temporary names and renamed into
place, the ``.npz`` first, so a reader always finds a complete pair.

>>> import tempfile
>>> folder = RunCheckpoint(tempfile.mkdtemp(), {"learning_rate": 1e-4, "data": "abc"})
>>> folder.load() is None                      # nothing saved yet
True
>>> folder.save({"phase": 1, "epochs_done": 1, "history": {}}, [np.zeros(2)], [])
>>> folder.load()["epochs_done"]
1
>>> RunCheckpoint(folder.directory, {"learning_rate": 1e-3, "data": "abc"}).load()  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: The checkpoint in ... was written by a run with other settings: learning_rate: 0.0001 there, 0.001 now. Resume with the same settings and data, or start the run in another folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from transferkit._internal.files import unique_partial, write_atomically
from transferkit.data.fingerprint import FileList

__all__ = ["RunCheckpoint", "differences"]

_FORMAT = 1


def _describe(value) -> str:
    text = json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Each setting that differs between two JSON-friendly records, as ``"key: A there, B now"``.

    >>> differences({"lr": 0.1, "head": {"dropout": 0.2}}, {"lr": 0.1, "head": {"dropout": 0.5}})
    ['head.dropout: 0.2 there, 0.5 now']
    """
    lines = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "(unset)"), current.get(key, "(unset)")
        if isinstance(a, dict) and isinstance(b, dict):
            lines += differences(a, b, f"{prefix}{key}.")
        elif json.dumps(a, default=str, sort_keys=True) != json.dumps(b, default=str, sort_keys=True):
            lines.append(f"{prefix}{key}: {_describe(a)} there, {_describe(b)} now")
    return lines


class RunCheckpoint:
    """The checkpoint folder of one run, identified by ``fingerprint`` (settings and data, JSON-friendly).

    `load` returns the saved state, or None when there is none, and refuses (``ValueError`` naming
    every difference) a checkpoint whose fingerprint differs; with ``files`` (`FileList` per split,
    whose digests the fingerprint holds), a changed, added or removed image is named. `save`
    replaces the state atomically.
    """

    def __init__(self, directory: os.PathLike | str, fingerprint: dict, files: dict[str, FileList] | None = None):
        self.directory = Path(directory)
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))
        self.files = dict(files or {})  # {split: FileList}: kept to name the files that changed
        self.state_file = self.directory / "checkpoint.json"

    def exists(self) -> bool:
        return self.state_file.is_file()

    def record(self) -> dict | None:
        """What ``checkpoint.json`` says (fingerprint, phases done, epochs, history), unchecked and
        without the arrays; None when there is none."""
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def load(self) -> dict | None:
        """The saved state with ``"variables"`` and ``"optimizer_variables"`` (lists of arrays) added."""
        if not self.exists():
            return None
        state = json.loads(self.state_file.read_text())
        if state.get("format") != _FORMAT:
            raise ValueError(f"{self.state_file} was written by another version of transferkit (format "
                             f"{state.get('format')!r}, this one reads {_FORMAT}); start the run in another folder.")
        found = differences(state["fingerprint"], self.fingerprint)
        saved_files = state.get("files", {})
        changed = [f"{split} image {line}" for split, files in self.files.items() if split in saved_files
                   for line in files.changes(saved_files[split])]
        if changed:
            found = [d for d in found if not d.startswith("data.files")] + changed
        if found:
            raise ValueError(
                f"The checkpoint in {self.directory} was written by a run with other settings: "
                f"{'; '.join(found)}. Resume with the same settings and data, or start the run in "
                "another folder."
            )
        with np.load(self.directory / state["arrays"]) as arrays:
            state["variables"] = [arrays[f"v{i}"] for i in range(state["n_variables"])]
            state["optimizer_variables"] = [arrays[f"o{i}"] for i in range(state["n_optimizer_variables"])]
        return state

    def save(self, state: dict, variables, optimizer_variables) -> None:
        """Write ``state`` (JSON-friendly) with the arrays; the previous checkpoint stays whole until then."""
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = unique_partial(self.directory / "checkpoint.npz")
        arrays_name = partial.name.replace(".partial", "")
        values = {f"v{i}": np.asarray(v) for i, v in enumerate(variables)}
        values.update({f"o{i}": np.asarray(v) for i, v in enumerate(optimizer_variables)})
        with open(partial, "wb") as f:
            np.savez(f, **values)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, self.directory / arrays_name)
        previous = self._current_arrays()
        record = {**{k: v for k, v in state.items() if k not in ("variables", "optimizer_variables")},
                  "format": _FORMAT, "fingerprint": self.fingerprint, "arrays": arrays_name,
                  "files": {split: files.stamps() for split, files in self.files.items()},
                  "n_variables": len(variables), "n_optimizer_variables": len(optimizer_variables)}
        write_atomically(self.state_file, json.dumps(record, default=float))
        if previous and previous != arrays_name:
            (self.directory / previous).unlink(missing_ok=True)

    def _current_arrays(self) -> str | None:
        return (self.record() or {}).get("arrays")
