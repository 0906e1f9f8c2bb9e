"""The gRPC agent end to end: real ``edgelat agent serve`` processes on loopback, the real client."""

from __future__ import annotations

import platform
import signal
import threading
import time

import grpc
import onnxruntime
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from agent_helpers import FAST_ARGS, free_port, onnx_conv_model, running_agent, self_signed_tls, start_agent
from edgelat import __version__
from edgelat.agents.cache import sha256_bytes
from edgelat.agents.remote import GrpcClient
from edgelat.values import BenchmarkItem, MeasurementProtocol, RuntimeConfig
from edgelat.errors import AgentUnreachable, AuthFailed, BadInput
from edgelat.proto import agent_pb2 as pb
from edgelat.proto import agent_pb2_grpc as pb_grpc

TOKEN = "t0k3n-for-tests"
FAST = MeasurementProtocol(**FAST_ARGS)
CPU = RuntimeConfig(runtime="onnxruntime", threads=1, provider="cpu")


@pytest.fixture(scope="module")
def shared_agent(tmp_path_factory):
    """One token-protected agent for the tests that do not stop or fill it."""
    with running_agent(tmp_path_factory.mktemp("agent"), token=TOKEN) as agent:
        yield agent


@pytest.fixture
def client(shared_agent):
    with GrpcClient(shared_agent.address, token=TOKEN, timeout_s=10) as c:
        yield c


def auth_md(token: str = TOKEN):
    return (("authorization", f"Bearer {token}"),)


def test_ready_line_and_health(shared_agent):
    assert shared_agent.ready_line == f"edgelat agent listening on 127.0.0.1:{shared_agent.port} (token required)"
    with grpc.insecure_channel(shared_agent.address) as channel:  # health needs no token
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="edgelat.agent.v1.Agent"), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_describe(client):
    facts = client.describe()
    assert facts["arch"] == platform.machine()
    assert facts["agent_version"] == __version__
    assert facts["name"]
    assert "onnxruntime" in str(facts.get("runtimes", ""))


def test_reflection_lists_the_service(shared_agent):
    with grpc.insecure_channel(shared_agent.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = list(stub.ServerReflectionInfo(iter([request]), metadata=auth_md(), timeout=5))
        names = {s.name for s in replies[0].list_services_response.service}
        assert {"edgelat.agent.v1.Agent", "grpc.health.v1.Health"} <= names
        # Reflection is not health: it needs the token like the service itself.
        with pytest.raises(grpc.RpcError) as err:
            list(stub.ServerReflectionInfo(iter([request]), timeout=5))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_put_model_sends_once(client, shared_agent):
    data = onnx_conv_model(seed=101)
    sha = sha256_bytes(data)
    assert not client.has_model(sha)
    assert client.put_model(data) == sha
    assert (client.models_sent, client.bytes_sent) == (1, len(data))
    assert (shared_agent.cache_dir / sha).read_bytes() == data
    # The second put (even from a new client) only asks HasModel and sends nothing.
    assert client.put_model(data) == sha
    with GrpcClient(shared_agent.address, token=TOKEN) as other:
        assert other.put_model(data) == sha
        assert other.models_sent == 0 and other.bytes_sent == 0
    assert client.models_sent == 1 and client.has_model(sha)


def test_large_model_goes_in_chunks(client, shared_agent):
    """A model over gRPC's 4 MiB message limit arrives intact (chunked upload)."""
    data = onnx_conv_model(channels=256, depth=3, size=4, seed=7)  # ~7 MiB of weights
    assert len(data) > 4 << 20
    sha = client.put_model(data)
    assert (shared_agent.cache_dir / sha).read_bytes() == data


def test_benchmark_returns_sane_stats(client):
    sha = client.put_model(onnx_conv_model(seed=102))
    result = client.benchmark(BenchmarkItem(sha, "onnx", tag="conv-stack"), CPU, FAST)
    assert result.ok, result.error
    lat = result.latency
    assert 0 < lat.p10 <= lat.median <= lat.p90 < 1000
    assert 3 <= lat.n <= 20 and lat.mean > 0 and lat.std >= 0
    assert (result.tag, result.model_sha256) == ("conv-stack", sha)
    assert result.config.runtime == "onnxruntime" and result.config.version == onnxruntime.__version__
    assert result.agent_version == __version__
    assert result.energy_mj is not None or result.energy_note  # a number or the reason there is none


def test_batch_streams_in_order_and_isolates_a_corrupt_model(client):
    good = [client.put_model(onnx_conv_model(seed=200 + i)) for i in range(3)]
    corrupt = client.put_model(b"this is not an onnx model" * 10)
    items = [
        BenchmarkItem(good[0], "onnx", "a"),
        BenchmarkItem(corrupt, "onnx", "broken"),
        BenchmarkItem(good[1], "onnx", "b"),
        BenchmarkItem(good[2], "onnx", "c"),
    ]
    protocol = MeasurementProtocol(warmup=1, min_runs=10**6, max_runs=10**6, max_seconds=0.4)
    start = time.monotonic()
    arrivals, results = [], []
    for result in client.benchmark_batch(items, CPU, protocol):
        arrivals.append(time.monotonic() - start)
        results.append(result)
    assert [r.tag for r in results] == ["a", "broken", "b", "c"]
    assert [r.model_sha256 for r in results] == [i.model_sha256 for i in items]
    assert results[1].error.startswith("CorruptModel: ") and results[1].latency is None
    for r in (results[0], results[2], results[3]):
        assert r.ok and r.latency.median > 0
    # Streamed as each finished: the first result came well before the last one was measured.
    assert arrivals[-1] - arrivals[0] > 0.6, arrivals


def test_model_not_on_the_device_is_a_per_item_error(client):
    missing = "0" * 64
    (result,) = list(client.benchmark_batch([BenchmarkItem(missing, "onnx", "gone")], CPU, FAST))
    assert result.error.startswith("BadInput: ") and "not on the device" in result.error


def test_wrong_and_missing_token(shared_agent):
    for token in ("wrong", None):
        with GrpcClient(shared_agent.address, token=token) as c:
            with pytest.raises(AuthFailed, match=r"agent at 127\.0\.0\.1:\d+ rejected the token.*--token-file"):
                c.describe()
            with pytest.raises(AuthFailed):
                c.put_model(b"anything")


def test_from_transport_reads_the_token_file(shared_agent):
    with GrpcClient.from_transport(shared_agent.transport) as c:
        assert c.describe()["agent_version"] == __version__
    with pytest.raises(BadInput, match="token file"):
        GrpcClient.from_transport({"type": "agent", "address": shared_agent.address, "token_file": "/nonexistent/tok"})


def test_unreachable_address_fails_fast():
    address = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    with GrpcClient(address, timeout_s=10) as c:
        with pytest.raises(AgentUnreachable, match=rf"agent at {address} did not answer"):
            c.describe()
    assert time.monotonic() - start < 3


def test_bad_requests_are_invalid_argument(client, shared_agent):
    sha = client.put_model(onnx_conv_model(seed=103))
    with pytest.raises(BadInput, match="unknown runtime 'tensorflow'"):
        client.benchmark(BenchmarkItem(sha, "onnx"), RuntimeConfig(runtime="tensorflow"), FAST)
    with pytest.raises(BadInput, match="max_runs >= min_runs"):
        list(client.benchmark_batch([BenchmarkItem(sha, "onnx")], CPU, MeasurementProtocol(min_runs=5, max_runs=2)))
    with pytest.raises(BadInput, match="unknown model format"):
        client.benchmark(BenchmarkItem(sha, "pt"), CPU, FAST)
    with grpc.insecure_channel(shared_agent.address) as channel:
        stub = pb_grpc.AgentStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Benchmark(
                pb.BenchmarkRequest(item=pb.BenchmarkItem(model_sha256="../../etc/passwd", model_format="onnx")),
                metadata=auth_md(), timeout=5,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a sha256" in err.value.details()


def test_hash_mismatch_is_rejected(shared_agent):
    data = onnx_conv_model(seed=104)
    claimed = sha256_bytes(b"something else")
    with grpc.insecure_channel(shared_agent.address) as channel:
        stub = pb_grpc.AgentStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.PutModel(iter([pb.ModelChunk(sha256=claimed, total_bytes=len(data), data=data)]),
                          metadata=auth_md(), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "hash mismatch" in err.value.details()
        assert not stub.HasModel(pb.HasModelRequest(sha256=claimed), metadata=auth_md(), timeout=5).present
        assert not stub.HasModel(pb.HasModelRequest(sha256=sha256_bytes(data)), metadata=auth_md(), timeout=5).present
    assert not (shared_agent.cache_dir / claimed).exists()


def test_cache_cap_evicts_least_recently_used(tmp_path):
    # Three models of ~300 KB under a 0.7 MB cap: the third push evicts the oldest.
    models = [onnx_conv_model(channels=64, size=4, depth=2, seed=300 + i) for i in range(3)]
    assert all(280_000 < len(m) < 320_000 for m in models)
    with running_agent(tmp_path, cache_max_mb=0.7) as agent, GrpcClient(agent.address) as c:
        a, b = c.put_model(models[0]), c.put_model(models[1])
        assert c.has_model(a) and c.has_model(b)
        c.benchmark(BenchmarkItem(a, "onnx"), CPU, FAST)  # using `a` makes `b` the least recently used
        time.sleep(0.02)  # mtime resolution
        new = c.put_model(models[2])
        assert c.has_model(a) and c.has_model(new) and not c.has_model(b)
        assert sum(p.stat().st_size for p in agent.cache_dir.iterdir()) <= 0.7 * (1 << 20)
        (gone,) = list(c.benchmark_batch([BenchmarkItem(b, "onnx", "evicted")], CPU, FAST))
        assert "not on the device" in gone.error
        with pytest.raises(BadInput, match="exceeds the agent cache cap.*--cache-max-mb"):
            c.put_model(onnx_conv_model(channels=128, size=4, depth=2, seed=1))


def test_killing_the_agent_mid_stream(tmp_path):
    agent = start_agent(tmp_path)
    try:
        with GrpcClient(agent.address) as c:
            shas = [c.put_model(onnx_conv_model(seed=400 + i)) for i in range(4)]
            protocol = MeasurementProtocol(warmup=1, min_runs=10**6, max_runs=10**6, max_seconds=1.0)
            got = []
            start = time.monotonic()
            with pytest.raises(AgentUnreachable, match=r"mid-batch after 1 of 4"):
                for result in c.benchmark_batch([BenchmarkItem(s, "onnx", str(i)) for i, s in enumerate(shas)], CPU, protocol):
                    got.append(result)
                    agent.proc.kill()  # the device vanishes while the second model is measured
            assert [r.tag for r in got] == ["0"] and got[0].ok
            assert time.monotonic() - start < 10
    finally:
        agent.stop(signal.SIGKILL)


def test_sigterm_stops_cleanly(tmp_path):
    agent = start_agent(tmp_path, token=TOKEN)
    assert agent.stop(signal.SIGTERM) == 0
    assert "Traceback" not in "".join(agent.output)


def test_tls(tmp_path):
    cert, key, ca = self_signed_tls(tmp_path / "tls")
    with running_agent(tmp_path / "agent", tls=(cert, key, ca), token=TOKEN) as agent:
        assert agent.ready_line.endswith("(token required, TLS)")
        with GrpcClient.from_transport(agent.transport) as c:
            sha = c.put_model(onnx_conv_model(seed=500))
            assert c.benchmark(BenchmarkItem(sha, "onnx"), CPU, FAST).ok
        with GrpcClient(agent.address, token=TOKEN) as plain:  # no TLS against a TLS agent
            with pytest.raises(AgentUnreachable):
                plain.describe()


def test_benchmarks_never_overlap(tmp_path):
    """Two hosts asking at once are served one after the other (no disturbed timings)."""
    from edgelat.agents.local import LocalBackend
    from edgelat.agents.server import make_server

    spans: list[tuple[float, float]] = []

    class Recording(LocalBackend):
        def benchmark(self, *args, **kwargs):
            t0 = time.monotonic()
            try:
                return super().benchmark(*args, **kwargs)
            finally:
                spans.append((t0, time.monotonic()))

    server = make_server(Recording(), "127.0.0.1:0", cache_dir=tmp_path / "cache")
    server.start()
    try:
        address = f"127.0.0.1:{server.edgelat_port}"
        with GrpcClient(address) as c:
            shas = [c.put_model(onnx_conv_model(seed=600 + i)) for i in range(2)]
        protocol = MeasurementProtocol(warmup=1, min_runs=10**6, max_runs=10**6, max_seconds=0.3)
        errors: list[BaseException] = []

        def ask(sha: str) -> None:
            try:
                with GrpcClient(address) as c:
                    list(c.benchmark_batch([BenchmarkItem(sha, "onnx")] * 2, CPU, protocol))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=ask, args=(s,)) for s in shas]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors
        assert server.edgelat_servicer.models_received == 2
        assert len(spans) == 4
        spans.sort()
        for (s0, e0), (s1, _) in zip(spans, spans[1:]):
            assert s1 >= e0, spans
    finally:
        server.stop(0).wait()
