"""The Hub gRPC service: agents dial in (Connect), users submit and follow jobs.

Every call carries a token (``authorization: Bearer <secret>`` metadata, as the
agent service takes it); :meth:`HubStore.authenticate` turns it into a
principal whose role decides what the call may do: agents may only Connect
and serve the devices their token names, users submit and read jobs on the
devices theirs names, admins also create tokens. Errors leave as gRPC status
codes with one line the client shows as is.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc

from edgelat.agents.server import SERVER_OPTIONS, check_bindable, check_listen
from edgelat.config import check_key_pair, read_pem
from edgelat.errors import BadInput, EdgelatError, UnknownPreset
from edgelat.hub.errors import AuthError, HubDatabaseError, JobNotFound
from edgelat.hub.kinds import check_job
from edgelat.hub.link import AgentConnection, Fleet
from edgelat.proto import hub_pb2 as pb
from edgelat.proto import hub_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

#: seconds between an agent's heartbeats (told to it in Welcome)
DEFAULT_HEARTBEAT_S = 5.0
#: an agent silent for this long is dropped and its jobs' leases expire
DEFAULT_HEARTBEAT_TIMEOUT_S = 20.0
#: server threads: every connected agent's stream and every watcher holds one for as long as it lasts
DEFAULT_MAX_WORKERS = 512
#: seconds between two writes of an agent's devices' last-seen time (heartbeats come more often)
DEVICE_REFRESH_S = 15.0
#: agents due to be marked seen within this many seconds of each other are written together
SEEN_BATCH_S = 1.0
#: most seconds one WatchJob wait lasts before it sends the job again (keeps the stream alive)
WATCH_POLL_S = 10.0


def _json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, default=str)


def _job_json(job: Any) -> str:
    """A job (or a list of jobs) for a client: a model carried inside a job is shown by its size only."""
    if isinstance(job, list):
        return "[" + ", ".join(_job_json(j) for j in job) + "]"
    params = job.get("params")
    if isinstance(params, dict) and isinstance(params.get("model_b64"), str):
        b64 = params["model_b64"]
        job = {**job, "params": {**{k: v for k, v in params.items() if k != "model_b64"},
                                 "model_bytes": len(b64) * 3 // 4 - b64[-2:].count("=")}}
    return _json(job)


def _status(exc: Exception) -> grpc.StatusCode:
    name = type(exc).__name__
    if name == "Forbidden":
        return grpc.StatusCode.PERMISSION_DENIED
    if isinstance(exc, AuthError):
        return grpc.StatusCode.UNAUTHENTICATED
    if isinstance(exc, JobNotFound):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, HubDatabaseError):
        return grpc.StatusCode.INTERNAL
    if isinstance(exc, (BadInput, UnknownPreset)):
        return grpc.StatusCode.INVALID_ARGUMENT
    if name == "JobStateError":
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.FAILED_PRECONDITION


def _guard(method: Callable) -> Callable:
    """Turn the hub's errors into gRPC status codes with their one-line message."""

    def wrapper(self: "HubServicer", request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except EdgelatError as exc:
            context.abort(_status(exc), " ".join(str(exc).split()))

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


class HubServicer(pb_grpc.HubServicer):
    """The Hub service over one :class:`HubStore` and this hub's connected agents."""

    #: the latency tables the hub's jobs write (None: the store under the hub's $EDGELAT_HOME)
    tables_path: str | None = None

    def __init__(self, store: Any, fleet: Fleet, hub_id: str, heartbeat_s: float = DEFAULT_HEARTBEAT_S) -> None:
        self.store = store
        self.fleet = fleet
        self.hub_id = hub_id
        self.heartbeat_s = heartbeat_s
        self.on_submit = threading.Event()  # the runner looks for work when set
        self.runner: Any = None  # the hub's Runner: Submit hands it the lease it took for a free device
        self.tables: Any = None  # the hub's SharedTables: reads of its tables use tables.fresh_db()
        self._presence = threading.Lock()  # agents going online/offline, in the store and the fleet together
        self._seen_lock = threading.Lock()
        self._seen_due: set[str] = set()  # agents whose last-seen time waits to be written
        self._seen_flushed = 0.0  # when the agents due were last written together

    # -- auth ---------------------------------------------------------------------------

    def _principal(self, context: grpc.ServicerContext, *roles: str) -> Any:
        secret = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                value = value if isinstance(value, str) else value.decode("latin-1")
                secret = value[len("Bearer "):] if value.startswith("Bearer ") else value
        if not secret:
            raise AuthError("no token: send metadata 'authorization: Bearer <token>' (set EDGELAT_TOKEN_FILE)")
        principal = self.store.authenticate(secret.strip())
        if roles and principal.role not in roles:
            raise _forbidden(f"a {principal.role} token may not do this (needs {' or '.join(roles)})")
        return principal

    # -- agents -------------------------------------------------------------------------

    def Connect(self, request_iterator: Iterator[pb.AgentMessage], context: grpc.ServicerContext
                ) -> Iterator[pb.HubMessage]:
        try:
            principal = self._principal(context, "agent", "admin")
            first = next(request_iterator, None)
            if first is None or first.WhichOneof("body") != "hello":
                raise BadInput("an agent's first message must be Hello")
            hello = first.hello
            if not hello.agent_id or not hello.devices:
                raise BadInput("Hello needs an agent id and at least one device")
            devices: dict[str, dict[str, Any]] = {}
            for d in hello.devices:
                if not principal.may_use(d.name):
                    raise _forbidden(f"agent {hello.agent_id!r} claims device {d.name!r}, which its token does not "
                                     f"name (it names {', '.join(principal.devices or ())})")
                try:
                    devices[d.name] = json.loads(d.facts_json or "{}")
                except ValueError:
                    raise BadInput(f"device {d.name!r}: facts are not JSON") from None
            conn = AgentConnection(hello.agent_id, principal.user, devices)
            conn.context = context
            conn.principal = principal
            conn.refreshed = time.monotonic()
            with self._presence:  # never interleaved with an old stream of this agent going offline
                self.store.agent_online(hello.agent_id, principal.user, devices, principal=principal)
                replaced = self.fleet.add(conn)
        except EdgelatError as exc:
            context.abort(_status(exc), " ".join(str(exc).split()))
        for old in replaced:
            old.close(f"agent {old.agent_id} reconnected")
        log.info("agent %s (%s) connected serving %s", conn.agent_id, conn.user, ", ".join(devices))
        reader = threading.Thread(target=self._read, args=(conn, request_iterator), daemon=True,
                                  name=f"edgelat-hub-agent-{conn.agent_id}")
        reader.start()
        welcome = pb.HubMessage(welcome=pb.Welcome(hub_id=self.hub_id, heartbeat_s=self.heartbeat_s))
        if self.runner is None:
            yield welcome
        else:  # the welcome follows the devices' preparation on this stream (an agent answers requests at once)
            self.runner.prepare(conn, functools.partial(conn.send, welcome))
        try:
            yield from conn.outgoing()
        finally:
            conn.close(conn.reason or "stream ended")
            with self._presence:
                self.fleet.remove(conn)
                if not any(c.agent_id == conn.agent_id for c in self.fleet.connections()):
                    try:
                        self.store.agent_offline(conn.agent_id)
                    except EdgelatError as exc:
                        log.warning("could not mark agent %s offline: %s", conn.agent_id, exc)
            log.info("agent %s disconnected (%s)", conn.agent_id, conn.reason)

    def _read(self, conn: AgentConnection, request_iterator: Iterator[pb.AgentMessage]) -> None:
        """Heartbeats and replies from one agent, until its stream ends."""
        reason = "the agent closed its stream"
        try:
            for msg in request_iterator:
                kind = msg.WhichOneof("body")
                if kind == "reply":
                    conn.deliver(msg.reply)
                elif kind == "heartbeat":
                    conn.touch()
                # any message says the agent is alive (a busy agent need not send heartbeats too)
                self._seen(conn)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            reason = f"stream broken ({code.name})" if code is not None else "stream broken"
        except Exception as exc:  # a closed channel can surface as other errors
            reason = f"stream broken ({type(exc).__name__})"
        conn.close(reason)

    def _seen(self, conn: AgentConnection) -> None:
        """Mark the agent's devices seen (and renew this hub's leases via it), every
        :data:`DEVICE_REFRESH_S`: :meth:`HubStore.heartbeat_many`, which touches only what this hub
        holds. Agents due within :data:`SEEN_BATCH_S` of each other are written in one transaction."""
        now = time.monotonic()
        if now - conn.refreshed < DEVICE_REFRESH_S:
            return
        conn.refreshed = now
        if self.fleet.connection(next(iter(conn.devices))) is not conn:
            return
        with self._seen_lock:
            self._seen_due.add(conn.agent_id)
            if now - self._seen_flushed < SEEN_BATCH_S:
                return
            due, self._seen_due = self._seen_due, set()
            self._seen_flushed = now
        try:
            self.store.heartbeat_many(sorted(due))
        except EdgelatError as exc:
            log.warning("agents %s not marked seen: %s", ", ".join(sorted(due)[:5]), exc)

    # -- users --------------------------------------------------------------------------

    @_guard
    def Submit(self, request: pb.SubmitRequest, context: grpc.ServicerContext) -> pb.JobReply:
        principal = self._principal(context, "user", "admin")
        if not principal.may_use(request.device):
            raise _forbidden(f"user {principal.user!r} may not use device {request.device!r} "
                             f"(the token names {', '.join(principal.devices or ())})")
        config, params = _loads(request.config_json, "config"), _loads(request.params_json, "params")
        check_job(request.kind, request.device, config, params)
        runner = self.runner
        # a device free here takes its job in the queueing transaction: no round through the dispatcher
        ttl = runner.lease_ttl_s if runner is not None and runner.accepting and \
            self.fleet.connection(request.device) is not None else None
        job, dev, lease = self.store.submit_and_lease(principal.user, request.kind, request.device, config, params,
                                                priority=request.priority, lease_ttl_s=ttl)
        if lease is not None:
            runner.adopt(lease)
        else:
            self.on_submit.set()
        return pb.JobReply(job_json=_job_json(job), note=self._device_note(request.device, dev))

    def _device_note(self, device: str, d: dict | None) -> str:
        if d is not None:
            if d["state"] in ("offline", "quarantined"):
                return f"device {device} is {d['state']}: the job is queued until it is back"
            return ""
        return f"device {device} has never connected to the hub: the job is queued until an agent serves it"

    def _readable(self, job_id: str, principal: Any) -> dict[str, Any]:
        job = self.store.get(job_id)
        if principal.role == "user" and job.get("user") != principal.user:
            raise _forbidden(f"job {job_id} belongs to {job.get('user')}, not to {principal.user}")
        return job

    @_guard
    def GetJob(self, request: pb.JobRequest, context: grpc.ServicerContext) -> pb.JobReply:
        principal = self._principal(context, "user", "admin")
        return pb.JobReply(job_json=_job_json(self._readable(request.job_id, principal)))

    @_guard
    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.JobList:
        principal = self._principal(context, "user", "admin")
        user = request.user or None
        if principal.role == "user":
            if user not in (None, principal.user):
                raise _forbidden(f"user {principal.user!r} may not list the jobs of {user!r}")
            user = principal.user
        jobs = self.store.list_jobs(user=user, state=request.state or None, device=request.device or None,
                                    limit=request.limit or 100)
        return pb.JobList(jobs_json=_job_json(jobs))

    def WatchJob(self, request: pb.JobRequest, context: grpc.ServicerContext) -> Iterator[pb.JobReply]:
        try:
            principal = self._principal(context, "user", "admin")
            job = self._readable(request.job_id, principal)
        except EdgelatError as exc:
            context.abort(_status(exc), " ".join(str(exc).split()))
        yield pb.JobReply(job_json=_job_json(job))
        after = job.get("change")
        while context.is_active() and job.get("state") in ("queued", "running"):
            try:
                job = self.store.wait_change(request.job_id, after, WATCH_POLL_S)
            except EdgelatError as exc:
                context.abort(_status(exc), " ".join(str(exc).split()))
            if job.get("change") != after or job.get("state") not in ("queued", "running"):
                after = job.get("change")
                yield pb.JobReply(job_json=_job_json(job))

    @_guard
    def CancelJob(self, request: pb.JobRequest, context: grpc.ServicerContext) -> pb.JobReply:
        principal = self._principal(context, "user", "admin")
        return pb.JobReply(job_json=_job_json(self.store.cancel(request.job_id, principal)))

    @_guard
    def RetryJob(self, request: pb.JobRequest, context: grpc.ServicerContext) -> pb.JobReply:
        principal = self._principal(context, "user", "admin")
        job = self.store.retry(request.job_id, principal)
        self.on_submit.set()
        return pb.JobReply(job_json=_job_json(job))

    @_guard
    def ListDevices(self, request: pb.ListDevicesRequest, context: grpc.ServicerContext) -> pb.DeviceList:
        principal = self._principal(context)
        rows = [d for d in self.store.devices() if principal.role == "admin" or principal.may_use(d["name"])]
        return pb.DeviceList(devices_json=_json(rows))

    def ReadTables(self, request: pb.ReadTablesRequest, context: grpc.ServicerContext) -> Iterator[pb.TablesChunk]:
        """A read-only copy of a device's rows in this hub's tables (:mod:`edgelat.hub.tables`)."""
        from edgelat.errors import UnknownDevice
        from edgelat.hub.tables import prepare

        try:
            principal = self._principal(context, "user", "admin")
            if self.tables is not None:
                self.tables.pull()  # hubs sharing one database: take in the others' rows first
            copy = prepare(self.tables_path, principal, request.device, request.marker)
        except EdgelatError as exc:
            code = grpc.StatusCode.NOT_FOUND if isinstance(exc, UnknownDevice) else _status(exc)
            context.abort(code, " ".join(str(exc).split()))
        if copy.unchanged:
            yield pb.TablesChunk(marker=copy.marker, unchanged=True)
            return
        try:
            yield pb.TablesChunk(marker=copy.marker, size=copy.size, sha256=copy.sha256)
            for data in copy.chunks():
                yield pb.TablesChunk(data=data)
        finally:
            copy.discard()

    @_guard
    def CreateToken(self, request: pb.CreateTokenRequest, context: grpc.ServicerContext) -> pb.CreateTokenReply:
        self._principal(context, "admin")
        secret = self.store.create_token(request.user, request.role, devices=list(request.devices) or None,
                                         expires_s=request.expires_s or None)
        return pb.CreateTokenReply(secret=secret)


def _forbidden(message: str) -> EdgelatError:
    from edgelat.hub import errors

    cls = getattr(errors, "Forbidden", AuthError)
    return cls(message)


def _loads(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        raise BadInput(f"malformed job: {what} is not JSON") from None
    if not isinstance(value, dict):
        raise BadInput(f"malformed job: {what} must be a JSON object")
    return value


def make_server(servicer: HubServicer, listen: str, tls_cert: str | Path | None = None,
                tls_key: str | Path | None = None, max_workers: int = DEFAULT_MAX_WORKERS) -> grpc.Server:
    """Build (not start) the hub's gRPC server; the bound port is in ``server.edgelat_port``."""
    if (tls_cert is None) != (tls_key is None):
        raise BadInput("TLS needs both --tls-cert and --tls-key")
    check_listen(listen, token="hub-tokens")  # every call needs a token, so any address may be served
    pair = None
    if tls_cert is not None:
        pair = (read_pem(tls_key, "TLS key (--tls-key)"), read_pem(tls_cert, "TLS certificate (--tls-cert)"))
        check_key_pair(pair[1], pair[0])  # gRPC would only log its complaint and blame the address
    check_bindable(listen)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="edgelat-hub"),
                         options=SERVER_OPTIONS)
    pb_grpc.add_HubServicer_to_server(servicer, server)
    try:
        if pair is not None:
            port = server.add_secure_port(listen, grpc.ssl_server_credentials([pair]))
        else:
            port = server.add_insecure_port(listen)
    except RuntimeError as exc:
        raise BadInput(f"cannot listen on {listen}: {exc}; pick another --listen") from exc
    if not port:
        raise BadInput(f"cannot listen on {listen}: address in use or not local; pick another --listen")
    server.edgelat_port = port  # type: ignore[attr-defined]
    return server


def wait_forever(stop: threading.Event) -> None:
    while not stop.wait(0.5):
        time.sleep(0)
