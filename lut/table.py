"""Reading a device's table for people and other tools: rows for display, exports."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import sqlite_utils

from edgelat.errors import BadInput, EdgelatError

EXPORT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".json": "json"}

#: A row whose sentinel level is off the device's reference state by more than this was
#: measured under large drift: ``lut show`` flags it (its normalized figure is the one to compare).
LARGE_DRIFT = 0.05


def drift_flag(level: float | None) -> str:
    """"" for a row near the reference state; "+7%"/"-6%" beyond :data:`LARGE_DRIFT`;
    "unknown" when no sentinel level was recorded."""
    if level is None:
        return "unknown"
    off = level - 1.0
    return f"{100 * off:+.0f}%" if abs(off) > LARGE_DRIFT else ""


#: ``lut show --sort`` keys: the row order they give
SORTS = {
    "key": None,  # op and kernel key (model ref for models): the table's natural order
    "median": "median_ms desc",
    "measured": "measured_at desc",
}


def row_counts(db: sqlite_utils.Database, device: str) -> dict[str, int]:
    """How many kernel, whole-model and architecture rows a device has."""
    return {
        "kernels": db["kernel_measurements"].count_where("device = ?", [device]),
        "models": db["model_measurements"].count_where("device = ?", [device]),
        "archs": db["arch_measurements"].count_where("device = ?", [device]),
    }


def missing_rows_hint(db: sqlite_utils.Database, device: str, what: str) -> str:
    """Why a device has no ``what`` rows to show, and where its other rows are."""
    counts = {k: v for k, v in row_counts(db, device).items() if v and k != what}
    flags = {"kernels": "", "models": " --models", "archs": " --archs"}
    if counts:
        others = ", ".join(f"{n} {k} rows ('edgelat lut show --device {device}{flags[k]}')" for k, n in counts.items())
        return f"{device} has no {what} rows; it has {others}"
    run = {"kernels": "profile ops", "models": "profile model", "archs": "lut import-archs"}[what]
    return f"{device} has no rows yet: run 'edgelat {run} --device {device}'" if what != "archs" else \
        f"{device} has no rows yet: import measured architectures with 'edgelat lut import-archs FILE --space SPACE'"


def table_rows(
    db: sqlite_utils.Database, device: str, op: str | None = None, models: bool = False,
    sort: str = "key", limit: int | None = None, archs: bool = False,
) -> list[dict[str, Any]]:
    """The device's kernel rows (or whole-model rows, or measured-architecture rows: imported or
    profiled) with JSON columns decoded, in ``sort`` order (:data:`SORTS`), at most ``limit``."""
    if sort not in SORTS:
        raise BadInput(f"unknown sort {sort!r}: one of {', '.join(SORTS)}")
    if archs:
        order = {"key": "space, arch", "median": "latency_ms desc", "measured": "space, arch"}[sort]
        return [dict(r) for r in db["arch_measurements"].rows_where("device = ?", [device], order_by=order, limit=limit)]
    if models:
        where, params = "device = ?", [device]
        order = SORTS[sort] or "model_ref, config_key"
        rows = db["model_measurements"].rows_where(where, params, order_by=order, limit=limit)
    else:
        where = "device = ?" + (" and op = ?" if op else "")
        params = [device] + ([op] if op else [])
        order = SORTS[sort] or "op, kernel_key, config_key"
        rows = db["kernel_measurements"].rows_where(where, params, order_by=order, limit=limit)
    out = []
    for r in rows:
        r = dict(r)
        r["environment"] = json.loads(r.pop("environment_json") or "{}")
        if "spec_json" in r:
            r["spec"] = json.loads(r.pop("spec_json") or "{}")
        if "layers_json" in r:
            r["layers"] = json.loads(r.pop("layers_json") or "null")
        if "sentinel_level" in r:
            r["large_drift"] = bool(drift_flag(r["sentinel_level"])) and r["sentinel_level"] is not None
        out.append(r)
    return out


def export_table(db: sqlite_utils.Database, device: str, out: Path, models: bool = False, archs: bool = False) -> int:
    """Write the device's table to ``out`` (format by extension) atomically; returns the row count.
    A device with no such rows is an error (never an empty file)."""
    import pandas as pd

    fmt = EXPORT_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise BadInput(f"{out}: unknown export format {out.suffix or '(none)'}: use .csv, .parquet or .json")
    rows = table_rows(db, device, models=models, archs=archs)
    frame = pd.DataFrame(rows)
    for col in ("environment", "spec"):
        if col in frame:
            frame[col] = frame[col].map(lambda v: json.dumps(v, sort_keys=True))
    directory = out.resolve().parent
    if not directory.is_dir():
        raise BadInput(f"{out}: directory {directory} does not exist")
    if not rows:
        what = "archs" if archs else "models" if models else "kernels"
        raise BadInput(f"nothing to export: {missing_rows_hint(db, device, what)}".replace("lut show", "lut export"))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if fmt == "csv":
            frame.to_csv(tmp, index=False)
        elif fmt == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_json(tmp, orient="records", indent=2)
        os.replace(tmp, out)
    except OSError as exc:
        raise EdgelatError(f"could not write {out}: {exc.strerror or exc}") from exc
    except ImportError as exc:
        raise EdgelatError(f"parquet export needs pyarrow: pip install pyarrow ({exc})") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return len(frame)
