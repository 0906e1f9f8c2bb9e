"""Where edgelat keeps its state.

One directory, ``$EDGELAT_HOME`` (default ``~/.edgelat``), holds the SQLite
database, the ADB host key and caches, so a user can move or wipe it as a whole.
"""

from __future__ import annotations

import os
from pathlib import Path

DB_NAME = "edgelat.db"


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
    """The shared secret in a token file (agent side and client side read it the same way)."""
    from edgelat.errors import BadInput

    try:
        token = Path(path).expanduser().read_text().strip()
    except OSError as exc:
        raise BadInput(f"cannot read the token file {path}: {exc.strerror or exc}") from exc
    if not token:
        raise BadInput(f"the token file {path} is empty: put a token in it (e.g. openssl rand -hex 16)")
    return token
