"""The host's client for a gRPC agent (boards, GPU hosts, the ADB bridge).

It speaks the service in ``edgelat/proto/agent.proto`` and turns gRPC failures
into the user-facing errors of :mod:`edgelat.errors`: an address that does not
answer is :class:`AgentUnreachable`, a rejected token is :class:`AuthFailed`.
Models go by content hash: ``put_model`` asks ``HasModel`` first and uploads
only what the agent lacks. A batch streams its results; if the agent dies
mid-batch the results already yielded stay with the caller and the iterator
then raises :class:`AgentUnreachable`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator, Sequence

import grpc

from edgelat.agents import convert
from edgelat.agents.cache import check_sha, sha256_bytes
from edgelat.agents.client import DeviceClient
from edgelat.agents.server import CHUNK_BYTES, MAX_MESSAGE_BYTES, is_loopback
from edgelat.values import FORMATS, BenchmarkItem, BenchmarkResult, MeasurementProtocol, RuntimeConfig
from edgelat.config import check_ca, read_pem, read_token_file
from edgelat.errors import AgentUnreachable, AuthFailed, BadInput, DeviceError
from edgelat.proto import agent_pb2 as pb
from edgelat.proto import agent_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
_warned_plaintext: set[str] = set()

# Keepalive pings find a dead agent during a long benchmark, when no data flows.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
_GONE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


def warn_token_in_clear(address: str, tls: bool, advice: str) -> None:
    """Warn (once per address) when a token is about to travel without TLS beyond loopback."""
    if tls or address in _warned_plaintext or is_loopback(address.rpartition(":")[0]):
        return
    _warned_plaintext.add(address)
    log.warning("warning: the token goes to %s without TLS, readable by anyone on the network: %s", address, advice)


class GrpcClient(DeviceClient):
    """A device behind ``edgelat agent serve`` (or the ADB bridge) at ``address``.

    ``timeout_s`` bounds connecting and the short calls (describe, model
    upload); benchmarks have no deadline because a big model on a slow device
    may legitimately take minutes, and keepalive pings notice a dead agent.
    """

    def __init__(
        self,
        address: str,
        token: str | None = None,
        tls_ca: str | Path | bytes | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise BadInput(f"bad agent address {address!r}: expected HOST:PORT, e.g. 192.168.1.20:50051")
        self.address = address
        self.timeout_s = timeout_s
        self.tls = tls_ca is not None
        if token:
            warn_token_in_clear(address, self.tls, "serve the agent with --tls-cert/--tls-key and register it with --tls-ca")
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        if tls_ca is not None:
            ca = check_ca(read_pem(tls_ca, "TLS CA certificate"))
            self._channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(ca), options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        self._stub = pb_grpc.AgentStub(self._channel)
        self._ready = False
        self.models_sent = 0  # uploads this client made (put_model of a cached model sends nothing)
        self.bytes_sent = 0

    @classmethod
    def from_transport(cls, transport: dict[str, Any]) -> "GrpcClient":
        """From a registry transport: ``address``, optional ``token_file`` and ``tls_ca``."""
        address = transport.get("address")
        if not address:
            raise BadInput("the device's transport has no agent address: re-register it with --address HOST:PORT")
        token = read_token_file(transport["token_file"]) if transport.get("token_file") else None
        kwargs = {"timeout_s": float(transport["timeout_s"])} if transport.get("timeout_s") else {}
        return cls(address, token=token, tls_ca=transport.get("tls_ca") or None, **kwargs)

    # -- connection and error mapping -------------------------------------------------

    def _connect(self) -> None:
        """Fail fast, with a clear message, when nothing answers at the address.

        Waits for the channel to be ready, but gives up at once when the first
        connection attempt fails (refused port, TLS handshake failure) instead
        of retrying until the timeout.
        """
        if self._ready:
            return
        future = grpc.channel_ready_future(self._channel)
        failed: list[bool] = []

        def watch(state: grpc.ChannelConnectivity) -> None:
            if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                failed.append(True)
                future.cancel()

        self._channel.subscribe(watch)
        hint = " (check that the agent serves TLS with a certificate this CA signed)" if self.tls else ""
        try:
            future.result(timeout=self.timeout_s)
        except grpc.FutureCancelledError:
            raise AgentUnreachable(
                f"agent at {self.address} did not answer: the connection failed{hint}; "
                "is `edgelat agent serve` running there and the port reachable?"
            ) from None
        except grpc.FutureTimeoutError:
            raise AgentUnreachable(
                f"agent at {self.address} did not answer within {self.timeout_s:g} s{hint}: "
                "is `edgelat agent serve` running there and the port reachable?"
            ) from None
        finally:
            self._channel.unsubscribe(watch)
        self._ready = True

    def _error(self, exc: grpc.RpcError, during: str) -> Exception:
        code = exc.code() if hasattr(exc, "code") else None
        details = (exc.details() if hasattr(exc, "details") else "") or ""
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return AuthFailed(
                f"agent at {self.address} rejected the token ({details}): "
                "pass --token-file with the token the agent was started with"
            )
        if code in _GONE:
            self._ready = False
            return AgentUnreachable(f"agent at {self.address} stopped answering {during} ({code.name}: {details})")
        if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
            return BadInput(f"agent at {self.address} refused the request: {details}")
        name = code.name if code is not None else "error"
        return DeviceError(f"agent at {self.address} failed {during}: {name}: {details}")

    def _call(self, method: Any, request: Any, during: str) -> Any:
        self._connect()
        try:
            return method(request, timeout=self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._error(exc, during) from None

    # -- DeviceClient -----------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return convert.facts_from_pb(self._call(self._stub.Describe, pb.DescribeRequest(), "while describing the device"))

    def has_model(self, sha: str) -> bool:
        check_sha(sha)
        reply = self._call(self._stub.HasModel, pb.HasModelRequest(sha256=sha), "while checking its model cache")
        return bool(reply.present)

    def put_model(self, data: bytes) -> str:
        sha = sha256_bytes(data)
        if self.has_model(sha):
            return sha
        self._connect()

        def chunks() -> Iterator[pb.ModelChunk]:
            yield pb.ModelChunk(sha256=sha, total_bytes=len(data), data=data[:CHUNK_BYTES])
            for start in range(CHUNK_BYTES, len(data), CHUNK_BYTES):
                yield pb.ModelChunk(data=data[start : start + CHUNK_BYTES])

        # The upload deadline grows with the size (1 MiB/s is a slow Wi-Fi link).
        timeout = self.timeout_s + len(data) / (1 << 20)
        try:
            reply = self._stub.PutModel(chunks(), timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._error(exc, "while receiving a model") from None
        if reply.sha256 != sha:
            raise DeviceError(f"agent at {self.address} stored {reply.sha256} for a model whose sha256 is {sha}")
        self.models_sent += 1
        self.bytes_sent += len(data)
        return sha

    def benchmark(self, item: BenchmarkItem, config: RuntimeConfig, protocol: MeasurementProtocol) -> BenchmarkResult:
        self._connect()
        request = pb.BenchmarkRequest(
            item=convert.item_to_pb(_check_item(item)),
            config=convert.config_to_pb(config),
            protocol=convert.protocol_to_pb(protocol),
        )
        try:
            reply = self._stub.Benchmark(request, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._error(exc, "during a benchmark") from None
        return convert.result_from_pb(reply)

    def benchmark_batch(
        self, items: Sequence[BenchmarkItem], config: RuntimeConfig, protocol: MeasurementProtocol,
        rounds: int = 0,
    ) -> Iterator[BenchmarkResult]:
        request = pb.BenchmarkBatchRequest(
            items=[convert.item_to_pb(_check_item(item)) for item in items],
            config=convert.config_to_pb(config),
            protocol=convert.protocol_to_pb(protocol),
            rounds=max(0, rounds),
        )
        return self._stream(request, len(items))

    def _stream(self, request: pb.BenchmarkBatchRequest, total: int) -> Iterator[BenchmarkResult]:
        self._connect()
        call = self._stub.BenchmarkBatch(request, metadata=self._metadata)
        done = 0
        try:
            for reply in call:
                done += 1
                yield convert.result_from_pb(reply)
        except grpc.RpcError as exc:
            raise self._error(exc, f"mid-batch after {done} of {total} result(s)") from None
        finally:
            call.cancel()  # the caller stopped early (or we failed): the agent stops measuring
        if done != total:
            raise DeviceError(f"agent at {self.address} ended the batch after {done} of {total} result(s)")

    def close(self) -> None:
        self._channel.close()


def _check_item(item: BenchmarkItem) -> BenchmarkItem:
    check_sha(item.model_sha256)
    if item.model_format not in FORMATS:
        raise BadInput(f"unknown model format {item.model_format!r}; expected one of {', '.join(FORMATS)}")
    return item
