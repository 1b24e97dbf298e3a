"""Every code block in docs/ and the README runs, in order, page by page.

Each page runs in a fresh folder holding what the pages name: `PetImages/` (cats and dogs), `Flowers/`
(three unbalanced classes), `photo.jpg`, and `weights/` with the MobileNetV2 ImageNet weights, which
Keras's cache (`KERAS_HOME`) also holds for `weights="imagenet"`. Python blocks share one namespace per
page; shell lines that start with `transferkit` run through the CLI and must exit 0; TOML blocks must
parse; `text` blocks are output. Shell lines that install or build (`pip`, `make`) are not run here: CI
runs `make test` itself after installing. A block preceded by `<!-- not run ... -->` must name the test
that covers it instead. The pages use the real weights, so they run where ../shared has them
(marked `docs`; `make test ARGS="-m docs"` runs them alone).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest

from conftest import make_image

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT.parent / "shared" / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
FENCE = re.compile(r"(?P<before>[^\n]*)\n```(?P<lang>[a-z]*)\n(?P<code>.*?)\n```", re.S)
NOT_RUN = re.compile(r"<!-- not run[^>]*?(tests/\S+\.py)::(\w+)")
NOT_RUN_COMMANDS = ("pip", "make", "tensorboard", "mlflow", "python")  # installs, builds, other programs


def code_blocks(page: Path) -> list[tuple[str, str, str]]:
    """``(language, code, the line before the fence)`` of every fenced block of ``page``."""
    return [(m["lang"], m["code"], m["before"]) for m in FENCE.finditer("\n" + page.read_text())]


def _pages_with_code():
    return [p for p in PAGES if any(lang != "text" for lang, _, _ in code_blocks(p))]


def test_every_page_with_code_is_collected():
    names = {p.relative_to(ROOT).as_posix() for p in _pages_with_code()}
    assert {"README.md", "docs/getting-started.md", "docs/howto/export-edge.md"} <= names
    languages = {lang for p in PAGES for lang, _, _ in code_blocks(p)}
    assert languages <= {"python", "bash", "toml", "text"}, languages  # a new language needs a runner here


@pytest.fixture(scope="module")
def environment(tmp_path_factory):
    if not WEIGHTS.exists():
        pytest.skip(f"{WEIGHTS} is absent: the docs' code trains with the real MobileNetV2 weights")
    root = tmp_path_factory.mktemp("docs-env")
    colours = {"cats": (200, 90, 60), "dogs": (60, 90, 200), "daisy": (230, 230, 80), "roses": (200, 40, 60),
               "tulips": (150, 60, 200)}
    for folder, counts in (("PetImages", {"cats": 16, "dogs": 16}),
                           ("Flowers", {"daisy": 30, "roses": 15, "tulips": 10})):
        for name, count in counts.items():
            (root / folder / name).mkdir(parents=True)
            for i in range(count):
                make_image(root / folder / name / f"{name[:-1]}.{i}.jpg", colours[name], size=(120, 100), seed=i)
    make_image(root / "photo.jpg", colours["dogs"], size=(120, 100), seed=99)
    (root / "weights").mkdir()
    (root / "weights" / WEIGHTS.name).symlink_to(WEIGHTS)
    models = root / "keras" / "models"
    models.mkdir(parents=True)
    for size in (96, 128, 160, 192, 224):  # Keras names MobileNetV2's weights by input size
        (models / f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5").symlink_to(WEIGHTS)
    return root


def _run_shell(code: str) -> None:
    """`transferkit ...` runs in this process; `VAR=value transferkit ...` in a process of its own with
    that environment (a Keras backend, say, must be chosen before Keras is imported)."""
    import subprocess
    import sys

    from transferkit.cli import main

    for line in code.splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line)
        env = {}
        while "=" in words[0] and not words[0].startswith("-"):
            key, value = words.pop(0).split("=", 1)
            env[key] = value
        if words[0] in NOT_RUN_COMMANDS:
            continue
        assert words[0] == "transferkit", f"no runner for the shell line {line!r}"
        if env:
            run = subprocess.run([sys.executable, "-c", "import sys; from transferkit.cli import main; "
                                  "sys.exit(main(sys.argv[1:]))", *words[1:]], env={**os.environ, **env},
                                 capture_output=True, text=True, timeout=900)
            assert run.returncode == 0, f"`{line}` failed: {run.stderr[-3000:]}"
        else:
            assert main(words[1:]) == 0, f"`{line}` failed"


@pytest.mark.docs
@pytest.mark.parametrize("page", _pages_with_code(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_code_of_the_page_runs(page, environment, tmp_path, monkeypatch):
    import keras

    work = tmp_path / "work"
    shutil.copytree(environment, work, symlinks=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("KERAS_HOME", str(work / "keras"))  # for trial processes; Keras read it at import here:
    monkeypatch.setattr("keras.src.backend.config._KERAS_DIR", str(work / "keras"))
    keras.backend.clear_session()
    namespace = {"__name__": "__main__"}  # as when pasted into a script and run
    ran = 0
    for lang, code, before in code_blocks(page):
        if before.startswith("<!-- not run"):
            reference = NOT_RUN.search(before)
            assert reference, f"{page.name}: a block that is not run must name the test that covers it"
            test_file, test_name = reference.groups()
            assert f"def {test_name}(" in (ROOT / test_file).read_text(), reference.group(0)
            continue
        if lang == "python":
            exec(compile(code, f"{page.name}:python", "exec"), namespace)
        elif lang == "bash":
            _run_shell(code)
        elif lang == "toml":
            tomllib.loads(code)
        ran += lang != "text"
    assert ran


def test_the_fence_parser_sees_blocks_and_their_comments(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n```python\nx = 1\n```\n<!-- not run: tests/test_docs.py::test_x -->\n```bash\nls\n```\n")
    blocks = code_blocks(page)
    assert [(lang, code) for lang, code, _ in blocks] == [("python", "x = 1"), ("bash", "ls")]
    assert blocks[1][2].startswith("<!-- not run") and np.array(blocks).shape == (2, 3)


@pytest.mark.docs_site
def test_the_site_builds_strictly_and_documents_every_public_name(tmp_path):
    """`mkdocs build --strict` passes; the API page has an entry for each name in each module's
    `__all__`; the CLI page holds every command's options, generated from the parsers."""
    import importlib
    import subprocess
    import sys

    pytest.importorskip("mkdocstrings", reason="the docs extra is not installed (pip install -e '.[docs]')")
    site = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    api = (site / "api" / "index.html").read_text()
    plumbing = {"tuning.trial_runner", "export.tflite_metadata"}  # public packages' private helpers
    modules = sorted(f"{p.parent.name}.{p.stem}" for p in (ROOT / "transferkit").glob("*/*.py")
                     if not p.parent.name.startswith("_") and p.parent.name != "cli" and not p.stem.startswith("_"))
    modules = [m for m in modules if m not in plumbing]
    missing = [f"transferkit.{m}.{name}" for m in modules
               for name in getattr(importlib.import_module(f"transferkit.{m}"), "__all__", [])
               if f'id="transferkit.{m}.{name}"' not in api]
    assert 'id="transferkit._internal' not in api and 'id="transferkit.tuning.trial_runner' not in api  # no plumbing
    assert not missing, f"not in the API reference: {missing}"
    cli = (site / "cli" / "index.html").read_text()
    from transferkit.cli import COMMANDS

    for command in COMMANDS:
        assert f"transferkit {command}" in cli, command
    assert "--integer-io" in cli and "--stop-below-median-after" in cli
