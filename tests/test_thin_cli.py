"""The CLI is a thin layer: the decisions it used to make live in the library, once.

One runner list and one runner <-> runtime map (beside the runners, re-exported by
``edgelat.devices.runtime``), used by every command that takes ``--runner``; the device kind,
a phone's missing runner and the transport ``agent adb`` serves are decided in ``devices/``.
"""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from edgelat.agents.adb import bridge
from edgelat.values import RuntimeConfig
from edgelat.cli import main
from edgelat.devices.enroll import agent_kind, agent_transport
from edgelat.devices.info import device_info, device_rows
from edgelat.devices.phones import missing_runner_hint, serve_transport
from edgelat.devices.registry import Device, Registry
from edgelat.devices.runtime import RUNNER_RUNTIME, RUNNERS, resolve_runtime
from edgelat.errors import BadInput
from edgelat.lut.store import open_db

CLI = Path(__file__).resolve().parent.parent / "edgelat" / "cli"


def _choices(*path: str) -> list[str]:
    cmd: click.Command = main
    for name in path[:-1]:
        cmd = cmd.commands[name]  # type: ignore[attr-defined]
    option = next(p for p in cmd.params if p.name == path[-1])
    return list(option.type.choices)


def test_every_runner_option_offers_the_one_list():
    for path in (("devices", "register-phone", "runner"), ("agent", "adb", "runner"), ("profile", "ops", "runner"),
                 ("profile", "model", "runner")):
        assert _choices(*path) == list(RUNNERS), path
    # no command module spells a runner's runtime itself: they all go through devices/runtime
    for f in CLI.glob("*.py"):
        text = f.read_text()
        for runtime in RUNNER_RUNTIME.values():
            assert f'"{runtime}"' not in text, f"{f.name} keeps its own copy of the runner <-> runtime map"
    assert bridge.RUNTIME_RUNNER == {v: k for k, v in RUNNER_RUNTIME.items()}


def test_a_phones_runner_decides_its_runtime():
    phone = Device("pixel7", "phone", {"type": "adb", "serial": "X", "runner": "benchmark_model"})
    assert resolve_runtime(phone, None, RuntimeConfig(), False, "tflite").runtime == "tflite-benchmark"
    assert resolve_runtime(phone, "ort-perf-test", RuntimeConfig(), False, "onnx").runtime == "ort-perf-test"
    assert resolve_runtime(phone, "python", RuntimeConfig(), False, "onnx").runtime == "onnxruntime"
    with pytest.raises(BadInput, match="runs its own runtime"):
        resolve_runtime(phone, None, RuntimeConfig(runtime="litert"), True, "tflite")


def test_the_kind_of_an_agent_follows_its_facts():
    assert agent_kind({"kind": "gpu-host", "cpu_model": "x"}) == "gpu-host"
    assert agent_kind({"kind": "board"}) == agent_kind({}) == "board"
    token = Path("tok")
    t = agent_transport("127.0.0.1:50051", str(token))
    assert t == {"type": "agent", "address": "127.0.0.1:50051", "token_file": str(token.resolve())}


def test_a_missing_runner_says_what_to_do():
    facts = {"runners": {"benchmark_model": "/data/local/tmp/edgelat/benchmark_model",
                         "python": {"version": "3.11", "modules": {"numpy": "1.26", "onnxruntime": None}}}}
    assert missing_runner_hint("benchmark_model", facts) is None
    assert "onnxruntime_perf_test" in missing_runner_hint("ort-perf-test", facts)
    assert "--python" in missing_runner_hint("python", facts)
    facts["runners"]["python"]["modules"]["ai_edge_litert"] = "1.2"
    assert missing_runner_hint("python", facts) is None
    assert "--benchmark-model" in missing_runner_hint("benchmark_model", {})


def test_agent_adb_serves_a_registered_phone_or_a_bare_serial():
    phone = Device("pixel7", "phone", {"type": "adb", "serial": "1A2B", "runner": "benchmark_model",
                                       "agent": "lab:50052", "token_file": "/t"})
    assert serve_transport(phone) == {"type": "adb", "serial": "1A2B", "runner": "benchmark_model"}
    assert serve_transport(phone, runner="python", python="/usr/bin/python3")["runner"] == "python"
    assert serve_transport(None, address="10.0.0.7:5555") == {"type": "adb", "address": "10.0.0.7:5555"}
    board = Device("rpi5", "board", {"type": "agent", "address": "h:1"})
    with pytest.raises(BadInput, match="not a phone reached over ADB"):
        serve_transport(board)


def test_local_is_shown_with_this_machines_facts():
    registry = Registry(open_db())
    local = registry.get("local")
    info = device_info(local)
    assert info["name"] == "local" and info["facts"].get("cores")
    assert [set(r) for r in device_rows(registry.list())] == [set(info) - {"facts"}]
