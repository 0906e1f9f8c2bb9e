"""Parsers for the text that on-device benchmark tools and the Python runner print (stdlib only)."""

from edgelat.agents.parsers.benchmark_model import (
    BenchmarkModelReport,
    OpProfileRow,
    OpTypeRow,
    RunStats,
    parse_benchmark_model,
)
from edgelat.agents.parsers.ort_perf_test import PerfTestReport, parse_ort_perf_test
from edgelat.agents.parsers.runner_output import parse_runner_output

__all__ = [
    "BenchmarkModelReport",
    "OpProfileRow",
    "OpTypeRow",
    "RunStats",
    "parse_benchmark_model",
    "PerfTestReport",
    "parse_ort_perf_test",
    "parse_runner_output",
]
