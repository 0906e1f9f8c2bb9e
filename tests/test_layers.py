"""Imports point down the layers, there are no import cycles, and only lut/ speaks SQL.

Every module of the package is parsed (``ast``: top-level, function-level and
``TYPE_CHECKING`` imports alike, plus module names given as strings to
``importlib``) and each import becomes an arrow between two modules. The layer
order, top to bottom (DESIGN.md, "Layers")::

    CLI / API (edgelat/cli, api.py, results.py, hub) -> search -> predictors -> profiler
        -> devices -> lut -> agents -> core (edgelat/__init__.py, config.py, errors.py, values.py, proto)

lut and devices are one level in DESIGN.md; within it the arrow goes one way only:
the registry (devices/) keeps its rows in lut's ``devices`` table through
:mod:`edgelat.lut.devices_store` and counts a device's rows with :mod:`edgelat.lut.store`,
while the store knows nothing of how a device is reached (lut/ never imports devices/).
An arrow may stay within a layer or point down; one pointing up fails, as does any
cycle between modules.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: top to bottom; a module belongs to the layer of its longest matching prefix
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("cli/api", ("edgelat.cli", "edgelat.api", "edgelat.results", "edgelat.on_demand", "edgelat.hub")),
    ("search", ("edgelat.search",)),
    ("predictors", ("edgelat.predictors",)),
    ("profiler", ("edgelat.profiler",)),
    ("devices", ("edgelat.devices",)),
    ("lut", ("edgelat.lut",)),
    ("agents", ("edgelat.agents",)),
    ("core", ("edgelat.config", "edgelat.errors", "edgelat.values", "edgelat.proto")),
]
#: the package root holds only the version and lends the API's names (below)
ROOT_MODULE = "edgelat"

#: Arrows up that are part of the design, not a shortcut: a package that is also a door to
#: the API, loading it lazily on first use (nothing below uses the names they lend).
FACADES: dict[tuple[str, str], str] = {
    ("edgelat", "edgelat.api"): "edgelat.device(...), edgelat.Predictor...: the root lends the API's names",
    ("edgelat.search", "edgelat.api"): "edgelat.search(...) called as a function is the API's search",
}

#: Known arrows up, each with the reason it is tolerated (none today; keep it that way).
KNOWN_UP: dict[tuple[str, str], str] = {}

#: Modules outside lut/ that run SQL, with the reason. The hub's queue (jobs, leases, tokens,
#: agents) is its own database, on SQLite or a shared PostgreSQL through SQLAlchemy, not the
#: latency tables that lut/ keeps; its SQL stays inside edgelat/hub's store modules.
KNOWN_SQL: dict[str, str] = {
    "edgelat.hub.db": "the hub queue's engine set-up (pragmas, LISTEN/NOTIFY)",
    "edgelat.hub.queue": "the hub's job queue",
    "edgelat.hub.raw_sqlite": "the hub queue's hot statements on plain sqlite3 connections",
    "edgelat.hub.raw_pg": "the hub queue's one-statement steps on pooled plain psycopg connections",
    "edgelat.hub.statements": "the hub queue's prepared statements",
    "edgelat.hub.table_log": "the log of table changes that hubs on one database share, in that database",
}


def _package_dirs() -> dict[str, Path]:
    """Package name -> folder, as pyproject.toml maps them (``edgelat.lut`` -> ``lut/``)."""
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {name: ROOT / folder for name, folder in conf["package-dir"].items()}


def modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    dirs = _package_dirs()
    out: dict[str, Path] = {}
    for package, folder in dirs.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if any(not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) for p in parts):
                continue
            out[".".join([package, *parts])] = path
    return out


def layer_of(module: str) -> str | None:
    if module == ROOT_MODULE:
        return "core"
    best: tuple[int, str] | None = None
    for layer, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), layer)
    return best[1] if best else None


RANK = {layer: len(LAYERS) - i for i, (layer, _) in enumerate(LAYERS)}


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` is or lies in."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in known:
            return candidate
    return None


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``module`` imports, anywhere in its file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in known:
            names = [node.value]  # importlib.import_module("edgelat....") by name
        for name in names:
            target = _resolve(name, known) if name.startswith("edgelat") else None
            if target is not None and target != module:
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in modules() if layer_of(m) is None)
    assert not unplaced, f"modules in no layer (add them to LAYERS in this test): {unplaced}"


def test_the_layer_map_sees_the_package():
    known = modules()
    for name in ("edgelat.cli", "edgelat.values", "edgelat.agents.bounds", "edgelat.lut.store",
                 "edgelat.devices.registry", "edgelat.profiler.spaces.space", "edgelat.predictors.arch",
                 "edgelat.search.job"):
        assert name in known, name
    g = graph()
    assert "edgelat.values" in g["edgelat.lut.store"]
    assert "edgelat.lut.archs_store" in g["edgelat.predictors.arch"]
    assert "edgelat.profiler.spaces.ofa_mbv3" in g["edgelat.profiler.spaces"]  # named in a string


def test_imports_point_down():
    bad = []
    for src, targets in graph().items():
        for dst in targets:
            a, b = layer_of(src), layer_of(dst)
            if a is None or b is None or RANK[b] <= RANK[a]:
                continue
            if (src, dst) in FACADES or (src, dst) in KNOWN_UP:
                continue
            bad.append(f"{src} ({a}) imports {dst} ({b})")
    assert not bad, "imports against the layer order:\n" + "\n".join(sorted(bad))


def test_allow_lists_are_still_needed():
    g = graph()
    stale = [f"{s} -> {d}" for s, d in [*FACADES, *KNOWN_UP] if d not in g.get(s, ())]
    assert not stale, f"allow-listed arrows that no longer exist (remove them): {stale}"
    sql = _sql_modules()
    stale_sql = [m for m in KNOWN_SQL if m not in sql]
    assert not stale_sql, f"KNOWN_SQL modules that no longer run SQL (remove them): {stale_sql}"


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(g):
        if start in index:
            continue
        work = [(start, iter(sorted(g[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            for nxt in it:
                if nxt not in g:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(g[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        comp.append(m)
                        if m == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_no_import_cycles():
    g = {src: {d for d in dst if (src, d) not in FACADES} for src, dst in graph().items()}
    cycles = _cycles(g)
    assert not cycles, "modules that import each other (directly or around a loop):\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


# ---------------------------------------------------------------- SQL lives in lut/
_SQL = re.compile(r"^\s*(select|insert\s+(or\s+\w+\s+)?into|update\s+\[?\w+\]?\s+set|delete\s+from|create\s+(table|index)"
                  r"|alter\s+table|drop\s+table|pragma)\b", re.I)
#: sqlite-utils calls that read or write a table
_TABLE_CALLS = {"rows_where", "upsert", "upsert_all", "insert_all", "count_where", "delete_where", "executemany",
                "execute", "create_table", "enable_wal"}


def _runs_sql(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and _SQL.match(node.value):
            found.append(f"line {node.lineno}: {node.value.strip()[:50]!r}")
        elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant) \
                and isinstance(node.values[0].value, str) and _SQL.match(node.values[0].value):
            found.append(f"line {node.lineno}: f-string SQL")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _TABLE_CALLS:
            found.append(f"line {node.lineno}: .{node.func.attr}(...)")
    return found


def _sql_modules() -> dict[str, list[str]]:
    return {m: hits for m, p in modules().items()
            if layer_of(m) != "lut" and not m.startswith("edgelat.proto") and (hits := _runs_sql(p))}


def test_only_lut_runs_sql():
    bad = {m: hits for m, hits in _sql_modules().items() if m not in KNOWN_SQL}
    assert not bad, "SQL outside lut/ (give the query a named function in lut/):\n" + "\n".join(
        f"{m}: {'; '.join(h[:3])}" for m, h in sorted(bad.items()))


def test_the_sql_finder_finds_sql(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('def f(db, d):\n    return db.execute("select 1 from t where d = ?", [d])\n')
    assert len(_runs_sql(f)) == 2
    f.write_text('x = "selected {n} rows"\nlines = []\nlines.insert(0, "a")\n')
    assert _runs_sql(f) == []
