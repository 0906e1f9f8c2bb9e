"""The adbd double is faithful: Debian's real ``adb`` client drives it.

``adb connect`` (CNXN + RSA AUTH with the client's own key), ``adb shell``
(shell protocol v2: stdout, stderr and exit status), ``adb push`` and ``adb
pull`` (sync: STAT/SEND/DATA/DONE/RECV/QUIT) all go through the double.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from adbd_double import PIXEL7_PROPS, AdbdDouble, build_fake_phone

ADB = shutil.which("adb")
pytestmark = pytest.mark.skipif(ADB is None, reason="Debian's adb client is not installed (apt-get install adb)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def adb_env(tmp_path: Path):
    """A private adb server (own port, own HOME with its key), killed at the end."""
    from adb_shell.auth.keygen import keygen

    home = tmp_path / "home"
    (home / ".android").mkdir(parents=True)
    keygen(str(home / ".android" / "adbkey"))
    port = _free_port()
    env = dict(os.environ, HOME=str(home), ANDROID_ADB_SERVER_PORT=str(port), ADB_MDNS="0")

    def adb(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([ADB, "-P", str(port), *args], env=env, capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(f"adb {' '.join(args)} failed ({r.returncode}): {r.stdout} {r.stderr}")
        return r

    adb("start-server")
    try:
        yield adb, home
    finally:
        adb("kill-server", check=False)


def test_real_adb_client_connects_shells_pushes_and_pulls(adb_env, tmp_path: Path) -> None:
    adb, home = adb_env
    pub = (home / ".android" / "adbkey.pub").read_text()
    root = build_fake_phone(tmp_path / "phone")
    with AdbdDouble(root, PIXEL7_PROPS, trusted_keys=[pub]) as phone:
        serial = phone.address
        out = adb("connect", serial).stdout
        assert f"connected to {serial}" in out
        devices = adb("devices", "-l").stdout
        assert serial in devices and "device product:panther model:Pixel_7" in devices
        # The real client verified nothing by itself: the double checked its RSA signature.
        assert "signature accepted" in phone.events

        r = adb("-s", serial, "shell", "echo", "hello", "phone")
        assert r.stdout == "hello phone\n"
        r = adb("-s", serial, "shell", "echo oops >&2; exit 3", check=False)
        assert (r.returncode, r.stdout, r.stderr) == (3, "", "oops\n")  # shell v2 keeps streams and status apart
        assert adb("-s", serial, "shell", "getprop", "ro.product.model").stdout == "Pixel 7\n"
        assert adb("-s", serial, "shell", "cat", "/sys/class/power_supply/battery/voltage_now").stdout == "3987000\n"

        payload = os.urandom(300_000)  # several sync DATA chunks of at most 64 KiB
        src = tmp_path / "model.bin"
        src.write_bytes(payload)
        adb("-s", serial, "push", str(src), "/data/local/tmp/edgelat/model.bin")
        assert (root / "data/local/tmp/edgelat/model.bin").read_bytes() == payload
        dst = tmp_path / "back.bin"
        adb("-s", serial, "pull", "/data/local/tmp/edgelat/model.bin", str(dst))
        assert dst.read_bytes() == payload
        listing = adb("-s", serial, "shell", "ls", "-l", "/data/local/tmp/edgelat").stdout
        assert "300000" in listing and "model.bin" in listing

        r = adb("-s", serial, "pull", "/data/local/tmp/nope.bin", str(tmp_path / "x"), check=False)
        assert r.returncode != 0 and "nope.bin" in (r.stdout + r.stderr)


def test_real_adb_client_with_an_unknown_key_stays_unauthorized(adb_env, tmp_path: Path) -> None:
    adb, _ = adb_env
    root = build_fake_phone(tmp_path / "phone")
    with AdbdDouble(root, PIXEL7_PROPS, trusted_keys=[]) as phone:
        adb("connect", phone.address, check=False)
        r = adb("devices", check=False)
        assert f"{phone.address}\tunauthorized" in r.stdout
        assert "prompt shown, not answered" in phone.events
        assert "online" not in phone.events
