"""Which runtime config a device runs a model with.

A phone's command-line runners (TFLite ``benchmark_model``, ``onnxruntime_perf_test``) are
runtimes of their own: their rows are not comparable with rows from the Python runner's
LiteRT or onnxruntime, and each takes one model format. The runner list and the runner ->
runtime map are defined once, beside the runners (:mod:`edgelat.agents.adb.runners`, whose
bridge needs them too); every layer above imports them from here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from edgelat.agents.adb.runners import RUNNER_RUNTIME, RUNNERS
from edgelat.values import RuntimeConfig
from edgelat.errors import BadInput

__all__ = ["RUNNERS", "RUNNER_RUNTIME", "resolve_runtime"]


def resolve_runtime(device: Any, runner: str | None, config: RuntimeConfig, runtime_given: bool,
                    fmt: str | None = None) -> RuntimeConfig:
    """The runtime config for a device + runner (+ model format): a phone's runner decides the
    runtime unless it is the python runner; a TFLite model defaults to LiteRT; a contradiction
    is a clear error."""
    if runner and device.transport.get("type") != "adb":
        raise BadInput(f"--runner applies to phones; {device.name} is reached by {device.transport.get('type')}")
    chosen = runner or (device.transport.get("runner") if device.transport.get("type") == "adb" else None)
    runtime = RUNNER_RUNTIME.get(chosen or "")
    if runtime is not None:
        if runtime_given and config.runtime != runtime:
            raise BadInput(f"runner {chosen} runs its own runtime; drop --runtime {config.runtime} or use --runner python")
        config = dataclasses.replace(config, runtime=runtime)
    elif fmt == "tflite" and not runtime_given:
        config = dataclasses.replace(config, runtime="litert")
    if fmt is not None and config.model_format != fmt:
        raise BadInput(f"this is a {fmt} model but {chosen or config.runtime} runs {config.model_format} models")
    return config
