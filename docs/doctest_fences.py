"""Griffe extension for the API reference: docstring examples (``>>>`` lines and their output) are
shown as Python console code blocks instead of running text."""

from __future__ import annotations

import griffe


def fence_examples(text: str) -> str:
    r"""Wrap each run of ``>>>`` / ``...`` lines, with the output lines after it, in a ``pycon`` fence.

    >>> fence_examples("Add:\n\n>>> 1 + 1\n2\n\nDone.").splitlines()
    ['Add:', '', '```pycon', '>>> 1 + 1', '2', '```', '', 'Done.']
    """
    out, inside, fence = [], False, False
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("```"):
            fence = not fence
        if not fence and not inside and stripped.startswith(">>>"):
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}```pycon")
            inside = True
        elif inside and not stripped:
            out.append(f"{indent}```")
            inside = False
        out.append(line)
    if inside:
        out.append(f"{indent}```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_examples(obj.docstring.value)
