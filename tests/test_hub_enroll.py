"""A device that dialled in to a hub joins the registry of the hub's tables once, so the library's
device checks (known name, kind, identity) hold for it like for any other."""

from __future__ import annotations

import pytest

from edgelat.devices.enroll import enroll_dialled
from edgelat.devices.registry import Registry
from edgelat.errors import DeviceError, DeviceMismatch, UnknownDevice
from edgelat.lut.store import open_db

BOARD = {"arch": "aarch64", "cpu_model": "Cortex-A76", "hostname": "rpi5-lab"}


def test_a_dialled_in_device_is_registered_with_the_hub_transport(tmp_path):
    registry = Registry(open_db(tmp_path / "edgelat.db"))
    with pytest.raises(UnknownDevice):
        registry.get("rpi5")
    dev = enroll_dialled(registry, "rpi5", BOARD)
    assert (dev.kind, dev.transport) == ("board", {"type": "hub"})
    assert registry.get("rpi5").facts["cpu_model"] == "Cortex-A76"
    assert enroll_dialled(registry, "rpi5", BOARD).first_seen == dev.first_seen  # again: the same row
    assert enroll_dialled(registry, "gpu1", {"kind": "gpu-host", "hostname": "gpu1"}).kind == "gpu-host"
    # it is reached only through its agent's tunnel, never directly
    with pytest.raises(DeviceError, match="dialled in to a hub"):
        registry.connect("rpi5")


def test_a_device_registered_on_the_hubs_host_is_kept_unless_another_board_answers(tmp_path):
    registry = Registry(open_db(tmp_path / "edgelat.db"))
    registry.register("p1", "phone", {"type": "adb", "serial": "A1"}, {"model": "Pixel 7", "serial": "A1"})
    kept = enroll_dialled(registry, "p1", {"model": "Pixel 7", "serial": "A1"})
    assert (kept.kind, kept.transport) == ("phone", {"type": "adb", "serial": "A1"})
    with pytest.raises(DeviceMismatch, match="another board"):
        enroll_dialled(registry, "p1", {"model": "Pixel 8", "serial": "B2"})
    assert registry.get("p1").facts["model"] == "Pixel 7"  # nothing changed
