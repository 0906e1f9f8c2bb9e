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
import math
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


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_result(result: Any) -> dict[str, Any]:
    """The result object with its ``latency`` summary (when it has one) checked.

    A measured median and mean must be finite and >= 0; std, p10 and p90 are
    finite and >= 0 or NaN (not computed); ``rel_ci`` is >= 0 (inf: too few
    runs for an interval); ``n`` is an int >= 0 and ``stable`` a bool. Anything
    else is a garbled result (DeviceError), never a measurement.
    """
    if not isinstance(result, dict):
        raise DeviceError("python runner printed a result that is not a JSON object")
    if "latency" not in result:
        return result
    lat = result["latency"]
    problem = None
    if not isinstance(lat, dict):
        problem = "its latency is not an object"
    else:
        for key in ("median", "mean", "std", "p10", "p90", "rel_ci", "n", "stable"):
            v = lat.get(key)
            if key == "stable":
                ok = isinstance(v, bool)
            elif key == "n":
                ok = isinstance(v, int) and not isinstance(v, bool) and v >= 0
            elif key in ("median", "mean"):
                ok = _number(v) and math.isfinite(v) and v >= 0
            elif key == "rel_ci":
                ok = _number(v) and (v >= 0 or math.isnan(v))
            else:
                ok = _number(v) and (math.isnan(v) or (math.isfinite(v) and v >= 0))
            if not ok:
                problem = f"latency {key} = {str(v)[:40]!r}"
                break
    if problem:
        raise DeviceError(f"python runner printed a garbled result ({problem}); was the output cut off?")
    return result


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
            except RecursionError:
                raise DeviceError("python runner printed a garbled result (nested too deeply)") from None
            return check_result(result)
    raise DeviceError(
        f"python runner printed no result (crashed or killed?); last line was: {last_words(text)!r}"
    )
