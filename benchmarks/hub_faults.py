"""Fault drills against a real hub and a real agent (both ``edgelat`` subprocesses on loopback).

Usage: python benchmarks/hub_faults.py [--lease-ttl-s 5] [--heartbeat-timeout-s 5]

1. ``kill -9`` the hub mid-job, start it again on the same database: the job's lease expires,
   the restarted hub requeues it, the agent dials back in and the job finishes.
2. ``kill -9`` the agent mid-job: the hub sees the stream die, releases the lease at once, and
   the job finishes when an agent serves the device again.
3. The agent freezes mid-job (``SIGSTOP``: the connection stays open but says nothing): the hub
   drops it after the heartbeat timeout and requeues the job; a fresh agent finishes it.
4. Two hubs on one PostgreSQL (``--pg URL``, ``EDGELAT_TEST_PG`` or a throwaway cluster), an agent
   on each, jobs for both devices submitted through both hubs: no job leased twice (each done on
   its first lease, through the hub its device dialled), no row lost or stored twice, and each
   hub's tables hold the other's rows.

For each it prints whether every job finished, the rows expected, lost and duplicated (a kernel
measured twice shows as a second history row), and the time from the fault to the job being
back in the queue (or on a new lease). Every figure here comes from this machine at the time
of the run; under load from other processes the times stretch.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgelat.hub.client import FINAL, HubClient
from edgelat.hub.queue import HubStore
from edgelat.profiler.presets import get_preset

PROTOCOL = {"warmup": 1, "min_runs": 5, "max_runs": 20, "max_seconds": 0.2}
#: the drills' jobs run long enough for a fault to hit them mid-job (each prints whether it did)
DRILL_PROTOCOL = {"warmup": 1, "min_runs": 300, "max_runs": 300, "max_seconds": 2.0}
CLI = [sys.executable, "-c", "from edgelat.cli import main; main()"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], home: Path, expect: str, timeout_s: float = 60.0) -> subprocess.Popen:
    """Start an edgelat command and wait for its ready line (which must contain ``expect``)."""
    env = {**os.environ, "EDGELAT_HOME": str(home)}
    env.pop("EDGELAT_HUB", None)
    proc = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    deadline = time.monotonic() + timeout_s
    line = proc.stdout.readline() if proc.stdout else ""
    if expect not in line or time.monotonic() > deadline:
        proc.kill()
        raise SystemExit(f"{' '.join(args[:2])} did not start: {line!r}")
    return proc


def stop(*procs: subprocess.Popen) -> None:
    """Stop each process still running (terminate, then kill after 15 s)."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def wait(client: HubClient, job_id: str, ok: Any, timeout_s: float = 300.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            job = client.get(job_id)
            if ok(job):
                return job
        except Exception:  # the hub is down for a moment
            pass
        time.sleep(0.05)
    raise SystemExit(f"job {job_id} never reached the expected state")


def rows(hub_home: Path, device: str, keys: list[str], threads: int) -> tuple[int, int]:
    """(kernel rows stored, their history rows) for these keys at this thread count, in the hub's table."""
    from edgelat.values import RuntimeConfig
    from edgelat.config import DB_NAME
    from edgelat.lut import store

    config = RuntimeConfig(threads=threads)
    db = store.open_db(hub_home / DB_NAME)
    try:
        kernel = [r for r in store.kernel_rows(db, device, config) if r["kernel_key"] in keys]
        history = [h for h in store.history_rows(db, device) if h["item_key"] in keys
                   and h.get("config_key", config.key()) == config.key()]
        return len(kernel), len(history)
    finally:
        db.close()


def report(name: str, job: dict[str, Any], expected: int, stored: int, history: int, requeue_s: float,
           hit: bool) -> None:
    print(f"== {name}")
    print(f"   the fault hit the job mid-job: {'yes' if hit else 'NO (it had finished: this drill proves nothing)'}")
    print(f"   job {job['id'][:12]}: {job['state']} (every job finished: {'yes' if job['state'] == 'done' else 'NO'})")
    print(f"   rows expected {expected}, stored {stored}, lost {max(0, expected - stored)}, "
          f"duplicated {max(0, history - stored)}")
    print(f"   time from the fault to the job back in the queue or on a new lease: {requeue_s:.1f} s")


def two_hubs(pg_url: str, keys: list[str], per_device: int) -> None:
    """Drill 4: two hubs on one PostgreSQL, agents split between them, jobs through both."""
    devices = ("dev1", "dev2")
    with tempfile.TemporaryDirectory(prefix="edgelat-hub-faults-pg-") as tmp:
        root = Path(tmp)
        with HubStore(pg_url).open() as store:
            (root / "user.tok").write_text(store.create_token("alice", "user"))
            for device in devices:
                (root / f"{device}.tok").write_text(store.create_token(f"lab-{device}", "agent", devices=[device]))
        for tok in root.glob("*.tok"):
            tok.chmod(0o600)
        procs: list[subprocess.Popen] = []
        clients: list[HubClient] = []
        homes = [root / "hub-a", root / "hub-b"]
        try:
            addresses = []
            for home in homes:
                address = f"127.0.0.1:{free_port()}"
                procs.append(start(["hub", "serve", "--listen", address, "--db", pg_url], home, "edgelat hub listening"))
                addresses.append(address)
            for device, address in zip(devices, addresses):  # dev1 dials hub A, dev2 hub B
                procs.append(start(["agent", "serve", "--hub", address, "--token-file", str(root / f"{device}.tok"),
                                    "--name", device, "--cache-dir", str(root / f"agent-{device}")],
                                   root / f"agent-{device}", "connected to hub"))
            user = (root / "user.tok").read_text().strip()
            clients = [HubClient(address, user) for address in addresses]
            served_by = {d["name"]: d.get("hub_id") for d in clients[0].devices()}
            jobs = []
            for i in range(per_device):  # each job its own thread count: its own rows
                for k, device in enumerate(devices):
                    client = clients[(i + k) % 2]  # through either hub, whichever serves the device
                    job, _ = client.submit("profile-ops", device, {"threads": 1 + i},
                                           {"specs": keys, "protocol": PROTOCOL, "rounds": 0})
                    jobs.append(job["id"])
            final = [wait(clients[0], j, lambda j: j["state"] in FINAL) for j in jobs]
            done = sum(j["state"] == "done" for j in final)
            again = sum(int(j.get("attempts") or 0) > 0 for j in final)
            wrong_hub = sum(j.get("hub_id") != served_by.get(j["device"]) for j in final)
            expected = len(jobs) * len(keys)
            counts: list[tuple[int, int]] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the other hub takes the rows in within a round or two
                counts = []
                for home in homes:
                    per_home = [rows(home, d, keys, 1 + i) for d in devices for i in range(per_device)]
                    counts.append((sum(s for s, _ in per_home), sum(h for _, h in per_home)))
                if all(stored == expected for stored, _ in counts):
                    break
                time.sleep(0.5)
        finally:
            for client in clients:
                client.close()
            stop(*reversed(procs))
    print("== two hubs on one PostgreSQL, an agent on each, jobs submitted through both")
    print(f"   jobs {len(jobs)}: done {done} (every job finished: {'yes' if done == len(jobs) else 'NO'}), "
          f"leased more than once {again}, run by a hub its device did not dial {wrong_hub}")
    for name, (stored, history) in zip(("hub A", "hub B"), counts):
        print(f"   {name}'s tables: rows expected {expected}, stored {stored}, lost {max(0, expected - stored)}, "
              f"duplicated {max(0, history - stored)}")


def _pg_url(arg: str | None) -> tuple[str | None, Any, str]:
    """A PostgreSQL URL, the throwaway cluster we started (to stop later), or why there is none."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from hub_db import given_or_throwaway  # the throwaway cluster the tests use

    return given_or_throwaway(arg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lease-ttl-s", type=float, default=5.0)
    parser.add_argument("--heartbeat-timeout-s", type=float, default=5.0)
    parser.add_argument("--pg", default=None, help="postgresql://... for drill 4 (default: EDGELAT_TEST_PG or a "
                        "throwaway cluster)")
    args = parser.parse_args()
    keys = [s.key for s in get_preset("smoke")]
    with tempfile.TemporaryDirectory(prefix="edgelat-hub-faults-") as tmp:
        root = Path(tmp)
        hub_home, agent_home = root / "hub-home", root / "agent-home"
        url = f"sqlite:///{root / 'hub.db'}"
        with HubStore(url).open() as store:
            (root / "user.tok").write_text(store.create_token("alice", "user"))
            (root / "agent.tok").write_text(store.create_token("lab", "agent", devices=["dev1"]))
        for tok in ("user.tok", "agent.tok"):
            (root / tok).chmod(0o600)
        port = free_port()
        address = f"127.0.0.1:{port}"
        hub_args = ["hub", "serve", "--listen", address, "--db", url, "--lease-ttl-s", str(args.lease_ttl_s),
                    "--heartbeat-timeout-s", str(args.heartbeat_timeout_s)]
        agent_args = ["agent", "serve", "--hub", address, "--token-file", str(root / "agent.tok"), "--name", "dev1",
                      "--cache-dir", str(agent_home / "cache")]
        hub = start(hub_args, hub_home, "edgelat hub listening")
        agent = start(agent_args, agent_home, "connected to hub")
        client = HubClient(address, (root / "user.tok").read_text().strip())
        try:
            # 1. kill -9 the hub mid-job, restart it on the same database.
            job, _ = client.submit("profile-ops", "dev1", {"threads": 1},
                                   {"specs": keys, "protocol": DRILL_PROTOCOL, "rounds": 0})
            before = wait(client, job["id"], lambda j: j["done"] >= 5)
            kill9(hub)
            fault = time.monotonic()
            hit = before["done"] < len(keys)  # the hub died with it: it finished only if all rows were in
            hub = start(hub_args, hub_home, "edgelat hub listening")
            wait(client, job["id"], lambda j: j["state"] == "queued" or j.get("hub_id") != before.get("hub_id")
                 or j["state"] in FINAL)
            requeue_s = time.monotonic() - fault
            final = wait(client, job["id"], lambda j: j["state"] in FINAL)
            stored, history = rows(hub_home, "dev1", keys, 1)
            report("kill -9 the hub mid-job, restart it", final, len(keys), stored, history, requeue_s, hit)

            # 2. kill -9 the agent mid-job (another thread count: new rows), then start it again.
            job, _ = client.submit("profile-ops", "dev1", {"threads": 2},
                                   {"specs": keys, "protocol": DRILL_PROTOCOL, "rounds": 0})
            wait(client, job["id"], lambda j: j["done"] >= 5)
            kill9(agent)
            fault = time.monotonic()
            hit = client.get(job["id"])["state"] not in FINAL
            wait(client, job["id"], lambda j: j["state"] == "queued" or j["state"] in FINAL)
            requeue_s = time.monotonic() - fault
            agent = start(agent_args, agent_home, "connected to hub")
            final = wait(client, job["id"], lambda j: j["state"] in FINAL)
            stored2, history2 = rows(hub_home, "dev1", keys, 2)
            report("kill -9 the agent mid-job, start it again", final, len(keys), stored2, history2, requeue_s, hit)

            # 3. The agent freezes (SIGSTOP: its connection stays open, no heartbeat comes): the hub
            #    drops it after the heartbeat timeout and requeues the job; a new agent finishes it.
            job, _ = client.submit("profile-ops", "dev1", {"threads": 3},
                                   {"specs": keys, "protocol": DRILL_PROTOCOL, "rounds": 0})
            wait(client, job["id"], lambda j: j["done"] >= 5)
            agent.send_signal(signal.SIGSTOP)
            fault = time.monotonic()
            hit = client.get(job["id"])["state"] not in FINAL
            wait(client, job["id"], lambda j: j["state"] == "queued" or j["state"] in FINAL)
            requeue_s = time.monotonic() - fault
            kill9(agent)
            agent = start(agent_args, agent_home, "connected to hub")
            final = wait(client, job["id"], lambda j: j["state"] in FINAL)
            stored3, history3 = rows(hub_home, "dev1", keys, 3)
            report(f"the agent freezes mid-job (heartbeat timeout {args.heartbeat_timeout_s:g} s), a new one "
                   "starts", final, len(keys), stored3, history3, requeue_s, hit)
        finally:
            client.close()
            stop(agent, hub)

    pg_url, cluster, why = _pg_url(args.pg)
    if pg_url is None:
        print(f"== two hubs on one PostgreSQL: not run ({why})")
        return
    try:
        two_hubs(pg_url, keys[:5], per_device=4)
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
