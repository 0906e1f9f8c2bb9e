"""Load on a whole hub over loopback: real `hub serve` processes, real agent streams, real Submit RPCs.

500 simulated agents dial the hub (real ``Hub.Connect`` gRPC streams, from a few worker
processes on asyncio), each serving one fake device that answers the hub's Agent-service
requests at once with real ``agent.proto`` messages: describe, has/put model (the upload is
checked against its sha256), and benchmark batches answered with a plausible, stable
latency per model. 20 users submit 20,000 one-kernel ``profile-ops`` jobs through the real
Submit RPC at a steady offered rate; the hub leases each one and runs the same library job
an agent on a desk would (kernel model built, uploaded, measured, drift sentinel around
it, row stored in the hub's tables).

Printed per setup: jobs/s (jobs done over the time from the first submit to the last
finish), p50/p99 time from submit to lease (the queue's own timestamps, ``created_at`` and
``leased_at``), each hub process's peak RSS (VmHWM) and the CPU time per job of the hubs, the
fake agents, the users and (a throwaway cluster's) the PostgreSQL server: on a 2-core machine
they share the cores, and the sum bounds the rate. Setups:
one hub on SQLite; then two hubs on one PostgreSQL (agents and users split between them), on ``--pg URL``,
``EDGELAT_TEST_PG`` or a throwaway cluster (the tests' ``tests/hub_db.py``), when one can
be had.

    python benchmarks/hub_load.py                              # the issue's full run
    python benchmarks/hub_load.py --jobs 2000 --agents 100     # a short one
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SETUPS = ("sqlite", "postgresql")
HEARTBEAT_S = 5.0
FAST_PROTOCOL = {"warmup": 1, "min_runs": 3, "max_runs": 10, "max_seconds": 0.2}
FACTS = {"kind": "board", "arch": "aarch64", "cpu_count": 4, "os": "linux", "fake": "answers at once"}


# ---------------------------------------------------------------- the fake devices (worker processes)

def _fake_result(request, item, device: str):
    """A plausible, repeatable measurement of one item: the same model on the same device gives
    the same latency (the drift sentinel sees a steady device)."""
    c, p = request.config, request.protocol
    return _fake_result_of(device, item.model_sha256, item.tag, c.runtime, c.threads, c.provider, c.precision,
                           p.min_runs)


@functools.lru_cache(maxsize=16384)
def _fake_result_of(device: str, sha: str, tag: str, runtime: str, threads: int, provider: str, precision: str,
                    min_runs: int):
    """:func:`_fake_result`, built once per item and device (the sentinel's come back every job)."""
    from edgelat import __version__
    from edgelat.proto import agent_pb2 as apb

    seed = int.from_bytes(hashlib.sha256(f"{device}/{sha}".encode()).digest()[:4], "big")
    median = 0.2 + (seed % 5000) / 1000.0  # 0.2 .. 5.2 ms
    config = apb.RuntimeConfig(runtime=runtime or "onnxruntime", threads=threads, provider=provider,
                               precision=precision, version="1.20.0")
    latency = apb.LatencySummary(median=median, mean=median * 1.01, std=median * 0.02, p10=median * 0.98,
                                 p90=median * 1.03, n=max(3, min_runs or 3), rel_ci=0.004, stable=True)
    env = {"fake_device": device, "cpu_governor": "performance", "load_1m": 0.1}
    return apb.BenchmarkResult(model_sha256=sha, config=config, latency=latency, session_ms=3.0,
                               first_run_ms=median * 2, energy_note="no battery sensor on this fake device",
                               environment_json=json.dumps(env), agent_version=__version__, tag=tag)


async def _fake_agent(channel, token: str, agent_id: str, device: str, connected: list[int],
                      stop: asyncio.Event) -> None:
    """One agent with one device, on one Connect stream; dials again if the stream breaks."""
    import grpc

    from edgelat import __version__
    from edgelat.proto import agent_pb2 as apb
    from edgelat.proto import hub_pb2 as pb
    from edgelat.proto import hub_pb2_grpc as pb_grpc

    stub = pb_grpc.HubStub(channel)
    models: set[str] = set()
    while not stop.is_set():
        out: asyncio.Queue = asyncio.Queue()
        hello = pb.Hello(agent_id=agent_id, agent_version=__version__,
                         devices=[pb.DeviceHello(name=device, facts_json=json.dumps(FACTS))])
        out.put_nowait(pb.AgentMessage(hello=hello))

        async def outgoing():
            while True:
                msg = await out.get()
                if msg is None:
                    return
                yield msg

        sent = [time.monotonic()]

        def reply(rid: int, last: bool = True, error: str = "", **body):
            sent[0] = time.monotonic()
            out.put_nowait(pb.AgentMessage(reply=pb.AgentReply(request_id=rid, last=last, error=error, **body)))

        async def beat():  # as the real agent: a heartbeat only after a quiet interval
            while True:
                await asyncio.sleep(max(0.05, HEARTBEAT_S - (time.monotonic() - sent[0])))
                if time.monotonic() - sent[0] >= HEARTBEAT_S:
                    sent[0] = time.monotonic()
                    out.put_nowait(pb.AgentMessage(heartbeat=pb.Heartbeat()))

        call = stub.Connect(outgoing(), metadata=(("authorization", f"Bearer {token}"),))
        uploads: dict[int, tuple[str, int, list[bytes]]] = {}
        beater = asyncio.ensure_future(beat())  # from the hello on, as the real agent's link
        try:
            async for msg in call:
                kind = msg.WhichOneof("body")
                rid = msg.request_id
                if kind == "welcome":
                    connected[0] += 1
                elif kind == "describe":
                    reply(rid, describe=apb.DescribeResponse(name=device, kind=FACTS["kind"], arch=FACTS["arch"],
                                                             agent_version=__version__, facts_json=json.dumps(FACTS)))
                elif kind == "has_model":
                    reply(rid, has_model=apb.HasModelResponse(present=msg.has_model.sha256 in models))
                elif kind == "put_chunk":
                    chunk = msg.put_chunk
                    sha, total, parts = uploads.pop(rid, (chunk.sha256, chunk.total_bytes, []))
                    parts.append(chunk.data)
                    if not msg.last:
                        uploads[rid] = (sha, total, parts)
                        continue
                    data = b"".join(parts)
                    if hashlib.sha256(data).hexdigest() != sha or len(data) != total:
                        reply(rid, error=f"CorruptModel: upload of {sha} does not match its sha256 or size")
                        continue
                    models.add(sha)
                    reply(rid, put_model=apb.PutModelResponse(sha256=sha, bytes_received=len(data)))
                elif kind == "benchmark_batch":
                    batch = msg.benchmark_batch
                    count = len(batch.items)
                    for n, item in enumerate(batch.items, 1):
                        if item.model_sha256 not in models:
                            result = apb.BenchmarkResult(model_sha256=item.model_sha256, tag=item.tag,
                                                         agent_version=__version__,
                                                         error=f"ModelNotCached: {item.model_sha256} was never uploaded")
                        else:
                            result = _fake_result(batch, item, device)
                        # the last result ends the batch itself (an agent that has it at hand need not
                        # send an empty closing reply)
                        reply(rid, last=n == count, result=result)
                    if not count:
                        reply(rid)
                # cancel: every request was answered at once, nothing to stop
        except grpc.aio.AioRpcError as exc:
            if stop.is_set():
                return
            print(f"agent {agent_id}: stream broke ({exc.code().name}); dialling again", file=sys.stderr)
            await asyncio.sleep(0.5)
        finally:
            if beater is not None:
                beater.cancel()
            out.put_nowait(None)
            call.cancel()


def agent_worker(targets: list[tuple[str, str, str, str]], ready, stop) -> None:
    """A worker process: one asyncio loop serving (address, token, agent id, device) agents."""
    import grpc

    async def main() -> None:
        stopped = asyncio.Event()
        channels = {}
        for address, *_ in targets:
            if address not in channels:
                # a few channels per hub, as many agents' TCP connections would spread
                channels[address] = [grpc.aio.insecure_channel(
                    address, options=[("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length",
                                                                               64 << 20)]) for _ in range(8)]
        connected = [0]
        tasks = [asyncio.ensure_future(_fake_agent(channels[addr][i % 8], tok, agent, dev, connected, stopped))
                 for i, (addr, tok, agent, dev) in enumerate(targets)]
        while connected[0] < len(targets):
            await asyncio.sleep(0.1)
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.2)
        stopped.set()
        for t in tasks:
            t.cancel()
        for chans in channels.values():
            for c in chans:
                await c.close()

    asyncio.run(main())


# ---------------------------------------------------------------- hubs, users, figures

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _edgelat() -> list[str]:
    exe = Path(sys.executable).with_name("edgelat")
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from edgelat.cli import main; main()"]


def profiled_hub(out: str, argv: list[str]) -> None:
    """Run ``edgelat`` with ``argv`` under cProfile on every thread; the merged stats go to ``out``
    when it exits (``--profile-hub``: where a hub's CPU goes under this load)."""
    import atexit
    import cProfile
    import pstats

    profilers: list[cProfile.Profile] = []
    guard = threading.Lock()

    def start_thread_profiler(*_: object) -> None:
        prof = cProfile.Profile(time.thread_time)  # CPU, not waits; enable() takes sys.setprofile over
        with guard:
            profilers.append(prof)
        prof.enable()

    def dump() -> None:
        with guard:
            profs = list(profilers)
        stats = None
        for prof in profs:
            prof.disable()
            stats = pstats.Stats(prof) if stats is None else stats.add(prof)
        if stats is not None:
            stats.dump_stats(out)

    threading.setprofile(start_thread_profiler)  # called once in each new thread, then replaced
    main_prof = cProfile.Profile(time.thread_time)
    profilers.append(main_prof)
    main_prof.enable()
    atexit.register(dump)
    from edgelat.cli import main as cli_main

    sys.argv = ["edgelat", *argv]
    try:
        cli_main()
    except SystemExit:
        pass


def start_hub(url: str, home: Path, profile_to: str | None = None) -> tuple[subprocess.Popen, str]:
    """``edgelat hub serve`` in a subprocess; returns it and its address once it is listening."""
    port = _free_port()
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, EDGELAT_HOME=str(home))
    log = open(home / "hub.log", "w")
    argv = ["hub", "serve", "--listen", f"127.0.0.1:{port}", "--db", url]
    cmd = _edgelat() + argv if profile_to is None else [sys.executable, __file__, "--_profiled-hub", profile_to, *argv]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    line = proc.stdout.readline()
    if "listening" not in line:
        proc.kill()
        raise RuntimeError(f"the hub did not start: {line!r}; see {home / 'hub.log'}")
    return proc, f"127.0.0.1:{port}"


def peak_rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def server_cpu_seconds(postmaster: int | None) -> float:
    """CPU of a PostgreSQL server so far: its postmaster with the backends it reaped, and the live
    ones (NaN when unknown: a server given by --pg, or one not readable here)."""
    if postmaster is None:
        return float("nan")
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid == postmaster or ppid == postmaster:
            total += sum(int(f) for f in fields[11:15]) / tick  # utime, stime, cutime, cstime
    return total


def postmaster_pid(cluster: object | None) -> int | None:
    """The throwaway cluster's server process (None for a server given by --pg)."""
    try:
        return int((Path(cluster.dir) / "data" / "postmaster.pid").read_text().split()[0])  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError, IndexError):
        return None


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))]


def kernel_keys(count: int) -> list[str]:
    """``count`` distinct catalog kernels (each device gets each at most once: nothing is skipped)."""
    from edgelat.profiler.spaces import get_space

    keys = [s.key for s in get_space("ofa-mbv3").kernel_vocabulary()]
    if count > len(keys):
        raise SystemExit(f"--jobs/--agents needs {count} distinct kernels per device; the space has {len(keys)}")
    return keys[:count]


def run_setup(name: str, url: str, hubs: int, args: argparse.Namespace, tmp: Path,
              server: int | None = None) -> dict:
    from sqlalchemy import create_engine, text

    from edgelat.hub.queue import HubStore

    setup = HubStore(url, hub_id="bench-setup").open()
    agent_token = setup.create_token("bench-agents", "agent")
    user_tokens = [setup.create_token(f"user{u:02d}", "user") for u in range(args.users)]
    setup.close()
    procs = []
    try:
        for h in range(hubs):
            out = None if args.profile_hub is None else f"{args.profile_hub}.{name}-hub{h}.pstats"
            procs.append(start_hub(url, tmp / f"{name}-hub{h}", out))
        addresses = [a for _, a in procs]
        devices = [f"dev{i:04d}" for i in range(args.agents)]
        targets = [(addresses[i % hubs], agent_token, f"agent{i:04d}", d) for i, d in enumerate(devices)]
        ctx = mp.get_context("spawn")
        stop = ctx.Event()
        workers = []
        for w in range(args.workers):
            ready = ctx.Event()
            p = ctx.Process(target=agent_worker, args=(targets[w::args.workers], ready, stop), daemon=True)
            p.start()
            workers.append((p, ready))
        t0 = time.perf_counter()
        for p, ready in workers:
            if not ready.wait(300):
                raise RuntimeError("the fake agents did not all connect within 300 s")
        connect_s = time.perf_counter() - t0

        own = os.times()
        own_cpu0 = own.user + own.system  # the users' submits (and this loop's polls) from here on
        server_cpu0 = server_cpu_seconds(server)
        per_device = -(-args.jobs // args.agents)
        keys = kernel_keys(per_device)
        errors: list[str] = []
        submitted = [0]
        guard = threading.Lock()
        start = time.perf_counter() + 0.5

        def user(u: int) -> None:
            from edgelat.hub.client import HubClient

            with HubClient(addresses[u % hubs], user_tokens[u], timeout_s=60) as client:
                for n, job in enumerate(range(u, args.jobs, args.users)):
                    wait = start + job / args.rate - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                    device = devices[job % args.agents]
                    params = {"specs": [keys[job // args.agents]], "protocol": FAST_PROTOCOL, "rounds": 0}
                    try:
                        client.submit("profile-ops", device, {"runtime": "onnxruntime", "threads": 1}, params)
                    except Exception as exc:  # noqa: BLE001 - counted and shown
                        with guard:
                            errors.append(f"submit: {exc}")
                        continue
                    with guard:
                        submitted[0] += 1

        users = [threading.Thread(target=user, args=(u,), daemon=True) for u in range(args.users)]
        for t in users:
            t.start()
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        deadline = time.monotonic() + args.jobs / args.rate * 4 + 300
        final = 0
        while time.monotonic() < deadline:
            time.sleep(1.0)
            with engine.connect() as conn:
                final = conn.execute(text("SELECT COUNT(*) FROM hub_jobs WHERE state IN "
                                          "('done', 'failed', 'cancelled')")).scalar()
            if final >= args.jobs or (final >= submitted[0] and not any(t.is_alive() for t in users)):
                break
        for t in users:
            t.join(5)
        rss = [peak_rss_mib(p.pid) for p, _ in procs]
        cpu = sum(cpu_seconds(p.pid) for p, _ in procs)
        agents_cpu = sum(cpu_seconds(p.pid) for p, _ in workers)
        server_cpu = server_cpu_seconds(server) - server_cpu0
        own = os.times()
        own_cpu = own.user + own.system - own_cpu0
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT state, created_at, leased_at, finished_at, error FROM hub_jobs")).all()
        engine.dispose()
        stop.set()
        for p, _ in workers:
            p.join(10)
            if p.is_alive():
                p.kill()
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    done = [r for r in rows if r.state == "done"]
    waits = sorted((r.leased_at - r.created_at) * 1000 for r in rows if r.leased_at is not None)
    if args.waits:
        t0 = min(r.created_at for r in rows)
        with open(f"{args.waits}.{name}.csv", "w") as f:
            f.write("submitted_s,wait_ms\n")
            for r in sorted((r for r in rows if r.leased_at is not None), key=lambda r: r.created_at):
                f.write(f"{r.created_at - t0:.4f},{(r.leased_at - r.created_at) * 1000:.2f}\n")
    span = max(r.finished_at for r in done) - min(r.created_at for r in rows) if done else float("nan")
    failed = [r for r in rows if r.state == "failed"]
    return dict(setup=name, hubs=hubs, jobs=len(rows), done=len(done), failed=len(failed),
                first_errors=[r.error for r in failed[:3]] + errors[:3], span_s=span,
                jobs_per_s=len(done) / span if done else 0.0, p50_ms=_percentile(waits, 50),
                p99_ms=_percentile(waits, 99), max_ms=waits[-1] if waits else float("nan"),
                rss_mib=rss, cpu_ms_per_job=cpu * 1000 / len(done) if done else float("nan"), connect_s=connect_s,
                unfinished=len(rows) - len(done) - len(failed),
                agents_ms_per_job=agents_cpu * 1000 / len(done) if done else float("nan"),
                users_ms_per_job=own_cpu * 1000 / len(done) if done else float("nan"),
                server_ms_per_job=server_cpu * 1000 / len(done) if done else float("nan"))


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
    ap.add_argument("--agents", type=int, default=500)
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--rate", type=float, default=250.0, help="offered submissions per second, all users together")
    ap.add_argument("--workers", type=int, default=2, help="processes the fake agents run in")
    ap.add_argument("--setups", default=",".join(SETUPS), help="sqlite (one hub), postgresql (two hubs)")
    ap.add_argument("--profile-hub", default=None, metavar="PREFIX",
                    help="run each hub under cProfile (all threads; slower) and write PREFIX.SETUP-hubN.pstats")
    ap.add_argument("--logs", default=None, metavar="DIR", help="keep each hub's log in DIR")
    ap.add_argument("--waits", default=None, metavar="PREFIX",
                    help="write each job's submit time and submit->lease wait to PREFIX.SETUP.csv")
    ap.add_argument("--pg", default=None, help="postgresql://... (default: EDGELAT_TEST_PG or a throwaway cluster)")
    args = ap.parse_args()
    if min(args.jobs, args.agents, args.users, args.workers) < 1 or args.rate <= 0:
        ap.error("--jobs, --agents, --users, --workers and --rate must be positive")

    print(f"hub load: load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} before the run; "
          f"{args.agents} fake agents in {args.workers} processes, {args.users} users, {args.jobs} "
          f"one-kernel profile-ops jobs offered at {args.rate:g}/s; cpus={os.cpu_count()}", flush=True)
    rc = 0
    for name in [s.strip() for s in args.setups.split(",") if s.strip()]:
        with tempfile.TemporaryDirectory(prefix="edgelat-hub-load-") as tmp_name:
            tmp = Path(tmp_name)
            cluster = None
            try:
                if name == "sqlite":
                    r = run_setup(name, f"sqlite:///{tmp / 'hub.db'}", 1, args, tmp)
                elif name == "postgresql":
                    url, cluster, why = _pg_url(args.pg)
                    if url is None:
                        print(f"postgresql: skipped ({why})", flush=True)
                        continue
                    r = run_setup(name, url, 2, args, tmp, postmaster_pid(cluster))
                else:
                    print(f"{name}: unknown setup (one of {', '.join(SETUPS)})")
                    rc = 2
                    continue
            finally:
                if cluster is not None:
                    cluster.stop()
                if args.logs:
                    import shutil

                    for log in tmp.glob("*/hub.log"):
                        Path(args.logs).mkdir(parents=True, exist_ok=True)
                        shutil.copy(log, Path(args.logs) / f"{log.parent.name}.log")
        rss = ", ".join(f"{m:.0f}" for m in r["rss_mib"])
        print(f"{name} ({r['hubs']} hub{'s' if r['hubs'] > 1 else ''}): {r['done']} of {r['jobs']} jobs done in "
              f"{r['span_s']:.1f} s = {r['jobs_per_s']:.1f} jobs/s; submit->lease p50 {r['p50_ms']:.1f} ms, "
              f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms; hub peak RSS {rss} MiB; "
              f"hub CPU {r['cpu_ms_per_job']:.1f} ms per job (all hubs, start-up included; fake agents "
              f"{r['agents_ms_per_job']:.1f}, users {r['users_ms_per_job']:.1f}"
              + (f", PostgreSQL server {r['server_ms_per_job']:.1f} from the first submit on"
                 if r["server_ms_per_job"] == r["server_ms_per_job"] else "") + "); "
              f"agents connected in {r['connect_s']:.1f} s; failed {r['failed']}, unfinished {r['unfinished']}",
              flush=True)
        for e in r["first_errors"]:
            print(f"  error: {e}")
        if r["failed"] or r["unfinished"] or r["done"] < args.jobs:
            rc = 1
    return rc


if __name__ == "__main__":
    if sys.argv[1:2] == ["--_profiled-hub"]:
        profiled_hub(sys.argv[2], sys.argv[3:])
        sys.exit(0)
    sys.exit(main())
