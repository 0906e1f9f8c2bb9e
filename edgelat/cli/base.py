"""Click groups and the options every command shares.

Command modules (``edgelat/cli/<area>.py``) attach their commands to the
groups defined here; heavy libraries are imported inside the command
functions so that ``edgelat --help`` and ``edgelat agent serve`` start fast.
"""

from __future__ import annotations

import functools
import json
import sys
import warnings
from typing import Any, Callable

import click

from edgelat.errors import EdgelatError


#: what Ctrl-C leaves behind, for every command: rows are stored as each measurement arrives
INTERRUPTED = ("every measurement that finished is stored; run the same command again to continue "
               "(profiling skips what the table holds, a predictor build resumes its budget)")


class EdgelatGroup(click.Group):
    """A group that turns :class:`EdgelatError` into a one-line message and exit 1.

    An ``sqlite3`` error that reaches it (a fault of the database met in the middle
    of a command: disk full, lock timeout, a damaged page) is rendered the same way,
    through :func:`edgelat.lut.faults.translate`.
    """

    def invoke(self, ctx: click.Context) -> Any:
        import sqlite3

        with warnings.catch_warnings():  # click 8.2 deprecates protected_args (9.0 folds it into args)
            warnings.simplefilter("ignore", DeprecationWarning)
            as_json = "--json" in [*getattr(ctx, "protected_args", []), *ctx.args]
        try:
            return super().invoke(ctx)
        except EdgelatError as exc:
            _fail(ctx, exc, as_json)
        except sqlite3.Error as exc:
            from edgelat.lut.faults import translate

            _fail(ctx, translate(exc), as_json)
        except (KeyboardInterrupt, click.Abort):
            _say(f"interrupted: {INTERRUPTED}", "Interrupted", as_json, newline=True)
            ctx.exit(130)


def _say(text: str, kind: str, as_json: bool, newline: bool = False) -> None:
    """One line on stderr: ``error: ...`` for people, ``{"error": ..., "kind": ...}`` with ``--json``."""
    if as_json:
        click.echo(json.dumps({"error": text, "kind": kind}), err=True)
    else:
        click.echo(("\n" if newline else "") + (text if text.startswith("interrupted") else f"error: {text}"), err=True)


def _fail(ctx: click.Context, exc: EdgelatError, as_json: bool = False) -> None:
    """Print the error as one line on stderr (JSON with ``--json``) and exit with its code."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    _say(text, type(exc).__name__, as_json)
    ctx.exit(exc.exit_code)


@click.group(cls=EdgelatGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgelat")
def main() -> None:
    """edgelat: measure how fast neural networks really run on real devices.

    Profile operators and whole models on phones, boards and GPU hosts, keep the
    results in per-device lookup tables, predict latency, and search for
    architectures that fit a latency budget on a named device.

    \b
    Example (this machine, no agent needed):
      edgelat quickstart
      edgelat profile ops --device local --preset smoke
    """


@main.group(cls=EdgelatGroup)
def agent() -> None:
    """Run the device-side agent (board/GPU host) or the ADB bridge (phone)."""


@main.group(cls=EdgelatGroup)
def devices() -> None:
    """Register, list, show and remove named devices."""


@main.group(cls=EdgelatGroup)
def profile() -> None:
    """Measure operators or whole models on a device into its lookup table."""


@main.group(cls=EdgelatGroup)
def lut() -> None:
    """Show, export and import the per-device latency/energy tables."""


@main.group(cls=EdgelatGroup)
def predictor() -> None:
    """Build, fit and evaluate latency predictors for a device."""


def json_option(f: Callable) -> Callable:
    """``--json``: print machine-readable output on stdout (nothing else there)."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout, for piping.")(f)


def runtime_options(f: Callable) -> Callable:
    """``--runtime``/``--threads``/``--provider``: which runtime config a row belongs to."""

    @click.option(
        "--runtime",
        type=click.Choice(["onnxruntime", "litert", "tflite-runtime"]),
        default="onnxruntime",
        show_default=True,
        help="Runtime that runs the model on the device.",
    )
    @click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True, help="Intra-op threads.")
    @click.option(
        "--provider",
        default="cpu",
        show_default=True,
        help="onnxruntime execution provider (cpu, cuda, tensorrt) or LiteRT delegate (cpu, xnnpack, gpu).",
    )
    @functools.wraps(f)
    def wrapper(*args: Any, runtime: str, threads: int, provider: str, **kwargs: Any) -> Any:
        from edgelat.values import RuntimeConfig

        kwargs["runtime_config"] = RuntimeConfig(runtime=runtime, threads=threads, provider=provider)
        return f(*args, **kwargs)

    return wrapper


def _finite(value: Any) -> Any:
    """Strict JSON has no Infinity/NaN: an undefined statistic is printed as null."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def emit_json(data: Any) -> None:
    """Write one JSON document to stdout (strict JSON: non-finite numbers become null)."""
    json.dump(_finite(data), sys.stdout, indent=2, default=str, allow_nan=False)
    sys.stdout.write("\n")


def protocol_options(f: Callable) -> Callable:
    """Measurement protocol knobs; gives the command a ``protocol`` kwarg."""

    @click.option("--target-ci", type=click.FloatRange(0.001, 1.0), default=0.02, show_default=True,
                  help="Stop when the 95% CI of the median is within this fraction of it.")
    @click.option("--max-seconds", type=click.FloatRange(0.05, 3600), default=10.0, show_default=True,
                  help="Time cap per model; a row stopped by the cap above target is flagged unstable.")
    @click.option("--warmup", type=click.IntRange(0, 10000), default=5, show_default=True, help="Warm-up runs.")
    @click.option("--min-runs", type=click.IntRange(1, 1_000_000), default=50, show_default=True,
                  help="Measured runs before the CI is first checked (fewer make a median that does not "
                       "repeat from one process to the next on tiny kernels).")
    @click.option("--max-runs", type=click.IntRange(1, 1_000_000), default=1000, show_default=True,
                  help="Cap on measured runs per model.")
    @functools.wraps(f)
    def wrapper(*args: Any, target_ci: float, max_seconds: float, warmup: int, min_runs: int, max_runs: int,
                **kwargs: Any) -> Any:
        from edgelat.values import MeasurementProtocol
        from edgelat.errors import BadInput

        if max_runs < min_runs:
            raise BadInput(f"--max-runs ({max_runs}) must be at least --min-runs ({min_runs})")
        kwargs["protocol"] = MeasurementProtocol(
            warmup=warmup, min_runs=min_runs, max_runs=max_runs, target_rel_ci=target_ci, max_seconds=max_seconds
        )
        return f(*args, **kwargs)

    return wrapper


def open_registry() -> Any:
    """The embedded database and its registry (``(db, registry)``)."""
    from edgelat.devices.registry import Registry
    from edgelat.lut.store import open_db

    db = open_db()
    return db, Registry(db)


#: width given to tables written to a file or pipe: lines are never wrapped for a reader that
#: is not a terminal (a log, CI, grep)
PIPE_WIDTH = 1000


def _console(stderr: bool) -> Any:
    from rich.console import Console

    console = Console(stderr=stderr)
    if not console.is_terminal:
        console = Console(stderr=stderr, width=PIPE_WIDTH)
    return console


def stderr_console() -> Any:
    """A rich console on stderr: progress and tables never pollute ``--json`` stdout."""
    return _console(stderr=True)


def stdout_console() -> Any:
    """A rich console on stdout; unwrapped when stdout is not a terminal."""
    return _console(stderr=False)


#: seconds between plain progress lines when stderr is not a terminal
PLAIN_PROGRESS_EVERY_S = 10.0


class progress_lines:
    """Progress on stderr: a live bar on a terminal, else a plain line every
    :data:`PLAIN_PROGRESS_EVERY_S` seconds and at the end (CI, nohup, a log file); never on stdout.

    ``update(done, description)`` reports; ``unit`` formats the counts (e.g. ``"{:.0f} s"``).
    """

    def __init__(self, label: str, total: float, quiet: bool = False, done: float = 0.0, unit: str = "{:.0f}") -> None:
        self.label, self.total, self.quiet, self.unit = label, float(total), quiet, unit
        self.done = float(done)
        self._bar: Any = None
        self._task: Any = None
        self._last = 0.0

    def __enter__(self) -> "progress_lines":
        if self.quiet:
            return self
        console = stderr_console()
        if console.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn(f"[bold]{self.label}"), BarColumn(),
                                 TextColumn("{task.fields[counts]}"), TimeElapsedColumn(),
                                 TextColumn("{task.description}"), console=console, transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task("", total=max(self.total, 1e-9), completed=self.done,
                                            counts=self._counts())
        return self

    def _counts(self) -> str:
        return f"{self.unit.format(self.done)}/{self.unit.format(self.total)}"

    def update(self, done: float, description: str = "") -> None:
        import time

        self.done = float(done)
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=min(self.done, self.total), description=description[:60],
                             counts=self._counts())
            return
        now = time.monotonic()
        if now - self._last >= PLAIN_PROGRESS_EVERY_S or self.done >= self.total:
            self._last = now
            share = 100.0 * self.done / self.total if self.total > 0 else 100.0
            click.echo(f"{self.label}: {self._counts()} ({share:.0f}%) {description[:80]}".rstrip(), err=True)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
