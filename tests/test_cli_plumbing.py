"""Plumbing a user meets without a terminal: plain progress lines, unwrapped tables, Ctrl-C."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgelat.cli import base, main

QUICK = ["--max-seconds", "0.2", "--min-runs", "3", "--warmup", "1"]


def test_progress_without_a_terminal_is_plain_lines_on_stderr(monkeypatch):
    monkeypatch.setattr(base, "PLAIN_PROGRESS_EVERY_S", 0.0)  # a line per kernel
    result = CliRunner().invoke(main, ["profile", "ops", "--device", "local", "--preset", "smoke", *QUICK])
    assert result.exit_code == 0, result.output + result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("profiling: ")]
    assert len(lines) >= 2 and lines[-1].startswith("profiling: ") and "(100%)" in lines[-1]
    total = int(lines[-1].split()[1].split("/")[1])
    assert [int(ln.split()[1].split("/")[0]) for ln in lines] == list(range(1, total + 1))
    assert "profiling" not in result.stdout
    # --json: nothing but the JSON on stdout, no progress at all
    out = CliRunner().invoke(main, ["profile", "ops", "--device", "local", "--preset", "smoke", "--force", "--json", *QUICK])
    assert json.loads(out.stdout)["measured"] == total and "profiling: " not in out.stderr


def test_tables_for_a_pipe_are_not_wrapped():
    out = CliRunner().invoke(main, ["spaces", "show", "ofa-mbv3", "--random", "1"]).stdout
    arch = next(ln for ln in out.splitlines() if ln.strip().startswith('{"ks"'))
    assert len(arch) > 80 and arch.strip().endswith("}")  # one line, as long as it is


@pytest.mark.parametrize("exc", [KeyboardInterrupt, base.click.Abort])
def test_ctrl_c_says_what_was_kept_and_how_to_resume(monkeypatch, exc):
    import edgelat.profiler.jobs as jobs

    def interrupted(*args, **kwargs):
        raise exc()

    monkeypatch.setattr(jobs, "profile_kernels", interrupted)
    result = CliRunner().invoke(main, ["profile", "ops", "--device", "local", "--preset", "smoke"])
    assert result.exit_code == 130
    assert result.stderr.strip() == f"interrupted: {base.INTERRUPTED}"
    assert "Aborted" not in result.output + result.stderr


def test_lut_show_sorts_and_limits():
    run = lambda *a: CliRunner().invoke(main, list(a))  # noqa: E731
    assert run("profile", "ops", "--device", "local", "--preset", "smoke", *QUICK).exit_code == 0
    every = json.loads(run("lut", "show", "--device", "local", "--json").stdout)
    slow = json.loads(run("lut", "show", "--device", "local", "--json", "--sort", "median", "--limit", "3").stdout)
    assert [r["median_ms"] for r in slow] == sorted((r["median_ms"] for r in every), reverse=True)[:3]
    text = run("lut", "show", "--device", "local", "--limit", "2").stdout
    assert "showing the first 2 rows (key order)" in text and text.count(every[0]["op"]) >= 1
    assert "showing the first" not in run("lut", "show", "--device", "local", "--limit", "0").stdout
