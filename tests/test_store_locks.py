"""SQLite's locks belong to the process, not the connection: closing any other handle on the
database file drops them all. The store's checks before opening must therefore never read the
file themselves once the process holds a connection, or another process that closes its last
connection checkpoints and deletes a write-ahead log still in use, and later commits are lost.

``profile ops`` opens the store twice (to resolve the device, then for the job) and stores its
rows one by one while this process, like any other tool reading the table, opens and closes
connections; every row the command reports must be in the table at the end."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

from agent_helpers import start_agent

from edgelat import config
from edgelat.profiler.presets import get_preset

SLOW = ["--warmup", "1", "--min-runs", "100000", "--max-runs", "100000", "--max-seconds", "0.25"]


def _count() -> int:
    with sqlite3.connect(config.db_path()) as conn:  # (a with-block commits; the connection closes when dropped)
        return conn.execute("select count(*) from kernel_measurements").fetchone()[0]


def test_every_row_a_job_stores_survives_readers_in_other_processes(tmp_path):
    specs = get_preset("smoke")[:12]
    ops = tmp_path / "ops.json"
    ops.write_text(json.dumps([s.key for s in specs]))
    agent = start_agent(tmp_path / "agent")
    try:
        cli = [sys.executable, "-c", "from edgelat.cli import main; main()"]
        subprocess.run([*cli, "devices", "register", "board", "--agent", agent.address], check=True,
                       capture_output=True, env=dict(os.environ))
        proc = subprocess.Popen([*cli, "profile", "ops", "--device", "board", "--ops", str(ops), "--json", *SLOW],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            _count()
            time.sleep(0.05)
        out, err = proc.communicate(timeout=60)
    finally:
        agent.stop()
    assert proc.returncode == 0, err
    assert json.loads(out)["measured"] == len(specs)
    assert _count() == len(specs)
