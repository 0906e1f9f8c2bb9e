"""The agent against careless or hostile clients: real ``edgelat agent serve`` processes on loopback.

Stalled uploads, partial files, upload memory, listening without a token, out-of-range requests
(including a property test), and models that crash or overrun the benchmark worker.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from agent_helpers import FAST_ARGS, onnx_conv_model, running_agent, self_signed_tls
from edgelat.agents.cache import PARTIAL_PREFIX, ModelCache, sha256_bytes
from edgelat.agents.remote import GrpcClient
from edgelat.agents.sandbox import SandboxedBackend
from edgelat.agents.server import CHUNK_BYTES
from edgelat.agents.bounds import MAX_THREADS
from edgelat.values import BenchmarkItem, MeasurementProtocol, RuntimeConfig
from edgelat.cli import main
from edgelat.config import read_token_file
from edgelat.errors import BadInput, DeviceError
from edgelat.proto import agent_pb2 as pb
from edgelat.proto import agent_pb2_grpc as pb_grpc
from sandbox_backends import MisbehavingBackend

FAST = MeasurementProtocol(**FAST_ARGS)


@pytest.fixture(scope="module")
def shared_agent(tmp_path_factory):
    with running_agent(tmp_path_factory.mktemp("agent")) as agent:
        yield agent


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _workers(pid: int) -> list[int]:
    """The agent's benchmark worker processes (multiprocessing's resource tracker is not one)."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for kid in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{kid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmdline:
                kids.append(int(kid))
    return kids


def conv_out_model(cout: int, side: int) -> bytes:
    """A 1x1 Conv from 1 to ``cout`` channels on a ``side`` x ``side`` image: a tiny file whose
    output tensor takes ``cout * side * side * 4`` bytes."""
    w = numpy_helper.from_array(np.ones((cout, 1, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, side, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, side, side])], initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


# -- uploads --------------------------------------------------------------------------------


def test_a_stalled_upload_delays_no_other_client_and_is_dropped(tmp_path):
    idle_s = 5.0
    with running_agent(tmp_path / "agent", extra_args=["--upload-idle-s", str(idle_s)]) as agent:
        release = threading.Event()
        data = os.urandom(3 * CHUNK_BYTES)
        outcome: dict = {}

        def one_chunk_then_nothing():
            yield pb.ModelChunk(sha256=sha256_bytes(data), total_bytes=len(data), data=data[:CHUNK_BYTES])
            release.wait(60)

        def stalled_client():
            with grpc.insecure_channel(agent.address) as channel:
                try:
                    pb_grpc.AgentStub(channel).PutModel(one_chunk_then_nothing(), timeout=60)
                except grpc.RpcError as exc:
                    outcome["error"] = (exc.code(), exc.details())

        stalled = threading.Thread(target=stalled_client)
        stalled.start()
        try:
            deadline = time.monotonic() + 10
            while not any(p.name.startswith(PARTIAL_PREFIX) for p in agent.cache_dir.iterdir()):
                assert time.monotonic() < deadline, "the stalled upload never reached the agent"
                time.sleep(0.02)
            with GrpcClient(agent.address, timeout_s=30) as other:
                sha = other.put_model(onnx_conv_model(seed=7))
                result = other.benchmark(BenchmarkItem(sha, "onnx", "other"), RuntimeConfig(), FAST)
            assert result.ok, result.error
            # The other client was served while the stalled upload was still open.
            assert stalled.is_alive() and "error" not in outcome
            stalled.join(idle_s + 20)
            assert not stalled.is_alive()
        finally:
            release.set()
        code, details = outcome["error"]
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED and f"no model data for {idle_s:g} s" in details
        # The client hears of the cancellation as the agent's handler wakes to remove the file.
        deadline = time.monotonic() + 10
        while [p for p in agent.cache_dir.iterdir() if p.name.startswith(PARTIAL_PREFIX)]:
            assert time.monotonic() < deadline, "the dropped upload's partial file stayed"
            time.sleep(0.02)
        assert not (agent.cache_dir / sha256_bytes(data)).exists()
        while not any("upload dropped" in line for line in agent.output):
            assert time.monotonic() < deadline, agent.output
            time.sleep(0.02)


def test_partial_files_are_swept_at_start_and_counted_against_the_cap(tmp_path):
    cache_dir = tmp_path / "agent" / "agent-cache"
    cache_dir.mkdir(parents=True)
    left = cache_dir / f"{PARTIAL_PREFIX}killed"  # from an agent killed an hour ago
    left.write_bytes(b"x" * 1000)
    os.utime(left, (time.time() - 3600, time.time() - 3600))
    growing = cache_dir / f"{PARTIAL_PREFIX}writing"  # another agent on this directory is writing it now
    growing.write_bytes(b"y" * (CHUNK_BYTES // 2))
    with running_agent(tmp_path / "agent", cache_max_mb=1) as agent:
        assert not left.exists() and growing.exists()
        assert any("removed 1 partial upload" in line for line in agent.output)
        with GrpcClient(agent.address) as client:
            with pytest.raises(BadInput, match="uploads in progress"):
                client.put_model(os.urandom(CHUNK_BYTES * 3 // 4))
            growing.unlink()  # that upload ended: now the same model fits
            client.put_model(os.urandom(CHUNK_BYTES * 3 // 4))


def test_partial_files_count_in_the_cache_size(tmp_path):
    cache = ModelCache(tmp_path, max_bytes=10 * CHUNK_BYTES)
    incoming = cache.incoming()
    incoming.write(b"z" * 1234)
    assert cache.size() == 1234
    incoming.discard()
    assert cache.size() == 0 and not list(tmp_path.iterdir())


def test_agent_memory_during_a_large_upload_stays_near_one_chunk(tmp_path):
    # gRPC's transport buffers a window of chunks ahead of the handler; the handler holds one.
    # Holding the model (as the agent used to, twice over) would need the whole model size.
    bound = 32 * CHUNK_BYTES
    data = os.urandom(4 * bound)
    with running_agent(tmp_path / "agent") as agent:
        pid = agent.proc.pid
        with GrpcClient(agent.address, timeout_s=60) as client:
            client.describe()
            with open(f"/proc/{pid}/clear_refs", "w") as fh:  # reset the high-water mark to the RSS now
                fh.write("5")
            before_kb = _status_kb(pid, "VmRSS")
            assert client.put_model(data) == sha256_bytes(data)
            peak_kb = _status_kb(pid, "VmHWM")
    assert (agent.cache_dir / sha256_bytes(data)).stat().st_size == len(data)
    assert (peak_kb - before_kb) * 1024 < bound, f"upload of {len(data)} bytes raised the peak by {peak_kb - before_kb} kB"


# -- listening and tokens ---------------------------------------------------------------------


def test_listening_beyond_loopback_needs_a_token_or_insecure(tmp_path):
    r = CliRunner().invoke(main, ["agent", "serve", "--listen", "0.0.0.0:0", "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 1
    assert [line for line in r.stderr.splitlines() if line.strip()] == [r.stderr.strip()]
    assert "refusing to listen on 0.0.0.0:0 without a token" in r.stderr and "--insecure" in r.stderr
    # agent adb refuses before it touches any phone
    r = CliRunner().invoke(main, ["agent", "adb", "--serial", "NOPHONE", "--listen", "0.0.0.0:0"])
    assert r.exit_code == 1 and "refusing to listen" in r.stderr
    with running_agent(tmp_path / "agent", extra_args=["--listen", "0.0.0.0:0", "--insecure"]) as agent:
        assert agent.ready_line.startswith("edgelat agent listening on 0.0.0.0:")
        with GrpcClient(agent.address) as client:
            assert client.describe()["agent_version"]


def test_token_warnings(tmp_path, caplog):
    _, _, ca = self_signed_tls(tmp_path / "tls")
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    token.chmod(0o600)
    with caplog.at_level(logging.WARNING):
        assert read_token_file(token) == "s3cret"
        GrpcClient("127.0.0.1:1", token="s3cret").close()  # loopback: fine
        GrpcClient("10.11.12.13:50051", token="s3cret", tls_ca=ca).close()
    assert not caplog.records
    token.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        read_token_file(token)
        GrpcClient("10.11.12.13:50051", token="s3cret").close()
        GrpcClient("10.11.12.13:50051").close()  # no token: nothing to leak
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert f"token file {token} can be read by other users (mode 0644): chmod 600" in messages[0]
    assert "token goes to 10.11.12.13:50051 without TLS" in messages[1]


def test_the_hub_link_warns_when_its_token_goes_without_tls(tmp_path, caplog):
    from edgelat.agents.hub_link import HubLink
    from edgelat.agents.local import LocalBackend

    _, _, ca = self_signed_tls(tmp_path / "tls")
    with caplog.at_level(logging.WARNING):
        for address, tls_ca in (("127.0.0.1:50100", None), ("10.11.12.14:50100", ca.read_bytes())):
            HubLink(address, "s3cret", {"b1": LocalBackend()}, cache_dir=tmp_path / "c", tls_ca=tls_ca).close()
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        HubLink("10.11.12.14:50100", "s3cret", {"b1": LocalBackend()}, cache_dir=tmp_path / "c").close()
    assert [r.getMessage() for r in caplog.records] == [
        "warning: the token goes to 10.11.12.14:50100 without TLS, readable by anyone on the network: "
        "serve the hub with TLS and give --hub-tls-ca"]


def test_agent_serve_warns_about_a_readable_token_file(tmp_path):
    with running_agent(tmp_path / "agent", token="s3cret") as agent:  # the helper writes it with the umask
        mode = agent.token_file.stat().st_mode & 0o777
    if mode & 0o044:
        assert any("can be read by other users" in line for line in agent.output), agent.output
    else:
        assert not any("can be read by other users" in line for line in agent.output)


def test_agent_adb_serves_tls(tmp_path, edgelat_home):
    from adbd_double import PIXEL7_PROPS, AdbdDouble, build_fake_phone
    from edgelat.agents.adb.keys import public_key_text
    import subprocess
    import sys

    cert, key, ca = self_signed_tls(tmp_path / "tls")
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    token.chmod(0o600)
    with AdbdDouble(build_fake_phone(tmp_path / "phone"), PIXEL7_PROPS, trusted_keys=[public_key_text()]) as phone:
        r = CliRunner().invoke(main, ["devices", "register-phone", "pixel7", "--address", phone.address,
                                      "--runner", "python"])
        assert r.exit_code == 0, r.output
        proc = subprocess.Popen(
            [sys.executable, "-c", "from edgelat.cli import main; main()", "agent", "adb", "--device", "pixel7",
             "--listen", "127.0.0.1:0", "--token-file", str(token), "--tls-cert", str(cert), "--tls-key", str(key)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
        )
        try:
            line = proc.stdout.readline()
            assert "(runner python, token required, TLS)" in line, line + proc.stderr.read()
            port = int(line.split("127.0.0.1:")[1].split()[0])
            with GrpcClient(f"127.0.0.1:{port}", token="s3cret", tls_ca=ca) as client:
                assert client.describe()["model"] == "Pixel 7"
            with GrpcClient(f"127.0.0.1:{port}", token="s3cret", timeout_s=3) as plain:
                with pytest.raises(Exception, match="did not answer"):
                    plain.describe()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)


# -- request bounds ---------------------------------------------------------------------------

SHA = "a" * 64  # not on the agent: an accepted request answers at once with a per-item error

BAD_VALUES = [
    ("protocol", "max_seconds", math.inf), ("protocol", "max_seconds", math.nan), ("protocol", "max_seconds", 1e300),
    ("protocol", "max_seconds", 0.0), ("protocol", "max_seconds", -1.0),
    ("protocol", "target_rel_ci", math.nan), ("protocol", "target_rel_ci", -0.1), ("protocol", "target_rel_ci", 2.0),
    ("protocol", "warmup", -1), ("protocol", "warmup", 1_000_000),
    ("protocol", "min_runs", 0), ("protocol", "max_runs", 2**31 - 1),
    ("config", "threads", 0), ("config", "threads", 10**6),
    ("config", "provider", ""), ("config", "provider", "x" * 100), ("config", "precision", "p" * 100),
    ("config", "version", "v" * 1000), ("config", "runtime", "r" * 10_000),
    ("item", "tag", "t" * 5000), ("item", "model_format", "pt"), ("item", "model_sha256", "../etc/passwd"),
]


def _request(overrides: dict | None = None) -> pb.BenchmarkBatchRequest:
    protocol = dict(warmup=1, min_runs=3, max_runs=20, target_rel_ci=0.02, max_seconds=0.5)
    config = dict(runtime="onnxruntime", threads=1, provider="cpu", precision="fp32")
    item = dict(model_sha256=SHA, model_format="onnx", tag="t")
    for (part, name), value in (overrides or {}).items():
        {"protocol": protocol, "config": config, "item": item}[part][name] = value
    return pb.BenchmarkBatchRequest(items=[pb.BenchmarkItem(**item)], config=pb.RuntimeConfig(**config),
                                    protocol=pb.MeasurementProtocol(**protocol))


@pytest.mark.parametrize("part,name,value", BAD_VALUES, ids=[f"{n}={str(v)[:12]}" for _, n, v in BAD_VALUES])
def test_each_out_of_range_value_is_invalid_argument_naming_it(shared_agent, part, name, value):
    with grpc.insecure_channel(shared_agent.address) as channel:
        with pytest.raises(grpc.RpcError) as err:
            list(pb_grpc.AgentStub(channel).BenchmarkBatch(_request({(part, name): value}), timeout=10))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details()
    assert (name.replace("model_sha256", "sha256") in details) or (name == "runtime" and "unknown runtime" in details)
    assert len(details) < 400  # one line, whatever the value's size


def test_too_many_items_is_invalid_argument(shared_agent):
    request = _request()
    request.items.extend([pb.BenchmarkItem(model_sha256=SHA, model_format="onnx")] * 100_000)
    with grpc.insecure_channel(shared_agent.address) as channel:
        with pytest.raises(grpc.RpcError) as err:
            list(pb_grpc.AgentStub(channel).BenchmarkBatch(request, timeout=30))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "items" in err.value.details()


def _within_bounds(protocol: dict, config: dict, item: dict) -> bool:
    """The bounds, written out independently of the agent's code."""
    return (
        0 <= protocol["warmup"] <= 10_000 and 1 <= protocol["min_runs"] <= protocol["max_runs"] <= 1_000_000
        and math.isfinite(protocol["target_rel_ci"]) and 0 <= protocol["target_rel_ci"] <= 1
        and math.isfinite(protocol["max_seconds"]) and 0 < protocol["max_seconds"] <= 3600
        and 1 <= config["threads"] <= MAX_THREADS and 0 < len(config["provider"]) <= 64
        and config["provider"].isprintable() and len(config["precision"]) <= 16 and config["precision"].isprintable()
        and len(item["tag"]) <= 1024 and item["tag"].isprintable()
    )


int32 = st.integers(-(2**31), 2**31 - 1)
small_int = st.one_of(int32, st.integers(-5, 12_000))
anyfloat = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-1, 4000))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    warmup=small_int, min_runs=small_int, max_runs=small_int, target=anyfloat, seconds=anyfloat,
    threads=st.one_of(int32, st.integers(-2, 300)), provider=st.text(max_size=80), precision=st.text(max_size=20),
    tag=st.text(max_size=1100),
)
def test_property_the_agent_accepts_in_bounds_and_refuses_the_rest(
    shared_agent, warmup, min_runs, max_runs, target, seconds, threads, provider, precision, tag
):
    protocol = dict(warmup=warmup, min_runs=min_runs, max_runs=max_runs, target_rel_ci=target, max_seconds=seconds)
    config = dict(runtime="onnxruntime", threads=threads, provider=provider, precision=precision)
    item = dict(model_sha256=SHA, model_format="onnx", tag=tag)
    overrides = {("protocol", k): v for k, v in protocol.items()}
    overrides.update({("config", k): v for k, v in config.items()})
    overrides[("item", "tag")] = tag
    with grpc.insecure_channel(shared_agent.address) as channel:
        try:
            replies = list(pb_grpc.AgentStub(channel).BenchmarkBatch(_request(overrides), timeout=20))
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.code(), exc.details())
            assert not _within_bounds(protocol, config, item), exc.details()
            return
    assert _within_bounds(protocol, config, item)
    assert len(replies) == 1 and "not on the device" in replies[0].error and replies[0].tag == tag


# -- models that crash or overrun -------------------------------------------------------------


def test_a_crashed_worker_fails_its_item_and_the_batch_goes_on(tmp_path):
    with running_agent(tmp_path / "agent") as agent:
        with GrpcClient(agent.address, timeout_s=30) as client:
            slow = client.put_model(onnx_conv_model(channels=16, size=32, seed=11))
            quick = client.put_model(onnx_conv_model(seed=12))
            # Both items measure for their full time caps (the CI is first checked after a million runs).
            protocol = MeasurementProtocol(warmup=1000, min_runs=1_000_000, max_runs=1_000_000, max_seconds=2.0)
            items = [BenchmarkItem(slow, "onnx", "crashes"), BenchmarkItem(quick, "onnx", "after")]
            results: list = []
            runner = threading.Thread(target=lambda: results.extend(client.benchmark_batch(items, RuntimeConfig(),
                                                                                          protocol)))
            runner.start()
            deadline = time.monotonic() + 30
            while not _workers(agent.proc.pid):
                assert time.monotonic() < deadline, "no benchmark worker appeared"
                time.sleep(0.02)
            (worker,) = _workers(agent.proc.pid)
            time.sleep(1.0)
            os.kill(worker, signal.SIGSEGV)
            runner.join(60)
            assert [r.tag for r in results] == ["crashes", "after"]
            assert not results[0].ok and "SIGSEGV" in results[0].error and "new worker" in results[0].error
            assert results[0].error.count("\n") == 0
            assert results[1].ok and results[1].latency.n >= 10, results[1].error
            assert client.describe()["agent_version"]
            assert worker not in _workers(agent.proc.pid) and len(_workers(agent.proc.pid)) == 1
        assert agent.proc.poll() is None


def test_models_over_the_memory_limit_or_the_input_cap_fail_alone(tmp_path):
    with running_agent(tmp_path / "agent", extra_args=["--memory-limit-mb", "400"]) as agent:
        with GrpcClient(agent.address, timeout_s=30) as client:
            wide = client.put_model(conv_out_model(cout=128, side=1024))  # a 512 MiB output
            huge_input = client.put_model(conv_out_model(cout=1, side=100_000))  # declares a 40 GB input
            fine = client.put_model(onnx_conv_model(seed=13))
            items = [BenchmarkItem(wide, "onnx", "wide"), BenchmarkItem(huge_input, "onnx", "huge"),
                     BenchmarkItem(fine, "onnx", "fine")]
            results = list(client.benchmark_batch(items, RuntimeConfig(), FAST))
            assert client.describe()["agent_version"]
        assert [r.tag for r in results] == ["wide", "huge", "fine"]
        assert "out of memory" in results[0].error and str(128 * 1024 * 1024 * 4) in results[0].error
        # the agent's limit, not a broken model (it used to say CorruptModel: ... cannot run it)
        assert results[0].error.startswith("DeviceError: ") and "memory limit is 400 MB" in results[0].error
        assert results[1].error.startswith("BadInput: the model's inputs need 40000000000 bytes")
        assert results[2].ok, results[2].error
        assert agent.proc.poll() is None


def test_sandbox_time_limit_crash_and_memory_limit(tmp_path):
    models = {}
    for name, text in {"ok": "ok", "sleep": "sleep", "abort": "abort", "hog": "hog 1024"}.items():
        models[name] = tmp_path / name
        models[name].write_text(text)
    backend = SandboxedBackend(MisbehavingBackend, memory_bytes=256 << 20, grace_s=0.5)
    protocol = MeasurementProtocol(max_seconds=0.1)
    try:
        first = backend.benchmark(models["ok"], "onnx", RuntimeConfig(), protocol)
        pid = first.extra["pid"]
        assert pid != os.getpid() and backend.worker_pid == pid
        assert backend.describe()["pid"] == os.getpid()  # facts are read in the agent, never queued behind a model
        t0 = time.monotonic()
        with pytest.raises(DeviceError, match=r"took longer than its limit of 0.7 s"):
            backend.benchmark(models["sleep"], "onnx", RuntimeConfig(), protocol)
        assert time.monotonic() - t0 < 10
        with pytest.raises(DeviceError, match=r"crashed the runtime \(SIGABRT\)"):
            backend.benchmark(models["abort"], "onnx", RuntimeConfig(), protocol)
        with pytest.raises(DeviceError, match="needs more memory than the agent's limit of 256 MB"):
            backend.benchmark(models["hog"], "onnx", RuntimeConfig(), protocol)
        after = backend.benchmark(models["ok"], "onnx", RuntimeConfig(), protocol)
        assert after.ok and after.extra["pid"] != pid and backend.restarts == 2  # the hog's worker lived on
        assert backend.process_id() == after.extra["pid"]  # a method the wrapper does not know, forwarded
        with pytest.raises(AttributeError):
            backend.no_such_method()
    finally:
        backend.close()
    assert backend.worker_pid is None
