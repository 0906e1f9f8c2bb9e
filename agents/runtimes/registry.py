"""Runtimes by name: the one place that knows which class serves which name.

"litert" falls back to the ``tflite_runtime`` package when ``ai_edge_litert``
is not importable (the returned runtime is then named "tflite-runtime", so the
row records what really ran). "tflite-benchmark" and "ort-perf-test" are
command-line runners driven by the ADB bridge, not in-process runtimes.
"""

from __future__ import annotations

from edgelat.agents.runtimes.base import Runtime
from edgelat.errors import RuntimeUnavailable

IN_PROCESS = ("onnxruntime", "litert", "tflite-runtime")
_CLI_RUNNERS = ("tflite-benchmark", "ort-perf-test")


def _make(name: str) -> Runtime:
    if name == "onnxruntime":
        from edgelat.agents.runtimes.onnxruntime_rt import OnnxRuntime

        return OnnxRuntime()
    from edgelat.agents.runtimes.litert_rt import LiteRTRuntime

    return LiteRTRuntime(name)


def get_runtime(name: str) -> Runtime:
    """The runtime for ``name``; RuntimeUnavailable if it cannot run in this process."""
    if name in _CLI_RUNNERS:
        raise RuntimeUnavailable(
            f"runtime {name!r} is a command-line runner used through the ADB bridge; "
            f"in-process runtimes are {', '.join(IN_PROCESS)}"
        )
    if name not in IN_PROCESS:
        raise RuntimeUnavailable(f"unknown runtime {name!r} (choose one of {', '.join(IN_PROCESS)})")
    rt = _make(name)
    if name == "litert" and not rt.available():
        fallback = _make("tflite-runtime")
        if fallback.available():
            return fallback
    return rt


def available_runtimes() -> dict[str, str]:
    """``{name: version}`` of the in-process runtimes installed here."""
    found: dict[str, str] = {}
    for name in IN_PROCESS:
        rt = _make(name)
        if rt.available():
            found[name] = rt.version()
    return found


def runtime_providers() -> dict[str, list[str]]:
    """``{name: [provider, ...]}`` of the installed in-process runtimes."""
    return {name: _make(name).providers() for name in available_runtimes()}
