"""Errors the hub's queue raises; each message is one line a user can act on."""

from __future__ import annotations

from edgelat.errors import EdgelatError


class AuthError(EdgelatError):
    """An unknown, expired or revoked token, or a role that may not do what was asked."""


class Forbidden(AuthError):
    """A valid token whose role or device list does not allow the request."""


class JobNotFound(EdgelatError):
    """A job id that is not in the hub's database."""


class JobStateError(EdgelatError):
    """A job in a state that does not allow the request (cancel a finished job, retry a queued one)."""


class HubDatabaseError(EdgelatError):
    """The hub's database is unreachable, damaged or written by a newer edgelat."""
