"""The hub's side of the agents' outbound streams: a :class:`DeviceClient` over each.

An agent's ``Hub.Connect`` stream becomes an :class:`AgentConnection`; the
:class:`Fleet` maps each device name to the connection that serves it. A
:class:`TunnelClient` speaks the Agent service's requests down that stream
(request ids match replies to calls), so every library job runs unchanged
against a device that dialled in. When the stream dies mid-call the client
raises :class:`AgentUnreachable`, exactly as a vanished gRPC agent does.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import OrderedDict
from typing import Any, Iterator, Sequence

from edgelat.agents import convert
from edgelat.agents.cache import sha256_bytes
from edgelat.agents.client import DeviceClient
from edgelat.agents.server import CHUNK_BYTES
from edgelat.values import BenchmarkItem, BenchmarkResult, MeasurementProtocol, RuntimeConfig
from edgelat.errors import AgentUnreachable, DeviceError, EdgelatError, revive
from edgelat.proto import agent_pb2 as apb
from edgelat.proto import hub_pb2 as pb

log = logging.getLogger(__name__)

_GONE = object()  # put in every pending reply queue when the stream ends
#: most models a connection remembers its agent holds (then it asks again)
MAX_KNOWN_MODELS = 4096
#: models up to this size are uploaded without asking the agent whether it has them
PUT_WITHOUT_ASKING = 256 << 10
#: what an agent's result says when a model it was asked to run is not in its cache
MISSING_MODEL = "is not on the device"
#: bytes of models one client keeps, to send again one the agent's cache let go mid-job
RESEND_BYTES = 64 << 20


_SHAS: "OrderedDict[int, tuple[bytes, str]]" = OrderedDict()
_SHAS_LOCK = threading.Lock()


def _sha_of(data: bytes) -> str:
    """sha256 of ``data``, remembered for the last few bytes objects seen (by identity): every job
    puts the same cached sentinel models, one of them large, and hashing them each time adds up."""
    with _SHAS_LOCK:
        hit = _SHAS.get(id(data))
        if hit is not None and hit[0] is data:
            _SHAS.move_to_end(id(data))
            return hit[1]
    sha = sha256_bytes(data)
    if 4096 <= len(data) <= 4 << 20:  # small models hash faster than they are looked up; huge ones not kept
        with _SHAS_LOCK:
            _SHAS[id(data)] = (data, sha)
            while len(_SHAS) > 16:
                _SHAS.popitem(last=False)
    return sha


class AgentConnection:
    """One agent's stream: requests go out through :meth:`outgoing`, replies come in through :meth:`deliver`."""

    def __init__(self, agent_id: str, user: str, devices: dict[str, dict[str, Any]]) -> None:
        self.agent_id = agent_id
        self.user = user
        self.devices = devices
        self.last_seen = time.monotonic()
        self.reason = ""
        self.closed = threading.Event()
        self.context: Any = None  # the gRPC context of the Connect call, cancelled to drop the agent
        self.principal: Any = None  # the agent's token, as the hub's queue knows it
        self.refreshed = 0.0  # when its devices were last marked seen in the queue
        # (device, sha256) of the models the agent said it holds, or took from us, on this stream: not asked again
        self.models: set[tuple[str, str]] = set()
        # device -> (runtime config, rounds) -> the last drift-sentinel check of a job run on this stream
        self.sentinel: dict[str, dict[Any, Any]] = {}
        self._out: queue.SimpleQueue = queue.SimpleQueue()  # (C queues: every message passes two)
        self._pending: dict[int, queue.SimpleQueue] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def outgoing(self) -> Iterator[pb.HubMessage]:
        """The hub's messages to the agent, until the connection closes."""
        while True:
            msg = self._out.get()
            if msg is None:
                return
            yield msg

    def send(self, msg: pb.HubMessage) -> None:
        self._out.put(msg)

    def request(self, device: str, **body: Any) -> tuple[int, queue.SimpleQueue]:
        """Send a new request; returns its id and the queue its replies arrive in."""
        replies: queue.SimpleQueue = queue.SimpleQueue()
        with self._lock:
            if self.closed.is_set():
                raise AgentUnreachable(f"agent {self.agent_id} serving {device} left the hub ({self.reason})")
            rid = next(self._ids)
            self._pending[rid] = replies
        self._out.put(pb.HubMessage(request_id=rid, device=device, **body))
        return rid, replies

    def forget(self, rid: int) -> None:
        with self._lock:
            self._pending.pop(rid, None)

    def deliver(self, reply: pb.AgentReply) -> None:
        self.last_seen = time.monotonic()
        with self._lock:
            replies = self._pending.get(reply.request_id)
        if replies is not None:
            replies.put(reply)

    def touch(self) -> None:
        self.last_seen = time.monotonic()

    def close(self, reason: str) -> None:
        """The stream is gone: every waiting call raises AgentUnreachable."""
        with self._lock:
            if self.closed.is_set():
                return
            self.reason = reason
            self.closed.set()
            pending = list(self._pending.values())
            self._pending.clear()
        for replies in pending:
            replies.put(_GONE)
        self._out.put(None)
        if self.context is not None:
            try:
                self.context.cancel()
            except Exception:  # already finished
                pass


class Fleet:
    """The devices connected to this hub, each with the connection serving it."""

    def __init__(self) -> None:
        self._by_device: dict[str, AgentConnection] = {}
        self._lock = threading.Lock()
        self.changed = threading.Event()  # set when a device connects (the runner looks for work)

    def add(self, conn: AgentConnection) -> list[AgentConnection]:
        """Register ``conn``'s devices; returns older connections it replaces (to be closed)."""
        replaced = []
        with self._lock:
            for name in conn.devices:
                old = self._by_device.get(name)
                if old is not None and old is not conn:
                    replaced.append(old)
                self._by_device[name] = conn
            for old in replaced:
                for name, c in list(self._by_device.items()):
                    if c is old:
                        del self._by_device[name]
        self.changed.set()
        return replaced

    def remove(self, conn: AgentConnection) -> None:
        with self._lock:
            for name, c in list(self._by_device.items()):
                if c is conn:
                    del self._by_device[name]

    def connection(self, device: str) -> AgentConnection | None:
        with self._lock:
            conn = self._by_device.get(device)
        return conn if conn is not None and not conn.closed.is_set() else None

    def devices(self) -> list[str]:
        with self._lock:
            return [name for name, c in self._by_device.items() if not c.closed.is_set()]

    def count(self) -> int:
        """How many devices are registered (a closed connection's until it is removed)."""
        return len(self._by_device)

    def connections(self) -> list[AgentConnection]:
        with self._lock:
            return list({id(c): c for c in self._by_device.values()}.values())

    def client(self, device: str, timeout_s: float = 60.0) -> "TunnelClient":
        conn = self.connection(device)
        if conn is None:
            raise AgentUnreachable(f"no agent serving {device} is connected to this hub")
        return TunnelClient(conn, device, timeout_s)

    def drop_silent(self, timeout_s: float) -> list[str]:
        """Close connections that sent nothing for ``timeout_s`` (a dead host whose TCP never said so)."""
        now = time.monotonic()
        dropped = []
        for conn in self.connections():
            if not conn.closed.is_set() and now - conn.last_seen > timeout_s:
                conn.close(f"no heartbeat for {timeout_s:g} s")
                dropped.append(conn.agent_id)
        return dropped


class TunnelClient(DeviceClient):
    """A device served through an agent's outbound stream; the :class:`DeviceClient` of the hub's jobs.

    ``timeout_s`` bounds the short calls (describe, model upload); benchmarks wait
    as long as the stream lives (heartbeats tell the hub it does).
    """

    def __init__(self, conn: AgentConnection, device: str, timeout_s: float = 60.0) -> None:
        self.conn = conn
        self.device = device
        self.timeout_s = timeout_s
        self.models_sent = 0
        # sha256 -> the model, for the models put through this client (least recently used first):
        # an item whose model the agent evicted is sent again and run once more (see _stream)
        self._models: "OrderedDict[str, bytes]" = OrderedDict()
        self._models_bytes = 0

    @property
    def carried(self) -> dict[Any, Any]:
        """The last sentinel checks of jobs on this device over this stream (see
        :meth:`edgelat.profiler.sentinel.DriftSentinel.carried`), by runtime config and rounds."""
        return self.conn.sentinel.setdefault(self.device, {})

    @property
    def lost(self) -> bool:
        """Whether the stream this client used has died."""
        return self.conn.closed.is_set()

    def _gone(self, during: str) -> AgentUnreachable:
        return AgentUnreachable(
            f"agent {self.conn.agent_id} serving {self.device} stopped answering {during} ({self.conn.reason})")

    def _next(self, replies: queue.SimpleQueue, during: str, timeout_s: float | None) -> pb.AgentReply:
        try:
            reply = replies.get(timeout=timeout_s)
        except queue.Empty:
            raise AgentUnreachable(f"agent {self.conn.agent_id} serving {self.device} did not answer within "
                                   f"{timeout_s:g} s {during}") from None
        if reply is _GONE:
            raise self._gone(during)
        return reply

    def _unary(self, during: str, timeout_s: float | None = None, **body: Any) -> pb.AgentReply:
        rid, replies = self.conn.request(self.device, **body)
        try:
            reply = self._next(replies, during, timeout_s or self.timeout_s)
        finally:
            self.conn.forget(rid)
        if reply.error:
            raise revive(reply.error)
        return reply

    def describe(self) -> dict[str, Any]:
        reply = self._unary("while describing the device", describe=apb.DescribeRequest())
        return convert.facts_from_pb(reply.describe)

    def has_model(self, sha: str) -> bool:
        if (self.device, sha) in self.conn.models:
            return True
        reply = self._unary("while checking its model cache", has_model=apb.HasModelRequest(sha256=sha))
        if reply.has_model.present:
            self._holds(sha)
        return bool(reply.has_model.present)

    def _holds(self, sha: str) -> None:
        models = self.conn.models
        if len(models) >= MAX_KNOWN_MODELS:
            models.clear()
        models.add((self.device, sha))

    def put_model(self, data: bytes) -> str:
        sha = _sha_of(data)
        self._keep(sha, data)
        if (self.device, sha) in self.conn.models:
            return sha
        # a small model is sent at once (an agent that has it keeps its copy): one round trip, not two
        if len(data) > PUT_WITHOUT_ASKING and self.has_model(sha):
            return sha
        first = apb.ModelChunk(sha256=sha, total_bytes=len(data), data=data[:CHUNK_BYTES])
        rid, replies = self.conn.request(self.device, put_chunk=first, last=len(data) <= CHUNK_BYTES)
        try:
            for start in range(CHUNK_BYTES, len(data), CHUNK_BYTES):
                self.conn.send(pb.HubMessage(request_id=rid, device=self.device, last=start + CHUNK_BYTES >= len(data),
                                             put_chunk=apb.ModelChunk(data=data[start:start + CHUNK_BYTES])))
            reply = self._next(replies, "while receiving a model", self.timeout_s + len(data) / (1 << 20))
        finally:
            self.conn.forget(rid)
        if reply.error:
            raise revive(reply.error)
        if reply.put_model.sha256 != sha:
            raise DeviceError(f"agent {self.conn.agent_id} stored {reply.put_model.sha256} for a model whose "
                              f"sha256 is {sha}")
        self.models_sent += 1
        self._holds(sha)
        return sha

    def _keep(self, sha: str, data: bytes) -> None:
        """Remember a model put through this client (the most recently used ones, up to RESEND_BYTES)."""
        if sha in self._models:
            self._models.move_to_end(sha)
            return
        if len(data) > RESEND_BYTES:
            return
        self._models[sha] = data
        self._models_bytes += len(data)
        while self._models_bytes > RESEND_BYTES:
            self._models_bytes -= len(self._models.popitem(last=False)[1])

    def benchmark_batch(
        self, items: Sequence[BenchmarkItem], config: RuntimeConfig, protocol: MeasurementProtocol,
        rounds: int = 0,
    ) -> Iterator[BenchmarkResult]:
        for item in items:
            if item.model_sha256 in self._models:
                self._models.move_to_end(item.model_sha256)
        request = apb.BenchmarkBatchRequest(
            items=[convert.item_to_pb(item) for item in items], config=convert.config_to_pb(config),
            protocol=convert.protocol_to_pb(protocol), rounds=max(0, rounds),
        )
        return self._stream(request, len(items))

    def _stream(self, request: apb.BenchmarkBatchRequest, total: int, resend: bool = True
                ) -> Iterator[BenchmarkResult]:
        """The batch's results as they come. An item whose model the agent no longer holds (its cache
        evicted it after this stream sent it) is held back; once the batch ends its model is sent
        again and the item run once more, alone, and that result is yielded instead."""
        rid, replies = self.conn.request(self.device, benchmark_batch=request)
        done = 0
        finished = False
        missed: dict[int, BenchmarkResult] = {}  # item index -> its result saying the model is missing
        try:
            while True:
                reply = self._next(replies, f"mid-batch after {done} of {total} result(s)", None)
                if reply.HasField("result"):
                    done += 1
                    if reply.result.error and MISSING_MODEL in reply.result.error:
                        # the agent's cache let it go (evicted): upload it again
                        self.conn.models.discard((self.device, reply.result.model_sha256))
                        index = _item_of(request, reply.result, missed)
                        if resend and index is not None and reply.result.model_sha256 in self._models:
                            missed[index] = convert.result_from_pb(reply.result)
                            continue
                    yield convert.result_from_pb(reply.result)
                if reply.last:
                    finished = True
                    if reply.error:
                        raise revive(reply.error)
                    break
        finally:
            self.conn.forget(rid)
            if not finished and not self.conn.closed.is_set():  # the caller stopped early: the agent stops too
                self.conn.send(pb.HubMessage(request_id=rid, device=self.device, cancel=pb.Cancel()))
        if done != total:
            raise DeviceError(f"agent {self.conn.agent_id} ended the batch after {done} of {total} result(s)")
        for index, failed in missed.items():
            yield self._again(request, request.items[index], failed)

    def _again(self, request: apb.BenchmarkBatchRequest, item: apb.BenchmarkItem,
               failed: BenchmarkResult) -> BenchmarkResult:
        """Send an evicted model again and run its item alone (``failed`` when it cannot be sent)."""
        data = self._models.get(item.model_sha256)
        if data is None:
            return failed
        try:
            self.put_model(data)
        except AgentUnreachable:
            raise
        except EdgelatError as exc:  # e.g. it no longer fits the agent's cache: the item fails as before
            log.warning("model %s not sent again to %s: %s", item.model_sha256[:12], self.device, exc)
            return failed
        log.info("model %s was evicted by the agent serving %s: sent again", item.model_sha256[:12], self.device)
        alone = apb.BenchmarkBatchRequest(items=[item], config=request.config, protocol=request.protocol,
                                          rounds=request.rounds)
        return list(self._stream(alone, 1, resend=False))[0]


def _item_of(request: apb.BenchmarkBatchRequest, result: apb.BenchmarkResult, held: dict[int, Any]) -> int | None:
    """The index of the batch item a result answers (by tag and model; items already held back excluded)."""
    for index, item in enumerate(request.items):
        if item.tag == result.tag and item.model_sha256 == result.model_sha256 and index not in held:
            return index
    return None
