"""Parse what onnxruntime's ``onnxruntime_perf_test`` prints, across its versions.

From the 2019 "Average time cost: X ms" / "P50 Latency is Xsec" wording, through
2020's "Session creation time cost:X s" (no space after the colon), to the
current "Average inference time cost total: X ms" plus the ``-s`` statistics
block ("Min Latency: X s", "P99 Latency: X s"). Values keep the unit the tool
prints them in (averages in ms, totals and percentiles in seconds); absent
values stay None.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from edgelat.agents.parsers._lines import MAX_LINE_CHARS, NUMBER, last_words, strip_carrier, timing, to_count
from edgelat.errors import BadInput

__all__ = ["PerfTestReport", "parse_ort_perf_test"]


@dataclass
class PerfTestReport:
    """The numbers one ``onnxruntime_perf_test`` run printed."""

    average_ms: float | None = None
    average_label: str | None = None  # the wording, which dates the build
    session_creation_s: float | None = None
    first_inference_ms: float | None = None
    total_inference_time_s: float | None = None
    total_requests: int | None = None  # iterations actually run
    total_run_time_s: float | None = None
    runs: int | None = None  # "Runs:" of the -s statistics block
    min_latency_s: float | None = None
    max_latency_s: float | None = None
    p50_s: float | None = None
    p90_s: float | None = None
    p95_s: float | None = None
    p99_s: float | None = None
    p999_s: float | None = None
    peak_working_set_bytes: int | None = None
    avg_cpu_usage_pct: float | None = None
    inferences_per_second: float | None = None
    logcat_prefixed: bool = False

    @property
    def n(self) -> int | None:
        """How many timed inferences the statistics describe."""
        return self.runs if self.runs is not None else self.total_requests

    @property
    def session_ms(self) -> float | None:
        return None if self.session_creation_s is None else self.session_creation_s * 1000.0

    def latency_ms(self) -> dict[str, Any]:
        """Steady-state latency in ms: median, mean, min, max, p90, p95, p99, n.

        ``median`` is P50 when printed (``median_source`` "p50"), else the
        average (``median_source`` "avg"). The tool prints no standard deviation,
        so ``std`` is always None.
        """

        def ms(v: float | None) -> float | None:
            return None if v is None else v * 1000.0

        out: dict[str, Any] = {
            "median": ms(self.p50_s), "median_source": "p50" if self.p50_s is not None else None,
            "mean": self.average_ms, "std": None, "min": ms(self.min_latency_s),
            "max": ms(self.max_latency_s), "p90": ms(self.p90_s), "p95": ms(self.p95_s),
            "p99": ms(self.p99_s), "n": self.n,
        }
        if out["median"] is None and self.average_ms is not None:
            out["median"], out["median_source"] = self.average_ms, "avg"
        return out

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["latency_ms"] = self.latency_ms()
        return d


_SEC = r"\s*(?:s(?:e(?:c)?)?)?\b"  # "s", "sec", or the truncated "se" of one doc copy
_PATTERNS: list[tuple[str, re.Pattern[str], type]] = [
    ("session_creation_s", re.compile(rf"Session creation time cost\s*:\s*({NUMBER})"), float),
    ("first_inference_ms", re.compile(rf"First inference time cost\s*:\s*({NUMBER})"), float),
    ("total_inference_time_s",
     re.compile(rf"Total (?:inference )?time cost\s*:\s*({NUMBER})"), float),
    ("total_requests",
     re.compile(r"Total (?:inference requests|iterations)\s*:\s*(\d+)"), int),
    ("total_run_time_s", re.compile(rf"Total (?:inference )?run time\s*:\s*({NUMBER})"), float),
    ("inferences_per_second",
     re.compile(rf"Number of inferences per second\s*:\s*({NUMBER})"), float),
    ("avg_cpu_usage_pct", re.compile(rf"Avg CPU usage\s*:\s*({NUMBER})"), float),
    ("peak_working_set_bytes", re.compile(r"Peak working set size\s*:\s*(\d+)"), int),
    ("runs", re.compile(r"^Runs\s*:\s*(\d+)"), int),
    ("min_latency_s", re.compile(rf"Min Latency(?: is|\s*:)\s*({NUMBER}){_SEC}"), float),
    ("max_latency_s", re.compile(rf"Max Latency(?: is|\s*:)\s*({NUMBER}){_SEC}"), float),
    ("p50_s", re.compile(rf"P50 Latency(?: is|\s*:)\s*({NUMBER}){_SEC}"), float),
    ("p90_s", re.compile(rf"P90 Latency(?: is|\s*:)\s*({NUMBER}){_SEC}"), float),
    ("p95_s", re.compile(rf"P95 Latency(?: is|\s*:)\s*({NUMBER}){_SEC}"), float),
    ("p99_s", re.compile(rf"P99 Latency(?: is|\s*:)\s*({NUMBER}){_SEC}"), float),
    ("p999_s", re.compile(rf"P999 Latency(?: is|\s*:)\s*({NUMBER}){_SEC}"), float),
]
_AVERAGE = re.compile(rf"(Average (?:inference )?time cost(?: total)?)\s*:\s*({NUMBER})\s*ms")


def parse_ort_perf_test(text: str) -> PerfTestReport:
    """Parse the output of one ``onnxruntime_perf_test`` run.

    Raises :class:`BadInput` when no average, total or percentile line is found
    (a failed run prints only its error). Every value the tool prints is a
    duration, a count or a rate: one that is negative, not finite or a count of
    more than 15 digits is garbage, not a measurement, and its line is ignored.
    """
    report = PerfTestReport()
    for raw in text.splitlines():
        if len(raw) > MAX_LINE_CHARS:
            continue
        line, logcat = strip_carrier(raw)
        report.logcat_prefixed |= logcat
        line = line.strip()
        if not line:
            continue
        m = _AVERAGE.search(line)
        if m:
            value = timing(m.group(2))
            if value is not None:
                report.average_label, report.average_ms = m.group(1), value
            continue
        for attr, pattern, kind in _PATTERNS:
            m = pattern.search(line)
            if m:
                # The machine-readable duplicates ("Avg CPU usage:48") repeat the same value;
                # the first occurrence wins so a later echo cannot overwrite it.
                if getattr(report, attr) is None:
                    value = to_count(m.group(1)) if kind is int else timing(m.group(1))
                    if value is not None and attr.endswith("_s") and not math.isfinite(value * 1000.0):
                        value = None  # seconds that overflow once in ms (1.8e305 s) are not a duration
                    setattr(report, attr, value)
                break
    if report.average_ms is None and report.total_inference_time_s is None and report.p50_s is None:
        raise BadInput(
            "onnxruntime_perf_test output has no timing lines (no 'Average ... time cost', "
            f"'Total ... time cost' or 'P50 Latency' line); last line was: {last_words(text)!r}"
        )
    return report
