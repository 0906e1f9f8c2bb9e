"""User-facing errors.

Every failure a user can cause (bad input, unknown names, unreachable agents)
raises an :class:`EdgelatError` subclass whose message is one line that says
what went wrong and what to do. The CLI prints it and exits non-zero; nothing
is written to the database before the input has been validated.
"""

from __future__ import annotations


class EdgelatError(Exception):
    """Base class: the message is shown to the user as is."""

    exit_code = 1


class UnknownDevice(EdgelatError):
    """A device name that is not in the registry."""


class UnknownPreset(EdgelatError):
    """A preset name the operator catalog does not define."""


class BadInput(EdgelatError):
    """Malformed user input: a spec file, a CSV, an architecture string, an option."""


class CorruptModel(EdgelatError):
    """A model file that the runtime cannot load."""


class AgentUnreachable(EdgelatError):
    """The agent address did not answer (or stopped answering)."""


class AuthFailed(EdgelatError):
    """The agent rejected the token (wrong or missing)."""


class RuntimeUnavailable(EdgelatError):
    """The requested runtime/provider/delegate is not installed on the device."""


class DeviceError(EdgelatError):
    """The device failed while running a job (disconnect, timeout, runner crash)."""
