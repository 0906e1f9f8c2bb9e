"""The committed gRPC stubs match agent.proto, and the dataclass <-> protobuf conversions are lossless."""

from __future__ import annotations

import importlib.util
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgelat.agents import convert
from edgelat.values import BenchmarkItem, BenchmarkResult, LatencySummary, MeasurementProtocol, RuntimeConfig
from edgelat.proto import agent_pb2 as pb

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gen_proto.py"


def load_gen_proto():
    spec = importlib.util.spec_from_file_location("gen_proto", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_are_fresh():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, f"stale stubs: run python scripts/gen_proto.py\n{proc.stdout}{proc.stderr}"


def test_check_detects_a_stale_stub(tmp_path, monkeypatch, capsys):
    """--check must fail when the .proto changed but the stubs were not regenerated."""
    gen = load_gen_proto()
    copy = tmp_path / "repo"
    (copy / "edgelat" / "proto").mkdir(parents=True)
    for stem in ("agent", "hub"):
        for name in (f"{stem}.proto", f"{stem}_pb2.py", f"{stem}_pb2_grpc.py", f"{stem}_pb2.pyi"):
            shutil.copy(ROOT / "edgelat" / "proto" / name, copy / "edgelat" / "proto" / name)
    monkeypatch.setattr(gen, "ROOT", copy)
    assert gen.check() == 0
    proto = copy / "edgelat" / "proto" / "agent.proto"
    proto.write_text(proto.read_text().replace("message HasModelRequest {", "message HasModelRequest {\n  bool touch = 9;"))
    assert gen.check() == 1
    out = capsys.readouterr()
    assert "touch" in out.out and "stale" in out.err
    # Regenerating fixes it.
    assert gen.main([]) == 0
    assert gen.check() == 0


def test_service_shape():
    service = pb.DESCRIPTOR.services_by_name["Agent"]
    assert service.full_name == "edgelat.agent.v1.Agent"
    shapes = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert shapes == {
        "Describe": (False, False),
        "HasModel": (False, False),
        "PutModel": (True, False),
        "Benchmark": (False, False),
        "BenchmarkBatch": (False, True),
    }
    # Optional numbers must have presence, so a missing value never reads as 0.
    result = pb.DESCRIPTOR.message_types_by_name["BenchmarkResult"]
    for name in ("energy_mj", "peak_memory_bytes", "session_ms", "first_run_ms"):
        assert result.fields_by_name[name].has_presence, name


def full_result() -> BenchmarkResult:
    return BenchmarkResult(
        model_sha256="ab" * 32,
        config=RuntimeConfig(runtime="litert", threads=4, provider="xnnpack", precision="fp16", version="2.3.0"),
        latency=LatencySummary(median=1.0 / 3.0, mean=0.1 + 0.2, std=1e-300, p10=0.25, p90=math.pi, n=123,
                               rel_ci=math.inf, stable=False),
        session_ms=12.5,
        first_run_ms=0.0,  # a real zero must stay zero, not become "unknown"
        energy_mj=0.0123456789012345,
        energy_note="rapl package-0",
        peak_memory_bytes=2**40 + 7,
        environment={"freq_khz": [1800000, 2400000], "governor": "performance", "temp_c": None},
        agent_version="0.1.0",
        tag="conv2d|k3|c64",
        extra={"per_op": [{"op": "Conv", "ms": 0.5}]},
    )


def test_result_round_trip_is_exact():
    original = full_result()
    back = convert.result_from_pb(pb.BenchmarkResult.FromString(convert.result_to_pb(original).SerializeToString()))
    assert back == original
    assert back.first_run_ms == 0.0 and back.first_run_ms is not None


def test_missing_numbers_stay_missing():
    failed = BenchmarkResult(model_sha256="cd" * 32, config=RuntimeConfig(), error="CorruptModel: cannot load",
                             energy_note="no energy sensor on this host")
    msg = convert.result_to_pb(failed)
    for name in ("energy_mj", "peak_memory_bytes", "session_ms", "first_run_ms", "latency"):
        assert not msg.HasField(name), name
    back = convert.result_from_pb(msg)
    assert back == failed
    assert back.energy_mj is None and back.latency is None and not back.ok


def test_numpy_values_in_dicts_survive():
    result = BenchmarkResult(model_sha256="ef" * 32, config=RuntimeConfig(),
                             environment={"load": np.float64(0.25), "cores": np.int64(8), "f": np.array([1, 2])})
    back = convert.result_from_pb(convert.result_to_pb(result))
    assert back.environment == {"load": 0.25, "cores": 8, "f": [1, 2]}


def test_config_protocol_item_round_trip():
    config = RuntimeConfig(runtime="onnxruntime", threads=2, provider="cuda", precision="fp32", version="1.32.0")
    protocol = MeasurementProtocol(warmup=0, min_runs=3, max_runs=20, target_rel_ci=0.015, max_seconds=0.5)
    item = BenchmarkItem(model_sha256="01" * 32, model_format="tflite", tag="t")
    assert convert.config_from_pb(convert.config_to_pb(config)) == config
    assert convert.protocol_from_pb(convert.protocol_to_pb(protocol)) == protocol
    assert convert.item_from_pb(convert.item_to_pb(item)) == item


def test_facts_typed_fields_and_json():
    facts = {"arch": "aarch64", "kind": "board", "cpu_model": "Cortex-A76", "cores": 4, "hostname": "rpi5"}
    msg = convert.facts_to_pb(facts, "0.1.0", default_name="fallback")
    assert (msg.name, msg.kind, msg.arch, msg.agent_version) == ("rpi5", "board", "aarch64", "0.1.0")
    back = convert.facts_from_pb(pb.DescribeResponse.FromString(msg.SerializeToString()))
    assert back == {**facts, "name": "rpi5", "agent_version": "0.1.0"}
    assert convert.facts_to_pb({}, "0.1.0", default_name="fallback").name == "fallback"


@pytest.mark.parametrize("module", ["edgelat.proto.agent_pb2", "edgelat.proto.agent_pb2_grpc"])
def test_stubs_import_by_package_path(module):
    """Generated with -I . from the repo root, so the grpc stub imports edgelat.proto.agent_pb2."""
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "from edgelat.proto import agent_pb2" in (ROOT / "edgelat/proto/agent_pb2_grpc.py").read_text()
