"""What an agent accepts in a request: the bound on every value, checked by the agent itself.

A client need not be edgelat's CLI, so a request can never ask a runtime for
10^6 threads or a loop of 10^300 seconds: :func:`check_config`,
:func:`check_protocol` and :func:`check_item` refuse it with one line naming the
field. The CLI's options stay within these bounds. The value types themselves
are in :mod:`edgelat.values`.
"""

from __future__ import annotations

import math

from edgelat.errors import BadInput
from edgelat.values import FORMATS, RUNTIMES, BenchmarkItem, MeasurementProtocol, RuntimeConfig

PROTOCOL_BOUNDS: dict[str, tuple[float, float]] = {
    "warmup": (0, 10_000),
    "min_runs": (1, 1_000_000),
    "max_runs": (1, 1_000_000),
    "target_rel_ci": (0.0, 1.0),
    "max_seconds": (0.0, 3600.0),  # lower bound exclusive: the loop needs some time
}
MAX_THREADS = 256
# Longest accepted text of each string field (runtime names, providers, tags are short).
MAX_TEXT: dict[str, int] = {
    "runtime": 64, "provider": 64, "precision": 16, "version": 64, "model_format": 16, "tag": 1024,
}
MAX_BATCH_ITEMS = 100_000
# Random inputs a runtime makes for one model, all inputs together. A tiny model may
# declare a 1x3x100000x100000 input; it is refused before anything is allocated.
MAX_INPUT_BYTES = 1 << 30


def check_text(field_name: str, value: str, required: bool = False) -> str:
    """A string field of a request: bounded length, printable, non-empty when ``required``."""
    limit = MAX_TEXT[field_name]
    if not isinstance(value, str):
        raise BadInput(f"{field_name} must be a string, got {type(value).__name__}")
    if required and not value:
        raise BadInput(f"{field_name} must not be empty")
    if len(value) > limit:
        raise BadInput(f"{field_name} is {len(value)} characters long; at most {limit} are accepted")
    if not value.isprintable():
        raise BadInput(f"{field_name} must be printable text, got {value[:40]!r}")
    return value


def check_config(config: RuntimeConfig) -> RuntimeConfig:
    """Raise :class:`BadInput` naming the first field of ``config`` out of bounds; returns it."""
    if config.runtime not in RUNTIMES:
        shown = config.runtime if len(str(config.runtime)) <= 40 else str(config.runtime)[:40] + "..."
        raise BadInput(f"runtime: unknown runtime {shown!r}; expected one of {', '.join(RUNTIMES)}")
    threads = config.threads
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise BadInput(f"threads must be an integer from 1 to {MAX_THREADS}, got {threads!r}")
    check_text("provider", config.provider, required=True)
    check_text("precision", config.precision)
    check_text("version", config.version)
    return config


def check_protocol(protocol: MeasurementProtocol) -> MeasurementProtocol:
    """Raise :class:`BadInput` naming the first field out of :data:`PROTOCOL_BOUNDS`
    (or not finite, or max_runs < min_runs); returns ``protocol``."""
    for name, (low, high) in PROTOCOL_BOUNDS.items():
        value = getattr(protocol, name)
        integral = name in ("warmup", "min_runs", "max_runs")
        if isinstance(value, bool) or not isinstance(value, int if integral else (int, float)):
            raise BadInput(f"{name} must be {'an integer' if integral else 'a number'}, got {value!r}")
        if not math.isfinite(value):
            raise BadInput(f"{name} must be a finite number, got {value!r}")
        low_ok = value > low if name == "max_seconds" else value >= low
        if not (low_ok and value <= high):
            interval = f"({low:g}, {high:g}]" if name == "max_seconds" else f"[{low:g}, {high:g}]"
            raise BadInput(f"{name} must be in {interval}, got {value!r}")
    if protocol.max_runs < protocol.min_runs:
        raise BadInput(
            f"max_runs >= min_runs is required, got max_runs={protocol.max_runs} min_runs={protocol.min_runs}"
        )
    if not isinstance(protocol.per_layer, bool):
        raise BadInput(f"per_layer must be true or false, got {protocol.per_layer!r}")
    return protocol


def check_item(item: BenchmarkItem) -> BenchmarkItem:
    """Raise :class:`BadInput` for an unknown format or an over-long tag (the hash is
    checked where it becomes a file name, :func:`edgelat.agents.cache.check_sha`)."""
    if item.model_format not in FORMATS:
        shown = str(item.model_format)[:40]
        raise BadInput(f"model_format: unknown model format {shown!r}; expected one of {', '.join(FORMATS)}")
    check_text("tag", item.tag)
    return item
