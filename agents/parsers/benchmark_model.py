"""Parse what TFLite's ``benchmark_model`` prints, across its versions.

The tool has changed its wording many times (1.12's "Average inference
timings ... no stats", 2.x's "Inference timings in us: Init/First
inference/Warmup (avg)/Inference (avg)", p5/median/p95 on newer ``count=``
lines, two memory-footprint labels, op-profiling tables with and without a
setup-phase table). The parser reads all of them from the same text, tolerates
logcat/``INFO:`` prefixes, CRLF and interleaved log lines, and never invents a
value the output does not carry: what is absent stays ``None``. A timing that
is negative or not finite (``-4``, ``1e999``, ``nan``) or a count of thousands
of digits is garbage, not a measurement: it stays ``None`` too (a ``count=``
line whose count is garbage is ignored).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from edgelat.agents.parsers._lines import (
    MAX_LINE_CHARS,
    NUMBER,
    finite,
    last_words,
    strip_carrier,
    timing,
    to_count,
)
from edgelat.errors import BadInput

__all__ = ["RunStats", "OpProfileRow", "OpTypeRow", "BenchmarkModelReport", "parse_benchmark_model"]


@dataclass(frozen=True)
class RunStats:
    """One ``count=... first=... curr=... min=... max=... avg=... std=...`` line, in microseconds.

    ``p5_us``/``median_us``/``p95_us`` exist only in newer builds. A warm-up of a
    single run prints only ``count=1 curr=X``, so every statistic may be None.
    """

    count: int
    first_us: float | None = None
    curr_us: float | None = None
    min_us: float | None = None
    max_us: float | None = None
    avg_us: float | None = None
    std_us: float | None = None
    p5_us: float | None = None
    median_us: float | None = None
    p95_us: float | None = None


@dataclass(frozen=True)
class OpProfileRow:
    """One row of a "Run Order" or "Top by Computation Time" table (times in ms)."""

    node_type: str
    start_ms: float | None
    first_ms: float | None
    avg_ms: float | None
    pct: float | None
    cdf_pct: float | None
    mem_kb: float | None
    times_called: int | None
    name: str  # without the surrounding [...] and the ":<node index>" suffix
    node_index: int | None  # the ":<index>" suffix of newer builds; None in older ones


@dataclass(frozen=True)
class OpTypeRow:
    """One row of the "Summary by node type" table (times in ms)."""

    node_type: str
    count: int | None
    avg_ms: float | None
    avg_pct: float | None
    cdf_pct: float | None
    mem_kb: float | None
    times_called: int | None


@dataclass
class BenchmarkModelReport:
    """Everything a ``benchmark_model`` run printed that edgelat uses.

    Latencies are in microseconds, as the tool prints them; :meth:`latency_ms`
    converts the steady-state statistics to the milliseconds the tables use.
    """

    warmup: RunStats | None = None
    runs: RunStats | None = None
    summary_format: str | None = None  # "inference_timings" | "average_nostats" | "average_inference"
    init_us: float | None = None  # from the summary line
    first_inference_us: float | None = None
    warmup_avg_us: float | None = None
    inference_avg_us: float | None = None
    session_init_ms: float | None = None  # "Initialized session in X ms"
    model_size_mb: float | None = None
    memory: dict[str, Any] = field(default_factory=dict)  # label, init_mb, overall_mb, peak_mb
    params: dict[str, str] = field(default_factory=dict)  # "Num threads: [4]" -> {"Num threads": "4"}
    ops: list[OpProfileRow] = field(default_factory=list)  # regular runs, run order
    top_ops: list[OpProfileRow] = field(default_factory=list)  # regular runs, top by computation time
    ops_by_type: list[OpTypeRow] = field(default_factory=list)  # regular runs, summary by node type
    init_ops: list[OpProfileRow] = field(default_factory=list)  # "Benchmark Initialization" run order
    delegate_ops: list[OpProfileRow] = field(default_factory=list)  # "Delegate internal:" run order
    subgraph_ops: dict[int, list[OpProfileRow]] = field(default_factory=dict)  # non-primary subgraphs
    op_nodes_executed: int | None = None  # "Number of nodes executed" of the regular runs
    op_timings: RunStats | None = None  # profiler's "Timings (microseconds)" line of the regular runs
    logcat_prefixed: bool = False

    @property
    def session_ms(self) -> float | None:
        """Interpreter set-up time: the summary's Init, else the "Initialized session" line."""
        if self.init_us is not None:
            return self.init_us / 1000.0
        return self.session_init_ms

    @property
    def first_run_ms(self) -> float | None:
        return None if self.first_inference_us is None else self.first_inference_us / 1000.0

    @property
    def peak_memory_mb(self) -> float | None:
        """The periodic-monitoring peak when printed, else the overall footprint (a
        negative "delta" footprint is not a peak: None)."""
        if self.memory.get("peak_mb") is not None:
            return self.memory["peak_mb"]
        overall = self.memory.get("overall_mb")
        return overall if overall is not None and overall >= 0 else None

    def latency_ms(self) -> dict[str, Any]:
        """Steady-state latency in ms: median, mean, std, min, max, p5, p95, n.

        ``median`` is the printed median when the build prints one; older builds
        print only an average, so ``median`` then carries that average and
        ``median_source`` says "avg" (the caller can flag the row). A statistic
        the output does not carry is None.
        """
        out: dict[str, Any] = dict.fromkeys(
            ("median", "mean", "std", "min", "max", "p5", "p95", "n"), None
        )
        out["median_source"] = None
        r = self.runs
        if r is not None:
            def ms(v: float | None) -> float | None:
                return None if v is None else v / 1000.0

            out.update(mean=ms(r.avg_us), std=ms(r.std_us), min=ms(r.min_us), max=ms(r.max_us),
                       p5=ms(r.p5_us), p95=ms(r.p95_us), n=r.count)
            if out["mean"] is None and self.inference_avg_us is not None:
                out["mean"] = self.inference_avg_us / 1000.0
        elif self.inference_avg_us is not None:
            out["mean"] = self.inference_avg_us / 1000.0
        if r is not None and r.median_us is not None:
            out["median"], out["median_source"] = r.median_us / 1000.0, "median"
        elif out["mean"] is not None:
            out["median"], out["median_source"] = out["mean"], "avg"
        return out

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["latency_ms"] = self.latency_ms()
        return d


# --- line patterns -----------------------------------------------------------------------

_COUNT_LINE = re.compile(rf"^count=(\d+)((?:\s+\w+={NUMBER})*)\s*$")
_KV = re.compile(rf"(\w+)=({NUMBER})")
_PROFILER_TIMINGS = re.compile(rf"^Timings \(microseconds\):\s*count=(\d+)((?:\s+\w+={NUMBER})*)")
_SUMMARY = re.compile(r"^(Average )?[Ii]nference timings in us:\s*(.*)$")
_SUMMARY_ITEM = re.compile(rf"^\s*([A-Za-z][A-Za-z ()]*?)\s*:\s*({NUMBER})\s*$")
_MEMORY = re.compile(rf"^(.*?footprint.*?)\s*\(MB\):\s*init=({NUMBER})\s+overall=({NUMBER})")
_PEAK = re.compile(rf"^Overall peak memory footprint \(MB\)[^:]*:\s*({NUMBER})")
_SESSION = re.compile(rf"^Initialized session in ({NUMBER})\s*ms")
_MODEL_SIZE = re.compile(rf"^The input model file size \(MB\):\s*({NUMBER})")
_PARAM = re.compile(r"^([A-Za-z#][^:\[\]=]*?)\s*:\s*\[(.*)\]$")
_NODES = re.compile(r"^Number of nodes executed:\s*(\d+)")
_TABLE_TITLE = re.compile(r"^=+\s*(Run Order|Top by Computation Time|Summary by node type)\s*=+$", re.I)
_SECTION_INIT = re.compile(r"Profiling Info for Benchmark Initialization", re.I)
_SECTION_RUNS = re.compile(r"Profiling Info for Regular Benchmark Runs", re.I)
_NAME_INDEX = re.compile(r"^\[(.*)\]:(\d+)$")
# Newer builds split the tables by subgraph and add the delegate's own per-op tables.
_PRIMARY_GRAPH = re.compile(r"^Primary graph \(name: [^)]*\) \w+:$")
_SUBGRAPH = re.compile(r"^Subgraph \(index: (\d+), name: [^)]*\) \w+:$")
_DELEGATE_INTERNAL = re.compile(r"^Delegate internal:$")

_SUMMARY_KEYS = {
    "init": "init_us",
    "first inference": "first_inference_us",
    "warmup": "warmup_avg_us",
    "warmup (avg)": "warmup_avg_us",
    "inference": "inference_avg_us",
    "inference (avg)": "inference_avg_us",
    "no stats": "inference_avg_us",
}
_STAT_KEYS = {"first": "first_us", "curr": "curr_us", "min": "min_us", "max": "max_us",
              "avg": "avg_us", "std": "std_us", "p5": "p5_us", "median": "median_us", "p95": "p95_us"}
# table header column -> field name, per table kind
_OP_COLUMNS = {"node type": "node_type", "start": "start_ms", "first": "first_ms", "avg ms": "avg_ms",
               "%": "pct", "cdf%": "cdf_pct", "mem kb": "mem_kb", "times called": "times_called",
               "name": "name"}
_TYPE_COLUMNS = {"node type": "node_type", "count": "count", "avg ms": "avg_ms", "avg %": "avg_pct",
                 "cdf %": "cdf_pct", "mem kb": "mem_kb", "times called": "times_called"}


def _run_stats(count: str, rest: str) -> RunStats | None:
    """The statistics of a ``count=`` line; None when the count is garbage. Garbage
    values (negative, not finite) are left out, as values the build does not print are."""
    n = to_count(count)
    if n is None:
        return None
    values = {_STAT_KEYS[k]: timing(v) for k, v in _KV.findall(rest) if k in _STAT_KEYS}
    return RunStats(count=n, **{k: v for k, v in values.items() if v is not None})


class _Table:
    """The op table being read: its kind, its columns (from the header line) and its rows."""

    def __init__(self, kind: str, section: str, group: str) -> None:
        self.kind = kind  # "run order" | "top by computation time" | "summary by node type"
        self.section = section  # "init" | "runs"
        self.group = group  # "primary" | "delegate" | "subgraph:<index>"
        self.columns: list[str] | None = None
        self.rows: list[Any] = []

    MAX_COLUMNS = 16  # the widest real table has 9

    def header(self, line: str) -> None:
        columns = [c.strip().lower() for c in re.findall(r"\[([^\]]+)\]", line)]
        self.columns = columns if len(columns) <= self.MAX_COLUMNS else []

    def add(self, line: str) -> bool:
        """Parse one data row; False when the line is not a row of this table."""
        if not self.columns:
            return False
        cells = self._cells(line) if len(line) <= MAX_LINE_CHARS else None
        if cells is None:
            return False
        mapping = _TYPE_COLUMNS if self.kind == "summary by node type" else _OP_COLUMNS
        values: dict[str, Any] = {}
        try:
            for col, cell in zip(self.columns, cells):
                name = mapping.get(col)
                if name is None:
                    continue
                if name in ("node_type", "name"):
                    values[name] = cell
                elif name in ("times_called", "count"):
                    n = timing(cell)
                    if n is None or n >= 1e15:
                        raise ValueError(f"not a count: {cell!r}")
                    values[name] = int(n)
                else:
                    v = finite(cell.rstrip("%")) if name in ("pct", "cdf_pct", "avg_pct") else timing(cell)
                    if v is None:
                        raise ValueError(f"not a measurement: {cell!r}")
                    values[name] = v
        except ValueError:
            return False
        if self.kind == "summary by node type":
            row: Any = OpTypeRow(**{f: values.get(f) for f in
                                    ("node_type", "count", "avg_ms", "avg_pct", "cdf_pct", "mem_kb",
                                     "times_called")})
        else:
            raw = values.get("name", "")
            m = _NAME_INDEX.match(raw)
            if m and len(m.group(2)) <= 9:
                name, index = m.group(1), int(m.group(2))
            else:
                name, index = (raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw), None
            row = OpProfileRow(
                node_type=values.get("node_type", ""), start_ms=values.get("start_ms"),
                first_ms=values.get("first_ms"), avg_ms=values.get("avg_ms"), pct=values.get("pct"),
                cdf_pct=values.get("cdf_pct"), mem_kb=values.get("mem_kb"),
                times_called=values.get("times_called"), name=name, node_index=index)
        self.rows.append(row)
        return True

    def _cells(self, line: str) -> list[str] | None:
        assert self.columns is not None
        n = len(self.columns)
        has_name = self.columns[-1] == "name"
        if "\t" in line:
            cells = [c.strip() for c in line.split("\t")]
            while cells and cells[0] == "":
                cells.pop(0)
            if has_name and len(cells) > n:  # a tab inside the name column
                cells = cells[: n - 1] + ["\t".join(cells[n - 1:])]
            if len(cells) == n and cells[0]:
                return cells
        # Spaces instead of tabs (copied from a web page): first column may hold spaces,
        # the numeric columns are single tokens, the name takes the rest. (The lazy groups
        # backtrack polynomially in the line's length: only row-sized lines are tried.)
        if len(line) > 1024:
            return None
        numeric = n - 1 - (1 if has_name else 0)
        pattern = r"^\s*(.+?)" + rf"\s+({NUMBER}%?)" * numeric + (r"\s+(.+?)" if has_name else "") + r"\s*$"
        m = re.match(pattern, line)
        return list(m.groups()) if m else None


def parse_benchmark_model(text: str) -> BenchmarkModelReport:
    """Parse the stdout/stderr (or logcat) of one ``benchmark_model`` run.

    Raises :class:`BadInput` when the text carries neither a ``count=`` line, a
    timings summary nor an op-profiling table (a crashed run, the wrong file).
    """
    report = BenchmarkModelReport()
    phases: list[RunStats] = []
    section: str | None = None  # op profiling: None (not yet), "init", "runs"
    group = "primary"  # within a section: the primary graph, a subgraph, the delegate's internals
    table: _Table | None = None
    tables: list[_Table] = []
    nodes: dict[tuple[str, str], int] = {}
    timings: dict[tuple[str, str], RunStats] = {}

    for raw in text.splitlines():
        if len(raw) > MAX_LINE_CHARS:
            continue  # not the tool's own words (see MAX_LINE_CHARS)
        line, logcat = strip_carrier(raw)
        report.logcat_prefixed |= logcat
        if not line.strip():
            table = None  # a blank line ends a table
            continue

        if table is not None:
            if table.columns is None and "[" in line and "node type" in line.lower():
                table.header(line)
                continue
            if table.add(line):
                continue
            # Not a row: an interleaved log line, or what follows the table. The table
            # stays open until a blank line or the next title; the line is read below.

        stripped = line.strip()
        if _SECTION_INIT.search(stripped):
            section, group = "init", "primary"
            continue
        if _SECTION_RUNS.search(stripped):
            section, group = "runs", "primary"
            continue
        if _PRIMARY_GRAPH.match(stripped):
            group = "primary"
            continue
        m = _SUBGRAPH.match(stripped)
        if m and len(m.group(1)) <= 9:
            group = f"subgraph:{m.group(1)}"
            continue
        if _DELEGATE_INTERNAL.match(stripped):
            group = "delegate"
            continue
        m = _TABLE_TITLE.match(stripped)
        if m:
            if section is None:  # old builds print the run tables without a section title
                section = "runs"
            table = _Table(m.group(1).lower(), section, group)
            tables.append(table)
            continue
        m = _NODES.match(stripped)
        if m and section is not None:
            count = to_count(m.group(1))
            if count is not None:
                nodes[(section, group)] = count
            continue
        m = _PROFILER_TIMINGS.match(stripped)
        if m:
            stats = _run_stats(m.group(1), m.group(2))
            if stats is not None:
                timings[(section or "runs", group)] = stats
            continue
        m = _COUNT_LINE.match(stripped)
        if m:
            stats = _run_stats(m.group(1), m.group(2))
            if stats is not None:
                phases.append(stats)
            continue
        m = _SUMMARY.match(stripped)
        if m:
            _read_summary(report, bool(m.group(1)), m.group(2))
            continue
        m = _MEMORY.match(stripped)
        if m:
            label = re.sub(r"\s+from the start of the tool$", "", m.group(1).strip())
            # a "delta" footprint may be negative; only a non-finite one is garbage
            report.memory.update(label=label, init_mb=finite(m.group(2)), overall_mb=finite(m.group(3)))
            continue
        m = _PEAK.match(stripped)
        if m:
            report.memory["peak_mb"] = timing(m.group(1))
            continue
        m = _SESSION.match(stripped)
        if m:
            report.session_init_ms = timing(m.group(1))
            continue
        m = _MODEL_SIZE.match(stripped)
        if m:
            report.model_size_mb = timing(m.group(1))
            continue
        m = _PARAM.match(stripped)
        if m:
            report.params[m.group(1).strip()] = m.group(2)

    # benchmark_model always runs a warm-up phase, then the regular runs: two count= lines.
    if len(phases) >= 2:
        report.warmup, report.runs = phases[0], phases[1]
    elif len(phases) == 1:
        report.warmup = phases[0]
    if report.memory:
        for key in ("label", "init_mb", "overall_mb", "peak_mb"):
            report.memory.setdefault(key, None)
    for t in tables:
        if t.group.startswith("subgraph:"):
            if t.section == "runs" and t.kind == "run order":
                report.subgraph_ops.setdefault(int(t.group.split(":")[1]), []).extend(t.rows)
            continue
        target = {("runs", "primary", "run order"): "ops",
                  ("runs", "primary", "top by computation time"): "top_ops",
                  ("runs", "primary", "summary by node type"): "ops_by_type",
                  ("init", "primary", "run order"): "init_ops",
                  ("runs", "delegate", "run order"): "delegate_ops"}.get((t.section, t.group, t.kind))
        if target:
            getattr(report, target).extend(t.rows)
    report.op_nodes_executed = nodes.get(("runs", "primary"))
    report.op_timings = timings.get(("runs", "primary"))

    if not phases and report.summary_format is None and not report.ops and not report.init_ops:
        raise BadInput(
            "benchmark_model output has no timing lines (no 'count=' line, no 'Inference timings' "
            f"summary, no op table); last line was: {last_words(text)!r}"
        )
    return report


def _read_summary(report: BenchmarkModelReport, average_style: bool, items: str) -> None:
    labels: set[str] = set()
    for item in items.split(","):
        m = _SUMMARY_ITEM.match(item)
        if not m:
            continue
        label = m.group(1).strip().lower()
        labels.add(label)
        attr = _SUMMARY_KEYS.get(label)
        value = timing(m.group(2))
        if attr and value is not None:
            setattr(report, attr, value)
    if not average_style:
        report.summary_format = "inference_timings"
    else:
        report.summary_format = "average_nostats" if "no stats" in labels else "average_inference"
