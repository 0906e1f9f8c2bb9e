"""The registry of named devices (real SQLite)."""

from __future__ import annotations

import pytest

from edgelat.devices.registry import Registry, connect
from edgelat.errors import BadInput, DeviceError, UnknownDevice
from edgelat.lut.store import open_db


@pytest.fixture
def registry(tmp_path):
    return Registry(open_db(tmp_path / "r.db"))


def test_local_is_always_there(registry):
    assert [d.name for d in registry.list()] == ["local"]
    assert registry.get("local").transport == {"type": "local"}
    with pytest.raises(BadInput):
        registry.remove("local")


def test_register_update_and_remove(registry):
    registry.register("rpi5", "board", {"type": "agent", "address": "127.0.0.1:1"}, {"cores": 4})
    first = registry.get("rpi5")
    with pytest.raises(BadInput, match="already registered"):  # re-pointing a name needs replace
        registry.register("rpi5", "board", {"type": "agent", "address": "127.0.0.1:2"}, {"cores": 4})
    registry.register("rpi5", "board", {"type": "agent", "address": "127.0.0.1:2"}, {"cores": 8}, replace="keep-rows")
    again = registry.get("rpi5")
    assert again.first_seen == first.first_seen and again.facts == {"cores": 8}
    assert [d.name for d in registry.list()] == ["local", "rpi5"]
    registry.remove("rpi5")
    assert [d.name for d in registry.list()] == ["local"]


def test_unknown_device_names_the_known_ones(registry):
    registry.register("rpi5", "board", {"type": "agent", "address": "127.0.0.1:1"}, {})
    with pytest.raises(UnknownDevice, match="rpi5"):
        registry.get("pixel9")


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 65, "../etc"])
def test_bad_names_and_kinds_are_rejected(registry, name):
    with pytest.raises(BadInput):
        registry.register(name, "board", {"type": "local"}, {})
    with pytest.raises(BadInput):
        registry.register("ok", "toaster", {"type": "local"}, {})
    assert [d.name for d in registry.list()] == ["local"]


def test_imported_devices_cannot_run_models(registry):
    dev = registry.ensure_imported("pixel3")
    assert dev.kind == "imported" and registry.ensure_imported("pixel3").first_seen == dev.first_seen
    with pytest.raises(DeviceError, match="imported"):
        connect(dev)
