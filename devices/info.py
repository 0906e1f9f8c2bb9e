"""A device as ``devices show`` and ``devices list`` present it."""

from __future__ import annotations

from typing import Any

from edgelat.devices.registry import Device

__all__ = ["device_info", "device_rows"]


def device_info(device: Device) -> dict[str, Any]:
    """The stored record of a device with its facts; for ``local``, which is never registered,
    this machine's facts are read now."""
    data = device.to_dict()
    if device.transport.get("type") == "local" and not device.facts:
        from edgelat.agents.facts import host_facts

        data["facts"] = host_facts()
    return data


def device_rows(devices: list[Device]) -> list[dict[str, Any]]:
    """The records of several devices, without their facts (a list stays one line a device)."""
    rows = [d.to_dict() for d in devices]
    for r in rows:
        r.pop("facts", None)
    return rows
