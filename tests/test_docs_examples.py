"""The documentation's Python examples run as written, so the docs cannot drift from the code.

Every ```` ```python ```` block of ``docs/api.md`` and ``README.md`` runs in order, in one
namespace (as a notebook would run them), in an empty working directory and the test's own
empty ``$EDGELAT_HOME``, on the device ``local``. A block that fails names its file and line.

A README block refers to ``net.onnx``, the reader's own model: the test puts a real exported
network there (``tests/data/real-models``, weights filled from a fixed seed).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from real_models import materialize

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("docs/api.md", "README.md")
BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """The ```python blocks of a Markdown text, with the line each one's code starts on."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in BLOCK.finditer(text)]


def test_blocks_are_found():
    text = "intro\n```python\na = 1\n```\n```\nnot python\n```\n```python\nb = a + 1\n```\n"
    assert python_blocks(text) == [(3, "a = 1\n"), (9, "b = a + 1\n")]
    assert len(python_blocks((ROOT / "docs/api.md").read_text())) >= 10


@pytest.mark.parametrize("doc", DOCS)
def test_python_examples_run(doc, tmp_path, monkeypatch, capsys):
    blocks = python_blocks((ROOT / doc).read_text())
    if not blocks:
        pytest.skip(f"{doc} has no python blocks")
    monkeypatch.chdir(tmp_path)
    if doc == "README.md":
        materialize("squeezenet1_1", tmp_path, single_file=True).rename(tmp_path / "net.onnx")
    namespace: dict = {"__name__": "__docs__"}
    for line, code in blocks:
        try:
            exec(compile("\n" * (line - 1) + code, doc, "exec"), namespace)  # tracebacks give the file's lines
        except Exception as exc:
            out = capsys.readouterr().out
            pytest.fail(f"{doc}, the block at line {line} failed: {type(exc).__name__}: {exc}\n{out[-2000:]}")
