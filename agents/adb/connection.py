"""One ADB connection to a phone (adb-shell, USB or TCP) with timeouts and reconnects.

Why a wrapper around adb-shell: its calls have no default timeouts (a hung
phone would hang the agent), a lost TCP connection makes it spin until a read
timeout, its errors are library exceptions a user cannot act on, and a
transport that went away stays broken. Here every call has a deadline, a lost
link raises :class:`ConnectionLost` and the next call reconnects with
exponential backoff, and the failures a user can fix (unauthorised phone,
missing libusb) say what to do.
"""

from __future__ import annotations

import io
import re
import select
import shlex
import struct
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from edgelat.errors import BadInput, DeviceError

T = TypeVar("T")

_EXIT_MARK = "EDGELAT_EXIT="
_EXIT_RE = re.compile("\n" + _EXIT_MARK + r"(\d+)\n?$")


class ConnectionLost(DeviceError):
    """The link to the phone went away (cable pulled, adbd restarted, Wi-Fi dropped)."""


class PhoneLost(DeviceError):
    """Reconnecting failed for the whole backoff budget."""


class CommandTimeout(DeviceError):
    """A command on the phone did not finish in time; it was killed."""


class OutputTooLarge(DeviceError):
    """A command on the phone printed more than the host will buffer; it was killed."""


class _TooMuch(Exception):
    pass


#: What one shell command may print before it is stopped (a benchmark with op profiling
#: prints well under 1 MiB; a facts dump a few hundred KiB).
MAX_OUTPUT_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Timeouts:
    """Every deadline of the connection, in seconds.

    ``io_s`` bounds one socket read/write of a short exchange; ``command_s`` is
    the default budget of a shell command; ``auth_s`` is how long to wait for the
    user to accept the "Allow USB debugging" prompt; reconnects make up to
    ``attempts`` tries with a delay doubling from ``backoff_s`` up to
    ``backoff_max_s``.
    """

    io_s: float = 10.0
    command_s: float = 60.0
    auth_s: float = 20.0
    attempts: int = 6
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0

    def delays(self) -> list[float]:
        """Waits before each reconnect attempt (the first attempt goes at once)."""
        return [0.0] + [min(self.backoff_max_s, self.backoff_s * 2**i) for i in range(max(0, self.attempts - 1))]


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (port defaults to adb's 5555)."""
    host, sep, port = address.rpartition(":")
    if not sep:
        host, port = address, "5555"
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInput(f"bad phone address {address!r}: expected HOST:PORT, e.g. 192.168.1.20:5555")
    return host, int(port)


def _tcp_transport_class() -> type:
    """adb-shell's TCP transport, fixed to see EOF and to write whole packets."""
    from adb_shell.exceptions import TcpTimeoutException
    from adb_shell.transport.tcp_transport import TcpTransport

    class EofAwareTcpTransport(TcpTransport):
        # adb-shell's own transport returns b"" forever after the peer closes (the
        # reader then spins until its read timeout) and may send part of a packet
        # on a non-blocking socket; a phone that went away must be noticed at once.
        def connect(self, transport_timeout_s: float | None) -> None:
            super().connect(transport_timeout_s)
            # adb-shell writes a header and its payload separately: without NODELAY,
            # Nagle's algorithm and delayed ACKs add ~40 ms to every exchange.
            self._connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def bulk_read(self, numbytes: int, transport_timeout_s: float | None) -> bytes:
            if self._connection is None:
                raise ConnectionResetError("not connected")
            readable, _, _ = select.select([self._connection], [], [], transport_timeout_s)
            if not readable:
                raise TcpTimeoutException(f"reading from {self._host}:{self._port} timed out ({transport_timeout_s} s)")
            data = self._connection.recv(numbytes)
            if not data:
                raise ConnectionResetError(f"{self._host}:{self._port} closed the connection")
            return data

        def bulk_write(self, data: bytes, transport_timeout_s: float | None) -> int:
            if self._connection is None:
                raise ConnectionResetError("not connected")
            view = memoryview(data)
            deadline = None if transport_timeout_s is None else time.monotonic() + transport_timeout_s
            while view:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                _, writable, _ = select.select([], [self._connection], [], left)
                if not writable:
                    raise TcpTimeoutException(f"writing to {self._host}:{self._port} timed out ({transport_timeout_s} s)")
                try:
                    sent = self._connection.send(view)
                except BlockingIOError:
                    continue
                view = view[sent:]
            return len(data)

    return EofAwareTcpTransport


class AdbConnection:
    """A phone reached by USB ``serial`` or adb-over-TCP ``address``.

    Calls are serialised (one ADB exchange at a time) and each has a deadline.
    ``connect`` is implicit: the first call connects, and a call after a lost
    link reconnects with backoff first.
    """

    def __init__(
        self,
        serial: str | None = None,
        address: str | None = None,
        *,
        key_path: str | Path | None = None,
        timeouts: Timeouts = Timeouts(),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if (serial is None) == (address is None):
            raise BadInput("give exactly one of a USB serial (--serial) or an adb-over-TCP address (--address)")
        if address is not None:
            parse_address(address)
        self.serial = serial
        self.address = address
        self.key_path = key_path
        self.timeouts = timeouts
        self._sleep = sleep
        self._device: Any = None
        self._lock = threading.RLock()
        self.reconnects = 0  # successful reconnects after a lost link (for the environment record)
        self._ever_connected = False

    @property
    def label(self) -> str:
        return self.serial or self.address or "?"

    # ---- connecting ------------------------------------------------------
    def _make_device(self) -> Any:
        from adb_shell.adb_device import AdbDevice

        if self.address is not None:
            host, port = parse_address(self.address)
            return AdbDevice(_tcp_transport_class()(host, port), default_transport_timeout_s=self.timeouts.io_s)
        try:
            from adb_shell.adb_device import AdbDeviceUsb
            from adb_shell.exceptions import InvalidTransportError, UsbDeviceNotFoundError
        except ImportError as exc:  # pragma: no cover - adb-shell always has these names
            raise DeviceError(f"USB support is unavailable: {exc}; install it with pip install 'adb-shell[usb]'") from exc
        try:
            return AdbDeviceUsb(serial=self.serial, default_transport_timeout_s=self.timeouts.io_s)
        except InvalidTransportError as exc:
            raise DeviceError(
                "USB phones need libusb1: install it with pip install 'adb-shell[usb]' (or use --address for adb over TCP)"
            ) from exc
        except UsbDeviceNotFoundError as exc:
            raise DeviceError(
                f"no phone with serial {self.serial} on USB: plug it in, enable USB debugging, "
                "and stop a running adb server ('adb kill-server') that would hold the device"
            ) from exc

    def _connect_once(self) -> None:
        from adb_shell.exceptions import DeviceAuthError, TcpTimeoutException, AdbTimeoutError

        from edgelat.agents.adb.keys import load_signer

        signer = load_signer(self.key_path)
        device = self._make_device()
        prompted: list[bool] = []
        try:
            device.connect(
                rsa_keys=[signer],
                transport_timeout_s=self.timeouts.io_s,
                auth_timeout_s=self.timeouts.auth_s,
                read_timeout_s=self.timeouts.io_s,
                auth_callback=lambda _dev: prompted.append(True),
            )
        except (TcpTimeoutException, AdbTimeoutError, DeviceAuthError, OSError) as exc:
            _close_quietly(device)
            if prompted:
                raise DeviceError(
                    f"phone {self.label} has not authorised this computer: unlock it and accept the "
                    "'Allow USB debugging' prompt, then retry"
                ) from exc
            raise ConnectionLost(f"cannot connect to phone {self.label}: {_describe(exc)}") from exc
        except _link_errors() as exc:  # protocol garbage: not an adbd at the other end
            _close_quietly(device)
            raise ConnectionLost(f"phone {self.label} answered with something that is not ADB: {_describe(exc)}") from exc
        except Exception as exc:
            _close_quietly(device)
            if type(exc).__module__.startswith("usb1"):  # libusb: busy, no permission, unplugged
                raise DeviceError(
                    f"cannot open phone {self.label} on USB ({_describe(exc)}): stop a running adb server "
                    "('adb kill-server') and check the udev permissions of the device"
                ) from exc
            raise
        self._device = device

    def connect(self, attempts: int | None = None) -> None:
        """Connect (or reconnect) with exponential backoff; raises PhoneLost after the last attempt."""
        with self._lock:
            if self._device is not None:
                return
            last: Exception | None = None
            delays = self.timeouts.delays()[: attempts or None]
            for delay in delays:
                if delay:
                    self._sleep(delay)
                try:
                    self._connect_once()
                    if self._ever_connected:
                        self.reconnects += 1
                    self._ever_connected = True
                    return
                except ConnectionLost as exc:
                    last = exc
            raise PhoneLost(
                f"lost phone {self.label}: no ADB connection after {len(delays)} attempts "
                f"over {sum(delays):.0f} s ({last}); check the cable or network, then rerun (finished work is kept)"
            )

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        device, self._device = self._device, None
        if device is not None:
            _close_quietly(device)

    @property
    def connected(self) -> bool:
        return self._device is not None

    # ---- calls -----------------------------------------------------------
    def _call(self, what: str, timeout_s: float, fn: Callable[[Any], T]) -> T:
        from adb_shell.exceptions import (
            AdbCommandFailureException,
            AdbTimeoutError,
            PushFailedError,
            TcpTimeoutException,
        )

        with self._lock:
            if self._device is None:
                self.connect()
            device = self._device
            try:
                return fn(device)
            except (TcpTimeoutException, AdbTimeoutError) as exc:
                # Closing the transport is how a hung command gets killed: adbd hangs up
                # the shell when its connection goes away. The next call reconnects.
                self._drop()
                raise CommandTimeout(
                    f"{what} on phone {self.label} did not finish within {timeout_s:g} s and was killed"
                ) from exc
            except (AdbCommandFailureException, PushFailedError) as exc:
                raise DeviceError(f"{what} failed on phone {self.label}: {_describe(exc)}") from exc
            except _link_errors() as exc:
                self._drop()
                raise ConnectionLost(f"lost phone {self.label} during {what}: {_describe(exc)}") from exc

    def shell(
        self, command: str, *, timeout_s: float | None = None, what: str = "shell command",
        max_bytes: int = MAX_OUTPUT_BYTES,
    ) -> str:
        """Run a shell command (already quoted) and return what it printed.

        The output is read as it streams and bounded: past ``max_bytes`` the
        command is killed (the link is dropped, as for a timeout) and
        :class:`OutputTooLarge` says so, instead of the host buffering whatever
        the phone prints. Bytes that are not UTF-8 become U+FFFD.
        """
        t = float(timeout_s or self.timeouts.command_s)

        def run(d: Any) -> str:
            chunks: list[bytes] = []
            total = 0
            # adb-shell's public shell() joins the whole output in memory and its
            # streaming_shell() has no overall deadline; _streaming_command (the generator
            # both are built on, stable since 0.3) yields each packet with the deadline.
            for chunk in d._streaming_command(b"shell", command.encode("utf-8"), t, t, t):
                total += len(chunk)
                if total > max_bytes:
                    raise _TooMuch()
                chunks.append(chunk)
            return b"".join(chunks).decode("utf-8", "replace")

        try:
            return self._call(what, t, run)
        except _TooMuch:
            with self._lock:
                self._drop()  # adbd kills the command when its connection goes away
            raise OutputTooLarge(
                f"{what} on phone {self.label} printed more than {max_bytes // (1024 * 1024)} MiB "
                "and was stopped; check the command's output on the phone"
            ) from None

    def run(
        self, argv: Sequence[str], *, timeout_s: float | None = None, what: str | None = None, prefix: str = ""
    ) -> tuple[str, int]:
        """Run ``argv`` (each word quoted) and return (output, exit status).

        ``prefix`` is trusted shell text the caller built (``cd DIR &&``, ``taskset MASK``).
        """
        command = (prefix + " " if prefix else "") + shlex.join(argv)
        out = self.shell(f"{command}; printf '\\n{_EXIT_MARK}%d\\n' $?", timeout_s=timeout_s, what=what or argv[0])
        return split_exit(out)

    def push(
        self, data: bytes, remote_path: str, *, mode: int = 0o644, timeout_s: float | None = None, mtime: int = 0
    ) -> None:
        """Write ``data`` to ``remote_path``; ``mtime`` (seconds; 0: now) is the file's modification time."""
        t = float(timeout_s or max(self.timeouts.io_s, 30.0 + len(data) / 2e6))
        self._call(
            f"push to {remote_path}",
            t,
            lambda d: d.push(io.BytesIO(data), remote_path, st_mode=0o100000 | mode, mtime=int(mtime),
                             transport_timeout_s=t, read_timeout_s=t),
        )

    def pull(self, remote_path: str, *, timeout_s: float | None = None) -> bytes:
        t = float(timeout_s or max(self.timeouts.io_s, 30.0))
        buf = io.BytesIO()
        self._call(f"pull of {remote_path}", t, lambda d: d.pull(remote_path, buf, transport_timeout_s=t, read_timeout_s=t))
        return buf.getvalue()

    def stat(self, remote_path: str) -> tuple[int, int, int]:
        """(mode, size, mtime); mode 0 when the path does not exist (adbd's answer)."""
        t = self.timeouts.io_s
        return self._call(f"stat of {remote_path}", t, lambda d: d.stat(remote_path, transport_timeout_s=t, read_timeout_s=t))

    def list(self, remote_path: str) -> list[tuple[str, int, int, int]]:
        """Directory entries (name, mode, size, mtime)."""
        t = self.timeouts.io_s
        files = self._call(f"listing of {remote_path}", t, lambda d: d.list(remote_path, transport_timeout_s=t, read_timeout_s=t))
        return [(bytes(f.filename).decode("utf-8", "replace") if isinstance(f.filename, (bytes, bytearray)) else f.filename, f.mode, f.size, f.mtime) for f in files]


def split_exit(output: str) -> tuple[str, int]:
    """Split the exit-status line :meth:`AdbConnection.run` appends; -1 when it is missing."""
    m = _EXIT_RE.search(output)
    if not m:
        return output, -1
    return output[: m.start()], int(m.group(1))


def _link_errors() -> tuple[type[BaseException], ...]:
    """What a broken link looks like from adb-shell: socket errors, USB errors, garbage packets."""
    from adb_shell import exceptions as e

    return (OSError, struct.error, UnicodeDecodeError, e.AdbConnectionError, e.InvalidChecksumError,
            e.InvalidCommandError, e.InvalidResponseError, e.UsbReadFailedError, e.UsbWriteFailedError,
            e.DeviceAuthError)


def _close_quietly(device: Any) -> None:
    try:
        device.close()
    except Exception:
        pass


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
