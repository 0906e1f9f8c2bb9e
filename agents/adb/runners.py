"""The on-phone benchmark runners the bridge drives: argv in, parsed result out.

One small ABC, three implementations (TFLite's ``benchmark_model``,
``onnxruntime_perf_test``, and edgelat's own Python runner for Linux-like
devices with Python). A runner only builds an argv from validated values (the
bridge quotes every word), says which output lines delimit its measured phase
(so battery samples can be cut to it) and turns the text it printed into
numbers, never adding one the tool did not print.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import json
import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from edgelat.agents.parsers.runner_output import check_result
from edgelat.values import LatencySummary, MeasurementProtocol, RuntimeConfig
from edgelat.errors import BadInput, CorruptModel, DeviceError, EdgelatError, RuntimeUnavailable

DEVICE_DIR = "/data/local/tmp/edgelat"
RUNNERS = ("benchmark_model", "ort-perf-test", "python")
#: the runtime each command-line runner runs, the one runner <-> runtime map (the python runner
#: runs the runtime it is asked for); ``edgelat.devices.runtime`` resolves configs with it
RUNNER_RUNTIME = {"benchmark_model": "tflite-benchmark", "ort-perf-test": "ort-perf-test"}
#: the runner that runs each such runtime
RUNTIME_RUNNER = {runtime: runner for runner, runtime in RUNNER_RUNTIME.items()}
_ALIASES = {**RUNTIME_RUNNER, "onnxruntime_perf_test": "ort-perf-test"}
_DEVICE_PATH = re.compile(r"^/[A-Za-z0-9_./+-]{1,250}$")


def check_runner(name: str) -> str:
    name = _ALIASES.get(name, name)
    if name not in RUNNERS:
        raise BadInput(f"unknown runner {name!r}: choose one of {', '.join(RUNNERS)}")
    return name


def check_device_path(path: str, what: str) -> str:
    """An absolute device path made of safe characters (it is quoted anyway)."""
    if not isinstance(path, str) or not _DEVICE_PATH.match(path) or ".." in path.split("/"):
        raise BadInput(f"bad {what} path on the phone {path!r}: give an absolute path like {DEVICE_DIR}/{what}")
    return path


@dataclass
class RunOutput:
    """What one runner invocation measured (latency in ms)."""

    latency: LatencySummary
    runtime: str
    version: str = ""
    session_ms: float | None = None
    first_run_ms: float | None = None
    peak_memory_bytes: int | None = None
    steady_s: float | None = None  # duration of the measured phase, when the runner reports it
    extra: dict[str, Any] = field(default_factory=dict)


Mark = tuple[float, int]  # (device uptime s, 1-based output line number)


class DeviceRunner(ABC):
    """A benchmark program on the phone."""

    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]
    #: shell ``case`` pattern (trusted constant) for the lines that delimit the measured phase
    mark_glob: ClassVar[str]

    def files(self) -> dict[str, bytes]:
        """Helper files to push before the first run: {device path: content}."""
        return {}

    def env_prefix(self) -> str:
        """Trusted shell text put before the command (environment variables)."""
        return ""

    @abstractmethod
    def argv(self, model: str, config: RuntimeConfig, protocol: MeasurementProtocol) -> list[str]:
        """The command line (each word is quoted by the bridge)."""

    @abstractmethod
    def window(self, lines: list[str], marks: list[Mark]) -> tuple[float, float] | None:
        """Device-uptime start and end of the measured runs, from the marked lines."""

    @abstractmethod
    def parse(self, text: str, config: RuntimeConfig) -> RunOutput:
        """Numbers from the output; raises an EdgelatError subclass when the run failed."""

    def describe(self) -> dict[str, Any]:
        return {"runner": self.name}


def _nan(v: float | None) -> float:
    return math.nan if v is None else float(v)


def _tail(text: str, n: int = 3) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("EDGELAT_RC=")]
    return " | ".join(lines[-n:])[:300] or "no output"


def exit_status(text: str) -> int | None:
    m = re.search(r"^EDGELAT_RC=(\d+)\s*$", text, re.M)
    return int(m.group(1)) if m else None


def _first_after(marks: list[Mark], lines: list[str], start_line: int, pred) -> Mark | None:
    for t, n in marks:
        if n > start_line and 0 < n <= len(lines) and pred(lines[n - 1]):
            return (t, n)
    return None


# ---- TFLite benchmark_model ------------------------------------------------------
class BenchmarkModelRunner(DeviceRunner):
    """TFLite's ``benchmark_model``; it prints avg/std/count (and p5/median/p95 in newer builds)."""

    name = "benchmark_model"
    formats = ("tflite",)
    mark_glob = '*"Running benchmark for"*|*count=*'
    DELEGATES = {"cpu": [], "xnnpack": ["--use_xnnpack=true"], "gpu": ["--use_gpu=true"],
                 "nnapi": ["--use_nnapi=true"], "hexagon": ["--use_hexagon=true"]}

    def __init__(self, binary: str = f"{DEVICE_DIR}/benchmark_model", op_profiling: bool = False) -> None:
        self.binary = check_device_path(binary, "benchmark_model") if "/" in binary else binary
        self.op_profiling = op_profiling

    def argv(self, model: str, config: RuntimeConfig, protocol: MeasurementProtocol) -> list[str]:
        provider = config.provider.lower()
        if provider not in self.DELEGATES:
            raise RuntimeUnavailable(
                f"benchmark_model has no delegate {config.provider!r} (use one of {', '.join(self.DELEGATES)})"
            )
        argv = [
            self.binary,
            f"--graph={model}",
            f"--num_threads={int(config.threads)}",
            f"--warmup_runs={max(1, int(protocol.warmup))}",
            "--warmup_min_secs=0",
            # benchmark_model has no confidence-interval stop: it runs num_runs (at least)
            # unless max_secs passes first, which is the protocol's cap.
            f"--num_runs={int(protocol.max_runs)}",
            "--min_secs=0",
            f"--max_secs={float(protocol.max_seconds):g}",
        ]
        argv += self.DELEGATES[provider]
        if config.precision == "fp16":
            argv.append("--allow_fp16=true")
        if self.op_profiling or protocol.per_layer:
            argv.append("--enable_op_profiling=true")
        return argv

    def window(self, lines: list[str], marks: list[Mark]) -> tuple[float, float] | None:
        starts = [(t, n) for t, n in marks if "Running benchmark for" in lines[n - 1]] if lines else []
        if not starts:
            return None
        start = starts[-1]  # the first is the warm-up phase
        end = _first_after(marks, lines, start[1], lambda ln: "count=" in ln)
        return (start[0], end[0]) if end else None

    def parse(self, text: str, config: RuntimeConfig) -> RunOutput:
        from edgelat.agents.parsers import parse_benchmark_model

        try:
            report = parse_benchmark_model(text)
        except BadInput:
            report = None
        if report is None or report.runs is None and report.inference_avg_us is None:
            low = text.lower()
            if "failed to mmap" in low or "could not build" in low or "failed to construct" in low \
                    or "invalid model" in low or "model provided has model identifier" in low:
                raise CorruptModel(f"benchmark_model cannot load the model: {_tail(text)}")
            if "not found" in low and "benchmark_model" in low:
                raise RuntimeUnavailable(
                    f"benchmark_model is not on the phone at {self.binary}: register the phone with "
                    "--benchmark-model HOST_PATH to push it"
                )
            raise DeviceError(f"benchmark_model printed no timings (exit status {exit_status(text)}): {_tail(text)}")
        lat = report.latency_ms()
        if lat["median"] is None:
            raise DeviceError(f"benchmark_model printed no steady-state timing: {_tail(text)}")
        n = int(lat["n"] or 0)
        summary = LatencySummary(
            median=float(lat["median"]),
            mean=_nan(lat["mean"]),
            std=_nan(lat["std"]),
            p10=math.nan,  # benchmark_model prints no p10/p90 (newer builds: p5/p95, kept in extra)
            p90=math.nan,
            n=n,
            rel_ci=math.inf,
            stable=False,
        )
        extra: dict[str, Any] = {
            "runner": self.name,
            "median_source": lat["median_source"],
            "stable_note": "benchmark_model reports no confidence interval of the median; stability unknown",
            "printed_us": {k: getattr(report.runs, k) for k in ("min_us", "max_us", "avg_us", "std_us", "p5_us",
                                                                 "median_us", "p95_us")} if report.runs else {},
            "summary_format": report.summary_format,
            "warmup_runs": report.warmup.count if report.warmup else None,
            "memory": report.memory,
        }
        if lat["median_source"] == "avg":
            extra["median_note"] = "this benchmark_model build prints no median: median_ms holds its average"
        if report.ops:
            extra["ops"] = [dataclasses.asdict(r) for r in report.ops]
            extra["ops_by_type"] = [dataclasses.asdict(r) for r in report.ops_by_type]
            extra["op_nodes_executed"] = report.op_nodes_executed
            # the same per-layer rows every runtime gives (benchmark_model prints each op's average)
            extra["layers"] = [{"layer": r.name, "op": r.node_type, "median_ms": r.avg_ms,
                                "runs": r.times_called} for r in report.ops if r.avg_ms is not None]
            extra["layers_note"] = ("benchmark_model --enable_op_profiling: each op's average over the profiled "
                                    "runs (it prints no per-op median)")
        peak = report.peak_memory_mb
        return RunOutput(
            latency=summary,
            runtime="tflite-benchmark",
            session_ms=report.session_ms,
            first_run_ms=report.first_run_ms,
            peak_memory_bytes=None if peak is None else int(peak * 1024 * 1024),
            extra=extra,
        )


# ---- onnxruntime_perf_test --------------------------------------------------------
class OrtPerfTestRunner(DeviceRunner):
    """``onnxruntime_perf_test`` in "times" mode with statistics (``-s``)."""

    name = "ort-perf-test"
    formats = ("onnx",)
    mark_glob = '*"Session creation time cost"*|*"First inference time cost"*|*"Total inference"*|*"Total time cost"*'
    PROVIDERS = ("cpu", "xnnpack", "nnapi", "qnn", "acl", "armnn", "cuda", "tensorrt", "openvino", "dnnl")

    def __init__(self, binary: str = f"{DEVICE_DIR}/onnxruntime_perf_test") -> None:
        self.binary = check_device_path(binary, "onnxruntime_perf_test") if "/" in binary else binary

    def env_prefix(self) -> str:
        # libonnxruntime.so usually sits beside the tool on a phone.
        if "/" in self.binary:
            return "LD_LIBRARY_PATH=" + self.binary.rsplit("/", 1)[0]
        return ""

    def argv(self, model: str, config: RuntimeConfig, protocol: MeasurementProtocol) -> list[str]:
        provider = config.provider.lower()
        if provider not in self.PROVIDERS:
            raise RuntimeUnavailable(
                f"onnxruntime_perf_test has no provider {config.provider!r} (use one of {', '.join(self.PROVIDERS)})"
            )
        return [self.binary, "-e", provider, "-x", str(int(config.threads)), "-m", "times",
                "-r", str(int(protocol.max_runs)), "-s", "-I", model]

    def window(self, lines: list[str], marks: list[Mark]) -> tuple[float, float] | None:
        starts = [(t, n) for t, n in marks if "Session creation" in lines[n - 1] or "First inference" in lines[n - 1]]
        if not starts:
            return None
        start = starts[-1]
        end = _first_after(marks, lines, start[1], lambda ln: "Total" in ln)
        return (start[0], end[0]) if end else None

    def parse(self, text: str, config: RuntimeConfig) -> RunOutput:
        from edgelat.agents.parsers import parse_ort_perf_test

        try:
            report = parse_ort_perf_test(text)
        except BadInput:
            low = text.lower()
            if "load model" in low or "invalid_protobuf" in low or "invalid_graph" in low:
                raise CorruptModel(f"onnxruntime_perf_test cannot load the model: {_tail(text)}") from None
            raise DeviceError(
                f"onnxruntime_perf_test printed no timings (exit status {exit_status(text)}): {_tail(text)}"
            ) from None
        lat = report.latency_ms()
        if lat["median"] is None:
            raise DeviceError(f"onnxruntime_perf_test printed no steady-state timing: {_tail(text)}")
        summary = LatencySummary(
            median=float(lat["median"]),
            mean=_nan(lat["mean"]),
            std=math.nan,  # the tool prints none
            p10=math.nan,
            p90=_nan(lat["p90"]),
            n=int(lat["n"] or 0),
            rel_ci=math.inf,
            stable=False,
        )
        extra = {
            "runner": self.name,
            "median_source": lat["median_source"],
            "stable_note": "onnxruntime_perf_test reports no confidence interval of the median; stability unknown",
            "printed": {k: v for k, v in dataclasses.asdict(report).items() if v is not None},
        }
        return RunOutput(
            latency=summary,
            runtime="ort-perf-test",
            session_ms=report.session_ms,
            first_run_ms=report.first_inference_ms,
            peak_memory_bytes=report.peak_working_set_bytes,
            steady_s=report.total_inference_time_s,
            extra=extra,
        )


# ---- edgelat's python runner ------------------------------------------------------
RESULT_PREFIX = "EDGELAT_RESULT "
ERROR_PREFIX = "EDGELAT_ERROR "
STEADY_MARK = "EDGELAT_STEADY"


def _package_file(name: str) -> bytes:
    return importlib.resources.files("edgelat.agents").joinpath(name).read_bytes()


class PythonRunner(DeviceRunner):
    """``agents/scripts/runner.py`` (+ ``measure.py``) run by the phone's Python.

    The files go to a directory named by the hash of their content, so a new
    edgelat version pushes its own copy and never runs a stale one.
    """

    name = "python"
    formats = ("onnx", "tflite")
    mark_glob = "EDGELAT_STEADY*|EDGELAT_RESULT*|EDGELAT_ERROR*"
    RUNTIMES = ("onnxruntime", "litert", "tflite-runtime")

    def __init__(self, python: str = "python3") -> None:
        from edgelat.agents.adb.facts import check_python_path

        self.python = check_python_path(python)
        runner, measure = _package_file("scripts/runner.py"), _package_file("measure.py")
        digest = hashlib.sha256(runner + b"\0" + measure).hexdigest()[:16]
        self.dir = f"{DEVICE_DIR}/py-{digest}"
        self._files = {f"{self.dir}/runner.py": runner, f"{self.dir}/measure.py": measure}

    def files(self) -> dict[str, bytes]:
        return dict(self._files)

    def argv(self, model: str, config: RuntimeConfig, protocol: MeasurementProtocol) -> list[str]:
        if config.runtime not in self.RUNTIMES:
            raise RuntimeUnavailable(
                f"the python runner runs {', '.join(self.RUNTIMES)}, not {config.runtime!r}"
            )
        fmt = "onnx" if config.runtime == "onnxruntime" else "tflite"
        return [
            self.python, f"{self.dir}/runner.py", "--model", model, "--format", fmt,
            "--runtime", config.runtime, "--provider", config.provider, "--threads", str(int(config.threads)),
            "--warmup", str(int(protocol.warmup)), "--min-runs", str(int(protocol.min_runs)),
            "--max-runs", str(int(protocol.max_runs)), "--target-rel-ci", repr(float(protocol.target_rel_ci)),
            "--max-seconds", repr(float(protocol.max_seconds)),
        ]

    def window(self, lines: list[str], marks: list[Mark]) -> tuple[float, float] | None:
        start = next(((t, n) for t, n in marks if lines[n - 1].startswith(STEADY_MARK)), None)
        if start is None:
            return None
        end = _first_after(marks, lines, start[1], lambda ln: ln.startswith(RESULT_PREFIX))
        return (start[0], end[0]) if end else None

    def parse(self, text: str, config: RuntimeConfig) -> RunOutput:
        result = None
        for line in text.splitlines():
            if line.startswith(ERROR_PREFIX):
                raise _runner_error(line[len(ERROR_PREFIX):].strip())
            if line.startswith(RESULT_PREFIX):
                try:
                    result = json.loads(line[len(RESULT_PREFIX):])
                except (ValueError, RecursionError):
                    raise DeviceError(f"the python runner printed a garbled result: {line[:200]!r}") from None
                if not isinstance(result, dict) or "latency" not in result:
                    raise DeviceError(f"the python runner printed a result without a latency: {line[:200]!r}")
                check_result(result)
        if result is None:
            low = text.lower()
            if "not found" in low or "no such file" in low:
                raise RuntimeUnavailable(
                    f"no python at {self.python!r} on the phone: register it with --python PATH ({_tail(text)})"
                )
            raise DeviceError(f"the python runner printed no result (exit status {exit_status(text)}): {_tail(text)}")
        rt = result.get("runtime") if isinstance(result.get("runtime"), dict) else {}
        summary = result["latency"]
        extra = {
            "runner": self.name,
            "stopped_by": summary.get("stopped_by"),
            "warmup_runs": summary.get("warmup"),
            "provider_used": rt.get("provider"),
            "device_python": result.get("python"),
            "device_machine": result.get("machine"),
        }
        name = rt.get("name")
        return RunOutput(
            latency=LatencySummary.from_dict(summary),
            runtime=name if isinstance(name, str) and 0 < len(name) <= 64 else config.runtime,
            version=str(rt.get("version") or "")[:64],
            session_ms=_duration(result.get("session_ms")),
            first_run_ms=_duration(result.get("first_run_ms")),
            steady_s=_duration(result.get("steady_wall_s")),
            extra=extra,
        )

    def describe(self) -> dict[str, Any]:
        return {"runner": self.name, "python": self.python, "dir": self.dir}


def _duration(value: Any) -> float | None:
    """A duration the runner printed, or None when it is missing or garbage."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


def _runner_error(reason: str) -> EdgelatError:
    low = reason.lower()
    if "not installed" in low or "not available" in low or "did not initialize" in low or "not supported" in low:
        return RuntimeUnavailable(f"on the phone: {reason}")
    if "cannot load" in low or "failed while running" in low or "cannot feed" in low:
        return CorruptModel(f"on the phone: {reason}")
    if reason.startswith("bad arguments"):
        return BadInput(f"python runner: {reason}")
    return DeviceError(f"python runner on the phone: {reason}")
