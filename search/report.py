"""Search output: the rich table, the CSV, and the Pareto-front PNG."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgelat.errors import BadInput
from edgelat.search.result import Candidate

CSV_COLUMNS = (
    "rank", "arch", "predicted_latency_ms", "measured_latency_ms", "meets_budget_measured", "score", "score_source",
    "flops", "params", "memory_bytes_estimate", "energy_mj",
)


def check_writable(path: str | None, what: str) -> Path | None:
    """Fail before searching when an output file cannot be written."""
    if not path:
        return None
    p = Path(path)
    if p.is_dir():
        raise BadInput(f"{what} {p} is a directory; give a file name")
    if not p.parent.exists():
        raise BadInput(f"{what} {p}: folder {p.parent} does not exist")
    return p


def write_csv(path: Path, results: Sequence[dict[str, Any]]) -> None:
    """One row per result, in rank order."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for i, r in enumerate(results, start=1):
            row = dict(r)
            row["rank"] = i
            row["meets_budget_measured"] = (r.get("validation") or {}).get("meets_budget_measured", "")
            w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_COLUMNS})


def plot_front(
    path: Path,
    candidates: Sequence[Candidate],
    cloud: tuple[np.ndarray, np.ndarray] | None,
    max_latency_ms: float | None,
    device: str,
    space: str,
    score_label: str,
    title: str = "",
) -> None:
    """Score vs predicted latency: evaluated architectures, the chosen ones, measured points,
    and the latency constraint as a vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    if cloud is not None and cloud[0].size:
        lat, score = cloud
        ok = np.isfinite(lat) & np.isfinite(score)
        if ok.sum() > 20000:  # keep the PNG light: a random subset looks the same
            pick = np.random.default_rng(0).choice(np.flatnonzero(ok), 20000, replace=False)
            ok = np.zeros_like(ok)
            ok[pick] = True
        ax.scatter(lat[ok], score[ok], s=4, c="0.75", alpha=0.5, lw=0, label="evaluated")
    pts = sorted(candidates, key=lambda c: c.predicted_latency_ms)
    ax.plot([c.predicted_latency_ms for c in pts], [c.score for c in pts], "o-", c="tab:blue", ms=4, lw=1,
            label="chosen (predicted)")
    measured = [c for c in pts if c.measured_latency_ms is not None]
    if measured:
        ax.scatter([c.measured_latency_ms for c in measured], [c.score for c in measured], marker="x", s=40,
                   c="tab:green", label="measured on device", zorder=3)
        for c in measured:
            ax.plot([c.predicted_latency_ms, c.measured_latency_ms], [c.score, c.score], c="tab:green", lw=0.8)
    if max_latency_ms is not None:
        ax.axvline(max_latency_ms, c="tab:red", ls="--", lw=1.2, label=f"max latency {max_latency_ms:g} ms")
    ax.set_xlabel(f"latency on {device} (ms)")
    ax.set_ylabel(score_label)
    ax.set_title(title or f"{space} on {device}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def print_table(report: dict[str, Any]) -> None:
    """The human-readable summary (rich)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    obj = report["objective"]
    cons = ", ".join(f"{k} {v:g}" for k, v in report["constraints"].items()) or "none"
    console.print(
        f"[bold]{report['space']}[/] on [bold]{report['device']}[/] ({report['runtime']['key']}): "
        f"latency from {report['latency_source']['kind']}, constraints: {cons}"
    )
    console.print(
        f"objective: {obj['name']}" + (" [yellow](proxy, not a measured accuracy)[/]" if obj["proxy"] else "")
        + f"; {report['strategy']['name']} took {report['strategy']['seconds']:.2f} s "
        f"({report['strategy']['evaluations']} architectures evaluated)"
    )
    table = Table(show_lines=False)
    for col, just in (("#", "right"), ("predicted ms", "right"), ("measured ms", "right"), ("meets", "center"),
                      ("score", "right"), ("MFLOPs", "right"), ("params M", "right")):
        table.add_column(col, justify=just, overflow="fold")
    for i, r in enumerate(report["results"], start=1):
        v = r.get("validation") or {}
        meets = v.get("meets_budget_measured")
        table.add_row(
            str(i), f"{r['predicted_latency_ms']:.3f}",
            "-" if r["measured_latency_ms"] is None else f"{r['measured_latency_ms']:.3f}",
            "-" if meets is None else ("yes" if meets else "[red]no[/]"),
            f"{r['score']:.4g}", f"{r['flops'] / 1e6:.1f}", f"{r['params'] / 1e6:.3f}",
        )
    console.print(table)
    for i, r in enumerate(report["results"], start=1):  # full strings, copy-pasteable into export/predict
        console.print(f"{i}. {r['arch']}", markup=False, highlight=False, soft_wrap=True)
    cmp_ = report.get("compare_flops")
    if cmp_:
        console.print(f"[bold]FLOPs vs latency[/] (FLOPs budget {cmp_['flops_budget'] / 1e6:.1f} M = the latency winner's)")
        for label in ("latency_constrained", "flops_constrained"):
            c = cmp_[label]
            meas = "-" if c["measured_latency_ms"] is None else f"{c['measured_latency_ms']:.3f} ms"
            console.print(
                f"  {label.replace('_', ' ')}: predicted {c['predicted_latency_ms']:.3f} ms, measured {meas}, "
                f"score {c['score']:.4g}, {c['flops'] / 1e6:.1f} MFLOPs"
            )
        if cmp_.get("note"):
            console.print(f"  [yellow]{cmp_['note']}[/]")
    for note in report.get("notes", []):
        console.print(f"[yellow]note:[/] {note}")
