"""The gRPC agent service: a thin shell over any :class:`Backend`.

``edgelat agent serve`` runs it over the local backend on a board or GPU host;
the ADB bridge runs the same service over its phone backend. Models arrive by
content hash into a size-capped :class:`ModelCache` and are benchmarked on the
agent, one at a time (concurrent runs would disturb each other's timings), so
network time never enters a latency. Every item goes through
:func:`edgelat.agents.client.run_item`, so a failing model yields a per-item
error exactly as on the in-process ``local`` device.

Uploads never wait for a benchmark and never stall one: a model streams into a
partial file while it is hashed (one chunk in memory), and only the verified
file is moved into place. An upload that sends nothing for ``upload_idle_s`` is
cancelled and its partial file removed; server keepalive pings find clients
that vanished without closing; at most ``max_uploads`` run at once, so stalled
uploaders cannot take every worker thread. Every value of a request is checked
here against the bounds of :mod:`edgelat.agents.bounds` (a client need not be
edgelat's own), and an agent refuses to listen beyond loopback without a token
unless told ``insecure``.

Kept light on purpose: this module imports grpc, protobuf and the agent's own
small modules only, so an agent starts fast on a small board.
"""

from __future__ import annotations

import contextlib

import hmac
import ipaddress
import logging
import signal
import socket
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from edgelat import __version__
from edgelat.agents import convert
from edgelat.agents.backend import Backend
from edgelat.agents.cache import CacheFull, IncomingModel, ModelCache, check_sha
from edgelat.agents.client import run_batch, run_item
from edgelat.agents.bounds import MAX_BATCH_ITEMS, check_config, check_item, check_protocol
from edgelat.values import BenchmarkItem, BenchmarkResult, MeasurementProtocol, RuntimeConfig
from edgelat import errors
from edgelat.errors import BadInput, DeviceError, EdgelatError
from edgelat.config import check_key_pair, read_pem
from edgelat.proto import agent_pb2 as pb
from edgelat.proto import agent_pb2_grpc as pb_grpc

#: most interleaved rounds a batch may ask for
MAX_ROUNDS = 100

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Agent"].full_name  # "edgelat.agent.v1.Agent"
DEFAULT_CACHE_MAX_BYTES = 2 << 30
# Models travel in chunks well under gRPC's default 4 MiB message limit; results
# may carry per-op rows, so the server allows larger messages than the default.
CHUNK_BYTES = 1 << 20
MAX_MESSAGE_BYTES = 64 << 20
# An upload that sends no chunk for this long is cancelled (its client stalled or vanished).
DEFAULT_UPLOAD_IDLE_S = 30.0
# Uploads in progress at once; beyond it an upload is refused (RESOURCE_EXHAUSTED) so that
# benchmarks and Describe always find a worker thread.
DEFAULT_MAX_UPLOADS = 4
DEFAULT_MAX_WORKERS = 16
# Clients send keepalive pings during long benchmarks (no data flows while the
# device measures); the server must accept them or it would drop the stream.
# The server pings too: a client that vanished without closing its connection
# (cable pulled, host suspended) is noticed and its calls cancelled.
# No SO_REUSEPORT: a second agent on a port in use must fail, not silently share it.
SERVER_OPTIONS = [
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
]
_HEALTH_PREFIX = "/grpc.health.v1.Health/"


def _invalid(context: grpc.ServicerContext, message: str) -> None:
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address's host part: name, IPv4, ``[IPv6]``) only reaches this machine.

    Names other than ``localhost`` are resolved; one that does not resolve, or
    resolves to any non-loopback address, is not loopback.
    """
    host = host.strip("[]")
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def check_listen(listen: str, token: str | None, insecure: bool = False) -> None:
    """A well-formed ``HOST:PORT``; beyond loopback only with a token or ``insecure``."""
    host, _, port_text = listen.rpartition(":")
    if not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise BadInput(f"bad listen address {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:50051")
    if token is None and not insecure and not is_loopback(host):
        raise BadInput(
            f"refusing to listen on {listen} without a token: anyone who reaches it could upload models and "
            "run them here; give --token-file (and --tls-cert/--tls-key), or --insecure on a trusted network"
        )


def check_bindable(listen: str) -> None:
    """BadInput naming the reason when no address of ``listen`` can be bound (in use, not an
    address of this machine), said before gRPC tries and only logs its own complaint."""
    host, _, port = listen.rpartition(":")
    try:
        infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        raise BadInput(f"cannot listen on {listen}: {host} does not resolve ({exc}); pick another --listen") from None
    reason = ""
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
            try:
                probe.bind(address)
                return
            except OSError as exc:
                reason = reason or (exc.strerror or str(exc)).lower()
    raise BadInput(f"cannot listen on {listen}: {reason or 'no address to bind'}; pick another --listen")


def check_request(config: RuntimeConfig, protocol: MeasurementProtocol, items: list[BenchmarkItem]) -> None:
    """Every bound a benchmark request must respect; raises BadInput naming the field."""
    check_config(config)
    check_protocol(protocol)
    if len(items) > MAX_BATCH_ITEMS:
        raise BadInput(f"items: a batch holds at most {MAX_BATCH_ITEMS} items, got {len(items)}")
    for i, item in enumerate(items):
        try:
            check_sha(item.model_sha256)
            check_item(item)
        except BadInput as exc:
            raise BadInput(f"item {i}: {exc}") from None


def _request(msg: Any, items: list[Any], context: grpc.ServicerContext
             ) -> tuple[RuntimeConfig, MeasurementProtocol, list[BenchmarkItem]]:
    """The runtime config, protocol and items of a request, checked (defaults where unset)."""
    config = convert.config_from_pb(msg.config) if msg.HasField("config") else RuntimeConfig()
    protocol = convert.protocol_from_pb(msg.protocol) if msg.HasField("protocol") else MeasurementProtocol()
    if len(items) > MAX_BATCH_ITEMS:  # before converting them all
        _invalid(context, f"items: a batch holds at most {MAX_BATCH_ITEMS} items, got {len(items)}")
    parsed = [convert.item_from_pb(m) for m in items]
    try:
        check_request(config, protocol, parsed)
    except BadInput as exc:
        _invalid(context, str(exc))
    return config, protocol, parsed


class _Upload:
    """One PutModel in progress, as the idle watchdog sees it."""

    __slots__ = ("context", "last", "timed_out")

    def __init__(self, context: grpc.ServicerContext) -> None:
        self.context = context
        self.last = time.monotonic()
        self.timed_out = False


class UploadWatchdog:
    """Cancels uploads that sent nothing for ``idle_s`` seconds (one thread for all of them)."""

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self._uploads: set[_Upload] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def track(self, context: grpc.ServicerContext) -> _Upload:
        upload = _Upload(context)
        with self._cond:
            self._uploads.add(upload)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="edgelat-upload-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()
        return upload

    def done(self, upload: _Upload) -> None:
        with self._cond:
            self._uploads.discard(upload)

    def _run(self) -> None:
        tick = min(1.0, self.idle_s / 4)
        while True:
            with self._cond:
                while not self._uploads:
                    self._cond.wait()
                now = time.monotonic()
                stale = [u for u in self._uploads if not u.timed_out and now - u.last > self.idle_s]
                for upload in stale:
                    upload.timed_out = True
            for upload in stale:
                _cancel(upload.context, f"no model data for {self.idle_s:g} s: upload dropped")
            with self._cond:
                self._cond.wait(timeout=tick)


def _cancel(context: grpc.ServicerContext, details: str) -> None:
    """End an RPC from another thread; the client sees DEADLINE_EXCEEDED with ``details``
    where grpc lets us say it (the handler's blocked read then raises)."""
    call = getattr(getattr(context, "_rpc_event", None), "call", None)
    try:
        call.cancel(grpc.StatusCode.DEADLINE_EXCEEDED.value[0], details)  # type: ignore[union-attr]
    except Exception:  # another grpc version: the plain cancel (client sees CANCELLED)
        context.cancel()


class AgentServicer(pb_grpc.AgentServicer):
    """The Agent service over one backend and one model cache."""

    def __init__(
        self,
        backend: Backend,
        cache: ModelCache,
        upload_idle_s: float = DEFAULT_UPLOAD_IDLE_S,
        max_uploads: int = DEFAULT_MAX_UPLOADS,
    ) -> None:
        self.backend = backend
        self.cache = cache
        self._bench_lock = threading.Lock()  # one benchmark at a time on the device
        self._upload_slots = threading.BoundedSemaphore(max_uploads)
        self.max_uploads = max_uploads
        self.watchdog = UploadWatchdog(upload_idle_s)
        self.models_received = 0  # PutModel uploads that stored a model (for tests and logs)
        self.uploads_dropped = 0  # uploads cancelled by the idle watchdog

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
        # No benchmark lock: streaming to disk needs little CPU and one chunk of memory,
        # and a slow or stalled uploader must never hold up another client's benchmark.
        if not self._upload_slots.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the agent is already receiving {self.max_uploads} models; retry when one is done",
            )
        upload = self.watchdog.track(context)
        incoming: IncomingModel | None = None
        try:
            incoming = self.cache.incoming()
            return self._put_model(request_iterator, context, upload, incoming)
        except grpc.RpcError:  # cancelled: by the watchdog, by the client, or the connection died
            if upload.timed_out:
                self.uploads_dropped += 1
                log.warning("upload dropped: no data for %g s (%d bytes received)",
                            self.watchdog.idle_s, incoming.size if incoming else 0)
            raise
        except OSError as exc:  # disk full, cache directory gone
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"the agent cannot write the model to {self.cache.directory}: {exc.strerror or exc}")
        finally:
            if incoming is not None:
                incoming.discard()  # no-op once committed
            self.watchdog.done(upload)
            self._upload_slots.release()

    def _put_model(
        self, request_iterator: Iterator[pb.ModelChunk], context: grpc.ServicerContext,
        upload: _Upload, incoming: IncomingModel,
    ) -> pb.PutModelResponse:
        sha = ""
        declared = 0
        for chunk in request_iterator:
            upload.last = time.monotonic()
            if not sha:
                sha = chunk.sha256
                try:
                    check_sha(sha)
                except BadInput as exc:
                    _invalid(context, f"the first model chunk must name the model's sha256: {exc}")
                declared = chunk.total_bytes
                if declared < 0:
                    _invalid(context, f"total_bytes must be >= 0, got {declared}")
                if declared > self.cache.max_bytes:
                    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._too_big(declared))
            data = chunk.data  # a copy on each access: take it once
            del chunk
            if incoming.size + len(data) > self.cache.max_bytes:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._too_big(incoming.size + len(data)))
            if declared and incoming.size + len(data) > declared:
                _invalid(context, f"the upload is longer than the {declared} bytes its first chunk declared")
            incoming.write(data)
            del data
        if upload.timed_out:  # the watchdog fired as the last chunk arrived
            raise _Dropped()
        if not sha:
            _invalid(context, "empty upload: send at least one chunk naming the model's sha256")
        try:
            stored = self.cache.commit(incoming, expected_sha=sha)
        except CacheFull as exc:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except BadInput as exc:  # hash mismatch (truncated or altered upload)
            _invalid(context, str(exc))
        self.models_received += 1
        log.info("stored model %s (%d bytes)", stored[:12], incoming.size)
        return pb.PutModelResponse(sha256=stored, bytes_received=incoming.size)

    def _too_big(self, size: int) -> str:
        return (
            f"model of {size} bytes exceeds the agent cache cap of {self.cache.max_bytes} bytes; "
            "restart the agent with a larger --cache-max-mb"
        )

    def Benchmark(self, request: pb.BenchmarkRequest, context: grpc.ServicerContext) -> pb.BenchmarkResult:
        if not request.HasField("item"):
            _invalid(context, "Benchmark needs an item (model sha256 and format)")
        config, protocol, (item,) = _request(request, [request.item], context)
        return convert.result_to_pb(self._run(item, config, protocol))

    def BenchmarkBatch(
        self, request: pb.BenchmarkBatchRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.BenchmarkResult]:
        config, protocol, items = _request(request, request.items, context)
        if not 0 <= request.rounds <= MAX_ROUNDS:
            _invalid(context, f"rounds must be from 0 to {MAX_ROUNDS}, got {request.rounds}")
        if request.rounds > 1:  # interleaved rounds: the device holds every session for the whole batch
            with self._bench_lock, contextlib.ExitStack() as pins:
                for item in items:
                    pins.enter_context(self.cache.pinned(item.model_sha256))
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
        with self._bench_lock, self.cache.pinned(item.model_sha256):
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


class _Dropped(grpc.RpcError):
    """The watchdog cancelled an upload just as its stream ended."""


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
    max_workers: int = DEFAULT_MAX_WORKERS,
    insecure: bool = False,
    upload_idle_s: float = DEFAULT_UPLOAD_IDLE_S,
    max_uploads: int = DEFAULT_MAX_UPLOADS,
) -> grpc.Server:
    """Build (not start) the agent server bound to ``listen`` (``HOST:PORT``; port 0 picks one).

    The bound port is in ``server.edgelat_port``; the servicer in
    ``server.edgelat_servicer``. TLS is on when both ``tls_cert`` and
    ``tls_key`` are given (PEM paths or bytes). Without ``cache_dir`` the
    models go to a temporary directory that lives as long as the server.
    Listening beyond loopback without a token is refused unless ``insecure``:
    anyone who reaches the port could upload models and have them run.
    """
    if (tls_cert is None) != (tls_key is None):
        raise BadInput("TLS needs both a certificate and a key (--tls-cert and --tls-key)")
    if token is not None:
        token = token.strip()
        if not token:
            raise BadInput("the token is empty: put a non-empty token in the --token-file")
        if not (token.isascii() and token.isprintable()) or " " in token:
            raise BadInput("the token must be printable ASCII without spaces (it travels as gRPC metadata)")
    check_listen(listen, token, insecure)
    pair = None
    if tls_cert is not None and tls_key is not None:
        pair = (read_pem(tls_key, "TLS key"), read_pem(tls_cert, "TLS certificate"))
        check_key_pair(pair[1], pair[0])
    if cache_max_bytes <= 0:
        raise BadInput(f"the cache cap must be positive, got {cache_max_bytes} bytes")
    if not (upload_idle_s > 0 and upload_idle_s < float("inf")):
        raise BadInput(f"the upload idle timeout must be a positive number of seconds, got {upload_idle_s}")
    if not 1 <= max_uploads < max_workers:
        raise BadInput(f"max_uploads must be from 1 to max_workers - 1 ({max_workers - 1}), got {max_uploads}")

    tmp = None
    if cache_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="edgelat-agent-cache-")
        cache_dir = tmp.name
    try:
        cache = ModelCache(cache_dir, max_bytes=cache_max_bytes, stale_s=max(120.0, 4 * upload_idle_s))
    except OSError as exc:
        raise BadInput(f"cannot use the model cache directory {cache_dir}: {exc.strerror}; pick another --cache-dir") from exc
    if cache.swept:
        log.info("removed %d partial upload(s) left in %s", cache.swept, cache.directory)
    servicer = AgentServicer(backend, cache, upload_idle_s=upload_idle_s, max_uploads=max_uploads)

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

    check_bindable(listen)
    try:
        if pair is not None:
            port = server.add_secure_port(listen, grpc.ssl_server_credentials([pair]))
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
