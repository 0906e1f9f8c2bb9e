"""A real agent process is killed in the middle of a batch: the rows measured so far are kept,
the command fails with a clear message, and the rerun measures only the rest — every row once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

from agent_helpers import start_agent

from edgelat import config
from edgelat.profiler.presets import get_preset

# Each kernel runs into the 0.25 s time cap (min-runs is out of reach), so a batch of 12 takes ~4 s.
SLOW = ["--warmup", "1", "--min-runs", "100000", "--max-runs", "100000", "--max-seconds", "0.25"]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from edgelat.cli import main; main()", *args],
        capture_output=True, text=True, timeout=timeout, env=dict(os.environ),
    )


def rows() -> dict[str, float]:
    with sqlite3.connect(config.db_path()) as conn:
        return dict(conn.execute("select kernel_key, measured_at from kernel_measurements where device='rpi'"))


def test_agent_killed_mid_batch_then_rerun_completes_once_each(tmp_path):
    specs = get_preset("smoke")[:12]
    ops = tmp_path / "ops.json"
    ops.write_text(json.dumps([s.key for s in specs]))

    agent = start_agent(tmp_path / "a1")
    try:
        assert cli("devices", "register", "rpi", "--agent", agent.address).returncode == 0
        proc = subprocess.Popen(
            [sys.executable, "-c", "from edgelat.cli import main; main()",
             "profile", "ops", "--device", "rpi", "--ops", str(ops), *SLOW],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
        )
        deadline = time.monotonic() + 90
        while len(rows()) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        agent.stop(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        agent.stop(signal.SIGKILL)

    assert proc.returncode != 0
    assert "rerun" in err and agent.address in err, err
    kept = rows()
    assert 3 <= len(kept) < len(specs), kept

    again = start_agent(tmp_path / "a2", extra_args=["--listen", agent.address])
    try:
        done = cli("profile", "ops", "--device", "rpi", "--ops", str(ops), "--json", *SLOW)
    finally:
        again.stop()
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["skipped"] == len(kept) and summary["measured"] == len(specs) - len(kept)
    final = rows()
    assert sorted(final) == sorted(s.key for s in specs)
    assert all(final[k] == kept[k] for k in kept)  # the rows measured before the kill were not redone
    with sqlite3.connect(config.db_path()) as conn:
        assert conn.execute("select count(*) from kernel_measurements").fetchone()[0] == len(specs)
