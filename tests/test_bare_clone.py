"""A clone of this repository alone must pass its tests: no test, library module,
benchmark or script may read the project's shared data folder that sits beside
the repository on the machines that build it (``../shared``). The data the tests
need is kept in ``tests/data``.

The sources are parsed: a path string naming that folder, or ``"shared"`` joined
as a path component, fails the test with the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("edgelat", "agents", "profiler", "lut", "devices", "predictors", "search", "benchmarks", "scripts",
           "tests")
# Built from pieces so this file does not match itself.
SHARED = "shared"
TEXT_MARKERS = ("../" + SHARED, "/work/" + SHARED, SHARED + "/datasets", "..\\" + SHARED)
JOINERS = {"join", "joinpath", "Path", "PurePath", "PosixPath"}


def violations(source: str) -> list[tuple[int, str]]:
    """(line, what) for each reference to the shared folder in Python ``source``."""
    found = []
    for no, line in enumerate(source.splitlines(), 1):
        found += [(no, f"mentions {m!r}") for m in TEXT_MARKERS if m in line]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            parts = [node.left, node.right]
        elif isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            parts = list(node.args) if name in JOINERS else []
        else:
            continue
        for part in parts:
            if isinstance(part, ast.Constant) and isinstance(part.value, str) and part.value.strip("/\\") == SHARED:
                found.append((part.lineno, f"joins {SHARED!r} into a path"))
    return sorted(set(found))


def sources() -> list[Path]:
    files = [p for top in CHECKED for p in sorted((ROOT / top).rglob("*.py"))]
    return [p for p in files if p.resolve() != Path(__file__).resolve() and ".venv" not in p.parts]


def test_the_checked_folders_hold_the_code():
    names = {p.relative_to(ROOT).parts[0] for p in sources()}
    assert names == set(CHECKED), set(CHECKED) - names
    assert len(sources()) > 100


def test_no_source_reads_the_shared_folder():
    bad = [f"{p.relative_to(ROOT)}:{line}: {what}" for p in sources() for line, what in violations(p.read_text())]
    assert not bad, "a clone alone has no ../" + SHARED + "; keep test data in tests/data:\n" + "\n".join(bad)


@pytest.mark.parametrize("source", [
    'DATA = Path(__file__).resolve().parents[2] / "' + SHARED + '" / "datasets" / "help"\n',
    'DATA = ROOT.parent / "' + SHARED + '"\n',
    'p = os.path.join(here, "..", "' + SHARED + '", "x.csv")\n',
    'p = Path(root, "' + SHARED + '/")\n',
    'p = base.joinpath("' + SHARED + '")\n',
    'HELP = "../' + SHARED + '/datasets/help/nasbench201_latency_ms.csv"\n',
    'open("/work/' + SHARED + '/DESIGN.md")\n',
    '"""Reads ' + SHARED + '/datasets/help."""\n',
])
def test_the_check_catches_each_form(source):
    assert violations(source)


@pytest.mark.parametrize("source", [
    'DATA = Path(__file__).resolve().parent / "data" / "help"\n',
    '"""Counters shared by the runners; a shared secret."""\n',
    'shared = {"a": 1}\nx = shared["a"]\n',
    'help = "edgelat lut import-archs nasbench201_latency_ms.csv --space nasbench201"\n',
])
def test_the_check_passes_ordinary_code(source):
    assert violations(source) == []
