"""What a read command through a hub costs: the copy of a device's rows, and the check that it is current.

Usage: python benchmarks/hub_reads.py [--rows 20000]

A real hub on loopback whose tables hold ``--rows`` kernel rows of one device (and as many
history rows, as profiling writes them; the rows are written directly, not measured). It
prints the time of the first read (the hub copies the rows, sends the file, the client stores
it), of a read when nothing changed (the hub computes its marker and answers "unchanged"), and
of a read after one more row landed, with the size of the copy. Every figure comes from this
machine at the time of the run; under load from other processes the times stretch.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def _fill(path: Path, device: str, rows: int) -> None:
    from edgelat.devices.enroll import enroll_dialled
    from edgelat.devices.registry import Registry
    from edgelat.lut.store import open_db, upsert_rows

    db = open_db(path)
    enroll_dialled(Registry(db), device, {})
    now = time.time()
    kernel = [{"device": device, "config_key": "onnxruntime|cpu|t1|fp32", "kernel_key": f"conv2d:k{i}",
               "op": "conv2d", "spec_json": "{}", "median_ms": 0.1 + i * 1e-4, "n": 50, "stable": 1,
               "environment_json": json.dumps({"note": "synthetic"}), "measured_at": now} for i in range(rows)]
    upsert_rows(db, "kernel_measurements", kernel)
    history = [{"id": i + 1, "kind": "kernel", "device": device, "config_key": r["config_key"], "item_key": r["kernel_key"],
                "median_ms": r["median_ms"], "n": 50, "stable": 1, "environment_json": r["environment_json"],
                "measured_at": now} for i, r in enumerate(kernel)]
    upsert_rows(db, "measurement_history", history)
    db.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000, help="kernel rows of the device on the hub")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgelat-bench-reads-") as tmp:
        os.environ["EDGELAT_HOME"] = str(Path(tmp) / "client-home")
        from edgelat.hub.client import HubClient
        from edgelat.hub.reads import local_copy
        from edgelat.hub.server import Hub
        from edgelat.lut.store import open_db, upsert_rows

        tables = Path(tmp) / "hub-tables.db"
        _fill(tables, "dev1", args.rows)
        hub = Hub(listen="127.0.0.1:0", db_url=f"sqlite:///{Path(tmp) / 'hub.db'}", tables_path=tables).start()
        try:
            secret = hub.store.create_token("alice", "user")
            with HubClient(hub.address, secret) as client:
                t0 = time.perf_counter()
                path = local_copy(client, "dev1")
                first = time.perf_counter() - t0
                t0 = time.perf_counter()
                again = local_copy(client, "dev1")
                same = time.perf_counter() - t0
                assert again == path
                db = open_db(tables)
                upsert_rows(db, "kernel_measurements", [{"device": "dev1", "config_key": "onnxruntime|cpu|t1|fp32",
                                                         "kernel_key": "conv2d:new", "op": "conv2d", "median_ms": 1.0,
                                                         "measured_at": time.time()}])
                db.close()
                t0 = time.perf_counter()
                newer = local_copy(client, "dev1")
                changed = time.perf_counter() - t0
                assert newer != path
            size = newer.stat().st_size
        finally:
            hub.stop()
    print(f"rows of the device on the hub: {args.rows} kernel + {args.rows} history")
    print(f"first read (copy, send, store): {first * 1000:.0f} ms, copy {size / 1e6:.1f} MB")
    print(f"read with nothing changed (marker, 'unchanged'): {same * 1000:.1f} ms")
    print(f"read after one more row (copy again): {changed * 1000:.0f} ms")


if __name__ == "__main__":
    main()
