"""Where edgelat keeps its state.

One directory, ``$EDGELAT_HOME`` (default ``~/.edgelat``), holds the SQLite
database, the ADB host key and caches, so a user can move or wipe it as a whole.
"""

from __future__ import annotations

import logging
import os
import stat
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator

DB_NAME = "edgelat.db"

log = logging.getLogger(__name__)
_warned_token_files: set[str] = set()


def home_path() -> Path:
    """Where the edgelat home is (``$EDGELAT_HOME`` or ``~/.edgelat``), without creating it."""
    return Path(os.environ.get("EDGELAT_HOME") or Path.home() / ".edgelat").expanduser()


def home() -> Path:
    """The edgelat home directory, created on first use with mode 0700 (it holds the
    registry, the tables and the ADB private key: no one else has to read them)."""
    from edgelat.errors import StoreUnavailable

    path = home_path()
    what = f"EDGELAT_HOME ({path})" if os.environ.get("EDGELAT_HOME") else f"the edgelat home {path}"
    if path.exists() and not path.is_dir():
        raise StoreUnavailable(f"{what} is a file, not a folder: move the file away or set EDGELAT_HOME to a folder")
    if not path.is_dir():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir(mode=0o700)
            os.chmod(path, 0o700)  # whatever the umask
        except (FileExistsError, NotADirectoryError):
            if not path.is_dir():
                blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
                where = what if blocker == path else f"{what} cannot be created: {blocker}"
                raise StoreUnavailable(
                    f"{where} is a file, not a folder: move the file away or set EDGELAT_HOME to a folder"
                ) from None
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot create {what}: {exc.strerror or exc}; set EDGELAT_HOME to a folder you can write"
            ) from exc
    return path


#: a database used instead of the home's for the current call (a copy of a hub's tables)
_db_instead: ContextVar[Path | None] = ContextVar("edgelat_db_instead", default=None)


def db_path() -> Path:
    """The one SQLite database: registry, lookup tables, predictors' metadata (or, inside
    :func:`reading_db`, the database given there)."""
    instead = _db_instead.get()
    return instead if instead is not None else home() / DB_NAME


def reading_copy() -> bool:
    """Whether this call reads a copy of a hub's tables (:func:`reading_db`): nothing it
    measures would belong to them."""
    return _db_instead.get() is not None


@contextmanager
def reading_db(path: str | Path) -> Iterator[None]:
    """Make :func:`db_path` name ``path`` for this thread's calls until the block ends: how a read
    command runs unchanged against a local copy of a hub's tables."""
    token = _db_instead.set(Path(path))
    try:
        yield
    finally:
        _db_instead.reset(token)


def db_timeout_s() -> float:
    """How long a command waits for another process's lock on the database
    (``EDGELAT_DB_TIMEOUT`` seconds, default 10) before it gives up with one line."""
    from edgelat.errors import BadInput

    raw = os.environ.get("EDGELAT_DB_TIMEOUT")
    if not raw:
        return 10.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise BadInput(f"EDGELAT_DB_TIMEOUT={raw!r} is not a number of seconds between 0 and 86400")
    return value


def hub_address() -> str | None:
    """The hub to talk to in remote mode (``EDGELAT_HUB``), or None for embedded mode."""
    return os.environ.get("EDGELAT_HUB") or None


def read_token_file(path: str | Path) -> str:
    """The shared secret in a token file (agent side and client side read it the same way).

    A file that other users can read gets a warning (once per file): the token
    is all it takes to run code on the agent.
    """
    from edgelat.errors import BadInput

    file = Path(path).expanduser()
    try:
        token = file.read_text().strip()
        mode = file.stat().st_mode
    except OSError as exc:
        raise BadInput(f"cannot read the token file {path}: {exc.strerror or exc}") from exc
    if not token:
        raise BadInput(f"the token file {path} is empty: put a token in it (e.g. openssl rand -hex 16)")
    if os.name == "posix" and mode & (stat.S_IRGRP | stat.S_IROTH) and str(file) not in _warned_token_files:
        _warned_token_files.add(str(file))
        log.warning("warning: the token file %s can be read by other users (mode %s): chmod 600 %s",
                    path, oct(stat.S_IMODE(mode))[2:].zfill(4), path)
    return token


def read_pem(source: str | Path | bytes, what: str) -> bytes:
    """A TLS file's bytes (given bytes pass through); BadInput naming ``what`` when it cannot be read.
    The agent, its client, the hub link and the hub client read their certificates and keys this way."""
    from edgelat.errors import BadInput

    if isinstance(source, bytes):
        return source
    try:
        return Path(source).expanduser().read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read the {what} {source}: {exc.strerror or exc}") from exc



def check_ca(ca: bytes, what: str = "TLS CA certificate") -> bytes:
    """``ca`` when it holds at least one PEM certificate; else BadInput (gRPC would only log
    its complaint and fail the connection as if nothing answered)."""
    import ssl

    from edgelat.errors import BadInput

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=ca.decode("ascii"))
    except (UnicodeDecodeError, ssl.SSLError, ValueError):
        raise BadInput(f"the {what} is not a PEM certificate (-----BEGIN CERTIFICATE-----): "
                       "give the certificate's .crt/.pem file") from None
    return ca


def check_key_pair(cert: bytes, key: bytes) -> None:
    """BadInput unless ``cert`` and ``key`` are PEM and belong together (gRPC would only log its
    complaint and refuse the port as if the address were at fault)."""
    import ssl
    import tempfile

    from edgelat.errors import BadInput

    check_ca(cert, "TLS certificate (--tls-cert)")
    with tempfile.TemporaryDirectory(prefix="edgelat-tls-") as folder:  # mode 0700: the key stays private
        cert_file, key_file = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        cert_file.write_bytes(cert)
        key_file.touch(mode=0o600)
        key_file.write_bytes(key)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file, password=lambda: b"")  # never a prompt
        except (ssl.SSLError, ValueError) as exc:
            if getattr(exc, "reason", "") == "KEY_VALUES_MISMATCH":
                raise BadInput("the TLS key (--tls-key) does not belong to the certificate (--tls-cert): "
                               "give the private key the certificate was made with") from None
            raise BadInput("the TLS key (--tls-key) is not an unencrypted PEM private key (-----BEGIN PRIVATE KEY-----)") from None
