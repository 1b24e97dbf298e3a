"""Progress of long loops (decoding, feature extraction, evaluation, prediction, int8 calibration).

On a terminal it is one line redrawn in place; elsewhere (a log file, CI, a pipe) it is plain lines at
every tenth of the way, with no carriage returns or ANSI codes. It writes to stderr, so a command's
``--json`` output on stdout stays clean.

>>> import io
>>> out = io.StringIO()
>>> with progress(4, "Decoding", unit="image", stream=out) as bar:
...     for _ in range(4):
...         bar.update(1)
>>> print(out.getvalue().splitlines()[-1].split(" in ")[0])
Decoding: 4/4 images (100%)
"""

from __future__ import annotations

import sys
import time

__all__ = ["progress", "Progress"]


class Progress:
    """Counts done items and shows them; use `progress` to make one."""

    def __init__(self, total: int | None, description: str, unit: str = "image", stream=None, verbose: int = 1):
        self.total, self.description, self.unit = total, description, unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(verbose)
        self.terminal = self.enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.done = 0
        self._start = time.monotonic()
        self._last_tenth = -1
        self._last_draw = 0.0

    def _line(self) -> str:
        units = self.unit if self.done == 1 and self.total in (None, 1) else self.unit + "s"
        elapsed = time.monotonic() - self._start
        if self.total:
            fraction = self.done / self.total
            line = f"{self.description}: {self.done}/{self.total} {units} ({fraction:.0%})"
            if self.terminal:
                filled = int(30 * fraction)
                line = f"{self.description}: [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {units}"
        else:
            line = f"{self.description}: {self.done} {units}"
        rate = self.done / elapsed if elapsed > 0 else 0.0
        return f"{line} in {elapsed:.0f}s ({rate:.1f}/s)"

    def update(self, count: int = 1) -> None:
        self.done += count
        if not self.enabled:
            return
        if self.terminal:
            now = time.monotonic()
            if now - self._last_draw >= 0.1 or self.done == self.total:
                self.stream.write("\r" + self._line())
                self.stream.flush()
                self._last_draw = now
            return
        if self.total:
            tenth = min(10, 10 * self.done // self.total)
            if tenth > self._last_tenth and tenth > 0:
                self._last_tenth = tenth
                self.stream.write(self._line() + "\n")
                self.stream.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self.terminal:
            self.stream.write("\r" + self._line() + "\n")
        elif not self.total or self._last_tenth < 10:
            self.stream.write(self._line() + "\n")
        self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(total: int | None, description: str, unit: str = "image", stream=None, verbose: int = 1) -> Progress:
    """A progress line for ``total`` items (None if unknown); ``verbose=0`` shows nothing."""
    return Progress(total, description, unit, stream, verbose)
