"""Does the gRPC agent add anything to a latency? The same whole model, same protocol, timed
through a real ``edgelat agent serve`` process on loopback and directly with onnxruntime here.

Usage: python benchmarks/agent_overhead.py [--network mobilenetv2] [--resolution 224] [--rounds 3]

The timing loop runs on the agent, so the two medians should agree within a few percent
(the target is 5%); rounds alternate agent/direct so slow drift of the machine hits both.
On a shared machine, other processes shift whole rounds (docs/measurements.md); the script
prints every round, the median over rounds of each side and the quietest round of each side.
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

import numpy as np
import onnxruntime as ort

from edgelat.agents.measure import run_protocol
from edgelat.agents.remote import GrpcClient
from edgelat.values import BenchmarkItem, MeasurementProtocol, RuntimeConfig
from edgelat.errors import AgentUnreachable
from edgelat.profiler.builders import build_model
from edgelat.profiler.networks import get_network

READY = "edgelat agent listening on "


def start_agent(cache_dir: str, cpus: set[int] | None) -> tuple[subprocess.Popen, str]:
    """``edgelat agent serve`` on a free loopback port; returns (process, address) once it is ready."""
    cmd = [sys.executable, "-c", "from edgelat.cli import main; main()", "agent", "serve",
           "--listen", "127.0.0.1:0", "--cache-dir", cache_dir]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"),
                            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)  # its per-model log lines are not ours
    for line in proc.stdout:
        if line.startswith(READY):
            port = line[len(READY):].split()[0].rpartition(":")[2]
            return proc, f"127.0.0.1:{port}"
    raise SystemExit(f"the agent exited with {proc.wait()} before it was ready")


def direct_median(model_path: Path, threads: int, protocol: MeasurementProtocol) -> tuple[float, int]:
    """onnxruntime in this process, with the session options the agent's runtime uses."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(model_path), sess_options=opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
             for i in sess.get_inputs()}
    _, summary = run_protocol(lambda: sess.run(None, feeds), **protocol.to_dict())
    return summary["median"], summary["n"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="mobilenetv2")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--cpu", type=int, default=os.cpu_count() - 1,
                        help="pin the agent and the direct runs to this CPU (-1: no pinning); cores of a "
                             "virtual machine can differ in speed, which would pass for agent overhead")
    args = parser.parse_args()
    cpus = {args.cpu} if args.cpu >= 0 else None
    if cpus:
        os.sched_setaffinity(0, cpus)

    protocol = MeasurementProtocol(warmup=10, min_runs=50, max_runs=300, target_rel_ci=0.01, max_seconds=5.0)
    config = RuntimeConfig(runtime="onnxruntime", threads=args.threads, provider="cpu")
    data = build_model(get_network(args.network, resolution=args.resolution), "onnx")
    with tempfile.TemporaryDirectory(prefix="edgelat-overhead-") as tmp:
        model_path = Path(tmp) / "model.onnx"
        model_path.write_bytes(data)
        proc, address = start_agent(str(Path(tmp) / "agent-cache"), cpus)
        try:
            client = GrpcClient(address, timeout_s=30)
            for _ in range(200):  # the ready line comes just before the port answers
                try:
                    sha = client.put_model(data)
                    break
                except AgentUnreachable:
                    time.sleep(0.05)
            via_agent, direct = [], []
            for r in range(args.rounds):
                # Alternate which side goes first (ABBA...), so drift of the machine hits both.
                order = ("agent", "direct") if r % 2 == 0 else ("direct", "agent")
                line = {}
                for side in order:
                    if side == "agent":
                        t0 = time.perf_counter()
                        result = client.benchmark(BenchmarkItem(sha, "onnx", "overhead"), config, protocol)
                        rpc_s = time.perf_counter() - t0
                        if not result.ok:
                            raise SystemExit(f"agent failed: {result.error}")
                        via_agent.append(result.latency.median)
                        line[side] = (f"agent {result.latency.median:8.3f} ms (n={result.latency.n:3d}, "
                                      f"rpc wall {rpc_s:5.2f} s)")
                    else:
                        med, n = direct_median(model_path, args.threads, protocol)
                        direct.append(med)
                        line[side] = f"direct {med:8.3f} ms (n={n:3d})"
                print(f"round {r + 1}: {line['agent']}   {line['direct']}   "
                      f"ratio {via_agent[-1] / direct[-1]:6.3f}", flush=True)
            client.close()
        finally:
            proc.terminate()
            proc.wait(15)

    a, d = statistics.median(via_agent), statistics.median(direct)
    ratio = a / d
    print(f"model: {args.network} @ {args.resolution}, {len(data) / 1e6:.1f} MB, onnxruntime {ort.__version__}, "
          f"{args.threads} thread(s), pinned to {'CPU ' + str(args.cpu) if cpus else 'no CPU'}, "
          f"protocol {protocol.to_dict()}")
    print(f"median through the agent (loopback gRPC): {a:8.3f} ms")
    print(f"median directly with onnxruntime:         {d:8.3f} ms")
    paired = statistics.median(x / y for x, y in zip(via_agent, direct))
    print(f"ratio agent/direct (of the medians):      {ratio:8.3f}  ({'within' if abs(ratio - 1) <= 0.05 else 'OUTSIDE'} 5%)")
    print(f"median of the per-round ratios:           {paired:8.3f}")
    # Other load on the cores only ever adds time, so the quietest round of each side is
    # the least disturbed estimate of the model's own latency.
    best_a, best_d = min(via_agent), min(direct)
    print(f"quietest round: agent {best_a:.3f} ms, direct {best_d:.3f} ms, ratio {best_a / best_d:.3f}")
    print(f"load average while it ran: {os.getloadavg()[0]:.2f} (1 min); other processes on the cores widen the spread")


if __name__ == "__main__":
    main()
