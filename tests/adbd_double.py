"""A faithful adbd double: the real ADB wire protocol over TCP on 127.0.0.1.

CI has no phone, so the ADB side of edgelat is tested against this server. It
speaks what adbd speaks (24-byte little-endian headers with magic and, for
protocol 0x01000000, the byte-sum checksum; CNXN with a ``device::`` banner;
AUTH with a TOKEN challenge verified by real RSA PKCS#1 v1.5 / SHA-1 DigestInfo
against trusted keys in Android's public-key format; OPEN/OKAY/WRTE/CLSE
streams with one-write-in-flight flow control; ``shell:`` v1 and ``shell,v2``
services; ``sync:`` STAT/LIST/SEND/DATA/DONE/RECV/QUIT) so that both adb-shell
and Debian's ``adb`` client drive it. Commands run with ``/bin/sh`` in a
sandbox directory where ``/data``, ``/sys`` and ``/sdcard`` are mapped into
the sandbox, so a fake sysfs tree with Android's real file names and units
answers ``cat /sys/class/power_supply/battery/current_now``.

Test hooks: :meth:`AdbdDouble.drop_connections` (cable pulled),
:meth:`AdbdDouble.refuse_connections` (adbd restarting),
:meth:`AdbdDouble.hang` (a command that hangs),
:meth:`AdbdDouble.hide_command` (a toybox without ``sha256sum``, say).
The phone's toybox commands the bridge uses (``sha256sum``, ``md5sum``,
``touch``, ``rm``) are this machine's coreutils, which print the same
``HASH  PATH`` lines toybox does.
"""

from __future__ import annotations

import base64
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

HEADER = struct.Struct("<6I")
VERSION_MIN = 0x01000000
VERSION_SKIP_CHECKSUM = 0x01000001
MAX_PAYLOAD = 1024 * 1024
MAX_PAYLOAD_V1 = 4096
TOKEN_SIZE = 20
SYNC_DATA_MAX = 64 * 1024

AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3

# Shell protocol v2 packet ids (adb's shell_protocol.h).
SHELL_STDIN, SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT, SHELL_CLOSE_STDIN, SHELL_WINDOW = 0, 1, 2, 3, 4, 5

# Device paths that live inside the sandbox.
MAPPED_ROOTS = ("/data", "/sys", "/sdcard")
_MAPPED = re.compile(r"(?<![\w./-])(/data|/sys|/sdcard)(?=/|\s|$|[;&|)'\"<>`])")


def _cmd(name: str) -> int:
    return struct.unpack("<I", name.encode())[0]


A_SYNC, A_CNXN, A_AUTH, A_OPEN, A_OKAY, A_CLSE, A_WRTE = (
    _cmd(n) for n in ("SYNC", "CNXN", "AUTH", "OPEN", "OKAY", "CLSE", "WRTE")
)
_NAMES = {A_SYNC: "SYNC", A_CNXN: "CNXN", A_AUTH: "AUTH", A_OPEN: "OPEN", A_OKAY: "OKAY", A_CLSE: "CLSE", A_WRTE: "WRTE"}
ID_STAT, ID_LIST, ID_SEND, ID_RECV, ID_DENT, ID_DONE, ID_DATA, ID_OKAY, ID_FAIL, ID_QUIT = (
    _cmd(n) for n in ("STAT", "LIST", "SEND", "RECV", "DENT", "DONE", "DATA", "OKAY", "FAIL", "QUIT")
)


def parse_android_pubkey(text: str | bytes) -> rsa.RSAPublicKey:
    """Android's ``adbkey.pub`` (base64 of the RSAPublicKey struct, then ``user@host``) -> RSA key."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    blob = base64.b64decode(text.strip().strip("\0").split()[0])
    words, _n0inv = struct.unpack_from("<II", blob, 0)
    size = words * 4
    modulus = int.from_bytes(blob[8 : 8 + size], "little")
    (exponent,) = struct.unpack_from("<I", blob, 8 + 2 * size)
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


def verify_token_signature(key: rsa.RSAPublicKey, token: bytes, signature: bytes) -> bool:
    """adbd's check: RSA_verify(NID_sha1, token, ...), i.e. PKCS#1 v1.5 with the SHA-1
    DigestInfo prefix over the 20-byte token used as the digest."""
    try:
        key.verify(signature, token, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))
        return True
    except (InvalidSignature, ValueError):
        return False


class _ProtocolError(Exception):
    pass


class _Bytes:
    """A blocking byte pipe from the connection's reader to a service thread."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._eof = False

    def feed(self, data: bytes) -> None:
        with self._cond:
            self._buf += data
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def read_exact(self, n: int) -> bytes | None:
        with self._cond:
            while len(self._buf) < n and not self._eof:
                self._cond.wait()
            if len(self._buf) < n:
                return None
            out = bytes(self._buf[:n])
            del self._buf[:n]
            return out

    def read_some(self) -> bytes | None:
        with self._cond:
            while not self._buf and not self._eof:
                self._cond.wait()
            if not self._buf:
                return None
            out = bytes(self._buf)
            self._buf.clear()
            return out


class _Stream:
    """One OPENed stream: device id ``local_id``, client id ``remote_id``."""

    def __init__(self, conn: "_Connection", local_id: int, remote_id: int, service: str) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.service = service
        self.ready = threading.Event()  # set when the client has OKAYed our last WRTE
        self.ready.set()
        self.closed = threading.Event()
        self.incoming = _Bytes()
        self.proc: subprocess.Popen | None = None
        self._clse_sent = False
        self._lock = threading.Lock()

    def write(self, data: bytes) -> bool:
        """Send ``data`` as WRTE packets, one in flight at a time (adb's flow control)."""
        limit = self.conn.max_payload
        for i in range(0, len(data), limit):
            while not self.ready.wait(0.05):
                if self.closed.is_set() or self.conn.closed.is_set():
                    return False
            if self.closed.is_set():
                return False
            self.ready.clear()
            try:
                self.conn.send(A_WRTE, self.local_id, self.remote_id, data[i : i + limit])
            except OSError:
                return False
        return True

    def close_from_device(self) -> None:
        with self._lock:
            if self._clse_sent:
                return
            self._clse_sent = True
        self.closed.set()
        self.incoming.close()
        self.conn.forget(self.local_id)
        try:
            self.conn.send(A_CLSE, self.local_id, self.remote_id)
        except OSError:
            pass

    def kill(self) -> None:
        """What adbd does when the client closes a stream or the transport goes away."""
        self.closed.set()
        self.incoming.close()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@dataclass
class _Hang:
    pattern: str
    seconds: float | None  # None: until the stream or connection goes away


class AdbdDouble:
    """adbd over TCP on 127.0.0.1 serving a sandbox directory.

    ``trusted_keys``: public keys (``adbkey.pub`` text) already in the phone's
    ``adb_keys``. ``allow_new_keys``: whether the user taps "Allow" when a new
    key's prompt appears (accepted keys are remembered, as with "Always allow
    from this computer"); when False the prompt is never answered and the
    client keeps waiting, as with a real phone left locked.
    """

    def __init__(
        self,
        root: str | Path,
        props: dict[str, str] | None = None,
        *,
        trusted_keys: list[str] | None = None,
        require_auth: bool = True,
        allow_new_keys: bool = False,
        features: tuple[str, ...] = ("shell_v2", "cmd", "fixed_push_mkdir"),
        version: int = VERSION_SKIP_CHECKSUM,
        max_payload: int = MAX_PAYLOAD,
        port: int = 0,
    ) -> None:
        self.root = Path(root).resolve()
        self.props = dict(props or {})
        self.trusted_keys = list(trusted_keys or [])
        self.require_auth = require_auth
        self.allow_new_keys = allow_new_keys
        self.features = features
        self.version = version
        self.max_payload = max_payload
        self.port = port
        self.commands: list[str] = []  # shell commands as the client sent them
        self.events: list[str] = []  # auth/connect events, for tests
        self.sync_writes: list[str] = []  # device paths written through sync SEND
        self._hangs: list[_Hang] = []
        self._conns: set[_Connection] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._accept_thread: threading.Thread | None = None
        self._reopen_timer: threading.Timer | None = None
        self._prepare_sandbox()

    # ---- lifecycle -------------------------------------------------------
    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "AdbdDouble":
        self._listen()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._reopen_timer is not None:
            self._reopen_timer.cancel()
        self._close_listener()
        self.drop_connections()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=2)

    def __enter__(self) -> "AdbdDouble":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- test hooks ------------------------------------------------------
    def drop_connections(self) -> None:
        """The cable is pulled: every transport goes away, running commands die."""
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.close()
        with self._lock:
            self.events.append(f"dropped {len(conns)}")

    def refuse_connections(self, seconds: float) -> None:
        """adbd restarts: the port refuses connections for ``seconds``, then listens again."""
        self._close_listener()
        self.drop_connections()
        self._reopen_timer = threading.Timer(seconds, self._reopen)
        self._reopen_timer.daemon = True
        self._reopen_timer.start()

    def hang(self, pattern: str, seconds: float | None = None) -> None:
        """Shell commands containing ``pattern`` stall ``seconds`` before running (None: forever)."""
        with self._lock:
            self._hangs.append(_Hang(pattern, seconds))

    def clear_hangs(self) -> None:
        with self._lock:
            self._hangs.clear()

    def connection_count(self) -> int:
        with self._lock:
            return len(self._conns)

    def hide_command(self, name: str) -> None:
        """The phone lacks ``name`` (an older toybox without ``sha256sum``, say): calling it
        prints what Android's mksh prints for a missing command and exits 127."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"bad command name {name!r}")
        shim = self.root / "system/bin" / name
        shim.write_text(f"#!/bin/sh\necho \"/system/bin/sh: {name}: inaccessible or not found\" >&2\nexit 127\n")
        shim.chmod(0o755)

    def taskset_log(self) -> list[str]:
        """Lines ``run MASK COMMAND`` / ``pid MASK`` for every taskset call on the phone."""
        p = self.root / ".adbd/taskset.log"
        return p.read_text().replace(str(self.root), "").splitlines() if p.exists() else []

    # ---- paths -----------------------------------------------------------
    def host_path(self, device_path: str) -> Path | None:
        """Where a device path lives in the sandbox (None: outside what the double serves)."""
        p = os.path.normpath(device_path)
        if not any(p == r or p.startswith(r + "/") for r in MAPPED_ROOTS):
            return None
        return self.root / p.lstrip("/")

    def map_command(self, command: str) -> str:
        return _MAPPED.sub(lambda m: str(self.root) + m.group(1), command)

    def unmap_output(self, data: bytes) -> bytes:
        return data.replace(str(self.root).encode(), b"")

    def _prepare_sandbox(self) -> None:
        for d in ("data/local/tmp", "sys", "sdcard", "system/bin", ".adbd"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        getprop = self.root / "system/bin/getprop"
        getprop.write_text(_GETPROP_SH)
        getprop.chmod(0o755)
        taskset = self.root / "system/bin/taskset"
        taskset.write_text(_TASKSET_SH)
        taskset.chmod(0o755)
        self.write_props()

    def write_props(self) -> None:
        """Write the ro.* properties ``getprop`` answers from (call after changing ``props``)."""
        lines = "".join(f"{k}={v}\n" for k, v in sorted(self.props.items()))
        (self.root / ".adbd/props").write_text(lines)

    def shell_env(self) -> dict[str, str]:
        path = [str(self.root / "system/bin"), os.path.dirname(sys.executable), "/usr/bin", "/bin"]
        env = {
            "PATH": ":".join(path),
            "HOME": str(self.root / "data/local/tmp"),
            "TMPDIR": str(self.root / "data/local/tmp"),
            "ANDROID_DATA": str(self.root / "data"),
            "ADBD_DOUBLE_PROPS": str(self.root / ".adbd/props"),
            "ADBD_DOUBLE_ROOT": str(self.root),
            "LANG": "C.UTF-8",
        }
        return env

    def banner(self) -> bytes:
        keys = ("ro.product.name", "ro.product.model", "ro.product.device")
        parts = "".join(f"{k}={self.props.get(k, '')};" for k in keys)
        return f"device::{parts}features={','.join(self.features)}".encode()

    def hang_for(self, command: str) -> _Hang | None:
        with self._lock:
            for h in self._hangs:
                if h.pattern in command:
                    return h
        return None

    # ---- socket plumbing -------------------------------------------------
    def _listen(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(16)
        self.port = s.getsockname()[1]
        self._listener = s
        self._accept_thread = threading.Thread(target=self._accept_loop, args=(s,), daemon=True)
        self._accept_thread.start()

    def _reopen(self) -> None:
        if not self._stop.is_set():
            self._listen()
            with self._lock:
                self.events.append("listening again")

    def _close_listener(self) -> None:
        s, self._listener = self._listener, None
        if s is not None:
            try:
                s.close()
            except OSError:
                pass

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stop.is_set() and self._listener is listener:
            try:
                r, _, _ = select.select([listener], [], [], 0.1)
                if not r:
                    continue
                sock, _ = listener.accept()
            except (OSError, ValueError):
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=conn.run, daemon=True).start()

    def _forget_conn(self, conn: "_Connection") -> None:
        with self._lock:
            self._conns.discard(conn)

    def _trusted(self) -> list[rsa.RSAPublicKey]:
        out = []
        for k in self.trusted_keys:
            try:
                out.append(parse_android_pubkey(k))
            except Exception:  # a malformed line in adb_keys is skipped, as adbd does
                continue
        return out


class _Connection:
    """One transport: a TCP connection from a host."""

    def __init__(self, double: AdbdDouble, sock: socket.socket) -> None:
        self.double = double
        self.sock = sock
        self.version = VERSION_MIN
        self.max_payload = MAX_PAYLOAD_V1
        self.online = False
        self.token = b""
        self.streams: dict[int, _Stream] = {}
        self.send_lock = threading.Lock()
        self.closed = threading.Event()
        self._next_id = 1
        self._ids = threading.Lock()

    # ---- io ----
    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        crc = (sum(data) & 0xFFFFFFFF) if self.version < VERSION_SKIP_CHECKSUM else 0
        packet = HEADER.pack(command, arg0, arg1, len(data), crc, command ^ 0xFFFFFFFF) + data
        with self.send_lock:
            if self.closed.is_set():
                raise ConnectionAbortedError("transport closed")
            self.sock.sendall(packet)

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise _ProtocolError("connection closed by host")
            buf += chunk
        return bytes(buf)

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        # The link goes first: a stream woken by the kill below must not get a CLSE out.
        with self.send_lock:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                self.sock.close()
            except OSError:
                pass
        for s in list(self.streams.values()):
            s.kill()
        self.streams.clear()
        self.double._forget_conn(self)

    def forget(self, local_id: int) -> None:
        self.streams.pop(local_id, None)

    def run(self) -> None:
        try:
            while not self.closed.is_set():
                command, arg0, arg1, length, crc, magic = HEADER.unpack(self._recv_exact(HEADER.size))
                if magic != command ^ 0xFFFFFFFF:
                    raise _ProtocolError("bad magic")
                if length > MAX_PAYLOAD:
                    raise _ProtocolError("payload too large")
                data = self._recv_exact(length) if length else b""
                if self.version < VERSION_SKIP_CHECKSUM and (sum(data) & 0xFFFFFFFF) != crc:
                    raise _ProtocolError("bad checksum")
                self._handle(command, arg0, arg1, data)
        except (OSError, _ProtocolError, struct.error):
            pass
        finally:
            self.close()

    # ---- packets ----
    def _handle(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        d = self.double
        if command == A_CNXN:
            self.version = min(arg0, d.version)
            self.max_payload = min(arg1, d.max_payload)
            self.online = False
            if d.require_auth:
                self._send_token()
            else:
                self._go_online()
        elif command == A_AUTH:
            self._auth(arg0, data)
        elif not self.online:
            return  # adbd ignores stream packets before the transport is online
        elif command == A_OPEN:
            self._open(arg0, data.rstrip(b"\0").decode("utf-8", "replace"))
        elif command == A_OKAY:
            s = self.streams.get(arg1)
            if s is not None:
                s.ready.set()
        elif command == A_WRTE:
            s = self.streams.get(arg1)
            if s is None:
                return
            s.incoming.feed(data)
            self.send(A_OKAY, s.local_id, s.remote_id)
        elif command == A_CLSE:
            s = self.streams.get(arg1)
            if s is not None:
                s.kill()
                s.close_from_device()  # adbd answers CLSE with CLSE (socket shutdown)

    def _send_token(self) -> None:
        self.token = os.urandom(TOKEN_SIZE)
        self.send(A_AUTH, AUTH_TOKEN, 0, self.token)

    def _go_online(self) -> None:
        self.online = True
        self.send(A_CNXN, self.version, self.max_payload, self.double.banner())
        self.double.events.append("online")

    def _auth(self, kind: int, data: bytes) -> None:
        d = self.double
        if kind == AUTH_SIGNATURE:
            if self.token and any(verify_token_signature(k, self.token, data) for k in d._trusted()):
                d.events.append("signature accepted")
                self._go_online()
            else:
                d.events.append("signature rejected")
                self._send_token()  # adbd issues a fresh challenge for the next key
        elif kind == AUTH_RSAPUBLICKEY:
            key = data.rstrip(b"\0").decode("utf-8", "replace")
            try:
                parse_android_pubkey(key)
            except Exception:
                d.events.append("bad public key")
                return
            if d.allow_new_keys:
                d.events.append("user allowed new key")
                d.trusted_keys.append(key)
                self._go_online()
            else:
                d.events.append("prompt shown, not answered")

    def _open(self, remote_id: int, service: str) -> None:
        handler = _service_handler(service)
        if handler is None:
            self.send(A_CLSE, 0, remote_id)
            return
        with self._ids:
            local_id = self._next_id
            self._next_id += 1
        stream = _Stream(self, local_id, remote_id, service)
        self.streams[local_id] = stream
        self.send(A_OKAY, local_id, remote_id)
        threading.Thread(target=self._serve, args=(handler, stream), daemon=True).start()

    def _serve(self, handler: Callable[[AdbdDouble, _Stream], None], stream: _Stream) -> None:
        try:
            handler(self.double, stream)
        except Exception as exc:  # a bug in the double must not hang the client
            sys.stderr.write(f"adbd double: {stream.service}: {exc!r}\n")
        finally:
            stream.close_from_device()


# ---- services -------------------------------------------------------------
def _service_handler(service: str) -> Callable[[AdbdDouble, _Stream], None] | None:
    if service.startswith("shell") and ":" in service:
        head = service.split(":", 1)[0]
        if head == "shell" or head.startswith("shell,"):
            return _shell_service
    if service.startswith("exec:"):
        return _shell_service
    if service == "sync:":
        return _sync_service
    return None


def _shell_service(double: AdbdDouble, stream: _Stream) -> None:
    head, command = stream.service.split(":", 1)
    args = head.split(",")[1:]
    v2 = "v2" in args
    is_exec = head == "exec"
    with double._lock:
        double.commands.append(command)
    hang = double.hang_for(command)
    if hang is not None:
        if hang.seconds is None:
            while not stream.closed.wait(0.05) and not stream.conn.closed.is_set():
                pass
            return
        if stream.closed.wait(hang.seconds):
            return
    if stream.closed.is_set():
        return
    mapped = double.map_command(command) if command else "exec /bin/sh"
    proc = subprocess.Popen(
        ["/bin/sh", "-c", mapped],
        cwd=str(double.root),
        env=double.shell_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if (v2 or is_exec) else subprocess.STDOUT,
        start_new_session=True,
    )
    stream.proc = proc
    if stream.closed.is_set():
        stream.kill()

    def pump(fd: int, packet_id: int) -> None:
        pending = b""
        while True:
            chunk = os.read(fd, SYNC_DATA_MAX)
            if not chunk:
                break
            pending += chunk
            cut = pending.rfind(b"\n") + 1
            if cut == 0 and len(pending) < SYNC_DATA_MAX:
                continue
            if cut == 0:
                cut = len(pending)
            out, pending = double.unmap_output(pending[:cut]), pending[cut:]
            if not _emit(stream, out, packet_id if v2 else None):
                return
        if pending:
            _emit(stream, double.unmap_output(pending), packet_id if v2 else None)

    def feed_stdin() -> None:
        assert proc.stdin is not None
        buf = b""
        try:
            while True:
                data = stream.incoming.read_some()
                if data is None:
                    break
                if not v2:
                    proc.stdin.write(data)
                    proc.stdin.flush()
                    continue
                buf += data
                while len(buf) >= 5:
                    pid, n = struct.unpack_from("<BI", buf, 0)
                    if len(buf) < 5 + n:
                        break
                    payload, buf = buf[5 : 5 + n], buf[5 + n :]
                    if pid == SHELL_STDIN:
                        proc.stdin.write(payload)
                        proc.stdin.flush()
                    elif pid == SHELL_CLOSE_STDIN:
                        proc.stdin.close()
                        return
        except (OSError, ValueError):
            pass
        finally:
            try:
                proc.stdin.close()
            except (OSError, ValueError):
                pass

    threading.Thread(target=feed_stdin, daemon=True).start()
    pumps = [threading.Thread(target=pump, args=(proc.stdout.fileno(), SHELL_STDOUT), daemon=True)]
    if v2 or is_exec:
        err_id = SHELL_STDERR if v2 else None
        if err_id is None:
            pumps.append(threading.Thread(target=_drain, args=(proc.stderr.fileno(),), daemon=True))
        else:
            pumps.append(threading.Thread(target=pump, args=(proc.stderr.fileno(), SHELL_STDERR), daemon=True))
    for t in pumps:
        t.start()
    for t in pumps:
        t.join()
    code = proc.wait()
    for f in (proc.stdout, proc.stderr):
        if f is not None:
            f.close()
    if v2 and not stream.closed.is_set():
        _emit(stream, bytes([code & 0xFF if code >= 0 else (128 - code) & 0xFF]), SHELL_EXIT)


def _drain(fd: int) -> None:
    while os.read(fd, SYNC_DATA_MAX):
        pass


def _emit(stream: _Stream, data: bytes, packet_id: int | None) -> bool:
    if packet_id is not None:
        data = struct.pack("<BI", packet_id, len(data)) + data
    return stream.write(data)


def _sync_service(double: AdbdDouble, stream: _Stream) -> None:
    """adbd's file_sync_service: requests are (id, length) headers then payload."""
    src = stream.incoming
    while True:
        head = src.read_exact(8)
        if head is None:
            return
        rid, length = struct.unpack("<II", head)
        if rid == ID_QUIT:
            return
        if length > 1024:
            _sync_fail(stream, "path too long")
            return
        path = (src.read_exact(length) or b"").decode("utf-8", "replace")
        if rid == ID_STAT:
            _sync_stat(double, stream, path)
        elif rid == ID_LIST:
            _sync_list(double, stream, path)
        elif rid == ID_RECV:
            if not _sync_recv(double, stream, path):
                return
        elif rid == ID_SEND:
            if not _sync_send(double, stream, path):
                return
        else:
            _sync_fail(stream, f"unknown sync command {head[:4]!r}")
            return


def _sync_fail(stream: _Stream, message: str) -> None:
    data = message.encode()
    stream.write(struct.pack("<II", ID_FAIL, len(data)) + data)


def _sync_stat(double: AdbdDouble, stream: _Stream, path: str) -> None:
    host = double.host_path(path)
    mode = size = mtime = 0
    if host is not None:
        try:
            st = os.lstat(host)
            mode, size, mtime = st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime)
        except OSError:
            pass
    stream.write(struct.pack("<4I", ID_STAT, mode, size, mtime))


def _sync_list(double: AdbdDouble, stream: _Stream, path: str) -> None:
    host = double.host_path(path)
    out = bytearray()
    if host is not None and host.is_dir():
        for name in [".", ".."] + sorted(os.listdir(host)):
            try:
                st = os.lstat(host / name)
            except OSError:
                continue
            raw = name.encode()
            out += struct.pack("<5I", ID_DENT, st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime), len(raw)) + raw
    out += struct.pack("<5I", ID_DONE, 0, 0, 0, 0)
    stream.write(bytes(out))


def _sync_recv(double: AdbdDouble, stream: _Stream, path: str) -> bool:
    host = double.host_path(path)
    try:
        if host is None:
            raise PermissionError("Permission denied")
        with open(host, "rb") as fh:
            while True:
                chunk = fh.read(SYNC_DATA_MAX)
                if not chunk:
                    break
                if not stream.write(struct.pack("<II", ID_DATA, len(chunk)) + chunk):
                    return False
    except OSError as exc:
        _sync_fail(stream, f"open failed: {exc.strerror or exc}")
        return True
    return stream.write(struct.pack("<II", ID_DONE, 0))


def _sync_send(double: AdbdDouble, stream: _Stream, spec: str) -> bool:
    path, _, mode_s = spec.rpartition(",")
    try:
        mode = int(mode_s)
    except ValueError:
        path, mode = spec, 0o100644
    host = double.host_path(path)
    tmp = None
    fh = None
    error = None
    if host is None:
        error = f"couldn't create file: Permission denied ({path})"
    else:
        try:
            host.parent.mkdir(parents=True, exist_ok=True)
            tmp = host.with_name(f".{host.name}.adbd-incoming")
            fh = open(tmp, "wb")
        except OSError as exc:
            error = f"couldn't create file: {exc.strerror or exc}"
    src = stream.incoming
    try:
        while True:
            head = src.read_exact(8)
            if head is None:
                return False
            rid, length = struct.unpack("<II", head)
            if rid == ID_DATA:
                if length > SYNC_DATA_MAX:
                    _sync_fail(stream, "data chunk too large")
                    return False
                chunk = src.read_exact(length)
                if chunk is None:
                    return False
                if fh is not None:
                    fh.write(chunk)
            elif rid == ID_DONE:
                if error is not None:
                    _sync_fail(stream, error)
                    return True
                assert fh is not None and tmp is not None and host is not None
                fh.close()
                fh = None
                os.replace(tmp, host)
                os.chmod(host, mode & 0o7777 or 0o644)
                os.utime(host, (length, length))
                with double._lock:
                    double.sync_writes.append(os.path.normpath(path))
                return stream.write(struct.pack("<II", ID_OKAY, 0))
            else:
                _sync_fail(stream, "invalid data message")
                return False
    finally:
        if fh is not None:
            fh.close()
            if tmp is not None and tmp.exists():
                tmp.unlink()


_GETPROP_SH = r"""#!/bin/sh
# getprop as Android's toolbox prints it, answering from the double's property file.
props="$ADBD_DOUBLE_PROPS"
if [ $# -eq 0 ]; then
  while IFS= read -r line; do
    printf '[%s]: [%s]\n' "${line%%=*}" "${line#*=}"
  done < "$props"
  exit 0
fi
while IFS= read -r line; do
  if [ "${line%%=*}" = "$1" ]; then
    printf '%s\n' "${line#*=}"
    exit 0
  fi
done < "$props"
printf '%s\n' "${2:-}"
"""

_TASKSET_SH = r"""#!/bin/sh
# toybox's taskset (taskset [-ap] MASK {PID | COMMAND...}) for the double's fake CPUs:
# the mask is checked against the fake /sys/devices/system/cpu/possible and logged,
# and the command runs unpinned (this machine does not have the phone's cores).
pid=0
while [ $# -gt 0 ]; do
  case "$1" in -p|-ap|-pa) pid=1; shift;; -a) shift;; *) break;; esac
done
mask=$1; shift
case "$mask" in ''|*[!0-9a-fA-F]*) echo "taskset: bad mask '$mask'" >&2; exit 1;; esac
read -r possible < "$ADBD_DOUBLE_ROOT/sys/devices/system/cpu/possible"
ncpu=$(( ${possible#*-} + 1 ))
m=$(( 0x$mask ))
if [ "$m" -eq 0 ] || [ $(( m >> ncpu )) -ne 0 ]; then
  echo "taskset: sched_setaffinity: Invalid argument" >&2; exit 1
fi
if [ "$pid" = 1 ]; then echo "pid $mask" >> "$ADBD_DOUBLE_ROOT/.adbd/taskset.log"; exit 0; fi
echo "run $mask $1" >> "$ADBD_DOUBLE_ROOT/.adbd/taskset.log"
exec "$@"
"""


# ---- a fake phone: properties and sysfs with Android's real names and units ----
PIXEL7_PROPS = {
    "ro.product.name": "panther",
    "ro.product.model": "Pixel 7",
    "ro.product.device": "panther",
    "ro.product.manufacturer": "Google",
    "ro.product.brand": "google",
    "ro.soc.manufacturer": "Google",
    "ro.soc.model": "GS201",
    "ro.board.platform": "gs201",
    "ro.hardware": "panther",
    "ro.build.version.release": "14",
    "ro.build.version.sdk": "34",
    "ro.build.fingerprint": "google/panther/panther:14/UQ1A.240205.002/11224170:user/release-keys",
    "ro.product.cpu.abi": "arm64-v8a",
    "ro.product.cpu.abilist": "arm64-v8a,armeabi-v7a,armeabi",
}

# Tensor G2: 4x A55 + 2x A78 + 2x X1 (cpuinfo_*_freq in kHz, as the kernel prints them).
PIXEL7_CLUSTERS = (
    ((0, 1, 2, 3), 300000, 1803000),
    ((4, 5), 400000, 2348000),
    ((6, 7), 500000, 2850000),
)

PIXEL7_THERMAL = (("BIG", 41250), ("MID", 39800), ("LITTLE", 38100), ("battery", 31000))


def _cpulist(cpus: tuple[int, ...]) -> str:
    return " ".join(str(c) for c in cpus)


def build_fake_phone(
    root: str | Path,
    clusters: tuple[tuple[tuple[int, ...], int, int], ...] = PIXEL7_CLUSTERS,
    thermal: tuple[tuple[str, int], ...] = PIXEL7_THERMAL,
    battery: dict[str, str] | None = None,
    governor: str = "sched_pixel",
) -> Path:
    """Write a sysfs tree (cpufreq, thermal zones, battery) under ``root/sys``."""
    root = Path(root)
    sysfs = root / "sys"
    ncpu = max(c for cl in clusters for c in cl[0]) + 1
    cpu_dir = sysfs / "devices/system/cpu"
    cpu_dir.mkdir(parents=True, exist_ok=True)
    for name in ("possible", "present", "online"):
        (cpu_dir / name).write_text(f"0-{ncpu - 1}\n")
    for cpus, fmin, fmax in clusters:
        for c in cpus:
            d = cpu_dir / f"cpu{c}/cpufreq"
            d.mkdir(parents=True, exist_ok=True)
            values = {
                "cpuinfo_min_freq": fmin,
                "cpuinfo_max_freq": fmax,
                "scaling_min_freq": fmin,
                "scaling_max_freq": fmax,
                "scaling_cur_freq": fmax if c == cpus[0] else fmin,
                "scaling_governor": governor,
                "related_cpus": _cpulist(cpus),
                "affected_cpus": _cpulist(cpus),
            }
            for k, v in values.items():
                (d / k).write_text(f"{v}\n")
    for i, (kind, milli_c) in enumerate(thermal):
        d = sysfs / f"class/thermal/thermal_zone{i}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "type").write_text(f"{kind}\n")
        (d / "temp").write_text(f"{milli_c}\n")
    bat = {
        "present": "1",
        "status": "Discharging",
        "capacity": "78",
        "health": "Good",
        "technology": "Li-ion",
        "temp": "312",  # tenths of a degree C
        "current_now": "-412000",  # µA; negative while discharging on Pixels
        "voltage_now": "3987000",  # µV
        "type": "Battery",
    }
    bat.update(battery or {})
    d = sysfs / "class/power_supply/battery"
    d.mkdir(parents=True, exist_ok=True)
    for k, v in bat.items():
        (d / k).write_text(f"{v}\n")
    return root


def set_sysfs(root: str | Path, device_path: str, value: str) -> None:
    """Change a fake sysfs value (a temperature rising, a charger plugged in)."""
    p = Path(root) / device_path.lstrip("/")
    p.write_text(f"{value}\n")


def clean_sandbox(root: str | Path) -> None:
    shutil.rmtree(root, ignore_errors=True)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
