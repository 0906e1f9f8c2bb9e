"""Phones over ADB: registering one, whether its runner is there, and what ``agent adb`` serves.

Everything a caller gives is validated before the phone or the database is touched; the
phone's facts are read before the registry is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgelat.devices.registry import Device, Registry
from edgelat.devices.runtime import RUNNERS
from edgelat.errors import BadInput

__all__ = ["PhoneRegistration", "missing_runner_hint", "register_phone", "serve_transport"]

#: the program file each command-line runner needs on the phone (in its facts' ``runners``)
RUNNER_BINARY = {"benchmark_model": "benchmark_model", "ort-perf-test": "onnxruntime_perf_test"}
#: what to do when a runner is not found on the phone
_MISSING_HINT = {
    "benchmark_model": "push it with --benchmark-model PATH",
    "ort-perf-test": "copy onnxruntime_perf_test to /data/local/tmp/edgelat/",
    "python": "install onnxruntime or ai-edge-litert for the phone's Python, or set --python",
}


@dataclass
class PhoneRegistration:
    """A registered phone, and what to tell the user when its runner was not found."""

    device: Device
    missing_runner: str | None = None


def missing_runner_hint(runner: str, facts: dict[str, Any]) -> str | None:
    """None when the phone's facts show ``runner`` can run there, else what to do about it."""
    runners = facts.get("runners") or {}
    if runner in RUNNER_BINARY:
        present = bool(runners.get(RUNNER_BINARY[runner]))
    else:
        mods = (runners.get("python") or {}).get("modules") or {}
        present = bool(mods.get("onnxruntime") or mods.get("ai_edge_litert") or mods.get("tflite_runtime"))
    return None if present else _MISSING_HINT[runner]


def _open_registry() -> Registry:
    from edgelat.lut.store import open_db

    return Registry(open_db())


def register_phone(name: str, serial: str | None = None, address: str | None = None,
                   runner: str = "benchmark_model", python: str = "python3", benchmark_model: str | None = None,
                   auth_timeout: float = 30.0, model_cache_mb: float | None = None, replace: str | None = None,
                   registry: Registry | None = None,
                   on_note: Callable[[str], None] | None = None) -> PhoneRegistration:
    """Register an Android phone reached over ADB (``serial`` for USB or ``address`` for adb over
    TCP): connect (the phone asks to allow USB debugging), push ``benchmark_model`` when given,
    read the facts, then store the device. ``on_note`` hears the bridge's notes as they come."""
    from edgelat.agents.adb.bridge import AdbBackend
    from edgelat.agents.adb.connection import AdbConnection, Timeouts
    from edgelat.agents.adb.facts import check_python_path
    from edgelat.devices.registry import check_registrable

    check_registrable(name)
    if bool(serial) == bool(address):
        raise BadInput("give exactly one of --serial (USB) or --address HOST:PORT (adb over TCP)")
    if runner not in RUNNERS:
        raise BadInput(f"unknown runner {runner!r}: choose one of {', '.join(RUNNERS)}")
    check_python_path(python)
    if benchmark_model is not None and not Path(benchmark_model).expanduser().is_file():
        raise BadInput(f"no benchmark_model binary at {benchmark_model}: give the host path of the built tool")
    registry = registry or _open_registry()

    conn = AdbConnection(serial=serial, address=address, timeouts=Timeouts(auth_s=auth_timeout))
    backend = AdbBackend(conn, runner=runner, python=python)
    try:
        transport: dict[str, Any] = {"type": "adb", "runner": runner}
        transport.update({"serial": serial} if serial else {"address": address})
        if python != "python3":
            transport["python"] = python
        if model_cache_mb is not None:
            transport["model_cache_mb"] = model_cache_mb
        if benchmark_model is not None:
            transport["benchmark_model"] = backend.push_binary(Path(benchmark_model).expanduser(), "benchmark_model")
        facts = backend.describe()
    finally:
        backend.close()
    for line in (facts.pop("bridge", None) or {}).get("notes", []):
        if on_note is not None:
            on_note(line)
    device = registry.register(name, "phone", transport, facts, replace=replace)
    return PhoneRegistration(device, missing_runner_hint(runner, facts))


def serve_transport(device: Device | None = None, serial: str | None = None, address: str | None = None,
                    runner: str | None = None, python: str | None = None) -> dict[str, Any]:
    """The ADB transport ``agent adb`` serves: a registered phone's (without the keys that point
    at another agent), or a bare serial/address; ``runner``/``python`` override it."""
    if device is not None:
        if device.transport.get("type") != "adb":
            raise BadInput(f"device {device.name!r} is not a phone reached over ADB (kind {device.kind}); "
                           "use 'edgelat agent serve' on it instead")
        transport = {k: v for k, v in device.transport.items() if k not in ("agent", "token_file")}
    else:
        transport = {"type": "adb", **({"serial": serial} if serial else {"address": address})}
    if runner:
        transport["runner"] = runner
    if python:
        transport["python"] = python
    return transport
