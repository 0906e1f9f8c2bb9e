"""Read what the on-device Python runner (``agents/scripts/runner.py``) printed.

The runner prints one ``EDGELAT_RESULT {json}`` line, or one ``EDGELAT_ERROR
<reason>`` line and exits 2. Everything else on the stream (runtime log lines,
the ``EDGELAT_STEADY`` mark, adb noise) is ignored. Errors become the
:mod:`edgelat.errors` class the user can act on: a model the runtime cannot
load is CorruptModel, a runtime or provider missing on the device is
RuntimeUnavailable, anything else is DeviceError.
"""

from __future__ import annotations

import json
from typing import Any

from edgelat.agents.parsers._lines import last_words
from edgelat.errors import CorruptModel, DeviceError, RuntimeUnavailable

__all__ = ["RESULT_PREFIX", "ERROR_PREFIX", "STEADY_MARK", "parse_runner_output"]

# Must match agents/scripts/runner.py (which cannot import edgelat).
RESULT_PREFIX = "EDGELAT_RESULT "
ERROR_PREFIX = "EDGELAT_ERROR "
STEADY_MARK = "EDGELAT_STEADY start"

# Phrases the runner uses for each kind of failure.
_CORRUPT = ("cannot load",)
_UNAVAILABLE = ("is not installed", "not available here", "did not initialize", "is not supported",
                "numpy is not installed")


def parse_runner_output(text: str) -> dict[str, Any]:
    """The runner's result dict (``--describe`` or a benchmark), or the matching EdgelatError."""
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        if line.startswith(ERROR_PREFIX):
            reason = line[len(ERROR_PREFIX):].strip()
            if any(p in reason for p in _CORRUPT):
                raise CorruptModel(reason)
            if any(p in reason for p in _UNAVAILABLE):
                raise RuntimeUnavailable(reason)
            raise DeviceError(f"python runner failed: {reason}")
        if line.startswith(RESULT_PREFIX):
            try:
                result = json.loads(line[len(RESULT_PREFIX):])
            except json.JSONDecodeError as exc:
                raise DeviceError(f"python runner printed a garbled result ({exc.msg}); "
                                  f"was the output cut off?") from None
            if not isinstance(result, dict):
                raise DeviceError("python runner printed a result that is not a JSON object")
            return result
    raise DeviceError(
        f"python runner printed no result (crashed or killed?); last line was: {last_words(text)!r}"
    )
