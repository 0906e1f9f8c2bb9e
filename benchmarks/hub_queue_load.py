"""Load on the hub's job queue: many agents' devices online, many users submitting, leases at once.

500 simulated agents (one device each, answering at once, heartbeating every 10 s) are online;
20 users submit 20,000 jobs at a steady offered rate; dispatcher threads lease and finish jobs as
soon as they can. Printed,
per engine: jobs/s (finished jobs over the run's wall time, so at most the offered rate), the
median (p50) and p99 time from submit to lease, that no job was leased twice, and then the
capacity: how fast the dispatchers work off a backlog queued up front.

SQLite: one hub on one file. PostgreSQL (``--pg URL``, ``EDGELAT_TEST_PG``, or a throwaway
cluster started with the installed initdb/pg_ctl): two HubStore instances ("two hubs"), each
serving half of the agents. Everything is measured in this run; nothing is assumed.

    python benchmarks/hub_queue_load.py                  # both engines, defaults of the issue
    python benchmarks/hub_queue_load.py --jobs 4000 --engines sqlite
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

from edgelat.errors import EdgelatError
from edgelat.hub.queue import HubStore


HEARTBEAT_S = 10.0


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[i]


def run_load(stores: list[HubStore], *, jobs: int, users: int, agents: int, rate: float,
             workers_per_hub: int, per_agent: bool, seed: int = 1) -> dict:
    """Drive the stores: agents online, paced submissions, dispatchers leasing and finishing."""
    first = stores[0]
    first.create_token("bench-agents", "agent")  # a token that may serve any device
    devices_of: dict[int, list[str]] = {h: [] for h in range(len(stores))}
    agents_of: dict[int, list[str]] = {h: [] for h in range(len(stores))}
    for i in range(agents):
        hub = i * len(stores) // agents
        name = f"dev{i:04d}"
        stores[hub].agent_online(f"agent{i:04d}", "bench-agents", {name: {"kind": "fake", "answers": "at once"}})
        devices_of[hub].append(name)
        agents_of[hub].append(f"agent{i:04d}")
    every = [d for h in sorted(devices_of) for d in devices_of[h]]

    submitted_at: dict[str, float] = {}
    leased_at: dict[str, float] = {}
    leased_twice: list[str] = []
    guard = threading.Lock()
    done = threading.Event()
    finished = [0]
    errors: list[str] = []
    per_user = [jobs // users + (1 if u < jobs % users else 0) for u in range(users)]
    user_rate = rate / users
    start = time.perf_counter() + 0.5

    def submitter(u: int) -> None:
        rng = random.Random(seed * 1000 + u)
        store = stores[u % len(stores)]
        try:
            for k in range(per_user[u]):
                due = start + k / user_rate + u / rate
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                t0 = time.perf_counter()
                job_id = store.submit(f"user{u:02d}", "profile-ops", rng.choice(every),
                                      {"runtime": "onnxruntime", "threads": 1}, {"kernel": "conv2d", "n": k},
                                      priority=0)
                with guard:
                    submitted_at[job_id] = t0
        except EdgelatError as exc:
            errors.append(f"submit: {exc}")

    def heartbeats(hub: int) -> None:
        """Every agent heartbeats every HEARTBEAT_S, spread evenly (as connected agents would)."""
        store, mine = stores[hub], agents_of[hub]
        try:
            while not done.is_set():
                for agent in mine:
                    if done.wait(HEARTBEAT_S / len(mine)):
                        return
                    store.heartbeat(agent)
        except EdgelatError as exc:
            errors.append(f"heartbeat: {exc}")

    def dispatcher(hub: int, mine: list[str] | None) -> None:
        """Lease and finish at once. ``mine``: one agent pulling for its own devices; None: the
        hub's dispatcher, asking for any free device of its agents."""
        store = stores[hub]
        try:
            while not done.is_set():
                marker = store.work_marker()
                lease = store.lease(mine, ttl_s=30)
                if lease is None:
                    store.wait_for_work(marker, 1.0, mine)  # woken by a submit, on any hub
                    continue
                now = time.perf_counter()
                job_id = lease.job["id"]
                with guard:
                    if job_id in leased_at:
                        leased_twice.append(job_id)
                    leased_at[job_id] = now
                store.finish(lease.lease_id, "done", result={"rows": 1})  # the fake device answers at once
                with guard:
                    finished[0] += 1
                    if finished[0] >= jobs:
                        done.set()
        except EdgelatError as exc:
            errors.append(f"lease/finish: {exc}")
            done.set()

    threads = [threading.Thread(target=submitter, args=(u,), daemon=True) for u in range(users)]
    if per_agent:
        threads += [threading.Thread(target=dispatcher, args=(h, [name]), daemon=True)
                    for h in range(len(stores)) for name in devices_of[h]]
    else:
        threads += [threading.Thread(target=dispatcher, args=(h, None), daemon=True)
                    for h in range(len(stores)) for _ in range(workers_per_hub)]
    threads += [threading.Thread(target=heartbeats, args=(h,), daemon=True) for h in range(len(stores))]
    for t in threads:
        t.start()
    budget = jobs / rate * 3 + 120
    done.wait(budget)
    end = time.perf_counter()
    done.set()
    for t in threads:
        t.join(30)
    lat = sorted((leased_at[j] - submitted_at[j]) * 1000 for j in leased_at if j in submitted_at)
    wall = end - start
    return dict(
        finished=finished[0], wall_s=wall, jobs_per_s=finished[0] / wall if wall > 0 else float("nan"),
        p50_ms=_percentile(lat, 50), p99_ms=_percentile(lat, 99), max_ms=lat[-1] if lat else float("nan"),
        leased_twice=len(leased_twice), errors=errors[:3], timed_out=finished[0] < jobs,
    )


def drain_rate(stores: list[HubStore], *, jobs: int, users: int, workers_per_hub: int) -> float:
    """Capacity: queue ``jobs`` first (not timed), then time the dispatchers leasing and finishing
    them all (the devices are those that run_load brought online). Returns jobs/s."""
    devices = sorted(d["name"] for d in stores[0].devices())
    for k in range(jobs):
        stores[k % len(stores)].submit(f"user{k % users:02d}", "profile-ops", devices[k % len(devices)], {}, {})
    left = [jobs]
    guard = threading.Lock()

    def dispatcher(store: HubStore) -> None:
        while True:
            with guard:
                if left[0] <= 0:
                    return
            lease = store.lease(ttl_s=30)
            if lease is None:
                time.sleep(0.001)
                continue
            store.finish(lease.lease_id, "done")
            with guard:
                left[0] -= 1

    threads = [threading.Thread(target=dispatcher, args=(s,), daemon=True)
               for s in stores for _ in range(workers_per_hub)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    return (jobs - left[0]) / (time.perf_counter() - t0)


def _pg_url(arg: str | None) -> tuple[str | None, object | None, str]:
    """A PostgreSQL URL, the throwaway cluster we started (to stop later), or why there is none."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    try:
        from hub_db import given_or_throwaway  # the throwaway cluster the tests use
    except ImportError as exc:
        return None, None, f"cannot start a throwaway cluster ({exc}); pass --pg URL"
    return given_or_throwaway(arg)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--agents", type=int, default=500)
    ap.add_argument("--rate", type=float, default=250.0, help="offered submissions per second, all users together")
    ap.add_argument("--workers", type=int, default=4, help="dispatcher threads per hub")
    ap.add_argument("--per-agent", action="store_true",
                    help="one thread per agent, each leasing for its own device (instead of --workers dispatchers)")
    ap.add_argument("--drain", type=int, default=5000, help="jobs queued up front to measure capacity (0: skip)")
    ap.add_argument("--engines", default="sqlite,postgresql")
    ap.add_argument("--pg", default=None, help="postgresql://... (default: EDGELAT_TEST_PG or a throwaway cluster)")
    args = ap.parse_args()

    print(f"hub queue load: {args.agents} agents, {args.users} users, {args.jobs} jobs offered at "
          f"{args.rate:g}/s, {args.workers} dispatcher threads per hub"
          f"{', per-agent leases' if args.per_agent else ''}; cpus={os.cpu_count()}", flush=True)
    rc = 0
    for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
        cluster = None
        tmp = tempfile.TemporaryDirectory(prefix="edgelat-hubload-")
        try:
            if engine == "sqlite":
                stores = [HubStore(f"sqlite:///{tmp.name}/hub.db", hub_id="hub-1").open()]
            elif engine == "postgresql":
                url, cluster, why = _pg_url(args.pg)
                if url is None:
                    print(f"postgresql: skipped ({why})")
                    continue
                stores = [HubStore(url, hub_id=f"hub-{i + 1}").open() for i in range(2)]
            else:
                print(f"{engine}: unknown engine (sqlite, postgresql)")
                rc = 2
                continue
            try:
                r = run_load(stores, jobs=args.jobs, users=args.users, agents=args.agents, rate=args.rate,
                             workers_per_hub=args.workers, per_agent=args.per_agent)
                drain = drain_rate(stores, jobs=args.drain, users=args.users, workers_per_hub=args.workers) \
                    if args.drain > 0 else float("nan")
            finally:
                for s in stores:
                    s.close()
            rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{engine} ({len(stores)} hub{'s' if len(stores) > 1 else ''}): {r['finished']} jobs in "
                  f"{r['wall_s']:.1f} s = {r['jobs_per_s']:.0f} jobs/s; submit->lease p50 {r['p50_ms']:.1f} ms, "
                  f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms; leased twice: {r['leased_twice']}; "
                  f"process max RSS {rss_mb:.0f} MiB{'; DID NOT FINISH' if r['timed_out'] else ''}", flush=True)
            print(f"{engine}: capacity with {args.drain} jobs already queued: {drain:.0f} jobs/s leased and "
                  f"finished", flush=True)
            for e in r["errors"]:
                print(f"  error: {e}")
            if r["leased_twice"] or r["errors"] or r["timed_out"]:
                rc = 1
        except EdgelatError as exc:
            print(f"{engine}: {exc}")
            rc = 1
        finally:
            if cluster is not None:
                cluster.stop()
            tmp.cleanup()
    return rc


if __name__ == "__main__":
    sys.exit(main())
