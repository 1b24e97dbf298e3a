"""What native libraries write straight to file descriptor 2 (TensorFlow's start-up banner, the
TFLite converter's and interpreter's INFO lines), kept off the terminal unless something fails.

>>> with native_stderr_quiet():
...     import os; _ = os.write(2, b"INFO: a line nobody asked for\\n")
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

__all__ = ["native_stderr_quiet", "verbose_logs", "VERBOSE_VARIABLE"]


#: Set (to 1) by ``transferkit --verbose``: the libraries' own log lines are then shown.
VERBOSE_VARIABLE = "TRANSFERKIT_VERBOSE"


def verbose_logs() -> bool:
    """Whether the user asked for the libraries' own log lines."""
    return os.environ.get(VERBOSE_VARIABLE, "") not in ("", "0")


@contextlib.contextmanager
def native_stderr_quiet():
    """Send file descriptor 2 to a temporary file for the block; if the block raises, what was
    written there is passed on to stderr, so an error keeps its details."""
    if verbose_logs():
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (a daemon): nothing to quiet
        yield
        return
    with tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
