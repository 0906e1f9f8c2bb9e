"""The backend that runs models in this process, on this machine.

It is the ``local`` device, and the measuring core of the gRPC agent on
boards and GPU hosts. One benchmark, in order: environment snapshot, session
creation (timed), first run (timed on its own: it includes lazy allocation and
kernel selection), the measurement protocol with the energy meter wrapped
around the steady-state loop only, a second snapshot.

Peak memory: on Linux the process's RSS high-water mark is reset (write "5" to
``/proc/self/clear_refs``) before the session is created, and
``peak_memory_bytes`` is the new high-water mark (``VmHWM``) minus the RSS just
before creation: the extra resident memory the model needed at its peak,
creation included. Free heap memory is first handed back to the OS
(``malloc_trim``) so pages left by earlier models are not silently reused.
It is process-wide: benchmarks run one at a time (a lock), and the first model
of a runtime in a process also carries that runtime's one-time setup (thread
pools, XNNPACK init: ~15 MB for onnxruntime here). Where the reset is not
allowed the value is None and ``extra["peak_memory_note"]`` says why.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import threading
import time
from pathlib import Path
from typing import Any

from edgelat import __version__
from edgelat.agents.backend import Backend
from edgelat.agents.energy.base import EnergyMeter
from edgelat.agents.energy.detect import detect_meter
from edgelat.agents.environment import snapshot
from edgelat.agents.facts import host_facts
from edgelat.agents.measure import run_protocol
from edgelat.agents.runtimes.base import short_reason
from edgelat.agents.runtimes.registry import available_runtimes, get_runtime
from edgelat.agents.types import FORMATS, BenchmarkResult, LatencySummary, MeasurementProtocol, RuntimeConfig
from edgelat.errors import BadInput, CorruptModel, DeviceError

_KB = 1024


def _status_kb(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (VmRSS, VmHWM) or None."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _release_free_memory() -> None:
    """Hand memory freed by earlier sessions back to the OS (glibc ``malloc_trim``).

    Without this the allocator reuses pages that are already resident and a
    second model's growth reads as a few kilobytes. (Sessions are freed by
    reference counting when closed, so no ``gc.collect()``: it costs ~15 ms.)
    """
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS): growth may be under-counted
        pass


class PeakMemory:
    """Peak extra RSS over a block, via the Linux high-water-mark reset."""

    def __init__(self) -> None:
        self.note = ""
        self._base_kb: int | None = None

    def start(self) -> None:
        self._base_kb = None
        _release_free_memory()
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        except OSError as exc:
            self.note = f"peak memory unknown: cannot reset the RSS high-water mark ({exc.strerror or exc})"
            return
        self._base_kb = _status_kb("VmRSS")
        if self._base_kb is None:
            self.note = "peak memory unknown: /proc/self/status has no VmRSS"

    def stop(self) -> int | None:
        if self._base_kb is None:
            return None
        peak = _status_kb("VmHWM")
        if peak is None:
            self.note = "peak memory unknown: /proc/self/status has no VmHWM"
            return None
        return max(0, peak - self._base_kb) * _KB


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_protocol(p: MeasurementProtocol) -> None:
    """The agent's bounds (:meth:`MeasurementProtocol.check`), for callers that skip the server."""
    try:
        p.check()
    except BadInput as exc:
        raise BadInput(f"bad measurement protocol: {exc}") from None


class LocalBackend(Backend):
    """Benchmarks models with the in-process runtimes of this machine.

    ``root`` is where the kernel's files are read from (``/`` on a real
    machine; a fake sysfs tree in tests). Energy meters are detected once per
    provider and reused.
    """

    def __init__(self, root: str = "/") -> None:
        self.root = root
        self._meters: dict[str, EnergyMeter] = {}
        self._lock = threading.Lock()
        self._runtime_versions: dict[str, str] | None = None

    def describe(self) -> dict[str, Any]:
        return host_facts(self.root)

    def _meter(self, provider: str) -> EnergyMeter:
        key = provider.lower()
        if key not in self._meters:
            self._meters[key] = detect_meter(self.root, provider=key)
        return self._meters[key]

    def _versions(self) -> dict[str, str]:
        if self._runtime_versions is None:
            self._runtime_versions = available_runtimes()
        return self._runtime_versions

    def benchmark(
        self,
        model_path: Path,
        model_format: str,
        config: RuntimeConfig,
        protocol: MeasurementProtocol,
    ) -> BenchmarkResult:
        if model_format not in FORMATS:
            raise BadInput(f"unknown model format {model_format!r} (expected one of {', '.join(FORMATS)})")
        if model_format != config.model_format:
            raise BadInput(
                f"runtime {config.runtime} runs {config.model_format} models, but this model is "
                f"{model_format}; pick a runtime for {model_format} or export the model as {config.model_format}"
            )
        _check_protocol(protocol)
        config.check()
        runtime = get_runtime(config.runtime)
        path = Path(model_path)
        if not path.is_file():
            raise BadInput(f"model file not found: {path}")
        with self._lock:
            try:
                return self._measure(runtime, path, config, protocol)
            except MemoryError:  # one model too big for this machine must not end a batch
                raise DeviceError(f"{path.name} needs more memory than this process can get") from None

    def _measure(self, runtime: Any, path: Path, config: RuntimeConfig, protocol: MeasurementProtocol) -> BenchmarkResult:
        meter = self._meter(config.provider)
        version = runtime.version()  # imports the runtime now, so its import is not billed as model memory
        memory = PeakMemory()
        before = snapshot(self.root)
        memory.start()
        session = runtime.load(path, config)
        try:
            t0 = time.perf_counter_ns()
            try:
                session.run()
            except Exception as exc:
                raise CorruptModel(f"{runtime.name} loads {path.name} but cannot run it: {short_reason(exc)}") from None
            first_run_ms = (time.perf_counter_ns() - t0) / 1e6
            try:
                _, summary = run_protocol(
                    session.run,
                    warmup=protocol.warmup,
                    min_runs=protocol.min_runs,
                    max_runs=protocol.max_runs,
                    target_rel_ci=protocol.target_rel_ci,
                    max_seconds=protocol.max_seconds,
                    before_steady=meter.start,
                )
            except Exception as exc:
                meter.close()  # stops a sampling thread the meter may have started
                raise CorruptModel(
                    f"{runtime.name} failed while timing {path.name} (the first run worked): {short_reason(exc)}"
                ) from None
            joules = meter.stop()
            peak = memory.stop()
        finally:
            session.close()
        after = snapshot(self.root)

        energy_mj = joules * 1000.0 / summary["n"] if joules is not None else None
        extra: dict[str, Any] = {
            "stopped_by": summary["stopped_by"],
            "warmup_runs": summary["warmup"],
            "provider_used": session.provider,
            "energy_meter": meter.name,
            "energy_scope": meter.scope,
            "energy_interval_s": meter.interval_s,
        }
        if peak is None:
            extra["peak_memory_note"] = memory.note
        else:
            extra["peak_memory_method"] = "VmHWM after reset minus VmRSS before session creation (process-wide)"
        return BenchmarkResult(
            model_sha256=_sha256_file(path),
            config=dataclasses.replace(config, runtime=runtime.name, version=version),
            latency=LatencySummary.from_dict(summary),
            session_ms=session.session_ms,
            first_run_ms=first_run_ms,
            energy_mj=energy_mj,
            energy_note="" if energy_mj is not None else meter.note,
            peak_memory_bytes=peak,
            environment={"before": before, "after": after, "runtimes": self._versions()},
            agent_version=__version__,
            extra=extra,
        )

    def close(self) -> None:
        for meter in self._meters.values():
            meter.close()
        self._meters.clear()
