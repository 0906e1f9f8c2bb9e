"""How heavy is ``edgelat agent serve`` on a small board: startup time and resident memory.

Usage: python benchmarks/agent_footprint.py [--starts 5]

Startup is timed from process spawn to the ready line and to the first answered Describe
(the moment a host can use it), over several starts. Memory is VmRSS from
/proc/PID/status: idle after startup, and after one small benchmark (the runtime loaded), for the
agent and for the worker process that runs its models.
``python -c pass`` is timed too, as the floor of any Python process on this machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgelat.agents.remote import GrpcClient
from edgelat.values import BenchmarkItem, MeasurementProtocol, RuntimeConfig
from edgelat.errors import AgentUnreachable
from edgelat.profiler.builders import build_model
from edgelat.profiler.networks import get_network

READY = "edgelat agent listening on "


def vm_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def worker_rss_mb(pid: int) -> float:
    """VmRSS of the agent's benchmark worker processes (agents/sandbox.py), which run the models."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for kid in (task / "children").read_text().split():
            try:
                if b"spawn_main" in Path(f"/proc/{kid}/cmdline").read_bytes():
                    total += vm_rss_mb(int(kid))
            except OSError:
                pass
    return total


def start(cache_dir: str) -> tuple[subprocess.Popen, str, float, float]:
    """Spawn an agent; returns (process, address, seconds to ready line, seconds to first Describe)."""
    cmd = [sys.executable, "-c", "from edgelat.cli import main; main()", "agent", "serve",
           "--listen", "127.0.0.1:0", "--cache-dir", cache_dir]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))  # its per-model log lines are not ours
    for line in proc.stdout:
        if line.startswith(READY):
            ready_s = time.perf_counter() - t0
            address = f"127.0.0.1:{line[len(READY):].split()[0].rpartition(':')[2]}"
            break
    else:
        raise SystemExit(f"the agent exited with {proc.wait()} before it was ready")
    with GrpcClient(address, timeout_s=30) as client:
        while True:
            try:
                client.describe()
                break
            except AgentUnreachable:
                time.sleep(0.005)
    return proc, address, ready_s, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()

    floor = []
    for _ in range(args.starts):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        floor.append(time.perf_counter() - t0)

    ready, describe, idle_rss = [], [], []
    with tempfile.TemporaryDirectory(prefix="edgelat-footprint-") as tmp:
        for i in range(args.starts):
            proc, address, ready_s, describe_s = start(str(Path(tmp) / "cache"))
            try:
                ready.append(ready_s)
                describe.append(describe_s)
                time.sleep(1.0)  # let startup allocations settle
                idle_rss.append(vm_rss_mb(proc.pid))
                if i == args.starts - 1:  # once: memory with onnxruntime loaded and a model run
                    data = build_model(get_network("mobilenetv2", resolution=224), "onnx")
                    with GrpcClient(address) as client:
                        sha = client.put_model(data)
                        result = client.benchmark(
                            BenchmarkItem(sha, "onnx"), RuntimeConfig(),
                            MeasurementProtocol(warmup=2, min_runs=10, max_runs=20, max_seconds=1.0),
                        )
                    time.sleep(0.5)
                    after_rss = vm_rss_mb(proc.pid)
                    after_worker = worker_rss_mb(proc.pid)
            finally:
                proc.terminate()
                proc.wait(15)

    print(f"starts: {args.starts}")
    print(f"python -c pass:               median {statistics.median(floor) * 1000:7.0f} ms")
    print(f"spawn -> ready line:          median {statistics.median(ready) * 1000:7.0f} ms  (min {min(ready) * 1000:.0f})")
    print(f"spawn -> first Describe:      median {statistics.median(describe) * 1000:7.0f} ms  (min {min(describe) * 1000:.0f})")
    print(f"idle VmRSS after startup:     median {statistics.median(idle_rss):7.1f} MiB")
    print(f"VmRSS after one benchmark:           {after_rss:7.1f} MiB  (mobilenetv2@224 onnx, "
          f"{'ok' if result.ok else result.error}; peak extra {result.peak_memory_bytes} bytes)")
    print(f"  + its benchmark worker:            {after_worker:7.1f} MiB  (the process that ran the model)")


if __name__ == "__main__":
    main()
