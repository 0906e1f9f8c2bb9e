"""Importing wide architecture-latency CSVs into the real SQLite store, and the CSV checks."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from help_data import NB201 as NB201_NAME
from help_data import OFA, help_csv

from edgelat import config
from edgelat.devices.registry import Registry
from edgelat.errors import BadInput
from edgelat.lut.store import open_db
from edgelat.predictors.archs_io import (
    export_arch_table,
    import_arch_table,
    read_arch_list,
    read_arch_table,
    write_predictions,
)
from edgelat.profiler.spaces import get_space

NB201 = help_csv(NB201_NAME)
ROWS = 1900  # rows kept in the trimmed file (idx 0..1899; tests/data/help/README.md)


def head_csv(src: Path, dst: Path, n: int, edit=None) -> Path:
    """The first ``n`` data rows of a real dataset file, optionally edited (row index, column, value)."""
    with src.open(newline="") as fh:
        rows = list(csv.reader(fh))[: n + 1]
    for r, col, value in edit or []:
        rows[r + 1][rows[0].index(col)] = value
    with dst.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return dst


def db_dump() -> str:
    with sqlite3.connect(config.db_path()) as conn:
        return "\n".join(conn.iterdump())


def test_import_the_real_nb201_file_creates_devices_and_is_idempotent():
    db = open_db()
    space = get_space("nasbench201")
    counts = import_arch_table(db, NB201, space, ["pixel3", "gold_6240"])
    assert counts == {"pixel3": ROWS, "gold_6240": ROWS}
    reg = Registry(db)
    assert reg.get("pixel3").kind == "imported" and reg.get("gold_6240").kind == "imported"
    n = db.execute("select count(*) from arch_measurements").fetchone()[0]
    assert n == 2 * ROWS
    # values and source are exactly the file's
    with NB201.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == ROWS
    first = rows[0]
    row = db.execute(
        "select latency_ms, source from arch_measurements where space='nasbench201' and arch=? and device='pixel3'",
        [first["arch"]],
    ).fetchone()
    assert row == (float(first["pixel3"]), NB201.name)
    before = db_dump()
    assert import_arch_table(db, NB201, space, ["pixel3", "gold_6240"]) == counts
    assert db_dump() == before


def test_import_with_source_and_all_columns(tmp_path):
    db = open_db()
    space = get_space("ofa-mbv3")
    path = head_csv(help_csv(OFA), tmp_path / "ofa.csv", 20)
    counts = import_arch_table(db, path, space, source="HELP ofa")
    with path.open(newline="") as fh:
        devices = next(csv.reader(fh))[2:]  # every device column of the file (idx, arch, devices...)
    assert set(counts) == set(devices) and set(counts.values()) == {20}
    assert db.execute("select distinct source from arch_measurements").fetchall() == [("HELP ofa",)]
    # arch strings are stored in the space's canonical spelling (round-trips through the space)
    for (arch,) in db.execute("select distinct arch from arch_measurements").fetchall():
        assert space.to_string(space.from_string(arch)) == arch


def test_empty_cell_is_not_measured_but_a_bad_cell_is_an_error(tmp_path):
    db = open_db()
    space = get_space("nasbench201")
    ok = head_csv(NB201, tmp_path / "gap.csv", 5, [(2, "pixel3", "")])
    assert import_arch_table(db, ok, space, ["pixel3", "gold_6240"]) == {"pixel3": 4, "gold_6240": 5}


@pytest.mark.parametrize(
    "edit, message",
    [
        ([(3, "pixel3", "fast")], r"line 5, column 'pixel3': latency 'fast' is not a number"),
        ([(0, "gold_6240", "-1")], r"line 2, column 'gold_6240': latency '-1' must be a positive"),
        ([(1, "pixel3", "inf")], r"line 3, column 'pixel3'"),
        ([(2, "arch", "|nor_conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|")], r"line 4, column 'arch': .*nor_conv_5x5"),
        ([(4, "arch", "resnet50")], r"line 6, column 'arch': nasbench201: malformed"),
    ],
)
def test_bad_rows_name_line_and_column_and_change_nothing(tmp_path, edit, message):
    db = open_db()
    space = get_space("nasbench201")
    import_arch_table(db, head_csv(NB201, tmp_path / "good.csv", 3), space, ["pixel3"])
    before = db_dump()
    bad = head_csv(NB201, tmp_path / "bad.csv", 6, edit)
    with pytest.raises(BadInput, match=message) as exc:
        import_arch_table(db, bad, space, ["pixel3", "gold_6240", "samsung_s7"])
    assert "\n" not in str(exc.value)
    assert db_dump() == before  # no rows, no new devices
    assert not Registry(db).exists("gold_6240")


def test_malformed_files(tmp_path):
    space = get_space("nasbench201")
    cases = {
        "missing.csv": None,
        "empty.csv": "",
        "noarch.csv": "idx,model,pixel3\n0,x,1.0\n",
        "dup.csv": "arch,pixel3,pixel3\n",
        "short.csv": "arch,pixel3\n|none~0|+|none~0|none~1|+|none~0|none~1|none~2|\n",
        "badname.csv": "arch,my phone\n",
        "nodev.csv": "idx,arch\n",
    }
    expected = {
        "missing.csv": "no such CSV file",
        "empty.csv": "empty CSV",
        "noarch.csv": "no 'arch' column",
        "dup.csv": "appears more than once",
        "short.csv": "line 2 has 1 fields, the header 2",
        "badname.csv": "not usable as a device name",
        "nodev.csv": "no device columns",
    }
    for name, text in cases.items():
        p = tmp_path / name
        if text is not None:
            p.write_text(text)
        with pytest.raises(BadInput, match=expected[name]):
            read_arch_table(p, space)
    rep = tmp_path / "repeat.csv"
    arch = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    rep.write_text(f"arch,pixel3\n{arch},1\n{arch},2\n")
    with pytest.raises(BadInput, match="line 3 repeats the architecture of line 2"):
        read_arch_table(rep, space)
    with pytest.raises(BadInput, match="no column for device 'pixel9'"):
        read_arch_table(head_csv(NB201, tmp_path / "h.csv", 2), space, ["pixel9"])


def test_export_round_trips(tmp_path):
    db = open_db()
    space = get_space("nasbench201")
    src = head_csv(NB201, tmp_path / "in.csv", 30)
    import_arch_table(db, src, space, ["pixel3", "samsung_a50"])
    counts = export_arch_table(db, space.name, tmp_path / "out.csv")
    assert counts == {"pixel3": 30, "samsung_a50": 30}
    a = read_arch_table(src, space, ["pixel3", "samsung_a50"])
    b = read_arch_table(tmp_path / "out.csv", space)
    order = np.argsort(a.archs)
    assert b.archs == sorted(a.archs)
    for d in ("pixel3", "samsung_a50"):
        assert np.array_equal(a.latency[d][order], b.latency[d])


def test_arch_list_and_predictions_file(tmp_path):
    space = get_space("nasbench201")
    q = tmp_path / "q.csv"
    q.write_text(
        "name,arch,latency_ms\n"
        "a,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,9\n"
        "b,|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|,9\n"
    )
    header, rows, pop = read_arch_list(q, space)
    assert header == ["name", "arch", "latency_ms"] and pop.shape == (2, 6)
    write_predictions(tmp_path / "p.csv", header, rows, np.array([1.25, 17.0]))
    with (tmp_path / "p.csv").open(newline="") as fh:
        out = list(csv.DictReader(fh))
    assert [r["name"] for r in out] == ["a", "b"] and [float(r["latency_ms"]) for r in out] == [1.25, 17.0]
    (tmp_path / "none.csv").write_text("arch\n")
    with pytest.raises(BadInput, match="no architectures"):
        read_arch_list(tmp_path / "none.csv", space)
