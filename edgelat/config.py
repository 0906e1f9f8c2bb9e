"""Where edgelat keeps its state.

One directory, ``$EDGELAT_HOME`` (default ``~/.edgelat``), holds the SQLite
database, the ADB host key and caches, so a user can move or wipe it as a whole.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

DB_NAME = "edgelat.db"

log = logging.getLogger(__name__)
_warned_token_files: set[str] = set()


def home() -> Path:
    """The edgelat home directory, created on first use."""
    path = Path(os.environ.get("EDGELAT_HOME") or Path.home() / ".edgelat").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def db_path() -> Path:
    """The one SQLite database: registry, lookup tables, predictors' metadata."""
    return home() / DB_NAME


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
