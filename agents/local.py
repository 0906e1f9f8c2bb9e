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
import math
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from edgelat import __version__
from edgelat.agents.backend import Backend
from edgelat.agents.bounds import check_config, check_protocol
from edgelat.agents.cache import cached_sha
from edgelat.agents.energy.base import EnergyMeter
from edgelat.agents.energy.detect import detect_meter
from edgelat.agents.environment import defined_state, snapshot
from edgelat.agents.facts import host_facts
from edgelat.agents.measure import RoundsTimer, run_protocol
from edgelat.agents.runtimes.base import short_reason
from edgelat.agents.runtimes.registry import available_runtimes, get_runtime
from edgelat.values import FORMATS, BenchmarkResult, LatencySummary, MeasurementProtocol, RuntimeConfig
from edgelat.errors import BadInput, CorruptModel, DeviceError, EdgelatError

_KB = 1024
#: profiled runs for per-layer times at most (each layer's figure is their median)
LAYER_RUNS = 50
#: Sessions a rounds batch keeps open at once on the device (a bigger batch goes in groups).
MAX_OPEN_SESSIONS = 64


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


_LIBC: Any = None


def _release_free_memory() -> None:
    """Hand memory freed by earlier sessions back to the OS (glibc ``malloc_trim``).

    Without this the allocator reuses pages that are already resident and a
    second model's growth reads as a few kilobytes. (Sessions are freed by
    reference counting when closed, so no ``gc.collect()``: it is slow.)
    """
    global _LIBC
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL(None)
        _LIBC.malloc_trim(0)
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


def _first_run(runtime: Any, session: Any, path: Path) -> float:
    """The first run of a new session, timed in ms (it allocates, so it is kept apart); a model
    that loads but cannot run is a CorruptModel."""
    t0 = time.perf_counter_ns()
    try:
        session.run()
    except MemoryError:  # the machine's or the agent's memory limit, not the model's fault
        raise
    except Exception as exc:
        raise CorruptModel(f"{runtime.name} loads {path.name} but cannot run it: {short_reason(exc)}") from None
    return (time.perf_counter_ns() - t0) / 1e6


def _data_limit() -> str:
    """`` (its memory limit is N MB)`` when this process runs under RLIMIT_DATA (an agent's
    benchmark worker, ``--memory-limit-mb``); empty otherwise."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_DATA)
    except (ImportError, AttributeError, OSError, ValueError):
        return ""
    if soft == resource.RLIM_INFINITY:
        return ""
    return f" (its memory limit is {soft / (1 << 20):.0f} MB: the agent's --memory-limit-mb)"


def _sha256_file(path: Path) -> str:
    """The model's content hash: a cached model's is its name (verified when it arrived)."""
    known = cached_sha(path)
    if known is not None:
        return known
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_protocol(p: MeasurementProtocol) -> None:
    """The agent's bounds (:func:`~edgelat.agents.bounds.check_protocol`), for callers that skip the server."""
    try:
        check_protocol(p)
    except BadInput as exc:
        raise BadInput(f"bad measurement protocol: {exc}") from None


class LocalBackend(Backend):
    """Benchmarks models with the in-process runtimes of this machine.

    ``root`` is where the kernel's files are read from (``/`` on a real
    machine; a fake sysfs tree in tests). Energy meters are detected once per
    provider and reused. Each measurement runs in :func:`defined_state`: pinned
    to ``threads`` cores when ``pin``, the cpufreq ``governor`` set where sysfs
    allows it (None: only read), after cooling below ``max_temp_c`` (None: no
    wait); what held is in the row's ``environment["control"]``.
    """

    def __init__(self, root: str = "/", pin: bool = True, governor: str | None = "performance",
                 max_temp_c: float | None = None) -> None:
        self.root = root
        self.pin = pin
        self.governor = governor
        self.max_temp_c = max_temp_c
        self._meters: dict[str, EnergyMeter] = {}
        self._lock = threading.Lock()
        self._runtime_versions: dict[str, str] | None = None
        self.sessions_opened = 0  # sessions created by this backend (the rounds path keeps one per item)

    def _state(self, threads: int) -> Any:
        return defined_state(self.root, threads=threads, pin=self.pin, governor=self.governor,
                             max_temp_c=self.max_temp_c)

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
        check_config(config)
        runtime = get_runtime(config.runtime)
        path = Path(model_path)
        if not path.is_file():
            raise BadInput(f"model file not found: {path}")
        with self._lock, self._state(config.threads) as control:
            try:
                result = self._measure(runtime, path, config, protocol)
            except MemoryError as exc:  # one model too big for this machine must not end a batch
                reason = f": {exc}" if str(exc) else ""
                hashed = len(path.name) == 64 and all(c in "0123456789abcdef" for c in path.name)
                name = f"model {path.name[:12]}" if hashed else path.name  # a cached model: its short hash
                raise DeviceError(f"{name} needs more memory than this process can get{_data_limit()}{reason}") from None
        result.environment["control"] = control
        return result

    def _measure(self, runtime: Any, path: Path, config: RuntimeConfig, protocol: MeasurementProtocol) -> BenchmarkResult:
        meter = self._meter(config.provider)
        version = runtime.version()  # imports the runtime now, so its import is not billed as model memory
        memory = PeakMemory()
        before = snapshot(self.root)
        memory.start()
        session = runtime.load(path, config)
        self.sessions_opened += 1
        try:
            first_run_ms = _first_run(runtime, session, path)
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
        layers, layers_note = self._layers(runtime, path, config, protocol) if protocol.per_layer else (None, "")
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
        if protocol.per_layer:
            extra["layers"] = layers
            extra["layers_note"] = layers_note
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

    @staticmethod
    def _layers(runtime: Any, path: Path, config: RuntimeConfig,
                protocol: MeasurementProtocol) -> tuple[list[dict[str, Any]] | None, str]:
        """Per-layer times from the runtime's profiler, in runs of their own after the timed ones
        (profiling slows each run, so the latency above never includes it); why not, when not."""
        runs = min(protocol.min_runs, LAYER_RUNS)
        try:
            layers = runtime.layer_times(path, config, runs, protocol.max_seconds)
        except EdgelatError as exc:
            return None, f"no per-layer times: {exc}"
        except Exception as exc:  # the profiler failed where timing worked: say so, keep the latency
            return None, f"no per-layer times: {runtime.name}'s profiler failed: {short_reason(exc)}"
        n = min((r["runs"] for r in layers), default=0)
        return layers, (f"{runtime.name} profiler: median of {n} profiled runs per layer, the layers as the runtime "
                        "runs them (after its own fusions); profiling adds a little to each, so their sum can "
                        "exceed the whole-model latency")

    # ---- the rounds path: every item's session stays alive across interleaved rounds ----

    def benchmark_rounds(
        self,
        models: Sequence[tuple[Path, str]],
        config: RuntimeConfig,
        protocol: MeasurementProtocol,
        rounds: int,
        keep_going: Callable[[], bool] | None = None,
        rng: random.Random | None = None,
    ) -> Iterator[tuple[int, BenchmarkResult | EdgelatError]]:
        """Measure all ``models`` in interleaved rounds, yielding ``(index, result or error)``
        as each item finishes.

        Every item is loaded once (session creation and first run timed, then its
        warm-up), and its session stays open until the item is done. Each round
        visits the unfinished items in a new random order and gives each one burst
        of timed runs (:class:`RoundsTimer`); an item finishes once its CI over all
        its samples is within target after at least ``rounds`` rounds, or on a cap.
        Energy is metered over one contiguous stretch per item (see
        :meth:`_energy_stretch`); peak memory covers creation, first run and warm-up.
        A batch of more than :data:`MAX_OPEN_SESSIONS` items is interleaved in groups
        of that many, so a huge request cannot exhaust the device's memory.
        """
        _check_protocol(protocol)
        rng = rng or random.Random()
        with self._lock, self._state(config.threads) as control:
            try:
                runtime = get_runtime(config.runtime)
                version = runtime.version()
            except EdgelatError as exc:
                for i in range(len(models)):
                    yield i, exc
                return
            meter = self._meter(config.provider)
            for start in range(0, len(models), MAX_OPEN_SESSIONS):
                group = models[start : start + MAX_OPEN_SESSIONS]
                for i, outcome in self._rounds_group(group, runtime, version, meter, control, config, protocol,
                                                     rounds, keep_going, rng):
                    yield start + i, outcome
                if keep_going is not None and not keep_going():
                    return

    def _rounds_group(self, models: Sequence[tuple[Path, str]], runtime: Any, version: str, meter: EnergyMeter,
                      control: dict[str, Any], config: RuntimeConfig, protocol: MeasurementProtocol, rounds: int,
                      keep_going: Callable[[], bool] | None, rng: random.Random,
                      ) -> Iterator[tuple[int, BenchmarkResult | EdgelatError]]:
        """The rounds of one group of items whose sessions are open together."""
        live: dict[int, _Live] = {}
        before = snapshot(self.root)  # the group's items are opened together and timed over the same rounds
        try:
            for i, (path, fmt) in enumerate(models):
                if keep_going is not None and not keep_going():
                    return
                try:
                    live[i] = self._open(runtime, Path(path), fmt, config, protocol, rounds, before)
                except EdgelatError as exc:
                    yield i, exc
            order = list(live)
            round_no = 0
            while live:
                if keep_going is not None and not keep_going():
                    return
                rng.shuffle(order)
                after: dict[str, Any] | None = None  # one snapshot for the items this round finishes
                for pos, i in enumerate(order):
                    item = live[i]
                    item.positions.append((round_no, pos))
                    try:
                        item.timer.burst(item.session.run)
                        if item.timer.done:
                            self._energy_stretch(item, meter)
                    except Exception as exc:
                        meter.close()
                        item.session.close()
                        del live[i]
                        yield i, CorruptModel(f"{runtime.name} failed while timing {item.path.name} "
                                              f"(the first run worked): {short_reason(exc)}")
                        continue
                    if item.timer.done:
                        del live[i]
                        item.session.close()
                        after = after or snapshot(self.root)
                        yield i, self._rounds_result(item, config, version, meter, control, rounds, after)
                order = [i for i in order if i in live]
                round_no += 1
        finally:
            for item in live.values():
                item.session.close()

    def _open(self, runtime: Any, path: Path, fmt: str, config: RuntimeConfig, protocol: MeasurementProtocol,
              rounds: int, before: dict[str, Any]) -> "_Live":
        """Load one item of a rounds batch: session, timed first run, warm-up, peak memory;
        ``before`` is the device's state when its group began."""
        if fmt not in FORMATS:
            raise BadInput(f"unknown model format {fmt!r} (expected one of {', '.join(FORMATS)})")
        if fmt != config.model_format:
            raise BadInput(f"runtime {config.runtime} runs {config.model_format} models, but this model is {fmt}")
        if not path.is_file():
            raise BadInput(f"model file not found: {path}")
        memory = PeakMemory()
        memory.start()
        session = runtime.load(path, config)
        self.sessions_opened += 1
        try:
            first_run_ms = _first_run(runtime, session, path)
            budget = protocol.max_seconds
            warm_start, warmed = time.perf_counter(), 0
            for _ in range(max(0, protocol.warmup)):
                session.run()
                warmed += 1
                if time.perf_counter() - warm_start >= budget:
                    break
        except Exception:
            session.close()
            raise
        peak = memory.stop()
        timer = RoundsTimer(rounds, protocol.min_runs, protocol.max_runs, protocol.target_rel_ci, protocol.max_seconds)
        return _Live(path=path, session=session, timer=timer, first_run_ms=first_run_ms, warmup=warmed,
                     before=before, peak=peak, peak_note=memory.note)

    @staticmethod
    def _energy_stretch(item: "_Live", meter: EnergyMeter) -> None:
        """Meter energy over one contiguous stretch of runs once the item's latency is known.

        A round's burst is a few runs, far below an energy counter's resolution
        (RAPL 10 ms, NVML 100 ms), and summing refused readings would invent
        nothing useful; so where a sensor exists the item runs on its own for about
        twice the counter's resolution (at least its burst size), metered as one
        interval. No sensor: nothing runs, the meter's reason is the note.
        """
        if meter.name == "none":
            item.energy_note = meter.note
            return
        median_ms = item.timer.summary()["median"]
        runs = max(item.timer.burst_size(), math.ceil(2.0 * meter.min_interval_s * 1000.0 / max(median_ms, 1e-6)))
        runs = min(runs, 100_000)
        meter.start()
        for _ in range(runs):
            item.session.run()
        joules = meter.stop()
        if joules is None:
            item.energy_note = meter.note
        else:
            item.joules, item.energy_runs = joules, runs

    def _rounds_result(self, item: "_Live", config: RuntimeConfig, version: str, meter: EnergyMeter,
                       control: dict[str, Any], rounds: int, after: dict[str, Any]) -> BenchmarkResult:
        summary = item.timer.summary()
        energy_mj = item.joules * 1000.0 / item.energy_runs if item.energy_runs else None
        energy_note = "" if energy_mj is not None else item.energy_note or meter.note or "no energy recorded"
        extra: dict[str, Any] = {
            "stopped_by": summary["stopped_by"],
            "warmup_runs": item.warmup,
            "provider_used": item.session.provider,
            "energy_meter": meter.name,
            "energy_scope": meter.scope,
            "rounds": {"asked": rounds, "done": summary["rounds"], "positions": item.positions},
        }
        if item.energy_runs:
            extra["energy_method"] = (f"one contiguous stretch of {item.energy_runs} runs after the rounds "
                                      f"({meter.interval_s:.3f} s; the rounds' bursts are below the counter's resolution)")
        if item.peak is None:
            extra["peak_memory_note"] = item.peak_note
        else:
            extra["peak_memory_method"] = ("VmHWM after reset minus VmRSS before session creation, over creation, "
                                           "first run and warm-up (rounds: other items' sessions stay open)")
        return BenchmarkResult(
            model_sha256=_sha256_file(item.path),
            config=dataclasses.replace(config, runtime=get_runtime(config.runtime).name, version=version),
            latency=LatencySummary.from_dict(summary),
            session_ms=item.session.session_ms,
            first_run_ms=item.first_run_ms,
            energy_mj=energy_mj,
            energy_note=energy_note,
            peak_memory_bytes=item.peak,
            environment={"before": item.before, "after": after, "runtimes": self._versions(),
                         "control": control},
            agent_version=__version__,
            extra=extra,
        )

    def close(self) -> None:
        for meter in self._meters.values():
            meter.close()
        self._meters.clear()


@dataclass
class _Live:
    """One item of a rounds batch while it is being measured."""

    path: Path
    session: Any
    timer: RoundsTimer
    first_run_ms: float
    warmup: int
    before: dict[str, Any]
    peak: int | None
    peak_note: str
    positions: list[tuple[int, int]] = field(default_factory=list)  # (round, place in that round's order)
    joules: float = 0.0
    energy_runs: int = 0  # runs of the metered stretch (0: no energy figure)
    energy_note: str = ""
