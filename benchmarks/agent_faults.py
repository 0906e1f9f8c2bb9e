"""Fault scenarios against a real ``edgelat agent serve`` on loopback: what happened, and whether
any row was lost or duplicated.

Usage: python benchmarks/agent_faults.py [--only TEXT] [--list]

Each scenario starts its own agent process (port 0, throw-away cache and database) and prints
one block: the fault, what the agent and the clients saw, and for scenarios that write rows,
the rows expected, stored, lost and duplicated. Scenarios: a stalled upload next to another
client's batch; an uploader killed mid-upload; partial files left by a killed agent; agent
memory during a 256 MiB upload; listening beyond loopback without a token; out-of-range
request values; the benchmark worker killed mid-profile (then the same profile rerun); a model
over the memory limit and one declaring a 40 GB input; a model over its time limit; the same
huge-input model on the in-process ``local`` device; the store's faults (damaged, empty,
truncated, older-schema, pickled, locked, read-only and full databases, a home that is a file)
through real ``edgelat`` commands on a table measured by a real agent; device names (``local``,
a taken name, remove and archive, a name answering as another board); a phone (the adbd
double of ``tests/``): its model cache cap, a rebuilt runner of the same size, a CPU list of
four billion entries.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import pickle
import queue
import re
import shutil
import sqlite3
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import grpc
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgelat.agents.cache import PARTIAL_PREFIX, sha256_bytes
from edgelat.agents.client import LocalClient
from edgelat.agents.local import LocalBackend
from edgelat.agents.remote import GrpcClient
from edgelat.agents.server import CHUNK_BYTES
from edgelat.values import BenchmarkItem, MeasurementProtocol, RuntimeConfig
from edgelat.devices.registry import Registry
from edgelat.lut.store import kernel_rows, open_db
from edgelat.profiler.builders import build_model
from edgelat.profiler.jobs import profile_kernels
from edgelat.profiler.presets import get_preset
from edgelat.proto import agent_pb2 as pb
from edgelat.proto import agent_pb2_grpc as pb_grpc

READY = "edgelat agent listening on "
FAST = MeasurementProtocol(warmup=1, min_runs=3, max_runs=20, max_seconds=0.3)
CPU = RuntimeConfig()


class Agent:
    """One ``edgelat agent serve`` process on 127.0.0.1:<free port>."""

    def __init__(self, workdir: Path, *args: str, prefix: tuple[str, ...] = ()) -> None:
        self.cache_dir = workdir / "cache"
        cmd = [*prefix, sys.executable, "-c", "from edgelat.cli import main; main()", "agent", "serve",
               "--listen", "127.0.0.1:0", "--cache-dir", str(self.cache_dir), *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.lines: list[str] = []
        ready: "queue.Queue[str]" = queue.Queue()

        def pump() -> None:
            for line in self.proc.stdout:  # type: ignore[union-attr]
                self.lines.append(line.rstrip())
                if line.startswith(READY):
                    ready.put(line)
            ready.put("")

        threading.Thread(target=pump, daemon=True).start()
        line = ready.get(timeout=60)
        if not line:
            raise SystemExit("agent exited before it was ready:\n" + "\n".join(self.lines))
        self.ready_line = line.strip()
        self.address = "127.0.0.1:" + line[len(READY):].split()[0].rpartition(":")[2]
        with GrpcClient(self.address, timeout_s=30) as client:
            client.describe()

    def workers(self) -> list[int]:
        kids = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            for kid in (task / "children").read_text().split():
                try:
                    if b"spawn_main" in Path(f"/proc/{kid}/cmdline").read_bytes():
                        kids.append(int(kid))
                except OSError:
                    pass
        return kids

    def status_kb(self, field: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise RuntimeError(field)

    def partials(self) -> list[str]:
        return [p.name for p in self.cache_dir.iterdir() if p.name.startswith(PARTIAL_PREFIX)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def conv_model(cin: int, cout: int, side: int, k: int = 1) -> bytes:
    """A single Conv on a ``side`` x ``side`` image (tiny file, outputs as large as asked)."""
    w = numpy_helper.from_array(np.full((cout, cin, k, k), 0.01, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[k // 2] * 4)], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, side, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, side, side])], initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def rows_line(expected: int, tags: list[str]) -> str:
    lost = expected - len(set(tags))
    duplicated = len(tags) - len(set(tags))
    return f"rows: expected {expected}, got {len(tags)}, lost {lost}, duplicated {duplicated}"


def report(title: str, lines: list[str]) -> None:
    print(f"\n== {title}")
    for line in lines:
        print(f"   {line}")


def short_paths(text: str) -> str:
    """Messages name the scenario's throw-away folder: shown as $TMP."""
    return re.sub(re.escape(tempfile.gettempdir()) + r"/edgelat-faults-[A-Za-z0-9_]+", "$TMP", text)


def one_line(text: str, limit: int = 150) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- scenarios --------------------------------------------------------------------------------


def stalled_upload(tmp: Path) -> list[str]:
    agent = Agent(tmp, "--upload-idle-s", "3")
    try:
        release = threading.Event()
        data = os.urandom(4 * CHUNK_BYTES)
        seen: dict[str, Any] = {}

        def chunks():
            yield pb.ModelChunk(sha256=sha256_bytes(data), total_bytes=len(data), data=data[:CHUNK_BYTES])
            release.wait(60)

        def stalled() -> None:
            t0 = time.monotonic()
            with grpc.insecure_channel(agent.address) as channel:
                try:
                    pb_grpc.AgentStub(channel).PutModel(chunks(), timeout=60)
                except grpc.RpcError as exc:
                    seen["stalled"] = (exc.code().name, exc.details(), time.monotonic() - t0)

        thread = threading.Thread(target=stalled)
        thread.start()
        while not agent.partials():
            time.sleep(0.02)
        t0 = time.monotonic()
        with GrpcClient(agent.address, timeout_s=30) as other:
            items = [BenchmarkItem(other.put_model(conv_model(4, 4 + i, 16, 3)), "onnx", f"m{i}") for i in range(5)]
            tags = [r.tag for r in other.benchmark_batch(items, CPU, FAST) if r.ok]
        other_s = time.monotonic() - t0
        still_open = thread.is_alive()
        thread.join(30)
        release.set()
        code, details, after = seen.get("stalled", ("none", "", 0.0))
        t1 = time.monotonic()
        while agent.partials() and time.monotonic() - t1 < 10:  # the client hears before the handler wakes
            time.sleep(0.02)
        gone = time.monotonic() - t1
        return [
            f"another client uploaded 5 models and measured them in {other_s:.2f} s "
            f"while the stalled upload was {'still open' if still_open else 'already closed'}",
            rows_line(5, tags),
            f"stalled client got {code} after {after:.1f} s: {details}",
            f"partial files left: {len(agent.partials())} ({gone:.2f} s after the client heard)",
        ]
    finally:
        agent.stop()


def killed_uploader(tmp: Path) -> list[str]:
    agent = Agent(tmp, "--upload-idle-s", "3")
    try:
        script = (
            "import os, sys, time, grpc\n"
            "from edgelat.proto import agent_pb2 as pb, agent_pb2_grpc as pb_grpc\n"
            "data = os.urandom(8 << 20)\n"
            "def chunks():\n"
            "    yield pb.ModelChunk(sha256='0' * 64, total_bytes=len(data), data=data[:1 << 20])\n"
            "    print('sent', flush=True); time.sleep(3600)\n"
            f"pb_grpc.AgentStub(grpc.insecure_channel('{agent.address}')).PutModel(chunks())\n"
        )
        uploader = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        uploader.stdout.readline()  # type: ignore[union-attr]
        while not agent.partials():
            time.sleep(0.02)
        uploader.kill()
        uploader.wait()
        t0 = time.monotonic()
        while agent.partials() and time.monotonic() - t0 < 30:
            time.sleep(0.05)
        gone = time.monotonic() - t0
        with GrpcClient(agent.address, timeout_s=30) as client:
            result = client.benchmark(BenchmarkItem(client.put_model(conv_model(4, 8, 16, 3)), "onnx", "after"), CPU, FAST)
        return [
            f"uploader SIGKILLed after one chunk; its partial file was gone {gone:.2f} s later "
            f"(partials left: {len(agent.partials())})",
            f"next client's benchmark: {'ok' if result.ok else result.error}",
        ]
    finally:
        agent.stop()


def partials_at_start(tmp: Path) -> list[str]:
    cache = tmp / "cache"
    cache.mkdir(parents=True)
    old = cache / f"{PARTIAL_PREFIX}from-a-killed-agent"
    old.write_bytes(os.urandom(CHUNK_BYTES))
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    agent = Agent(tmp)
    try:
        return [f"a 1 MiB partial file an hour old before start; after start: "
                f"{'still there' if old.exists() else 'removed'}; agent said: "
                + next((line.split(' ', 1)[1] for line in agent.lines if "partial upload" in line), "nothing")]
    finally:
        agent.stop()


def upload_memory(tmp: Path) -> list[str]:
    agent = Agent(tmp)
    try:
        data = os.urandom(256 * CHUNK_BYTES)
        with GrpcClient(agent.address, timeout_s=120) as client:
            Path(f"/proc/{agent.proc.pid}/clear_refs").write_text("5")
            before = agent.status_kb("VmRSS")
            t0 = time.monotonic()
            client.put_model(data)
            took = time.monotonic() - t0
            peak = agent.status_kb("VmHWM")
        return [f"256 MiB upload in {took:.1f} s: agent RSS {before / 1024:.0f} MiB before, peak "
                f"{peak / 1024:.0f} MiB (+{(peak - before) / 1024:.1f} MiB; chunk {CHUNK_BYTES >> 20} MiB)"]
    finally:
        agent.stop()


def listen_without_token(tmp: Path) -> list[str]:
    cmd = [sys.executable, "-c", "from edgelat.cli import main; main()", "agent", "serve",
           "--listen", "0.0.0.0:0", "--cache-dir", str(tmp / "c")]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    agent = Agent(tmp, "--listen", "0.0.0.0:0", "--insecure")
    try:
        return [f"0.0.0.0 without a token: exit {refused.returncode}: {one_line(refused.stderr)}",
                f"with --insecure: {agent.ready_line}"]
    finally:
        agent.stop()


def bad_values(tmp: Path) -> list[str]:
    agent = Agent(tmp)
    cases = [("max_seconds", math.inf), ("max_seconds", math.nan), ("max_seconds", 1e300), ("max_runs", 2**31 - 1),
             ("warmup", 10**7), ("target_rel_ci", -1.0), ("threads", 10**6), ("threads", 0), ("provider", "x" * 10**5),
             ("tag", "t" * 10**5)]
    try:
        codes: dict[str, int] = {}
        sample = ""
        with grpc.insecure_channel(agent.address) as channel:
            stub = pb_grpc.AgentStub(channel)
            for name, value in cases:
                protocol = dict(warmup=1, min_runs=3, max_runs=20, target_rel_ci=0.02, max_seconds=0.3)
                config = dict(runtime="onnxruntime", threads=1, provider="cpu")
                item = dict(model_sha256="a" * 64, model_format="onnx", tag="t")
                for part in (protocol, config, item):
                    if name in part:
                        part[name] = value
                request = pb.BenchmarkBatchRequest(items=[pb.BenchmarkItem(**item)], config=pb.RuntimeConfig(**config),
                                                   protocol=pb.MeasurementProtocol(**protocol))
                try:
                    list(stub.BenchmarkBatch(request, timeout=10))
                    codes["OK"] = codes.get("OK", 0) + 1
                except grpc.RpcError as exc:
                    codes[exc.code().name] = codes.get(exc.code().name, 0) + 1
                    named = name in exc.details()
                    codes["naming the field"] = codes.get("naming the field", 0) + named
                    sample = sample or exc.details()
        return [f"{len(cases)} out-of-range values: " + ", ".join(f"{k} {v}" for k, v in codes.items()),
                f"e.g. {one_line(sample)}"]
    finally:
        agent.stop()


def worker_killed_mid_profile(tmp: Path) -> list[str]:
    agent = Agent(tmp)
    try:
        db = open_db(tmp / "faults.db")
        Registry(db).register("board", "board", {"type": "agent", "address": agent.address}, {})
        specs = get_preset("smoke")
        # The CI is first checked after a million runs: each kernel measures for its full 0.3 s (~6 s in all).
        protocol = MeasurementProtocol(warmup=1, min_runs=1_000_000, max_runs=1_000_000, max_seconds=0.3)
        killed: list[int] = []

        def killer() -> None:
            try:
                while not agent.workers():
                    time.sleep(0.02)
                time.sleep(2.0)
                for pid in agent.workers():
                    os.kill(pid, signal.SIGSEGV)
                    killed.append(pid)
            except OSError:
                pass

        threading.Thread(target=killer, daemon=True).start()
        with GrpcClient(agent.address, timeout_s=30) as client:
            first = profile_kernels(db, "board", client, specs, CPU, protocol)
            alive = bool(client.describe()["agent_version"])
            second = profile_kernels(db, "board", client, specs, CPU, protocol)
        rows = kernel_rows(db, "board", CPU)
        keys = [r["kernel_key"] for r in rows]
        return [
            f"worker SIGSEGV ({len(killed)} killed) during a {len(specs)}-kernel profile: {first.measured} measured, {len(first.failed)} "
            f"failed ({one_line(first.failed[0][1], 110) if first.failed else 'none'})",
            f"agent still answers Describe: {alive}; rerun measured {second.measured}, skipped {second.skipped}",
            rows_line(len(specs), keys),
        ]
    finally:
        agent.stop()


def memory_and_input_limits(tmp: Path) -> list[str]:
    agent = Agent(tmp, "--memory-limit-mb", "400")
    try:
        with GrpcClient(agent.address, timeout_s=30) as client:
            items = [BenchmarkItem(client.put_model(conv_model(1, 128, 1024)), "onnx", "512MiB-output"),
                     BenchmarkItem(client.put_model(conv_model(1, 1, 100_000)), "onnx", "40GB-input"),
                     BenchmarkItem(client.put_model(conv_model(4, 8, 16, 3)), "onnx", "small")]
            results = list(client.benchmark_batch(items, CPU, FAST))
            alive = bool(client.describe()["agent_version"])
        lines = [f"{r.tag}: {'ok' if r.ok else one_line(r.error, 220)}" for r in results]
        return lines + [rows_line(1, [r.tag for r in results if r.ok]) + " (2 refused on purpose)",
                        f"agent alive: {alive and agent.proc.poll() is None}"]
    finally:
        agent.stop()


def time_limit(tmp: Path) -> list[str]:
    agent = Agent(tmp, "--time-grace-s", "1")
    try:
        with GrpcClient(agent.address, timeout_s=30) as client:
            items = [BenchmarkItem(client.put_model(conv_model(32, 32, 1024, 3)), "onnx", "19-GFLOP-conv"),
                     BenchmarkItem(client.put_model(conv_model(4, 8, 16, 3)), "onnx", "small")]
            protocol = MeasurementProtocol(warmup=1, min_runs=3, max_runs=20, max_seconds=0.05)
            t0 = time.monotonic()
            results = list(client.benchmark_batch(items, CPU, protocol))
            took = time.monotonic() - t0
        return [f"{r.tag}: {'ok' if r.ok else one_line(r.error, 140)}" for r in results] + [
            f"batch took {took:.1f} s; " + rows_line(1, [r.tag for r in results if r.ok]) + " (1 stopped on purpose)"]
    finally:
        agent.stop()


def huge_input_on_local(tmp: Path) -> list[str]:
    with LocalClient(LocalBackend(), cache_dir=tmp / "local") as client:
        items = [BenchmarkItem(client.put_model(conv_model(1, 1, 100_000)), "onnx", "40GB-input"),
                 BenchmarkItem(client.put_model(build_model(get_preset("smoke")[0], "onnx")), "onnx", "smoke-0")]
        results = list(client.benchmark_batch(items, CPU, FAST))
    return [f"{r.tag}: {'ok' if r.ok else one_line(r.error, 140)}" for r in results] + [
        rows_line(1, [r.tag for r in results if r.ok]) + " (1 refused on purpose)"]


# -- the store, device names and phones, through real commands ---------------------------------

FAST_ARGS = ("--max-seconds", "0.05", "--min-runs", "2", "--warmup", "0", "--rounds", "0")


def cli(home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, list[str], str]:
    """``edgelat ARGS`` in its own process with ``EDGELAT_HOME=home``: (exit code, stderr lines, stdout)."""
    proc = subprocess.run([sys.executable, "-c", "from edgelat.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "EDGELAT_HOME": str(home), **(env or {})})
    return proc.returncode, [line for line in proc.stderr.splitlines() if line.strip()], proc.stdout


def said(rc: int, lines: list[str]) -> str:
    """How a command that had to fail failed: one line and no traceback, or what it did instead."""
    errors = [line for line in lines if not line.startswith(("profiling", "warning:"))]
    if rc == 0:
        return "exit 0 (NOT refused)"
    shape = "one line" if len(errors) == 1 and "Traceback" not in "\n".join(lines) else f"{len(errors)} lines"
    return f"exit {rc}, {shape}: {one_line(short_paths(errors[-1]) if errors else '', 170)}"


def table_rows(db: Path, device: str) -> list[str]:
    """The kernel keys stored for ``device`` (read-only, so counting changes nothing)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [r[0] for r in conn.execute("select kernel_key from kernel_measurements where device = ?", [device])]
    finally:
        conn.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def measured_home(tmp: Path, agent: Agent, device: str = "board") -> tuple[Path, int]:
    """A home whose table holds the smoke preset measured on ``agent``; (home, rows)."""
    home = tmp / "home"
    rc, lines, _ = cli(home, "devices", "register", device, "--agent", agent.address)
    if rc:
        raise RuntimeError(f"register failed: {lines}")
    rc, lines, _ = cli(home, "profile", "ops", "--device", device, "--preset", "smoke", *FAST_ARGS)
    if rc:
        raise RuntimeError(f"profile failed: {lines}")
    return home, len(table_rows(home / "edgelat.db", device))


class _Trap:
    """Unpickling this touches ``marker``: proof that a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def store_faults(tmp: Path) -> list[str]:
    agent = Agent(tmp)
    try:
        home, n = measured_home(tmp, agent)
        lines = [f"a table of {n} rows measured on a real agent; each fault on a copy of its home:"]
        profile = ("profile", "ops", "--device", "board", "--preset", "smoke", "--force", *FAST_ARGS)

        def copy(name: str) -> Path:
            other = tmp / name
            shutil.copytree(home, other)
            return other

        def damage(name: str, how: Callable[[Path], None]) -> None:
            h = copy(name)
            how(h / "edgelat.db")
            before = digest(h / "edgelat.db")
            results = [said(*cli(h, "lut", "show", "--device", "board")[:2]), said(*cli(h, *profile)[:2])]
            unchanged = digest(h / "edgelat.db") == before and not [
                p for p in h.iterdir() if p.name.startswith(".edgelat.db.new")]
            lines.append(f"{name}: lut show: {results[0]}")
            lines.append(f"{' ' * len(name)}  profile: {results[1]}; file left as it was: {unchanged}")

        def pages(path: Path) -> None:
            data = bytearray(path.read_bytes())
            size = int.from_bytes(data[16:18], "big")
            data[size:] = os.urandom(len(data) - size)
            path.write_bytes(bytes(data))

        damage("0-byte", lambda p: p.write_bytes(b""))
        damage("garbage", lambda p: p.write_bytes(os.urandom(64 << 10)))
        damage("truncated", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]))
        damage("damaged pages", pages)

        h = copy("older schema")  # as written before the history table (schema version 4)
        conn = sqlite3.connect(h / "edgelat.db")
        conn.execute("drop table measurement_history")
        conn.execute("pragma user_version = 4")
        conn.commit()
        conn.close()
        rc, out, _ = cli(h, "lut", "show", "--device", "board")
        conn = sqlite3.connect(f"file:{h / 'edgelat.db'}?mode=ro", uri=True)
        version = conn.execute("pragma user_version").fetchone()[0]
        history = conn.execute("select count(*) from measurement_history").fetchone()[0]
        conn.close()
        lines.append(f"older schema (4): lut show exit {rc}; now version {version}, "
                     + rows_line(n, table_rows(h / "edgelat.db", "board")) + f", history rows {history}")

        h = copy("newer schema")
        conn = sqlite3.connect(h / "edgelat.db")
        conn.execute("pragma user_version = 99")
        conn.commit()
        conn.close()
        lines.append(f"newer schema (99): lut show: {said(*cli(h, 'lut', 'show', '--device', 'board')[:2])}")

        h = copy("pickled predictor")
        marker = tmp / "unpickled"
        conn = sqlite3.connect(h / "edgelat.db")
        conn.execute("insert or replace into kernel_predictors (device, config_key, n_rows, fitted_at, sklearn_version, "
                     "meta_json, blob) values ('board', ?, 5, 1.0, '1.0', '{}', ?)",
                     [CPU.key(), pickle.dumps(_Trap(marker))])
        conn.commit()
        conn.close()
        lines.append(f"pickled predictor: predictor report: "
                     f"{said(*cli(h, 'predictor', 'report', '--device', 'board')[:2])}; "
                     f"the pickle ran: {marker.exists()}")

        h = copy("locked")
        holder = sqlite3.connect(h / "edgelat.db", isolation_level=None)
        holder.execute("begin immediate")  # another writer holds the lock
        rc, out, _ = cli(h, *profile, env={"EDGELAT_DB_TIMEOUT": "1"})
        holder.execute("rollback")
        holder.close()
        rerun = cli(h, *profile)
        lines.append(f"locked by another writer (EDGELAT_DB_TIMEOUT=1): profile: {said(rc, out)}")
        lines.append(f"   then the lock released and the profile rerun: exit {rerun[0]}, "
                     + rows_line(n, table_rows(h / "edgelat.db", "board")))

        h = copy("read-only")
        immutable = subprocess.run(["chattr", "+i", str(h / "edgelat.db")], capture_output=True).returncode == 0
        if immutable:
            try:
                lines.append(f"read-only (chattr +i): profile: {said(*cli(h, *profile)[:2])}")
            finally:
                subprocess.run(["chattr", "-i", str(h / "edgelat.db")], capture_output=True)
        else:
            (h / "edgelat.db").chmod(0o444)
            h.chmod(0o555)
            lines.append(f"read-only (chmod 444){' as root: not read-only' if os.geteuid() == 0 else ''}: "
                         f"profile: {said(*cli(h, *profile)[:2])}")
            h.chmod(0o755)

        full = tmp / "full"
        full.mkdir()
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(full)],
                                 capture_output=True).returncode == 0
        if mounted:
            try:
                rc, out, _ = cli(full / "home", "profile", "ops", "--device", "local", "--preset", "mobilenet", *FAST_ARGS)
                kept = table_rows(full / "home" / "edgelat.db", "local")
                lines.append(f"disk full (1 MiB tmpfs): profile of the mobilenet preset: {said(rc, out)}; "
                             f"{len(kept)} rows kept, duplicated {len(kept) - len(set(kept))}")
            finally:
                subprocess.run(["umount", str(full)], capture_output=True)
        else:
            lines.append("disk full: not tried (this process may not mount a tmpfs)")

        as_file = tmp / "home-file"
        as_file.write_text("not a folder")
        lines.append(f"EDGELAT_HOME is a file: devices list: {said(*cli(as_file, 'devices', 'list')[:2])}")
        return lines
    finally:
        agent.stop()


def device_names(tmp: Path) -> list[str]:
    a, b = Agent(tmp / "a"), Agent(tmp / "b")
    other = None
    try:
        home, n = measured_home(tmp, a)
        db = home / "edgelat.db"
        lines = [f"'board' registered at agent A and measured: {n} rows"]
        lines.append(f"register local --agent B: {said(*cli(home, 'devices', 'register', 'local', '--agent', b.address)[:2])}")
        lines.append(f"register board --agent B (taken): "
                     f"{said(*cli(home, 'devices', 'register', 'board', '--agent', b.address)[:2])}; "
                     + rows_line(n, table_rows(db, "board")))
        rc, out, stdout = cli(home, "devices", "remove", "board", "--keep-rows")
        archive = next((w for w in stdout.split() if ".archived-" in w and not w.startswith("(")), "").strip("()")
        lines.append(f"remove --keep-rows: exit {rc}: {one_line(stdout, 110)}")
        cli(home, "devices", "register", "board", "--agent", a.address)
        lines.append(f"   re-registered board has {len(table_rows(db, 'board'))} rows; the archive "
                     + rows_line(n, table_rows(db, archive)))
        cli(home, "profile", "ops", "--device", "board", "--preset", "smoke", *FAST_ARGS)
        rc, out, stdout = cli(home, "devices", "remove", "board")
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        left = 0
        for (table,) in conn.execute("select name from sqlite_master where type = 'table' and name != 'devices'"):
            if "device" in [c[1] for c in conn.execute(f"pragma table_info([{table}])")]:
                left += conn.execute(f"select count(*) from [{table}] where device = 'board'").fetchone()[0]
        conn.close()
        lines.append(f"remove (measured again first): exit {rc}: {one_line(stdout, 80)}; rows of 'board' left in any "
                     f"table: {left}")
        cli(home, "devices", "register", "board", "--agent", a.address)
        cli(home, "profile", "ops", "--device", "board", "--preset", "smoke", *FAST_ARGS)
        if shutil.which("unshare") and subprocess.run(["unshare", "-u", "true"], capture_output=True).returncode == 0:
            port = a.address.rpartition(":")[2]
            a.stop()
            other = Agent(tmp / "other", "--listen", f"127.0.0.1:{port}",
                          prefix=("unshare", "-u", "sh", "-c", 'hostname another-board && exec "$@"', "sh"))
            rc, out, _ = cli(home, "profile", "ops", "--device", "board", "--preset", "smoke", "--force", *FAST_ARGS)
            lines.append(f"another board (host name) at board's address: profile: {said(rc, out)}; "
                         + rows_line(n, table_rows(db, "board")))
        else:
            lines.append("another board at the same address: not tried (unshare -u is not allowed here)")
        return lines
    finally:
        for agent in (a, b, other):
            if agent is not None:
                agent.stop()


def phone_files(tmp: Path) -> list[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from adbd_double import PIXEL7_PROPS, AdbdDouble, build_fake_phone, set_sysfs

    home = tmp / "home"
    env = {"EDGELAT_HOME": str(home)}
    key = subprocess.run([sys.executable, "-c", "from edgelat.agents.adb.keys import public_key_text as k; print(k())"],
                         capture_output=True, text=True, env={**os.environ, **env}, check=True).stdout.strip()
    root = build_fake_phone(tmp / "phone")
    set_sysfs(root, "/sys/devices/system/cpu/cpu7/cpufreq/related_cpus", "0-4000000000")
    seeds = Path(__file__).resolve().parent.parent / "tests/data/fuzz-seeds/benchmark_model"
    captured = sorted(seeds.glob("*xnnpack*.txt"))[0]

    def runner(path: Path, build: str) -> Path:  # a benchmark_model that prints a real output
        path.write_text(f"#!/bin/sh\n# {build}\ncat {captured}\n")
        path.chmod(0o755)
        os.utime(path, (1_700_000_000, 1_700_000_000))
        return path

    first, rebuilt = runner(tmp / "bm1", "build 1"), runner(tmp / "bm2", "build 2")
    cap = 30 << 10
    lines = []
    with AdbdDouble(root, PIXEL7_PROPS, trusted_keys=[key]) as phone:
        t0 = time.monotonic()
        rc, out, _ = cli(home, "devices", "register-phone", "p7", "--address", phone.address, "--benchmark-model",
                         str(first), "--model-cache-mb", f"{cap / (1 << 20):.4f}")
        took = time.monotonic() - t0
        rc2, _, facts = cli(home, "devices", "show", "p7", "--json")
        notes = [n for n in (json.loads(facts).get("facts", {}).get("parse_notes") or [])] if rc2 == 0 else []
        lines.append(f"related_cpus '0-4000000000': register-phone exit {rc} in {took:.1f} s; "
                     f"note: {one_line(notes[0], 100) if notes else 'none'}")
        rc, out, _ = cli(home, "profile", "ops", "--device", "p7", "--preset", "smoke", *FAST_ARGS)
        folder = root / "data/local/tmp/edgelat"
        models = [p for p in folder.iterdir() if p.name.endswith(".tflite")]
        pushed = len([w for w in phone.sync_writes if w.endswith(".tflite")])
        lines.append(f"smoke profile (exit {rc}): {pushed} models pushed; on the phone now {len(models)} models, "
                     f"{sum(p.stat().st_size for p in models)} bytes (cap {cap}); runner kept: "
                     f"{(folder / 'benchmark_model').exists()}")
        lines.append(rows_line(len(get_preset("smoke")), table_rows(home / "edgelat.db", "p7")))
        rc, out, _ = cli(home, "devices", "register-phone", "p7", "--address", phone.address, "--benchmark-model",
                         str(rebuilt), "--replace", "--keep-rows")
        same = digest(folder / "benchmark_model") == digest(rebuilt)
        lines.append(f"a rebuilt runner of the same size and time: re-register exit {rc}; the phone runs the new "
                     f"build: {same}")
    return lines


SCENARIOS: list[tuple[str, Callable[[Path], list[str]]]] = [
    ("a stalled upload next to another client's batch", stalled_upload),
    ("an uploader killed mid-upload", killed_uploader),
    ("partial files left by a killed agent", partials_at_start),
    ("agent memory during a 256 MiB upload", upload_memory),
    ("listening beyond loopback without a token", listen_without_token),
    ("out-of-range request values", bad_values),
    ("the benchmark worker killed mid-profile, then the profile rerun", worker_killed_mid_profile),
    ("a model over the memory limit (400 MB) and one declaring a 40 GB input", memory_and_input_limits),
    ("a model over its time limit (2 x 0.05 s + 1 s grace)", time_limit),
    ("the 40 GB-input model on the in-process local device", huge_input_on_local),
    ("storage faults through real commands", store_faults),
    ("device names", device_names),
    ("a phone's files and facts (adbd double)", phone_files),
]


def main() -> None:
    parser = argparse.ArgumentParser(description="Fault scenarios against real agents, stores and a phone double: "
                                                 "what happened, and whether any row was lost or duplicated.")
    parser.add_argument("--only", metavar="TEXT", help="run only the scenarios whose title contains TEXT")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args()
    chosen = [(t, f) for t, f in SCENARIOS if not args.only or args.only.lower() in t.lower()]
    if args.list or not chosen:
        print("\n".join(t for t, _ in SCENARIOS))
        raise SystemExit(0 if args.list else f"no scenario title contains {args.only!r}")
    for title, scenario in chosen:
        with tempfile.TemporaryDirectory(prefix="edgelat-faults-") as tmp:
            t0 = time.monotonic()
            try:
                lines = scenario(Path(tmp))
            except Exception as exc:  # a scenario that breaks is a finding, not the end of the run
                lines = [f"SCENARIO FAILED: {type(exc).__name__}: {one_line(str(exc))}"]
            report(f"{title} ({time.monotonic() - t0:.1f} s)", lines)


if __name__ == "__main__":
    main()
