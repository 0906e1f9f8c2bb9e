"""Run a backend's benchmarks in a child process with memory and time limits.

An agent runs models that anyone with its token can upload. A runtime that
crashes on a model (segfault, abort), or a model that allocates until the
kernel's out-of-memory killer comes, must fail that model only: the agent
keeps serving. :class:`SandboxedBackend` wraps any backend and forwards its
calls to ONE long-lived worker process (``multiprocessing`` "spawn") that holds
the real backend and its runtime sessions, so profiling many tiny kernels pays
no process start per model. The worker is restarted when it dies or overruns
its time limit; the call that was running fails with one clear line.

Limits: the worker's data segment (``RLIMIT_DATA``: heap and private mappings,
not the address space reserved for thread stacks, which a 16-thread runtime
inflates to gigabytes) is capped at ``memory_bytes``, so an allocation past it
fails inside the runtime instead of starving the machine. Each call gets
``2 x max_seconds`` of its protocol (warm-up and steady loop each have that cap)
plus ``grace_s`` for loading and the first run, per model it names.

Replies travel as JSON (with tags for the few value types), never pickles: a
worker that a hostile model took over can hand back wrong numbers, not code.
``describe`` and other calls listed in ``in_parent`` run on a backend made in
this process, since they read the device, not a model, and must answer while a
benchmark runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import multiprocessing
import os
import re
import signal
import threading
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable

from edgelat import errors
from edgelat.agents.backend import Backend
from edgelat.values import BenchmarkItem, BenchmarkResult, LatencySummary, MeasurementProtocol, RuntimeConfig
from edgelat.errors import DeviceError, EdgelatError

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 300.0
DEFAULT_CALL_TIMEOUT_S = 600.0  # calls that name no protocol (describe in the worker, close)
MAX_REPLY_BYTES = 64 << 20
DEFAULT_MEMORY_FRACTION = 0.75

_SHA_NAME = re.compile(r"^[0-9a-f]{64}$")
_TYPES: dict[str, type] = {
    c.__name__: c for c in (RuntimeConfig, MeasurementProtocol, BenchmarkResult, BenchmarkItem, LatencySummary)
}


def default_memory_bytes() -> int | None:
    """Three quarters of this machine's RAM (None where it cannot be read)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * DEFAULT_MEMORY_FRACTION)
    except (ValueError, OSError, AttributeError):
        return None


# -- the wire: JSON with tagged value types ---------------------------------------------


def _encode(value: Any) -> Any:
    if isinstance(value, Path):
        return {"__path__": str(value)}
    if dataclasses.is_dataclass(value) and type(value).__name__ in _TYPES:
        data = value.to_dict() if hasattr(value, "to_dict") else dataclasses.asdict(value)
        return {"__type__": type(value).__name__, "data": data}
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalar or array
        return value.tolist()
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__path__"}:
            return Path(value["__path__"])
        if set(value) == {"__type__", "data"} and value["__type__"] in _TYPES:
            cls = _TYPES[value["__type__"]]
            return cls.from_dict(value["data"]) if hasattr(cls, "from_dict") else cls(**value["data"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _dumps(message: Any) -> bytes:
    return json.dumps(_encode(message), default=str).encode()


def _loads(raw: bytes) -> Any:
    return _decode(json.loads(raw))


# -- the worker process -----------------------------------------------------------------


def _limit_memory(memory_bytes: int | None) -> str:
    """Cap this process's data segment; returns the limit's name ("" when none was set)."""
    if not memory_bytes:
        return ""
    import resource

    name = "RLIMIT_DATA" if hasattr(resource, "RLIMIT_DATA") else "RLIMIT_AS"
    limit = getattr(resource, name)
    soft, hard = resource.getrlimit(limit)
    value = memory_bytes if hard == resource.RLIM_INFINITY else min(memory_bytes, hard)
    resource.setrlimit(limit, (value, hard))
    return name


def _die_with_parent() -> None:
    """Linux: the worker gets SIGKILL when the agent dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_main(conn: Connection, factory: Callable[[], Backend], memory_bytes: int | None) -> None:
    """Serve calls on ``conn`` until it closes: ``[method, args, kwargs]`` -> ``{"ok": value}``
    or ``{"error": [class name, message]}``."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the agent decides
    limit_name = _limit_memory(memory_bytes)
    backend = factory()
    while True:
        try:
            method, args, kwargs = _loads(conn.recv_bytes())
        except (EOFError, OSError):
            break
        try:
            if method.startswith("_"):
                raise DeviceError(f"backend method {method!r} cannot be called through the sandbox")
            value = getattr(backend, method)(*args, **kwargs)
            reply: dict[str, Any] = {"ok": value}
        except EdgelatError as exc:
            reply = {"error": [type(exc).__name__, str(exc)]}
        except MemoryError:
            mb = f" of {memory_bytes / (1 << 20):.0f} MB ({limit_name})" if memory_bytes else ""
            reply = {"error": ["DeviceError", f"the model needs more memory than the agent's limit{mb}"]}
        except AttributeError as exc:
            reply = {"error": ["AttributeError", str(exc)]}
        except Exception as exc:  # a backend bug: one line, the worker lives on
            reply = {"error": ["DeviceError", f"agent backend failed: {type(exc).__name__}: {exc}"]}
        try:
            conn.send_bytes(_dumps(reply))
        except (OSError, ValueError):
            break
        if method == "close":
            break


# -- the parent side --------------------------------------------------------------------


def _factory_class(factory: Callable[..., Any]) -> type | None:
    """The class a factory makes, when it can be told without calling it."""
    target = getattr(factory, "func", factory)  # functools.partial
    return target if isinstance(target, type) else None


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


class SandboxedBackend(Backend):
    """A backend whose calls run in one long-lived worker process with limits.

    ``inner_factory`` makes the real backend; it must be importable by the
    worker (a class, or a ``functools.partial`` of one). ``memory_bytes`` caps
    the worker's memory (None: no cap); ``grace_s`` is the time a call may take
    beyond its protocol's caps. Public methods of the inner backend that this
    class does not define are forwarded to the worker too.
    """

    def __init__(
        self,
        inner_factory: Callable[[], Backend],
        memory_bytes: int | None = None,
        grace_s: float = DEFAULT_GRACE_S,
        in_parent: tuple[str, ...] = ("describe",),
    ) -> None:
        if memory_bytes is not None and memory_bytes <= 0:
            raise errors.BadInput(f"the memory limit must be positive, got {memory_bytes} bytes")
        if not (grace_s > 0 and math.isfinite(grace_s)):
            raise errors.BadInput(f"the time grace must be a positive number of seconds, got {grace_s}")
        self.inner_factory = inner_factory
        self.memory_bytes = memory_bytes
        self.grace_s = grace_s
        self.in_parent = tuple(in_parent)
        self._inner_class = _factory_class(inner_factory)
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: Any = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._parent_backend: Backend | None = None
        self._parent_lock = threading.Lock()
        self.restarts = 0  # workers replaced after a crash or an overrun (for tests and logs)

    # -- Backend ------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return self._call("describe", (), {})

    def benchmark(
        self, model_path: Path, model_format: str, config: RuntimeConfig, protocol: MeasurementProtocol
    ) -> BenchmarkResult:
        return self._call("benchmark", (Path(model_path), model_format, config, protocol), {})

    def close(self) -> None:
        if self._lock.acquire(timeout=5.0):
            try:
                self._stop_worker(graceful=True)
            finally:
                self._lock.release()
        elif self._proc is not None:  # a call is still running: end its worker, the call then fails
            self._proc.kill()
        with self._parent_lock:
            if self._parent_backend is not None:
                self._parent_backend.close()
                self._parent_backend = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or (self._inner_class is not None and not callable(getattr(self._inner_class, name, None))):
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
        return lambda *args, **kwargs: self._call(name, args, kwargs)

    # -- worker life --------------------------------------------------------------

    @property
    def worker_pid(self) -> int | None:
        """The worker's process id (None before the first call or after it died)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.is_alive() else None

    def start(self) -> None:
        """Start the worker now (otherwise the first call does)."""
        with self._lock:
            self._ensure_worker()

    def _ensure_worker(self) -> Connection:
        if self._proc is not None and self._proc.is_alive() and self._conn is not None:
            return self._conn
        self._stop_worker(graceful=False)
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_worker_main, args=(child_conn, self.inner_factory, self.memory_bytes),
            name="edgelat-bench-worker", daemon=True,
        )
        proc.start()
        child_conn.close()  # only the worker holds its end: its death reads as EOF here
        self._proc, self._conn = proc, parent_conn
        log.info("benchmark worker started (pid %d)", proc.pid)
        return parent_conn

    def _stop_worker(self, graceful: bool) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is None:
            return
        if graceful and conn is not None and proc.is_alive():
            try:
                conn.send_bytes(_dumps(["close", [], {}]))
                if wait([conn, proc.sentinel], timeout=10.0):
                    proc.join(timeout=5.0)
            except (OSError, ValueError):
                pass
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=10.0)
        if conn is not None:
            conn.close()

    # -- calls --------------------------------------------------------------------

    def time_limit(self, args: tuple, kwargs: dict) -> float:
        """Seconds a call may take: per model it names, twice its protocol's max_seconds plus the grace."""
        values = [*args, *kwargs.values()]
        protocols = [v for v in values if isinstance(v, MeasurementProtocol)]
        if not protocols:
            return max(DEFAULT_CALL_TIMEOUT_S, self.grace_s)
        models = sum(isinstance(v, Path) for v in values)
        models += sum(sum(isinstance(x, Path) for x in v) for v in values if isinstance(v, (list, tuple)))
        per_model = 2 * max(p.max_seconds for p in protocols) + self.grace_s
        return per_model * max(1, models)

    def _call(self, method: str, args: tuple, kwargs: dict) -> Any:
        if method in self.in_parent:
            with self._parent_lock:
                if self._parent_backend is None:
                    self._parent_backend = self.inner_factory()
                return getattr(self._parent_backend, method)(*args, **kwargs)
        message = _dumps([method, list(args), kwargs])
        limit = self.time_limit(args, kwargs)
        what = _what(method, args)
        with self._lock:
            conn = self._ensure_worker()
            proc = self._proc
            try:
                conn.send_bytes(message)
            except (OSError, ValueError):
                return self._failed(what, "could not be sent to the benchmark worker")
            deadline = time.monotonic() + limit
            reason = ""
            while True:
                ready = wait([conn, proc.sentinel], timeout=max(0.0, deadline - time.monotonic()))
                if conn in ready:
                    try:
                        raw = conn.recv_bytes(MAX_REPLY_BYTES)
                    except EOFError:
                        break  # it died: the exit status says how
                    except OSError:
                        reason = f"made the benchmark worker send a reply over {MAX_REPLY_BYTES >> 20} MB"
                        break
                    try:
                        reply = _loads(raw)
                    except ValueError:
                        reason = "made the benchmark worker send a malformed reply"
                        break
                    return _unwrap(reply)
                if ready:  # only the sentinel: it died
                    break
                if time.monotonic() >= deadline:
                    self._restart_later()
                    raise DeviceError(
                        f"{what} took longer than its limit of {limit:g} s (2 x max_seconds + {self.grace_s:g} s "
                        "to load and run once), so its worker was stopped; the agent goes on with a new one"
                    )
            proc.join(timeout=2.0)
            code = proc.exitcode
            self._restart_later()
        raise DeviceError(f"{what} {reason or _death(code, self.memory_bytes)}; the agent goes on with a new worker")

    def _restart_later(self) -> None:
        self.restarts += 1
        self._stop_worker(graceful=False)

    def _failed(self, what: str, reason: str) -> Any:
        self._restart_later()
        raise DeviceError(f"{what} {reason}; the agent goes on with a new worker")


def _what(method: str, args: tuple) -> str:
    path = next((a for a in args if isinstance(a, Path)), None)
    if path is None:
        return f"the {method} call"
    name = f"model {path.name[:12]}" if _SHA_NAME.match(path.name) else path.name  # cached models are named by hash
    return f"benchmarking {name}" if method == "benchmark" else f"the {method} call on {name}"


def _death(code: int | None, memory_bytes: int | None) -> str:
    """Why a worker ended, in words."""
    if code is None:
        return "left the benchmark worker unresponsive"
    if code < 0:
        name = _signal_name(-code)
        if -code == signal.SIGKILL:
            mem = f" (its limit is {memory_bytes / (1 << 20):.0f} MB)" if memory_bytes else ""
            return f"killed the benchmark worker ({name}), most likely the kernel's out-of-memory killer{mem}"
        return f"crashed the runtime ({name})"
    return f"ended the benchmark worker (exit status {code})"


def _unwrap(reply: Any) -> Any:
    if not isinstance(reply, dict):
        raise DeviceError("the benchmark worker sent a malformed reply")
    if "ok" in reply:
        return reply["ok"]
    name, message = (list(reply.get("error") or ["DeviceError", "unknown failure"]) + ["", ""])[:2]
    if name == "AttributeError":
        raise AttributeError(message)
    raise errors.revive(f"{name}: {message}")
