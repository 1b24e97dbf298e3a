"""MkDocs hook: the CLI reference page is generated from the command line's own parsers."""

from __future__ import annotations

import argparse
import os

MARKER = "<!-- cli-reference -->"


def cli_reference() -> str:
    """Every command's ``--help`` text, as Markdown, in the parser's order."""
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal; make the page the same everywhere
    from transferkit.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parts = ["## transferkit", "", "```text", parser.format_help().rstrip(), "```", ""]
    for name, command in subparsers.choices.items():
        parts += [f"## transferkit {name}", "", "```text", command.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, cli_reference())
    return markdown
