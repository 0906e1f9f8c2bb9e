"""The ADB connection against the adbd double: auth, key reuse, shell/sync, timeouts, reconnects."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from adbd_double import PIXEL7_PROPS, VERSION_MIN, AdbdDouble, build_fake_phone, wait_until
from edgelat.agents.adb.connection import (
    AdbConnection,
    CommandTimeout,
    ConnectionLost,
    PhoneLost,
    Timeouts,
    parse_address,
    split_exit,
)
from edgelat.agents.adb.keys import ensure_host_key, host_key_path, public_key_text
from edgelat.errors import BadInput, DeviceError

FAST = Timeouts(io_s=3.0, command_s=10.0, auth_s=0.5, attempts=4, backoff_s=0.05, backoff_max_s=0.2)


@pytest.fixture
def phone(tmp_path: Path):
    root = build_fake_phone(tmp_path / "phone")
    with AdbdDouble(root, PIXEL7_PROPS, trusted_keys=[public_key_text()]) as double:
        yield double


def connect(double: AdbdDouble, timeouts: Timeouts = FAST) -> AdbConnection:
    return AdbConnection(address=double.address, timeouts=timeouts)


def test_host_key_is_generated_once_under_edgelat_home(edgelat_home: Path) -> None:
    key = ensure_host_key()
    assert key == host_key_path() == edgelat_home / "adbkey"
    first = (key.read_bytes(), Path(f"{key}.pub").read_bytes())
    assert first[0].startswith(b"-----BEGIN PRIVATE KEY-----")
    assert key.stat().st_mode & 0o077 == 0  # private key readable by its owner only
    ensure_host_key()
    assert (key.read_bytes(), Path(f"{key}.pub").read_bytes()) == first


def test_auth_with_a_trusted_key_then_shell_push_pull_stat_list(phone: AdbdDouble) -> None:
    conn = connect(phone)
    assert conn.shell("echo hi; getprop ro.product.model") == "hi\nPixel 7\n"
    assert phone.events[:2] == ["signature accepted", "online"]
    assert conn.run(["sh", "-c", "printf 'no newline'; exit 3"]) == ("no newline", 3)
    assert conn.run(["echo", "it's; $(quoted)"]) == ("it's; $(quoted)\n", 0)

    data = bytes(range(256)) * 1000
    conn.push(data, "/data/local/tmp/edgelat/blob.bin")
    assert (phone.root / "data/local/tmp/edgelat/blob.bin").read_bytes() == data
    mode, size, _ = conn.stat("/data/local/tmp/edgelat/blob.bin")
    assert mode & 0o170000 == 0o100000 and size == len(data)
    assert conn.stat("/data/local/tmp/edgelat/absent")[0] == 0
    assert conn.pull("/data/local/tmp/edgelat/blob.bin") == data
    names = [n for n, *_ in conn.list("/data/local/tmp/edgelat")]
    assert "blob.bin" in names
    with pytest.raises(DeviceError, match="pull of /data/local/tmp/edgelat/absent failed"):
        conn.pull("/data/local/tmp/edgelat/absent")
    conn.close()


def test_legacy_protocol_version_with_checksums(tmp_path: Path) -> None:
    root = build_fake_phone(tmp_path / "phone")
    with AdbdDouble(root, PIXEL7_PROPS, trusted_keys=[public_key_text()], version=VERSION_MIN,
                    max_payload=4096) as old:
        conn = connect(old)
        data = b"x" * 20000  # many 4 KiB packets, each checksummed
        conn.push(data, "/data/local/tmp/edgelat/a")
        assert conn.pull("/data/local/tmp/edgelat/a") == data


def test_unknown_key_is_refused_with_the_accept_the_prompt_error(tmp_path: Path) -> None:
    ensure_host_key()
    root = build_fake_phone(tmp_path / "phone")
    with AdbdDouble(root, PIXEL7_PROPS, trusted_keys=[], allow_new_keys=False) as phone:
        conn = connect(phone)
        with pytest.raises(DeviceError) as err:
            conn.shell("echo hi")
        msg = str(err.value)
        assert msg == (
            f"phone {phone.address} has not authorised this computer: unlock it and accept the "
            "'Allow USB debugging' prompt, then retry"
        )
        assert "signature rejected" in phone.events and "prompt shown, not answered" in phone.events
        assert "online" not in phone.events


def test_key_accepted_after_user_taps_allow_is_reused_next_time(tmp_path: Path) -> None:
    pub = public_key_text()
    root = build_fake_phone(tmp_path / "phone")
    with AdbdDouble(root, PIXEL7_PROPS, trusted_keys=[], allow_new_keys=True) as phone:
        conn = connect(phone)
        assert conn.shell("echo ok") == "ok\n"
        assert phone.events == ["signature rejected", "user allowed new key", "online"]
        assert phone.trusted_keys == [pub.strip("\0")] or phone.trusted_keys[0].split()[0] == pub.split()[0]
        conn.close()
        phone.allow_new_keys = False  # no prompt would be answered now
        phone.events.clear()
        again = connect(phone)  # a new connection, same key file under $EDGELAT_HOME
        assert again.shell("echo again") == "again\n"
        assert phone.events == ["signature accepted", "online"]


def test_hanging_command_times_out_is_killed_and_the_next_call_reconnects(phone: AdbdDouble) -> None:
    conn = connect(phone)
    conn.shell("true")
    phone.hang("sleepy-marker")
    t0 = time.monotonic()
    with pytest.raises(CommandTimeout) as err:
        conn.shell("echo sleepy-marker", timeout_s=0.6, what="benchmark_model run")
    assert time.monotonic() - t0 < 3.0
    assert str(err.value) == f"benchmark_model run on phone {phone.address} did not finish within 0.6 s and was killed"
    assert isinstance(err.value, DeviceError)
    assert wait_until(lambda: phone.connection_count() == 0)  # the transport was closed, so adbd drops the command
    phone.clear_hangs()
    assert conn.shell("echo back") == "back\n"


def test_running_process_is_killed_when_the_stream_dies(phone: AdbdDouble) -> None:
    conn = connect(phone)
    pidfile = phone.root / "data/local/tmp/pid"
    with pytest.raises(CommandTimeout):
        conn.shell("echo $$ > /data/local/tmp/pid; exec sleep 30", timeout_s=0.5)
    assert wait_until(lambda: pidfile.exists())
    pid = int(pidfile.read_text())
    assert wait_until(lambda: _gone(pid))


def _gone(pid: int) -> bool:
    """The process has exited (a zombie, or reaped -- possibly between two reads of /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def test_cable_pulled_raises_connection_lost_then_reconnects(phone: AdbdDouble) -> None:
    conn = connect(phone)
    conn.shell("true")
    phone.hang("long-one", seconds=5)
    threading.Timer(0.3, phone.drop_connections).start()
    t0 = time.monotonic()
    with pytest.raises(ConnectionLost, match="lost phone"):
        conn.shell("echo long-one", timeout_s=10)
    assert time.monotonic() - t0 < 2.0  # noticed at once, not after the read timeout
    phone.clear_hangs()
    assert conn.shell("echo ok") == "ok\n"


def test_adbd_restart_is_survived_with_backoff(phone: AdbdDouble) -> None:
    conn = connect(phone, Timeouts(io_s=2, auth_s=0.5, attempts=8, backoff_s=0.1, backoff_max_s=0.4))
    conn.shell("true")
    phone.refuse_connections(0.6)
    with pytest.raises(ConnectionLost):
        conn.shell("true")
    t0 = time.monotonic()
    assert conn.shell("echo up") == "up\n"  # refused a few times, then the port listens again
    assert 0.3 < time.monotonic() - t0 < 3.0


def test_reconnect_gives_up_after_the_backoff_budget(tmp_path: Path) -> None:
    slept: list[float] = []
    timeouts = Timeouts(io_s=1, attempts=4, backoff_s=0.5, backoff_max_s=1.0)
    with socket_closed() as address:
        conn = AdbConnection(address=address, timeouts=timeouts, sleep=slept.append)
        with pytest.raises(PhoneLost) as err:
            conn.shell("true")
    assert slept == [0.5, 1.0, 1.0]  # exponential, capped, bounded
    assert "no ADB connection after 4 attempts" in str(err.value)


class socket_closed:
    """An address where nothing listens."""

    def __enter__(self) -> str:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        return f"127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        pass


def test_bad_addresses_and_missing_usb_support(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BadInput, match="HOST:PORT"):
        AdbConnection(address="phone:notaport")
    with pytest.raises(BadInput, match="exactly one"):
        AdbConnection()
    assert parse_address("10.0.0.2") == ("10.0.0.2", 5555)
    import adb_shell.adb_device

    monkeypatch.setattr(adb_shell.adb_device, "UsbTransport", None)
    conn = AdbConnection(serial="1A2B3C", timeouts=Timeouts(attempts=1))
    with pytest.raises(DeviceError, match=r"pip install 'adb-shell\[usb\]'"):
        conn.shell("true")


def test_split_exit() -> None:
    assert split_exit("a\nb\n\nEDGELAT_EXIT=0\n") == ("a\nb\n", 0)
    assert split_exit("partial\nEDGELAT_EXIT=137\n") == ("partial", 137)
    assert split_exit("killed before the marker") == ("killed before the marker", -1)


def test_something_that_is_not_adbd_is_reported_not_hung() -> None:
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    stop = threading.Event()

    def http_server() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                c, _ = server.accept()
            except OSError:
                continue
            c.recv(4096)
            c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            c.close()

    threading.Thread(target=http_server, daemon=True).start()
    try:
        conn = AdbConnection(address=f"127.0.0.1:{server.getsockname()[1]}",
                             timeouts=Timeouts(io_s=2, attempts=2, backoff_s=0.01))
        t0 = time.monotonic()
        with pytest.raises(PhoneLost, match="not ADB|closed the connection"):
            conn.shell("true")
        assert time.monotonic() - t0 < 3
    finally:
        stop.set()
        server.close()
