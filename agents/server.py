"""The gRPC agent service: a thin shell over any :class:`Backend`.

``edgelat agent serve`` runs it over the local backend on a board or GPU host;
the ADB bridge runs the same service over its phone backend. Models arrive by
content hash into a size-capped :class:`ModelCache` and are benchmarked on the
agent, one at a time (concurrent runs would disturb each other's timings), so
network time never enters a latency. Every item goes through
:func:`edgelat.agents.client.run_item`, so a failing model yields a per-item
error exactly as on the in-process ``local`` device.

Kept light on purpose: this module imports grpc, protobuf and the agent's own
small modules only, so an agent starts fast on a small board.
"""

from __future__ import annotations

import hmac
import logging
import signal
import socket
import tempfile
import threading
from concurrent import futures
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from edgelat import __version__
from edgelat.agents import convert
from edgelat.agents.backend import Backend
from edgelat.agents.cache import ModelCache, check_sha
from edgelat.agents.client import run_batch, run_item
from edgelat.agents.types import (
    FORMATS,
    RUNTIMES,
    BenchmarkItem,
    BenchmarkResult,
    MeasurementProtocol,
    RuntimeConfig,
)
from edgelat import errors
from edgelat.errors import BadInput, DeviceError, EdgelatError
from edgelat.proto import agent_pb2 as pb
from edgelat.proto import agent_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Agent"].full_name  # "edgelat.agent.v1.Agent"
DEFAULT_CACHE_MAX_BYTES = 2 << 30
# Models travel in chunks well under gRPC's default 4 MiB message limit; results
# may carry per-op rows, so the server allows larger messages than the default.
CHUNK_BYTES = 1 << 20
MAX_MESSAGE_BYTES = 64 << 20
# Clients send keepalive pings during long benchmarks (no data flows while the
# device measures); the server must accept them or it would drop the stream.
# No SO_REUSEPORT: a second agent on a port in use must fail, not silently share it.
SERVER_OPTIONS = [
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
]
_HEALTH_PREFIX = "/grpc.health.v1.Health/"


def _invalid(context: grpc.ServicerContext, message: str) -> None:
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)


def _request_config(msg: Any, context: grpc.ServicerContext) -> tuple[RuntimeConfig, MeasurementProtocol]:
    """The runtime config and protocol of a request, validated (defaults where unset)."""
    config = convert.config_from_pb(msg.config) if msg.HasField("config") else RuntimeConfig()
    protocol = convert.protocol_from_pb(msg.protocol) if msg.HasField("protocol") else MeasurementProtocol()
    if config.runtime not in RUNTIMES:
        _invalid(context, f"unknown runtime {config.runtime!r}; expected one of {', '.join(RUNTIMES)}")
    if config.threads < 1:
        _invalid(context, f"threads must be >= 1, got {config.threads}")
    if not config.provider:
        _invalid(context, "provider must not be empty (use 'cpu')")
    if protocol.warmup < 0 or protocol.min_runs < 1 or protocol.max_runs < protocol.min_runs:
        _invalid(
            context,
            f"bad measurement protocol: need warmup >= 0, min_runs >= 1 and max_runs >= min_runs, got "
            f"warmup={protocol.warmup} min_runs={protocol.min_runs} max_runs={protocol.max_runs}",
        )
    if not protocol.max_seconds > 0 or not protocol.target_rel_ci >= 0:
        _invalid(
            context,
            f"bad measurement protocol: need max_seconds > 0 and target_rel_ci >= 0, got "
            f"max_seconds={protocol.max_seconds} target_rel_ci={protocol.target_rel_ci}",
        )
    return config, protocol


def _request_items(items: Any, context: grpc.ServicerContext) -> list[BenchmarkItem]:
    out = []
    for i, msg in enumerate(items):
        try:
            check_sha(msg.model_sha256)
        except BadInput as exc:
            _invalid(context, f"item {i}: {exc}")
        if msg.model_format not in FORMATS:
            _invalid(context, f"item {i}: unknown model format {msg.model_format!r}; expected one of {', '.join(FORMATS)}")
        out.append(convert.item_from_pb(msg))
    return out


class AgentServicer(pb_grpc.AgentServicer):
    """The Agent service over one backend and one model cache."""

    def __init__(self, backend: Backend, cache: ModelCache) -> None:
        self.backend = backend
        self.cache = cache
        self._bench_lock = threading.Lock()  # one benchmark at a time on the device
        self.models_received = 0  # PutModel uploads that stored a model (for tests and logs)

    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext) -> pb.DescribeResponse:
        try:
            facts = dict(self.backend.describe())
        except EdgelatError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"the device could not be described: {exc}")
        facts.setdefault("agent_version", __version__)
        return convert.facts_to_pb(facts, __version__, socket.gethostname())

    def HasModel(self, request: pb.HasModelRequest, context: grpc.ServicerContext) -> pb.HasModelResponse:
        try:
            return pb.HasModelResponse(present=self.cache.path(request.sha256) is not None)
        except BadInput as exc:
            _invalid(context, str(exc))

    def PutModel(self, request_iterator: Iterator[pb.ModelChunk], context: grpc.ServicerContext) -> pb.PutModelResponse:
        # Receiving and writing a model costs CPU and memory bandwidth: never while a run is being timed.
        with self._bench_lock:
            return self._put_model(request_iterator, context)

    def _put_model(self, request_iterator: Iterator[pb.ModelChunk], context: grpc.ServicerContext) -> pb.PutModelResponse:
        sha = ""
        parts: list[bytes] = []
        received = 0
        for chunk in request_iterator:
            if not sha:
                sha = chunk.sha256
                try:
                    check_sha(sha)
                except BadInput as exc:
                    _invalid(context, f"the first model chunk must name the model's sha256: {exc}")
                if chunk.total_bytes > self.cache.max_bytes:
                    _invalid(context, self._too_big(chunk.total_bytes))
            received += len(chunk.data)
            if received > self.cache.max_bytes:
                _invalid(context, self._too_big(received))
            parts.append(chunk.data)
        if not sha:
            _invalid(context, "empty upload: send at least one chunk naming the model's sha256")
        try:
            stored = self.cache.put(b"".join(parts), expected_sha=sha)
        except BadInput as exc:  # hash mismatch (truncated or altered upload), or over the cap
            _invalid(context, str(exc))
        self.models_received += 1
        log.info("stored model %s (%d bytes)", stored[:12], received)
        return pb.PutModelResponse(sha256=stored, bytes_received=received)

    def _too_big(self, size: int) -> str:
        return (
            f"model of {size} bytes exceeds the agent cache cap of {self.cache.max_bytes} bytes; "
            "restart the agent with a larger --cache-max-mb"
        )

    def Benchmark(self, request: pb.BenchmarkRequest, context: grpc.ServicerContext) -> pb.BenchmarkResult:
        if not request.HasField("item"):
            _invalid(context, "Benchmark needs an item (model sha256 and format)")
        config, protocol = _request_config(request, context)
        (item,) = _request_items([request.item], context)
        return convert.result_to_pb(self._run(item, config, protocol))

    def BenchmarkBatch(
        self, request: pb.BenchmarkBatchRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.BenchmarkResult]:
        config, protocol = _request_config(request, context)
        items = _request_items(request.items, context)
        if request.rounds > 1:  # interleaved rounds: the device holds every session for the whole batch
            with self._bench_lock:
                for result in run_batch(self.backend, self.cache, items, config, protocol, request.rounds,
                                        keep_going=context.is_active):
                    yield convert.result_to_pb(result)
            return
        for item in items:
            if not context.is_active():  # the client went away: stop measuring for nobody
                log.info("client left; %d item(s) of the batch not run", len(items))
                return
            yield convert.result_to_pb(self._run(item, config, protocol))

    def _run(self, item: BenchmarkItem, config: RuntimeConfig, protocol: MeasurementProtocol) -> BenchmarkResult:
        with self._bench_lock:
            try:
                result = run_item(self.backend, self.cache, item, config, protocol)
            except Exception as exc:  # a backend bug must not end the whole batch
                log.exception("backend failed on model %s", item.model_sha256[:12])
                return BenchmarkResult(
                    model_sha256=item.model_sha256, config=config, tag=item.tag, agent_version=__version__,
                    error=errors.describe(DeviceError(f"agent backend failed: {type(exc).__name__}: {exc}")),
                )
        if result.latency is not None:
            log.info("model %s %s: median %.4g ms, n=%d%s", item.model_sha256[:12], config.key(),
                     result.latency.median, result.latency.n, "" if result.latency.stable else " (unstable)")
        else:
            log.info("model %s %s: %s", item.model_sha256[:12], config.key(), result.error or "no latency")
        return result


def _deny(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that only answers UNAUTHENTICATED."""

    def abort(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kinds: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler]] = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(abort, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


class TokenAuth(grpc.ServerInterceptor):
    """Require ``authorization: Bearer <token>`` on every RPC except health checks."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> Any:
        if handler_call_details.method.startswith(_HEALTH_PREFIX):
            return continuation(handler_call_details)
        given = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                given = value if isinstance(value, str) else value.decode("latin-1")
        if hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self._expected):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        reason = "missing token" if not given else "wrong token"
        return _deny(handler, f"{reason}: send metadata 'authorization: Bearer <token>'")


def make_server(
    backend: Backend,
    listen: str,
    token: str | None = None,
    tls_cert: str | Path | bytes | None = None,
    tls_key: str | Path | bytes | None = None,
    cache_dir: str | Path | None = None,
    cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES,
    max_workers: int = 8,
) -> grpc.Server:
    """Build (not start) the agent server bound to ``listen`` (``HOST:PORT``; port 0 picks one).

    The bound port is in ``server.edgelat_port``; the servicer in
    ``server.edgelat_servicer``. TLS is on when both ``tls_cert`` and
    ``tls_key`` are given (PEM paths or bytes). Without ``cache_dir`` the
    models go to a temporary directory that lives as long as the server.
    """
    if (tls_cert is None) != (tls_key is None):
        raise BadInput("TLS needs both a certificate and a key (--tls-cert and --tls-key)")
    if token is not None:
        token = token.strip()
        if not token:
            raise BadInput("the token is empty: put a non-empty token in the --token-file")
        if not (token.isascii() and token.isprintable()) or " " in token:
            raise BadInput("the token must be printable ASCII without spaces (it travels as gRPC metadata)")
    host, _, port_text = listen.rpartition(":")
    if not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise BadInput(f"bad listen address {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:50051")
    if cache_max_bytes <= 0:
        raise BadInput(f"the cache cap must be positive, got {cache_max_bytes} bytes")

    tmp = None
    if cache_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="edgelat-agent-cache-")
        cache_dir = tmp.name
    try:
        cache = ModelCache(cache_dir, max_bytes=cache_max_bytes)
    except OSError as exc:
        raise BadInput(f"cannot use the model cache directory {cache_dir}: {exc.strerror}; pick another --cache-dir") from exc
    servicer = AgentServicer(backend, cache)

    interceptors = [TokenAuth(token)] if token is not None else []
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="edgelat-agent"),
        interceptors=interceptors,
        options=SERVER_OPTIONS,
    )
    pb_grpc.add_AgentServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )

    try:
        if tls_cert is not None:
            creds = grpc.ssl_server_credentials([(_read_pem(tls_key, "key"), _read_pem(tls_cert, "certificate"))])
            port = server.add_secure_port(listen, creds)
        else:
            port = server.add_insecure_port(listen)
    except RuntimeError as exc:
        port = 0
        bind_error = str(exc)
    else:
        bind_error = ""
    if not port:
        raise BadInput(f"cannot listen on {listen}: {bind_error or 'address in use or not local'}; pick another --listen")

    server.edgelat_port = port  # type: ignore[attr-defined]
    server.edgelat_servicer = servicer  # type: ignore[attr-defined]
    server.edgelat_health = health_servicer  # type: ignore[attr-defined]
    server.edgelat_tmp = tmp  # type: ignore[attr-defined]  # keeps the temp cache alive
    return server


def _read_pem(source: str | Path | bytes, what: str) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read the TLS {what} {source}: {exc.strerror}") from exc


def serve(
    backend: Backend,
    listen: str,
    on_ready: Callable[[grpc.Server], None] | None = None,
    grace_s: float = 2.0,
    **kwargs: Any,
) -> None:
    """Run the agent until SIGTERM/SIGINT, then stop cleanly.

    On a signal, health turns NOT_SERVING, new RPCs are refused and running ones
    get ``grace_s`` seconds to finish before the backend is closed. ``on_ready``
    is called once the server is listening (the CLI prints its ready line there).
    ``kwargs`` go to :func:`make_server`.
    """
    server = make_server(backend, listen, **kwargs)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():  # signals can only be caught there
        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    server.start()
    try:
        if on_ready is not None:
            on_ready(server)
        while not stop.wait(0.5):
            pass
    finally:
        server.edgelat_health.enter_graceful_shutdown()  # type: ignore[attr-defined]
        server.stop(grace_s).wait()
        # Let a benchmark still measuring finish before its backend goes away (bounded wait).
        lock = server.edgelat_servicer._bench_lock  # type: ignore[attr-defined]
        locked = lock.acquire(timeout=grace_s + 10.0)
        try:
            backend.close()
        finally:
            if locked:
                lock.release()
        if server.edgelat_tmp is not None:  # type: ignore[attr-defined]
            server.edgelat_tmp.cleanup()  # type: ignore[attr-defined]
        for sig, handler in previous.items():
            signal.signal(sig, handler)
