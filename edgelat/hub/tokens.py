"""Hub tokens: who a request comes from and what its role allows.

A token's secret is shown once, when it is created; the database keeps only its SHA-256, so a
copy of the database lets nobody in.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

ROLES = ("admin", "user", "agent")
SECRET_PREFIX = "elh_"


def new_secret() -> str:
    """A fresh random secret (256 bits), recognisable by its prefix."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """The hex SHA-256 the database stores in place of the secret."""
    return hashlib.sha256(secret.strip().encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: the user, the role, and the devices the token names (None: any)."""

    user: str
    role: str
    devices: tuple[str, ...] | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may_use(self, device: str) -> bool:
        """Whether this token may run jobs on (user) or serve (agent) ``device``."""
        return self.devices is None or device in self.devices

    def may_manage(self, owner: str) -> bool:
        """Whether this principal may cancel, retry or read a job submitted by ``owner``."""
        return self.is_admin or (self.role == "user" and self.user == owner)
