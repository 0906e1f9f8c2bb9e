"""Dataclass <-> protobuf conversions for the agent service.

The value types in :mod:`edgelat.values` are what the rest of edgelat
uses; the protobuf messages exist only on the wire. Keeping every conversion
here means the server and the client cannot disagree about a field. Free-form
dicts (device facts, environment, runner extras) travel as JSON strings; floats
survive the round trip exactly (JSON writes ``repr``), and a field that is None
stays unset, so a missing number never turns into 0.
"""

from __future__ import annotations

import json
from typing import Any

from edgelat.values import BenchmarkItem, BenchmarkResult, LatencySummary, MeasurementProtocol, RuntimeConfig
from edgelat.proto import agent_pb2 as pb


def _json_default(obj: Any) -> Any:
    """numpy scalars/arrays and paths in a facts or environment dict."""
    if hasattr(obj, "tolist"):  # numpy scalar or array
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    return str(obj)


def dumps(data: dict[str, Any] | None) -> str:
    return json.dumps(data or {}, sort_keys=True, default=_json_default)


def loads(text: str) -> dict[str, Any]:
    return json.loads(text) if text else {}


def config_to_pb(config: RuntimeConfig) -> pb.RuntimeConfig:
    return pb.RuntimeConfig(
        runtime=config.runtime, threads=config.threads, provider=config.provider,
        precision=config.precision, version=config.version,
    )


def config_from_pb(msg: pb.RuntimeConfig) -> RuntimeConfig:
    return RuntimeConfig(
        runtime=msg.runtime, threads=msg.threads, provider=msg.provider,
        precision=msg.precision, version=msg.version,
    )


def protocol_to_pb(protocol: MeasurementProtocol) -> pb.MeasurementProtocol:
    return pb.MeasurementProtocol(
        warmup=protocol.warmup, min_runs=protocol.min_runs, max_runs=protocol.max_runs,
        target_rel_ci=protocol.target_rel_ci, max_seconds=protocol.max_seconds, per_layer=protocol.per_layer,
    )


def protocol_from_pb(msg: pb.MeasurementProtocol) -> MeasurementProtocol:
    return MeasurementProtocol(
        warmup=msg.warmup, min_runs=msg.min_runs, max_runs=msg.max_runs,
        target_rel_ci=msg.target_rel_ci, max_seconds=msg.max_seconds, per_layer=msg.per_layer,
    )


def summary_to_pb(summary: LatencySummary) -> pb.LatencySummary:
    return pb.LatencySummary(
        median=summary.median, mean=summary.mean, std=summary.std, p10=summary.p10, p90=summary.p90,
        n=summary.n, rel_ci=summary.rel_ci, stable=summary.stable,
    )


def summary_from_pb(msg: pb.LatencySummary) -> LatencySummary:
    return LatencySummary(
        median=msg.median, mean=msg.mean, std=msg.std, p10=msg.p10, p90=msg.p90,
        n=msg.n, rel_ci=msg.rel_ci, stable=msg.stable,
    )


def item_to_pb(item: BenchmarkItem) -> pb.BenchmarkItem:
    return pb.BenchmarkItem(model_sha256=item.model_sha256, model_format=item.model_format, tag=item.tag)


def item_from_pb(msg: pb.BenchmarkItem) -> BenchmarkItem:
    return BenchmarkItem(model_sha256=msg.model_sha256, model_format=msg.model_format, tag=msg.tag)


_OPTIONAL_NUMBERS = ("session_ms", "first_run_ms", "energy_mj", "peak_memory_bytes")


def result_to_pb(result: BenchmarkResult) -> pb.BenchmarkResult:
    msg = pb.BenchmarkResult(
        model_sha256=result.model_sha256,
        config=config_to_pb(result.config),
        energy_note=result.energy_note,
        environment_json=dumps(result.environment),
        agent_version=result.agent_version,
        tag=result.tag,
        error=result.error,
        extra_json=dumps(result.extra),
    )
    if result.latency is not None:
        msg.latency.CopyFrom(summary_to_pb(result.latency))
    for name in _OPTIONAL_NUMBERS:
        value = getattr(result, name)
        if value is not None:
            setattr(msg, name, value)
    return msg


def result_from_pb(msg: pb.BenchmarkResult) -> BenchmarkResult:
    optional = {name: (getattr(msg, name) if msg.HasField(name) else None) for name in _OPTIONAL_NUMBERS}
    return BenchmarkResult(
        model_sha256=msg.model_sha256,
        config=config_from_pb(msg.config),
        latency=summary_from_pb(msg.latency) if msg.HasField("latency") else None,
        energy_note=msg.energy_note,
        environment=loads(msg.environment_json),
        agent_version=msg.agent_version,
        tag=msg.tag,
        error=msg.error,
        extra=loads(msg.extra_json),
        **optional,
    )


def facts_to_pb(facts: dict[str, Any], agent_version: str, default_name: str) -> pb.DescribeResponse:
    """Typed top-level fields for the common facts; the whole dict as JSON beside them."""
    return pb.DescribeResponse(
        name=str(facts.get("name") or facts.get("hostname") or default_name),
        kind=str(facts.get("kind") or ""),
        arch=str(facts.get("arch") or ""),
        agent_version=agent_version,
        facts_json=dumps(facts),
    )


def facts_from_pb(msg: pb.DescribeResponse) -> dict[str, Any]:
    """The facts dict, with the typed fields filled in where the backend left them out."""
    facts = loads(msg.facts_json)
    for key in ("name", "kind", "arch", "agent_version"):
        value = getattr(msg, key)
        if value and not facts.get(key):
            facts[key] = value
    return facts
