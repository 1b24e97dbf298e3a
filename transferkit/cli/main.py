"""The ``transferkit`` command: train, evaluate, predict, export, report, backbones, tune, audit and lr-find.

A thin layer over the library: each command is a module of this package with ``add_parser``, ``run``
and, where the options alone can be wrong, ``check`` (called before TensorFlow loads, and before
``run``); this one builds the parser from them and runs one.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from transferkit.cli.options import UsageError

__all__ = ["main", "build_parser", "COMMANDS", "UsageError"]

#: Command name -> its module in this package.
COMMANDS = {name: f"transferkit.cli.{name.replace('-', '_')}" for name in
            ("train", "evaluate", "predict", "export", "report", "backbones", "audit", "tune", "lr-find")}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transferkit")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The `transferkit` command line: every command and option (the CLI reference is made from it)."""
    parser = argparse.ArgumentParser(prog="transferkit", description="Two-phase transfer learning for image classifiers.")
    parser.add_argument("--version", action="version", version=f"transferkit {_version()}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true", help="show TensorFlow's own log lines")
    common.add_argument("--debug", action="store_true", help="print the traceback of an error")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    class Commands:  # every command gets --verbose and --debug
        @staticmethod
        def add_parser(name, **kwargs):
            return subparsers.add_parser(name, parents=[common], **kwargs)

    for module in COMMANDS.values():
        importlib.import_module(module).add_parser(Commands())
    return parser


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 captured: its C++ start-up lines (the oneDNN banner,
    twice) are written there before any log level applies. Its Python warnings (a function
    "retracing") are for TensorFlow's own users, not ours."""
    import logging

    from transferkit._internal.quiet import native_stderr_quiet

    if "tensorflow" not in sys.modules:
        try:
            with native_stderr_quiet():
                import tensorflow as tf

                tf.config.list_physical_devices("GPU")  # CUDA starts here: "failed call to cuInit" without a GPU
        except ImportError:
            return  # the JAX or PyTorch backend without TensorFlow
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


class PlainLines:
    """A text stream that passes on what is written without ANSI escape codes: Keras's progress bars
    colour their lines even in a log file or a pipe."""

    _CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(self._CODES.sub("", text))
        return len(text)

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name):
        return getattr(self._stream, name)


def main(argv=None) -> int:
    """Run one command; exit status 0 on success, 2 for a usage error, 1 for a failure (a one-line
    message on stderr; ``--debug`` adds the traceback). With ``--json`` stdout carries the JSON only:
    everything else the command prints goes to stderr."""
    for stream in (sys.stdout, sys.stderr):  # file names that are not valid UTF-8 print as \xNN
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    args.stdout = sys.stdout  # where the results go: JSON with --json
    saved = sys.stdout
    if getattr(args, "json", False):
        sys.stdout = sys.stderr
    if not sys.stdout.isatty():
        sys.stdout = PlainLines(sys.stdout)
    try:
        return _run(args)
    finally:
        sys.stdout = saved


def _run(args) -> int:
    module = importlib.import_module(COMMANDS[args.command])
    try:
        getattr(module, "check", lambda args: None)(args)  # the options alone: before TensorFlow loads
    except UsageError as exc:
        print(f"transferkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    # 3 also hides C++ ERROR lines such as "failed call to cuInit" on a machine without a GPU: a real
    # failure reaches the user as a Python exception either way.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if args.verbose else "3")
    if args.verbose:
        from transferkit._internal.quiet import VERBOSE_VARIABLE

        os.environ[VERBOSE_VARIABLE] = "1"
    if not args.verbose:
        _import_tensorflow_quietly()
    try:
        return module.run(args)
    except KeyboardInterrupt:
        print(f"transferkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure ends as one line (and the traceback with --debug)
        if args.debug:
            import traceback

            traceback.print_exc()
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"transferkit {args.command}: error: {message}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1


if __name__ == "__main__":
    sys.exit(main())
