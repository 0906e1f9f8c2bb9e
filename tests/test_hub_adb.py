"""``agent adb --hub``: every phone registered on this computer (fake adbd phones running the real
python runner) is served to the hub over one outbound stream, and a job runs on one of them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from adbd_double import PIXEL7_PROPS, AdbdDouble, build_fake_phone
from click.testing import CliRunner
from hub_helpers import FAST_DICT, running_hub, tokens, wait_final, wait_for

from edgelat.agents.adb.keys import public_key_text
from edgelat.cli import main
from edgelat.hub.client import HubClient
from edgelat.lut import store
from edgelat.profiler.presets import get_preset


@pytest.fixture
def phones(tmp_path: Path):
    doubles = []
    for name in ("p1", "p2"):
        double = AdbdDouble(build_fake_phone(tmp_path / name), {**PIXEL7_PROPS, "ro.serialno": f"SN-{name}"},
                            trusted_keys=[public_key_text()]).start()
        doubles.append(double)
        r = CliRunner().invoke(main, ["devices", "register-phone", name, "--address", double.address,
                                      "--runner", "python"])
        assert r.exit_code == 0, r.output
    yield doubles
    for double in doubles:
        double.stop()


def test_agent_adb_serves_every_registered_phone_to_the_hub(tmp_path, phones, edgelat_home):
    specs = [s.key for s in get_preset("smoke")[:2]]
    with running_hub(tmp_path) as hub:
        tok = tokens(hub, agent_devices=["p1", "p2"])
        token_file = tmp_path / "agent.tok"
        token_file.write_text(tok["agent"])
        token_file.chmod(0o600)
        proc = subprocess.Popen(
            [sys.executable, "-c", "from edgelat.cli import main; main()", "agent", "adb", "--hub", hub.address,
             "--token-file", str(token_file), "--name", "lab-pc"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "EDGELAT_HOME": str(edgelat_home)})
        try:
            line = proc.stdout.readline()
            assert line == f"edgelat agent lab-pc connected to hub {hub.address} serving p1, p2\n", proc.stderr.read()
            wait_for(lambda: sorted((d["name"], d["state"]) for d in hub.store.devices())
                     == [("p1", "online"), ("p2", "online")], 30, "both phones online")
            with HubClient(hub.address, tok["user"]) as client:
                job, _ = client.submit("profile-ops", "p2", {}, {"specs": specs, "protocol": FAST_DICT, "rounds": 0})
                final = wait_final(client, job["id"], 180)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
    assert final["state"] == "done", final
    assert final["result"]["measured"] == len(specs)
    db = store.open_db()
    try:
        assert len(store.kernel_rows(db, "p2")) == len(specs) and store.kernel_rows(db, "p1") == []
    finally:
        db.close()
