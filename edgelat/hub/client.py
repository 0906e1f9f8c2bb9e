"""The command line's client of a hub: submit jobs, follow them, list devices, make tokens.

Remote mode is on when ``EDGELAT_HUB`` (or ``--hub``) names a hub; the token
comes from ``EDGELAT_TOKEN_FILE`` (or ``--token-file``). Every gRPC failure
becomes one of edgelat's one-line errors.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterator

import grpc

from edgelat.agents.remote import CHANNEL_OPTIONS, warn_token_in_clear
from edgelat.config import check_ca
from edgelat.errors import AuthFailed, BadInput, EdgelatError
from edgelat.proto import hub_pb2 as pb
from edgelat.proto import hub_pb2_grpc as pb_grpc

TOKEN_ENV = "EDGELAT_TOKEN_FILE"
TLS_CA_ENV = "EDGELAT_HUB_TLS_CA"
#: most seconds one copy of the hub's tables may take to arrive
READ_TIMEOUT_S = 600.0
#: job states after which nothing changes
FINAL = ("done", "failed", "cancelled")


class HubUnreachable(EdgelatError):
    """The hub's address did not answer."""


def configured(hub: str | None = None) -> str | None:
    """The hub address of remote mode (``--hub`` or ``EDGELAT_HUB``), None for local mode."""
    from edgelat.config import hub_address

    return hub or hub_address()


class HubClient:
    """One user's (or admin's) connection to a hub."""

    def __init__(self, address: str, token: str, tls_ca: bytes | None = None, timeout_s: float = 15.0) -> None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise BadInput(f"bad hub address {address!r}: expected HOST:PORT, e.g. hub.lab:50100")
        self.address = address
        self.timeout_s = timeout_s
        #: tells apart the copies of the hub's tables this token read (it may read fewer devices than another)
        self.identity = hashlib.sha256(f"{address}\0{token}".encode()).hexdigest()[:16]
        self._metadata = (("authorization", f"Bearer {token}"),)
        warn_token_in_clear(address, tls_ca is not None, f"serve the hub with --tls-cert/--tls-key and set {TLS_CA_ENV}")
        if tls_ca is not None:
            check_ca(tls_ca, f"TLS CA certificate ({TLS_CA_ENV})")
            self._channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(tls_ca), options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        self._stub = pb_grpc.HubStub(self._channel)

    @classmethod
    def from_env(cls, hub: str | None = None, token_file: str | None = None) -> "HubClient":
        from edgelat.config import read_pem, read_token_file

        address = configured(hub)
        if not address:
            raise BadInput("no hub configured: set EDGELAT_HUB=HOST:PORT (or pass --hub)")
        token_file = token_file or os.environ.get(TOKEN_ENV)
        if not token_file:
            raise BadInput(f"a hub needs a token: set {TOKEN_ENV} to the file `edgelat hub token create` wrote")
        ca = os.environ.get(TLS_CA_ENV)
        tls_ca = read_pem(ca, f"TLS CA certificate ({TLS_CA_ENV})") if ca else None
        return cls(address, read_token_file(token_file), tls_ca=tls_ca)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "HubClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- errors -------------------------------------------------------------------------

    def _error(self, exc: grpc.RpcError) -> EdgelatError:
        from edgelat.hub.errors import HubDatabaseError, JobNotFound, JobStateError

        code = exc.code() if hasattr(exc, "code") else None
        details = (exc.details() if hasattr(exc, "details") else "") or ""
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return AuthFailed(f"the hub refused: {details}")
        if code == grpc.StatusCode.NOT_FOUND:
            return JobNotFound(details)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return BadInput(details)
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            return JobStateError(details)
        if code == grpc.StatusCode.INTERNAL:
            return HubDatabaseError(details)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return HubUnreachable(f"the hub at {self.address} did not answer ({details}): is `edgelat hub serve` "
                                  "running there and the port reachable?")
        return EdgelatError(f"the hub at {self.address} failed: {code.name if code else 'error'}: {details}")

    def _call(self, name: str, request: Any) -> Any:
        try:
            return getattr(self._stub, name)(request, timeout=self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    # -- calls --------------------------------------------------------------------------

    def submit(self, kind: str, device: str, config: dict[str, Any], params: dict[str, Any],
               priority: int = 0) -> tuple[dict[str, Any], str]:
        """Submit a job; returns the job and a note (e.g. the device is offline)."""
        reply = self._call("Submit", pb.SubmitRequest(kind=kind, device=device, config_json=json.dumps(config),
                                                      params_json=json.dumps(params), priority=priority))
        return json.loads(reply.job_json), reply.note

    def get(self, job_id: str) -> dict[str, Any]:
        return json.loads(self._call("GetJob", pb.JobRequest(job_id=job_id)).job_json)

    def list_jobs(self, user: str | None = None, state: str | None = None, device: str | None = None,
                  limit: int = 100) -> list[dict[str, Any]]:
        reply = self._call("ListJobs", pb.ListJobsRequest(user=user or "", state=state or "", device=device or "",
                                                          limit=limit))
        return json.loads(reply.jobs_json)

    def watch(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The job now, then each time it changes, until it ends."""
        try:
            for reply in self._stub.WatchJob(pb.JobRequest(job_id=job_id), metadata=self._metadata):
                yield json.loads(reply.job_json)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def cancel(self, job_id: str) -> dict[str, Any]:
        return json.loads(self._call("CancelJob", pb.JobRequest(job_id=job_id)).job_json)

    def retry(self, job_id: str) -> dict[str, Any]:
        return json.loads(self._call("RetryJob", pb.JobRequest(job_id=job_id)).job_json)

    def devices(self) -> list[dict[str, Any]]:
        return json.loads(self._call("ListDevices", pb.ListDevicesRequest()).devices_json)

    def create_token(self, user: str, role: str, devices: list[str] | None = None,
                     expires_s: float | None = None) -> str:
        reply = self._call("CreateToken", pb.CreateTokenRequest(user=user, role=role, devices=devices or [],
                                                                expires_s=expires_s or 0.0))
        return reply.secret

    def read_tables(self, device: str | None, marker: str = "") -> tuple[str, Iterator[bytes] | None, int, str]:
        """A copy of ``device``'s rows in the hub's tables (every device the token may read when
        None): ``(marker, chunks, size, sha256)``, with ``chunks`` None when ``marker`` is current."""
        from edgelat.errors import UnknownDevice

        stream = self._stub.ReadTables(pb.ReadTablesRequest(device=device or "", marker=marker),
                                       metadata=self._metadata, timeout=READ_TIMEOUT_S)
        try:
            first = next(stream)
        except StopIteration:
            raise EdgelatError(f"the hub at {self.address} sent no answer for the tables of {device}") from None
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise UnknownDevice(f"{exc.details()} (hub {self.address})") from None
            raise self._error(exc) from None
        if first.unchanged:
            stream.cancel()
            return first.marker, None, 0, ""

        def chunks() -> Iterator[bytes]:
            try:
                for msg in stream:
                    yield msg.data
            except grpc.RpcError as exc:
                raise self._error(exc) from None

        return first.marker, chunks(), int(first.size), first.sha256

