"""Line clean-up shared by the output parsers.

Benchmark tools print the same text whether it reaches us through a pipe, an
``adb shell``, ``adb logcat`` or a copy pasted into documentation, so the
parsers first strip what those carriers add (CR, logcat headers, ``INFO:``
tags, indentation) and then only ever see the tool's own words.
"""

from __future__ import annotations

import math
import re

# A decimal number the way C++ iostreams print it: 12, 3756.87, 1.14039e+07, -0.5, inf/nan never.
# Written without ambiguity (no two quantifiers can share a digit), so a long run of digits
# cannot make a regex backtrack quadratically.
NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"

# Lines longer than this are not a benchmark tool's own words (its longest are op-table rows
# with a node name); they are skipped rather than searched.
MAX_LINE_CHARS = 4096
_MAX_COUNT_DIGITS = 15

# `adb logcat -v threadtime`: "07-14 13:23:08.133 25289 25289 I tflite  : msg"
_LOGCAT_THREADTIME = re.compile(
    r"^(?:\d{4}-)?\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+[VDIWEF]\s+[^:]*?\s*: ?"
)
# `adb logcat -v brief` / `-v time`: "I/tflite  (12345): msg", "07-14 13:23:08.133 I/tflite( 123): msg"
_LOGCAT_BRIEF = re.compile(
    r"^(?:(?:\d{4}-)?\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+\s+)?[VDIWEF]/[^(:]*\(\s*\d+\)\s*: ?"
)
# absl/glog style: "I0000 00:00:1700000000.123456   1234 benchmark_model.cc:123] msg"
_ABSL = re.compile(r"^[IWEF]\d{4}\s+\d\d:\d\d:\d\d\.\d+\s+\d+\s+[^\]\s]+\] ")
# TFLite's own minimal logger: "INFO: msg", "WARNING: msg", "ERROR: msg", "VERBOSE: msg"
_TFLITE_TAG = re.compile(r"^(?:INFO|WARNING|ERROR|VERBOSE|DEBUG): ?")


def strip_carrier(line: str) -> tuple[str, bool]:
    """Return (the tool's own text, whether a logcat header was removed).

    Leading tabs are kept on purpose: they separate the columns of the
    op-profiling tables. Leading spaces (documentation indentation) are removed.
    """
    line = line.rstrip("\r\n").rstrip()
    body = line.lstrip(" ")
    logcat = False
    for pattern in (_LOGCAT_THREADTIME, _LOGCAT_BRIEF):
        m = pattern.match(body)
        if m:
            body = body[m.end():]
            logcat = True
            break
    m = _ABSL.match(body)
    if m:
        body = body[m.end():]
    m = _TFLITE_TAG.match(body.lstrip(" "))
    if m:
        body = body.lstrip(" ")[m.end():]
    if not body.startswith("\t"):
        body = body.lstrip(" ")
    return body, logcat


def to_number(text: str) -> float:
    """Parse a printed number; integers stay exact as floats (4452 -> 4452.0)."""
    return float(text)


def finite(text: str) -> float | None:
    """A printed number, or None when it is not finite (``1e999`` overflows to inf)."""
    value = float(text)
    return value if math.isfinite(value) else None


def timing(text: str) -> float | None:
    """A printed duration (or size, or count): finite and >= 0, else None (not a measurement)."""
    value = finite(text)
    return value if value is not None and value >= 0 else None


def to_count(text: str) -> int | None:
    """A printed count of at most 15 digits, else None (thousands of digits are not a count)."""
    text = text.strip()
    if not text.isdigit() or len(text) > _MAX_COUNT_DIGITS:
        return None
    return int(text)


def last_words(text: str, limit: int = 160) -> str:
    """The last non-empty line, shortened: what an error message should quote."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line:
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return ""
