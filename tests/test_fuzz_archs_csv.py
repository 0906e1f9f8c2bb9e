"""Property-based tests of the architecture-latency CSV import (hypothesis), on a real SQLite store.

Malformed CSVs (wrong or duplicate columns, non-numeric, NaN/inf/negative or
huge fields, byte-order marks, bad bytes, wrong architecture strings) give one
BadInput line and store nothing; a CSV that imports stores exactly its
finite, positive cells.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgelat.errors import BadInput
from edgelat.lut.store import open_db
from edgelat.predictors.archs_io import import_arch_table, read_arch_list
from edgelat.profiler.spaces import get_space

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SPACES = ("nasbench201", "fbnet", "ofa-mbv3")
COLUMNS = ["arch", "arch", "idx", "pixel3", "gold_6240", "pixel3", "", " pixel3 ", "bad name!", "x" * 70,
           "\ufeffarch", "ARCH", "latency_ms", "a,b", 'q"uote']
DEVICES = ["pixel3", "gold_6240", "idx", "dev-a", "local"]
GOOD_CELLS = ["1.5", "0.25", "12", "3e1", "", "7.000"]
NASTY_CELLS = ["", " ", "nan", "NaN", "inf", "-inf", "-1", "0", "0.0", "1e999", "abc", "1_000", "\u0661\u0662",
               " 3 ", "1,5", "0x10", "\x00", "9" * 300, "1" * 200_000, '"', "\u2028"]
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)  # no lone surrogates: real text


def rare(draw: st.DrawFn, percent: int) -> bool:
    """True about ``percent`` % of the time (hypothesis favours small integers: the top of the range is rare)."""
    return draw(st.integers(0, 99)) >= 100 - percent


@st.composite
def arch_cells(draw: st.DrawFn, space) -> str:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    good = space.to_string(space.sample(rng, 1)[0])
    if not rare(draw, 15):
        return good
    kind = draw(st.sampled_from(["cut", "junk", "other-space"]))
    if kind == "cut":
        return good[: draw(st.integers(0, len(good)))]
    if kind == "other-space":
        other = get_space(draw(st.sampled_from([s for s in SPACES if s != space.name])))
        return other.to_string(other.sample(rng, 1)[0])
    return draw(TEXT)


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """Mostly well-formed files with a few faults each, so both outcomes are exercised."""
    space = get_space(draw(st.sampled_from(SPACES)))
    if not rare(draw, 25):
        header = ["arch"] + draw(st.lists(st.sampled_from(DEVICES), min_size=1, max_size=3, unique=True))
        if rare(draw, 15):
            header.insert(draw(st.integers(0, len(header))), draw(st.sampled_from(COLUMNS)))
    else:
        header = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=5))
    rows = []
    for _ in range(draw(st.integers(0, 6))):
        row = []
        for h in header:
            if h == "arch":
                row.append(draw(arch_cells(space)))
            else:
                row.append(draw(st.sampled_from(GOOD_CELLS)) if not rare(draw, 10)
                           else draw(st.sampled_from(NASTY_CELLS) | TEXT))
        if rare(draw, 5):
            row = row[:-1] if draw(st.booleans()) else row + ["1.0"]
        rows.append(row)

    def field(v: str) -> str:
        return '"' + v.replace('"', '""') + '"' if any(c in v for c in ',"\r\n') else v

    eol = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = eol.join(",".join(field(v) for v in r) for r in [header] + rows) + draw(st.sampled_from(["", eol]))
    data = text.encode("utf-8")
    prefix = b""
    if rare(draw, 25):
        prefix = draw(st.sampled_from([b"\xef\xbb\xbf", b"\xef\xbb\xbf\xef\xbb\xbf", b"\xff\xfe"]))
    if rare(draw, 5) and data:
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + b"\xff" + data[i:]
    return space.name, prefix + data


def _state(db) -> tuple[list, list]:
    return (db.execute("select * from arch_measurements order by space, arch, device").fetchall(),
            db.execute("select name, kind from devices order by name").fetchall())


def test_import_stores_all_or_nothing() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = open_db(Path(tmp) / "fuzz.db")
        path = Path(tmp) / "archs.csv"

        @FUZZ
        @given(csv_files())
        def run(case: tuple[str, bytes]) -> None:
            name, data = case
            space = get_space(name)
            path.write_bytes(data)
            before = _state(db)
            try:
                counts = import_arch_table(db, path, space)
            except BadInput as exc:
                assert "\n" not in str(exc) and str(exc)
                assert _state(db) == before, "a rejected file changed the store"
            else:
                assert counts and all(v >= 0 for v in counts.values())
                for dev, n in counts.items():
                    rows = db.execute("select latency_ms from arch_measurements where space = ? and device = ?",
                                      [space.name, dev]).fetchall()
                    assert len(rows) >= n
                    assert all(math.isfinite(v) and v > 0 for (v,) in rows)
            try:
                header, rows, pop = read_arch_list(path, space)
            except BadInput as exc:
                assert "\n" not in str(exc)
            else:
                assert len(rows) == len(pop) and "arch" in header
                space.check(pop)

        run()


# ---- regressions ------------------------------------------------------------------------------
def _csv(tmp_path: Path, text: str | bytes) -> Path:
    p = tmp_path / "a.csv"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


@pytest.mark.parametrize("cell", ["1_000", "\u0661\u0662", "0x10", "1e999", "nan", "-1", "0"])
def test_latency_cells_must_be_plain_positive_decimals(tmp_path: Path, cell: str) -> None:
    """``float()`` took '1_000' and Arabic-Indic digits as numbers."""
    space = get_space("nasbench201")
    arch = space.to_string(space.sample(np.random.default_rng(0), 1)[0])
    db = open_db()
    with pytest.raises(BadInput, match="pixel3"):
        import_arch_table(db, _csv(tmp_path, f"arch,pixel3\n{arch},{cell}\n"), space)
    assert db.execute("select count(*) from arch_measurements").fetchone()[0] == 0
    assert db.execute("select count(*) from devices where name = 'pixel3'").fetchone()[0] == 0


def test_a_header_of_many_columns_is_checked_quickly(tmp_path: Path) -> None:
    """Duplicate columns were found with list.count per column: quadratic in the header."""
    space = get_space("nasbench201")
    header = "arch," + ",".join(f"d{i}" for i in range(60_000)) + ",d7"
    t0 = time.monotonic()
    with pytest.raises(BadInput, match="'d7' appears more than once"):
        import_arch_table(open_db(), _csv(tmp_path, header + "\n"), space)
    assert time.monotonic() - t0 < 10


def test_an_unparseable_arch_cell_names_line_and_column(tmp_path: Path) -> None:
    space = get_space("ofa-mbv3")
    with pytest.raises(BadInput, match=r"line 2, column 'arch'"):
        import_arch_table(open_db(), _csv(tmp_path, "arch,pixel3\n\"{[]: 1}\",3.0\n"), space)


def test_a_second_byte_order_mark_is_named(tmp_path: Path) -> None:
    """A file with two BOMs read as a header column '\\ufeffarch': the error blamed a missing 'arch'."""
    space = get_space("nasbench201")
    arch = space.to_string(space.sample(np.random.default_rng(0), 1)[0])
    with pytest.raises(BadInput, match=r"stray byte-order mark \(U\+FEFF\)"):
        import_arch_table(open_db(), _csv(tmp_path, b"\xef\xbb\xbf\xef\xbb\xbfarch,pixel3\n" + arch.encode() + b",1\n"),
                          space)
    # one BOM is normal (Excel writes it) and is read
    counts = import_arch_table(open_db(), _csv(tmp_path, b"\xef\xbb\xbfarch,pixel3\n" + arch.encode() + b",1\n"), space)
    assert counts == {"pixel3": 1}
