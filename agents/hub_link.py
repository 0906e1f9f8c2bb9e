"""The agent's outbound link to a hub: dial out, serve the hub's requests, reconnect.

A board behind NAT or a phone host behind a firewall has no inbound port; it
opens one gRPC stream to the hub (``Hub.Connect`` in ``edgelat/proto/hub.proto``)
and the hub sends the Agent service's requests down it (describe, has/put model
in chunks, benchmark batch), each with a request id. Every request is answered
by the very :class:`~edgelat.agents.server.AgentServicer` a listening agent
uses, one per device, so checks, the model cache, the one-benchmark-at-a-time
lock and per-item errors are the same whichever way the host reaches the agent.

The link sends a heartbeat every few seconds; when the stream breaks (the hub
restarted, the network went away) running batches stop and the link dials
again with a growing backoff. A refused token or device claim is final: it is
raised as one line and the link does not retry.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc

from edgelat import __version__
from edgelat.agents.backend import Backend
from edgelat.agents.cache import ModelCache
from edgelat.agents.remote import CHANNEL_OPTIONS, warn_token_in_clear
from edgelat.agents.server import DEFAULT_CACHE_MAX_BYTES, DEFAULT_UPLOAD_IDLE_S, AgentServicer
from edgelat.errors import AuthFailed, BadInput
from edgelat.proto import agent_pb2 as apb
from edgelat.proto import hub_pb2 as pb
from edgelat.proto import hub_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_S = 5.0
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
_END = object()  # end of an upload's chunks
_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: "BadInput",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "BadInput",
    grpc.StatusCode.NOT_FOUND: "UnknownDevice",
}


class _Aborted(Exception):
    """A servicer method ended the request (what ``context.abort`` does in a real server)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class _Cancelled(grpc.RpcError):
    """The upload was cancelled (by the hub, the idle watchdog, or the link going down)."""


class _Context:
    """What an :class:`AgentServicer` method needs of a gRPC context, for one tunnelled request."""

    def __init__(self, alive: Callable[[], bool]) -> None:
        self._alive = alive
        self._cancelled = threading.Event()
        self.chunks: queue.Queue | None = None  # PutModel's incoming chunks

    def is_active(self) -> bool:
        return not self._cancelled.is_set() and self._alive()

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _Aborted(code, details)

    def cancel(self) -> None:
        self._cancelled.set()
        if self.chunks is not None:
            self.chunks.put(_END)

    def chunk_iter(self) -> Iterator[apb.ModelChunk]:
        assert self.chunks is not None
        while True:
            chunk = self.chunks.get()
            if self._cancelled.is_set():
                raise _Cancelled()
            if chunk is _END:
                return
            yield chunk


class HubLink:
    """Serve ``devices`` (name -> backend) to the hub at ``address`` over one outbound stream.

    ``run(stop)`` blocks until ``stop`` is set (or the hub refuses the link for good).
    ``cut()`` breaks the current stream as a network failure would (the link dials again).
    """

    def __init__(
        self,
        address: str,
        token: str,
        devices: dict[str, Backend],
        agent_id: str | None = None,
        cache_dir: str | Path | None = None,
        cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES,
        tls_ca: bytes | None = None,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        upload_idle_s: float = DEFAULT_UPLOAD_IDLE_S,
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise BadInput(f"bad hub address {address!r}: expected HOST:PORT, e.g. hub.lab:50100")
        if not devices:
            raise BadInput("no device to serve to the hub")
        self.address = address
        self.agent_id = agent_id or socket.gethostname()
        self.heartbeat_s = heartbeat_s
        self.backoff_max_s = backoff_max_s
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._tls_ca = tls_ca
        warn_token_in_clear(address, tls_ca is not None, "serve the hub with TLS and give --hub-tls-ca")
        self._tmp = None
        if cache_dir is None:
            import tempfile

            self._tmp = tempfile.TemporaryDirectory(prefix="edgelat-link-cache-")
            cache_dir = self._tmp.name
        self.servicers: dict[str, AgentServicer] = {}
        for name, backend in devices.items():
            cache = ModelCache(Path(cache_dir) / name, max_bytes=cache_max_bytes, stale_s=max(120.0, 4 * upload_idle_s))
            self.servicers[name] = AgentServicer(backend, cache, upload_idle_s=upload_idle_s)
        self.connected = threading.Event()  # set while the hub has welcomed this link
        self.sessions = 0  # streams the hub welcomed (reconnections show as > 1)
        self._call: Any = None
        self._pool = futures.ThreadPoolExecutor(max_workers=8 + 2 * len(devices), thread_name_prefix="edgelat-link")

    # -- the connection loop ------------------------------------------------------------

    def run(self, stop: threading.Event, on_connected: Callable[[], None] | None = None) -> None:
        """Dial the hub and serve it until ``stop``; dial again with backoff when the stream breaks."""
        delay = BACKOFF_MIN_S
        while not stop.is_set():
            try:
                welcomed = self._session(stop, on_connected)
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                details = (exc.details() if hasattr(exc, "details") else "") or ""
                if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    raise AuthFailed(f"the hub at {self.address} refused this agent: {details}") from None
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    raise BadInput(f"the hub at {self.address} refused this agent: {details}") from None
                welcomed = self.connected.is_set()
                log.warning("hub link to %s down (%s: %s); dialling again in %.1f s", self.address,
                            code.name if code else "error", details, delay)
            finally:
                self.connected.clear()
            if welcomed:
                delay = BACKOFF_MIN_S
            if stop.wait(delay):
                break
            delay = min(delay * 2, self.backoff_max_s)

    def _channel(self) -> grpc.Channel:
        if self._tls_ca is not None:
            return grpc.secure_channel(self.address, grpc.ssl_channel_credentials(self._tls_ca), options=CHANNEL_OPTIONS)
        return grpc.insecure_channel(self.address, options=CHANNEL_OPTIONS)

    def _hello(self) -> pb.AgentMessage:
        devices = []
        for name, servicer in self.servicers.items():
            facts = dict(servicer.backend.describe())
            facts.setdefault("agent_version", __version__)
            devices.append(pb.DeviceHello(name=name, facts_json=_dumps(facts)))
        return pb.AgentMessage(hello=pb.Hello(agent_id=self.agent_id, devices=devices, agent_version=__version__))

    def _session(self, stop: threading.Event, on_connected: Callable[[], None] | None) -> bool:
        """One stream: hello, then serve requests until it ends. Returns whether the hub welcomed it."""
        out: queue.Queue = queue.Queue()
        out.put(self._hello())
        ended = threading.Event()
        contexts: dict[int, _Context] = {}

        sent = [time.monotonic()]  # when the last message went to the hub

        def outgoing() -> Iterator[pb.AgentMessage]:
            while True:
                msg = out.get()
                if msg is None:
                    return
                sent[0] = time.monotonic()
                yield msg

        def alive() -> bool:
            return not ended.is_set() and not stop.is_set()

        def beat() -> None:
            # any message tells the hub the agent is alive: a heartbeat only after a quiet interval
            while not ended.wait(max(0.05, self.heartbeat_s - (time.monotonic() - sent[0]))):
                if time.monotonic() - sent[0] >= self.heartbeat_s:
                    out.put(pb.AgentMessage(heartbeat=pb.Heartbeat()))

        channel = self._channel()
        call = pb_grpc.HubStub(channel).Connect(outgoing(), metadata=self._metadata)
        self._call = call
        # from the hello on: the hub readies the devices (model uploads) before its welcome, and a
        # slow upload must not look like a silent agent
        threading.Thread(target=beat, daemon=True, name="edgelat-link-heartbeat").start()

        def watch_stop() -> None:
            while not ended.wait(0.2):
                if stop.is_set():
                    call.cancel()
                    return

        threading.Thread(target=watch_stop, daemon=True, name="edgelat-link-stop").start()
        welcomed = False
        try:
            for msg in call:
                kind = msg.WhichOneof("body")
                if kind == "welcome":
                    welcomed = True
                    self.sessions += 1
                    if msg.welcome.heartbeat_s > 0:
                        self.heartbeat_s = min(self.heartbeat_s, msg.welcome.heartbeat_s)
                    self.connected.set()
                    log.info("connected to hub %s (%s) as %s serving %s", self.address, msg.welcome.hub_id,
                             self.agent_id, ", ".join(self.servicers))
                    if on_connected is not None:
                        on_connected()
                    continue
                self._dispatch(msg, kind, out, contexts, alive)
        except grpc.RpcError as exc:
            if stop.is_set() and exc.code() == grpc.StatusCode.CANCELLED:
                return welcomed
            if exc.code() == grpc.StatusCode.CANCELLED and welcomed:
                log.warning("hub link to %s cut; dialling again", self.address)
                return welcomed
            raise
        finally:
            ended.set()
            out.put(None)
            for ctx in list(contexts.values()):
                ctx.cancel()
            channel.close()
        log.warning("hub %s closed the link; dialling again", self.address)
        return welcomed

    def cut(self) -> None:
        """Break the current stream, as a dropped connection would (tests, fault drills)."""
        call = self._call
        if call is not None:
            call.cancel()

    def close(self) -> None:
        """Stop serving: the backends are closed (call after ``run`` returned)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        for servicer in self.servicers.values():
            try:
                servicer.backend.close()
            except Exception:  # closing one device must not keep the others open
                log.exception("closing %s failed", servicer.backend)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- requests -----------------------------------------------------------------------

    def _dispatch(self, msg: pb.HubMessage, kind: str | None, out: queue.Queue, contexts: dict[int, _Context],
                  alive: Callable[[], bool]) -> None:
        rid = msg.request_id
        if kind == "cancel":
            ctx = contexts.get(rid)
            if ctx is not None:
                ctx.cancel()
            return
        if kind == "put_chunk" and rid in contexts:  # a further chunk of an upload in progress
            ctx = contexts[rid]
            if ctx.chunks is not None:
                ctx.chunks.put(msg.put_chunk)
                if msg.last:
                    ctx.chunks.put(_END)
            return
        servicer = self.servicers.get(msg.device)
        if servicer is None:
            out.put(_reply(rid, error=f"UnknownDevice: this agent serves {', '.join(self.servicers)}, "
                                      f"not {msg.device!r}"))
            return
        ctx = _Context(alive)
        contexts[rid] = ctx

        def done() -> None:
            contexts.pop(rid, None)

        if kind == "describe":
            self._pool.submit(self._unary, rid, out, done, lambda: ("describe", servicer.Describe(msg.describe, ctx)))
        elif kind == "has_model":
            self._unary(rid, out, done, lambda: ("has_model", servicer.HasModel(msg.has_model, ctx)))
        elif kind == "put_chunk":
            ctx.chunks = queue.Queue()
            ctx.chunks.put(msg.put_chunk)
            if msg.last:
                ctx.chunks.put(_END)
            self._pool.submit(self._unary, rid, out, done,
                              lambda: ("put_model", servicer.PutModel(ctx.chunk_iter(), ctx)))
        elif kind == "benchmark_batch":
            self._pool.submit(self._stream, rid, out, done, servicer, msg.benchmark_batch, ctx)
        else:
            done()
            out.put(_reply(rid, error=f"BadInput: unknown request {kind!r} (a newer hub?)"))

    def _unary(self, rid: int, out: queue.Queue, done: Callable[[], None], call: Callable[[], tuple[str, Any]]) -> None:
        try:
            field, reply = call()
            out.put(_reply(rid, **{field: reply}))
        except Exception as exc:
            out.put(_reply(rid, error=_error_text(exc)))
        finally:
            done()

    def _stream(self, rid: int, out: queue.Queue, done: Callable[[], None], servicer: AgentServicer,
                request: apb.BenchmarkBatchRequest, ctx: _Context) -> None:
        try:
            for result in servicer.BenchmarkBatch(request, ctx):
                out.put(pb.AgentMessage(reply=pb.AgentReply(request_id=rid, result=result)))
            out.put(_reply(rid))
        except Exception as exc:
            out.put(_reply(rid, error=_error_text(exc)))
        finally:
            done()


def _dumps(facts: dict[str, Any]) -> str:
    from edgelat.agents.convert import dumps

    return dumps(facts)


def _reply(rid: int, error: str = "", **body: Any) -> pb.AgentMessage:
    return pb.AgentMessage(reply=pb.AgentReply(request_id=rid, last=True, error=error, **body))


def _error_text(exc: BaseException) -> str:
    """``ClassName: message``, so the hub raises the same error class (see errors.revive)."""
    if isinstance(exc, _Aborted):
        return f"{_CODES.get(exc.code, 'DeviceError')}: {exc.details}"
    if isinstance(exc, grpc.RpcError):
        return "DeviceError: the request was cancelled"
    from edgelat.errors import EdgelatError, describe

    if isinstance(exc, EdgelatError):
        return describe(exc)
    log.exception("hub request failed")
    return f"DeviceError: agent failed: {type(exc).__name__}: {exc}"


def serve_hub(
    devices: dict[str, Backend],
    address: str,
    token: str,
    on_ready: Callable[[HubLink], None] | None = None,
    **kwargs: Any,
) -> None:
    """Run a :class:`HubLink` until SIGTERM/SIGINT (the CLI's ``agent serve --hub``)."""
    import signal

    link = HubLink(address, token, devices, **kwargs)
    stop = threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, lambda *a: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        link.run(stop, on_connected=(lambda: on_ready(link)) if on_ready else None)
    finally:
        link.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
