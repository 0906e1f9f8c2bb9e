"""Start a real ``edgelat agent serve`` process on loopback, for any test that needs an agent.

Usage in a test module::

    from agent_helpers import running_agent, start_agent, onnx_conv_model

    def test_x(tmp_path):
        with running_agent(tmp_path, token="s3cret") as agent:
            client = GrpcClient(agent.address, token=agent.token)
            ...

or the ``agent`` fixture (import it into the test module: ``from agent_helpers import agent``).
``start_agent`` returns once the agent printed its ready line *and* its gRPC
health check answers SERVING, so a test never races the server's startup.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import pytest

READY_PREFIX = "edgelat agent listening on "
FAST_ARGS = dict(warmup=1, min_runs=3, max_runs=20, max_seconds=0.5)


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agent_command(*args: str) -> list[str]:
    """The real CLI entry point, run with this interpreter (no PATH lookup)."""
    return [sys.executable, "-c", "from edgelat.cli import main; main()", "agent", "serve", *args]


@dataclass
class RunningAgent:
    proc: subprocess.Popen
    address: str
    port: int
    token: str | None
    token_file: Path | None
    cache_dir: Path
    ready_line: str
    ca_file: Path | None = None
    output: list[str] = field(default_factory=list)  # stdout/stderr lines read so far

    @property
    def transport(self) -> dict:
        """A registry transport dict for this agent."""
        t: dict = {"type": "agent", "address": self.address}
        if self.token_file is not None:
            t["token_file"] = str(self.token_file)
        if self.ca_file is not None:
            t["tls_ca"] = str(self.ca_file)
        return t

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``sig`` and wait; returns the exit code (kills after ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _pump(stream, lines: list[str], q: "queue.Queue[str | None]") -> None:
    for line in stream:
        lines.append(line)
        q.put(line)
    q.put(None)


def wait_serving(address: str, timeout: float = 20.0, ca: bytes | None = None) -> None:
    """Poll the standard gRPC health service until it answers SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    if ca is not None:
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(ca))
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"agent at {address} never reported SERVING")
            time.sleep(0.05)


def start_agent(
    workdir: Path,
    token: str | None = None,
    cache_max_mb: float | None = None,
    tls: tuple[Path, Path, Path] | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 60.0,
) -> RunningAgent:
    """Start ``edgelat agent serve`` on 127.0.0.1:<free port> and wait until it serves.

    ``tls`` is (cert, key, ca) PEM paths. The agent's cache goes under ``workdir``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    cache_dir = workdir / "agent-cache"
    args = ["--listen", "127.0.0.1:0", "--cache-dir", str(cache_dir)]
    token_file = None
    if token is not None:
        token_file = workdir / "agent-token"
        token_file.write_text(token + "\n")
        args += ["--token-file", str(token_file)]
    if cache_max_mb is not None:
        args += ["--cache-max-mb", str(cache_max_mb)]
    if tls is not None:
        args += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    args += list(extra_args)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        agent_command(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    lines: list[str] = []
    q: "queue.Queue[str | None]" = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines, q), daemon=True).start()
    deadline = time.monotonic() + timeout
    ready = ""
    while not ready:
        try:
            line = q.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            proc.kill()
            raise TimeoutError("agent printed no ready line in time:\n" + "".join(lines))
        if line is None:
            proc.wait()
            raise RuntimeError(f"agent exited with {proc.returncode} before it was ready:\n" + "".join(lines))
        if line.startswith(READY_PREFIX):
            ready = line.strip()
    port = int(ready[len(READY_PREFIX):].split()[0].rpartition(":")[2])
    address = f"127.0.0.1:{port}"
    agent = RunningAgent(proc, address, port, token, token_file, cache_dir, ready, output=lines)
    if tls is not None:
        agent.ca_file = tls[2]
    try:
        wait_serving(address, ca=tls[2].read_bytes() if tls else None)
    except Exception:
        agent.stop(signal.SIGKILL)
        raise
    return agent


@contextlib.contextmanager
def running_agent(workdir: Path, **kwargs) -> Iterator[RunningAgent]:
    """``start_agent`` that always stops the process on exit."""
    agent = start_agent(workdir, **kwargs)
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[RunningAgent]:
    """A fresh agent without a token, for one test."""
    with running_agent(tmp_path / "agent") as a:
        yield a


def onnx_conv_model(channels: int = 8, size: int = 16, depth: int = 2, seed: int = 0) -> bytes:
    """A small conv -> relu stack as ONNX bytes (different ``seed`` -> different weights and hash)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev = "x"
    for i in range(depth):
        w = rng.standard_normal((channels, channels, 3, 3)).astype(np.float32) * 0.1
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        prev = f"r{i}"
    graph = helper.make_graph(
        nodes, "convstack",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, channels, size, size])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def self_signed_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost: (cert, key, ca) paths (ca == cert)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "agent.crt", directory / "agent.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )
    return cert, key, cert
