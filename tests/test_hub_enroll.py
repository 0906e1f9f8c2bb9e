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


def test_a_device_dialling_in_as_another_board_fails_its_job_in_one_line_and_the_hub_goes_on(tmp_path):
    """End to end: the hub's tables know dev1 as another board (registered on the hub's host); an
    agent dials in under that name. Its job fails with the registry's one line, nothing is stored
    under the name, the registration is unchanged, and another device's job on the hub runs."""
    from hub_helpers import FAST_DICT, running_hub, running_link, tokens, wait_final

    from edgelat.agents.local import LocalBackend
    from edgelat.hub.client import HubClient
    from edgelat.lut import store
    from edgelat.profiler.presets import get_preset

    tables = tmp_path / "tables.db"
    here = LocalBackend().describe()
    elsewhere = {"arch": f"{here['arch']}-elsewhere", "hostname": "rpi5-lab", "cpu_model": "Cortex-A76"}
    Registry(open_db(tables)).register("dev1", "board", {"type": "local"}, elsewhere)
    params = {"specs": [s.key for s in get_preset("smoke")[:2]], "protocol": FAST_DICT, "rounds": 0}
    with running_hub(tmp_path, tables_path=tables) as hub:
        tok = tokens(hub, ["dev1", "dev2"])
        with running_link(hub, tok["agent"], "dev1"), \
                running_link(hub, tok["agent"], "dev2", agent_id="agent-dev2"), \
                HubClient(hub.address, tok["user"]) as client:
            bad = wait_final(client, client.submit("profile-ops", "dev1", {}, params)[0]["id"])
            good = wait_final(client, client.submit("profile-ops", "dev2", {}, params)[0]["id"])
    assert bad["state"] == "failed" and "dialled in as another board" in bad["error"], bad
    assert "\n" not in bad["error"] and "Traceback" not in bad["error"]
    assert good["state"] == "done", good
    db = open_db(tables)
    assert Registry(db).get("dev1").facts["hostname"] == "rpi5-lab"  # the registration is unchanged
    assert store.measurement_count(store.device_row_counts(db, "dev1")) == 0
    assert store.measurement_count(store.device_row_counts(db, "dev2")) > 0
