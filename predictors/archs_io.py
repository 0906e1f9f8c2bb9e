"""Architecture CSVs in and out: imported latency tables, query lists, predictions.

Two shapes:

- a *wide latency table* (``lut import-archs``): an ``arch`` column, an
  optional ``idx`` column (ignored), and one column per device with the
  measured latency in ms (the format of the public HELP tables, e.g.
  ``tests/data/help``). An empty cell means "not measured on that device"
  and is skipped.
- an *arch list* (``predict --archs``): any CSV with an ``arch`` column; the
  predictions are written back as the same rows plus ``latency_ms``.

Everything is read and validated before anything is written: a bad arch
string, a non-numeric latency or a malformed row raises one
:class:`~edgelat.errors.BadInput` naming the line and the column, and the
database is left as it was.
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence, TextIO

import numpy as np
import sqlite_utils

from edgelat.errors import BadInput, EdgelatError
from edgelat.lut import archs_store

if TYPE_CHECKING:  # pragma: no cover
    from edgelat.profiler.spaces.space import SearchSpace

ARCH_COLUMN = "arch"
IGNORED_COLUMNS = ("idx",)
# A latency cell: a plain decimal (float() would also take "1_000", "inf" or non-ASCII digits).
_DECIMAL = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


@dataclass
class ArchTable:
    """A parsed wide latency table: canonical arch strings, genotypes, ms per device (nan = empty)."""

    space: str
    archs: list[str]
    pop: np.ndarray
    latency: dict[str, np.ndarray] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Measured (non-empty) values per device."""
        return {dev: int(np.isfinite(v).sum()) for dev, v in self.latency.items()}


def _open_csv(path: str | Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, fields) of every non-blank row; BadInput when unreadable."""
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"no such CSV file: {p}")
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            rows = [(reader.line_num, r) for r in reader if any(c.strip() for c in r)]
    except UnicodeDecodeError:
        raise BadInput(f"{p}: not a UTF-8 text CSV file") from None
    except csv.Error as exc:
        raise BadInput(f"{p}: malformed CSV ({exc})") from None
    if not header or not any(h.strip() for h in header):
        raise BadInput(f"{p}: empty CSV (expected a header with an '{ARCH_COLUMN}' column)")
    header = [h.strip() for h in header]
    stray = next((h for h in header if "\ufeff" in h), None)
    if stray is not None:  # a second BOM: the file was converted twice, or files were concatenated
        raise BadInput(f"{p}: the header has a stray byte-order mark (U+FEFF) in column {stray[:40]!r}: "
                       "re-save the file as plain UTF-8")
    dup = sorted(h for h, n in Counter(header).items() if n > 1)
    if dup:
        raise BadInput(f"{p}: column {dup[0]!r} appears more than once in the header")
    if ARCH_COLUMN not in header:
        raise BadInput(f"{p}: no '{ARCH_COLUMN}' column in the header (columns: {', '.join(header)})")
    return header, rows


def _parse_archs(
    path: str | Path, space: "SearchSpace", arch_col: int, rows: Sequence[tuple[int, list[str]]], ncols: int
) -> tuple[list[str], np.ndarray]:
    """Canonical arch strings and genotypes, one per row, each validated by the space."""
    genes = []
    for line, r in rows:
        if len(r) != ncols:
            raise BadInput(f"{path}: line {line} has {len(r)} fields, the header {ncols}")
        try:
            genes.append(space.from_string(r[arch_col]))
        except EdgelatError as exc:
            raise BadInput(f"{path}: line {line}, column '{ARCH_COLUMN}': {exc}") from None
    pop = np.stack(genes) if genes else np.zeros((0, space.dim), dtype=np.int16)
    return space.to_strings(pop) if len(pop) else [], pop


def read_arch_table(path: str | Path, space: "SearchSpace", devices: Sequence[str] | None = None) -> ArchTable:
    """Parse and validate a wide latency CSV (every row, every kept column)."""
    from edgelat.devices.registry import check_name

    header, rows = _open_csv(path)
    dev_cols = [h for h in header if h != ARCH_COLUMN and h not in IGNORED_COLUMNS]
    if devices:
        missing = [d for d in devices if d not in dev_cols]
        if missing:
            raise BadInput(
                f"{path}: no column for device {missing[0]!r} (device columns: {', '.join(dev_cols) or 'none'})"
            )
        dev_cols = list(dict.fromkeys(devices))
    if not dev_cols:
        raise BadInput(f"{path}: no device columns (expected '{ARCH_COLUMN}' plus one latency column per device)")
    for d in dev_cols:
        try:
            check_name(d)
        except BadInput as exc:
            raise BadInput(f"{path}: column {d!r} is not usable as a device name: {exc}") from None
    archs, pop = _parse_archs(path, space, header.index(ARCH_COLUMN), rows, len(header))
    seen: dict[str, int] = {}
    for (line, _), a in zip(rows, archs):
        if a in seen:
            raise BadInput(f"{path}: line {line} repeats the architecture of line {seen[a]}")
        seen[a] = line
    table = ArchTable(space=space.name, archs=archs, pop=pop)
    for d in dev_cols:
        col = header.index(d)
        vals = np.full(len(rows), np.nan)
        for i, (line, r) in enumerate(rows):
            cell = r[col].strip()
            if not cell:
                continue
            if not _DECIMAL.fullmatch(cell):
                raise BadInput(
                    f"{path}: line {line}, column {d!r}: latency {cell[:40]!r} is not a number "
                    "(expected a plain decimal of ms, like 12.5)"
                )
            v = float(cell)
            if not math.isfinite(v) or v <= 0:
                raise BadInput(f"{path}: line {line}, column {d!r}: latency {cell[:40]!r} must be a positive number of ms")
            vals[i] = v
        table.latency[d] = vals
    return table


def import_arch_table(
    db: sqlite_utils.Database,
    path: str | Path,
    space: "SearchSpace",
    devices: Sequence[str] | None = None,
    source: str | None = None,
) -> dict[str, int]:
    """Store a wide latency CSV in ``arch_measurements``; returns rows per device.

    Unknown devices are created with kind ``imported``. Re-importing the same
    file replaces the same rows (idempotent). Nothing is written unless the
    whole file is valid; the rows go in as one transaction.
    """
    from edgelat.devices.registry import Registry

    table = read_arch_table(path, space, devices)
    src = source or Path(path).name
    registry = Registry(db)
    for dev in table.latency:
        registry.ensure_imported(dev)

    def rows() -> Iterable[tuple[str, str, str, float, str]]:
        # in primary-key order: SQLite's b-tree inserts several times faster that way
        devs = sorted(table.latency)
        cols = {d: table.latency[d].tolist() for d in devs}
        for i in sorted(range(len(table.archs)), key=table.archs.__getitem__):
            arch = table.archs[i]
            for dev in devs:
                v = cols[dev][i]
                if v == v:  # not nan
                    yield (space.name, arch, dev, v, src)

    archs_store.import_rows(db, rows())
    return table.counts()


def export_arch_table(
    db: sqlite_utils.Database, space_name: str, path: str | Path, devices: Sequence[str] | None = None
) -> dict[str, int]:
    """Write a device's (or every device's) imported rows of a space as a wide CSV; rows per device."""
    devs = list(devices) if devices else archs_store.imported_devices(db, space_name)
    values = {d: archs_store.imported_archs(db, space_name, d) for d in devs}
    archs = sorted({a for v in values.values() for a in v})
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow([ARCH_COLUMN, *devs])
        for a in archs:
            w.writerow([a, *[repr(values[d][a]) if a in values[d] else "" for d in devs]])
    return {d: len(values[d]) for d in devs}


def read_arch_list(path: str | Path, space: "SearchSpace") -> tuple[list[str], list[list[str]], np.ndarray]:
    """A query CSV with an ``arch`` column: (header, rows as read, genotypes)."""
    header, rows = _open_csv(path)
    _, pop = _parse_archs(path, space, header.index(ARCH_COLUMN), rows, len(header))
    if not len(pop):
        raise BadInput(f"{path}: no architectures (the CSV has a header but no rows)")
    return header, [r for _, r in rows], pop


def write_predictions(
    dest: str | Path | TextIO, header: Sequence[str], rows: Sequence[Sequence[str]], latency_ms: np.ndarray,
    column: str = "latency_ms",
) -> None:
    """The query rows as read, with the predicted latency appended (replacing an old ``latency_ms``).

    ``dest`` is a path or an open text stream (stdout).
    """
    header = list(header)
    keep = [i for i, h in enumerate(header) if h != column]

    def write(fh: TextIO) -> None:
        w = csv.writer(fh)
        w.writerow([header[i] for i in keep] + [column])
        for r, v in zip(rows, np.asarray(latency_ms, dtype=np.float64).tolist()):
            w.writerow([r[i] for i in keep] + [f"{v:.6g}"])

    if isinstance(dest, (str, Path)):
        with Path(dest).open("w", newline="", encoding="utf-8") as fh:
            write(fh)
    else:
        write(dest)
