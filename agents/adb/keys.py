"""The host's ADB RSA key: generated once under ``$EDGELAT_HOME`` and reused.

A phone remembers the keys it has allowed ("Always allow from this
computer"), so a key that changed on every run would make the user accept the
prompt every time. The files use adb's own formats (PKCS#8 PEM private key,
``adbkey.pub`` in Android's RSAPublicKey encoding) so they could be shared with
the ``adb`` tool.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgelat import config
from edgelat.errors import DeviceError

KEY_NAME = "adbkey"


def host_key_path() -> Path:
    """``$EDGELAT_HOME/adbkey`` (the public half is ``adbkey.pub`` beside it)."""
    return config.home() / KEY_NAME


def ensure_host_key(path: str | Path | None = None) -> Path:
    """Create the key pair if it does not exist yet; returns the private key path."""
    from adb_shell.auth.keygen import keygen

    key = Path(path) if path is not None else host_key_path()
    pub = Path(f"{key}.pub")
    if key.exists() and pub.exists():
        return key
    key.parent.mkdir(parents=True, exist_ok=True)
    old_umask = os.umask(0o077)  # the private key is readable by its owner only
    try:
        keygen(str(key))
    finally:
        os.umask(old_umask)
    os.chmod(key, 0o600)
    return key


def load_signer(path: str | Path | None = None):  # -> adb_shell PythonRSASigner
    """The signer adb-shell uses to answer a phone's AUTH challenge."""
    from adb_shell.auth.sign_pythonrsa import PythonRSASigner

    key = ensure_host_key(path)
    try:
        return PythonRSASigner.FromRSAKeyPath(str(key))
    except (OSError, ValueError) as exc:
        raise DeviceError(
            f"the ADB host key {key} is unreadable ({exc}); delete {key} and {key}.pub to make a new one"
        ) from exc


def public_key_text(path: str | Path | None = None) -> str:
    """The ``adbkey.pub`` line (what a phone stores in its ``adb_keys``)."""
    key = ensure_host_key(path)
    return Path(f"{key}.pub").read_text()
