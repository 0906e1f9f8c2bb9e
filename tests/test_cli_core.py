"""The foundation commands end to end on ``local``: real onnxruntime/LiteRT runs into a real SQLite file."""

from __future__ import annotations

import json
import socket
import sqlite3

import pytest
from click.testing import CliRunner

from edgelat import config
from edgelat.cli import main
from edgelat.profiler.builders import build_model
from edgelat.profiler.networks import tiny_net
from edgelat.profiler.presets import get_preset

FAST = ["--warmup", "1", "--min-runs", "3", "--max-seconds", "0.2"]


def run(*args: str, ok: bool = True):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output + (result.stderr if hasattr(result, "stderr") else "")
    return result


def db_dump() -> str:
    """Everything in the database, to show a failed command changed nothing."""
    path = config.db_path()
    if not path.exists():
        return ""
    with sqlite3.connect(path) as conn:
        return "\n".join(conn.iterdump())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_profile_ops_is_idempotent_and_force_remeasures():
    smoke = get_preset("smoke")
    first = json.loads(run("profile", "ops", "--device", "local", "--preset", "smoke", "--json", *FAST).stdout)
    assert first["measured"] == len(smoke) and first["skipped"] == 0 and not first["failed"]
    assert first["measured_seconds"] > 0 and first["wall_seconds"] >= first["measured_seconds"]
    rows = json.loads(run("lut", "show", "--device", "local", "--json").stdout)
    assert sorted(r["kernel_key"] for r in rows) == sorted(s.key for s in smoke)
    for r in rows:
        assert r["n"] >= 3 and r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
        assert r["energy_mj"] is not None or r["energy_note"]
        assert "before" in r["environment"] and "after" in r["environment"]

    again = json.loads(run("profile", "ops", "--device", "local", "--preset", "smoke", "--json", *FAST).stdout)
    assert again["measured"] == 0 and again["skipped"] == len(smoke)
    measured_at = {r["kernel_key"]: r["measured_at"] for r in rows}
    after = json.loads(run("lut", "show", "--device", "local", "--json").stdout)
    assert {r["kernel_key"]: r["measured_at"] for r in after} == measured_at

    op = smoke[0].op
    only = json.loads(run("lut", "show", "--device", "local", "--op", op, "--json").stdout)
    assert only and {r["op"] for r in only} == {op}

    forced = json.loads(run("profile", "ops", "--device", "local", "--preset", "smoke", "--force", "--json",
                            *FAST).stdout)
    assert forced["measured"] == len(smoke)
    assert len(json.loads(run("lut", "show", "--device", "local", "--json").stdout)) == len(smoke)


def test_threads_make_a_separate_runtime_config():
    spec = get_preset("smoke")[:2]
    ops = config.home() / "ops.json"
    ops.write_text(json.dumps([s.key for s in spec]))
    run("profile", "ops", "--device", "local", "--ops", str(ops), "--threads", "1", *FAST)
    out = json.loads(run("profile", "ops", "--device", "local", "--ops", str(ops), "--threads", "2", "--json",
                         *FAST).stdout)
    assert out["measured"] == 2 and out["threads"] == 2
    rows = json.loads(run("lut", "show", "--device", "local", "--json").stdout)
    assert sorted(r["threads"] for r in rows) == [1, 1, 2, 2]


@pytest.mark.parametrize("fmt,runtime", [("onnx", "onnxruntime"), ("tflite", "litert")])
def test_profile_model_json_contract(tmp_path, fmt, runtime):
    path = tmp_path / f"tiny.{fmt}"
    path.write_bytes(build_model(tiny_net(), fmt))
    out = json.loads(run("profile", "model", str(path), "--device", "local", "--json", *FAST).stdout)
    assert out["device"] == "local" and out["runtime"] == runtime and out["threads"] == 1
    lat = out["latency_ms"]
    assert set(lat) >= {"median", "mean", "std", "p10", "p90", "n"}
    assert lat["n"] >= 3 and 0 < lat["p10"] <= lat["median"] <= lat["p90"]
    assert (out["energy_mj"] is None) == bool(out["energy_note"])
    models = json.loads(run("lut", "show", "--device", "local", "--models", "--json").stdout)
    assert [m["model_name"] for m in models] == [path.name]


def test_export_writes_the_table(tmp_path):
    run("profile", "ops", "--device", "local", "--preset", "smoke", *FAST)
    out = tmp_path / "local.csv"
    result = run("lut", "export", "--device", "local", "--out", str(out))
    assert f"wrote {len(get_preset('smoke'))} rows" in result.stdout
    assert out.read_text().splitlines()[0].startswith("device,")


def test_devices_list_and_show_local():
    rows = json.loads(run("devices", "list", "--json").stdout)
    assert rows[0]["name"] == "local" and {"name", "kind", "status"} <= set(rows[0])
    facts = json.loads(run("devices", "show", "local", "--json").stdout)["facts"]
    assert facts["cores"] >= 1 and "onnxruntime" in facts["runtimes"]


def _fails_cleanly(*args: str, match: str) -> None:
    before = db_dump()
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert match in lines[0], lines[0]
    assert db_dump() == before


def test_bad_input_one_line_error_and_database_unchanged(tmp_path):
    run("profile", "ops", "--device", "local", "--preset", "smoke", *FAST)  # something to protect
    corrupt = tmp_path / "broken.onnx"
    corrupt.write_bytes(b"\x08\x07this is not a protobuf model" * 10)
    _fails_cleanly("profile", "model", str(corrupt), "--device", "local", *FAST, match="broken")
    corrupt_tfl = tmp_path / "broken.tflite"
    corrupt_tfl.write_bytes(b"TFL3 garbage")
    _fails_cleanly("profile", "model", str(corrupt_tfl), "--device", "local", *FAST, match="broken")
    wrong = tmp_path / "model.pt"
    wrong.write_bytes(b"x")
    _fails_cleanly("profile", "model", str(wrong), "--device", "local", match="unknown model format")
    _fails_cleanly("profile", "ops", "--device", "nosuch", "--preset", "smoke", match="unknown device 'nosuch'")
    _fails_cleanly("profile", "ops", "--device", "local", "--preset", "resnet9000", match="resnet9000")
    bad_ops = tmp_path / "ops.yaml"
    bad_ops.write_text("- {op: conv2d, h: -3}\n")
    _fails_cleanly("profile", "ops", "--device", "local", "--ops", str(bad_ops), match="ops.yaml")
    port = free_port()
    _fails_cleanly("devices", "register", "rpi5", "--agent", f"127.0.0.1:{port}", match=f"127.0.0.1:{port}")
    _fails_cleanly("devices", "show", "rpi5", match="unknown device")
    _fails_cleanly("lut", "export", "--device", "local", "--out", str(tmp_path / "x.xlsx"), match="export format")


@pytest.mark.parametrize(
    "command",
    [[], ["agent", "serve"], ["devices", "register"], ["devices", "list"], ["devices", "show"],
     ["devices", "remove"], ["profile", "ops"], ["profile", "model"], ["lut", "show"], ["lut", "export"],
     ["quickstart"]],
)
def test_every_command_has_help_with_an_example(command):
    result = run(*command, "--help")
    assert "Usage:" in result.stdout and "Example" in result.stdout, command


def _command_paths(group=main, prefix=()):
    import click

    for name, cmd in group.commands.items():
        yield (*prefix, name)
        if isinstance(cmd, click.Group):
            yield from _command_paths(cmd, (*prefix, name))


def test_no_help_text_shows_a_doubled_percent_sign():
    """Click does not %-format help text, so a '%%' written in an option's help reaches the user."""
    paths = list(_command_paths())
    assert ("predict",) in paths and len(paths) > 20
    for path in paths:
        assert "%%" not in run(*path, "--help").stdout, path


@pytest.mark.parametrize("group", ["agent", "devices", "profile", "lut", "predictor"])
def test_groups_say_what_they_do(group):
    result = run(group, "--help")
    assert "Commands:" in result.stdout


def test_profile_ops_for_a_search_space_measures_its_vocabulary(tmp_path, monkeypatch):
    """--space profiles exactly the kernels the space can contain (a small YAML space here)."""
    from edgelat.profiler.spaces import get_space

    space_file = tmp_path / "tiny.yaml"
    space_file.write_text(
        "name: tiny\nresolutions: [32]\nstem: {width: 8, act: relu, stride: 2}\n"
        "stages:\n  - {widths: [8], depths: [1], kernels: [3], expands: [3], stride: 2, act: relu}\n"
        "head:\n  - {op: gap}\n  - {op: fc, cout: 10}\n"
    )
    vocab = get_space(str(space_file)).kernel_vocabulary()
    out = json.loads(run("profile", "ops", "--device", "local", "--space", str(space_file), "--json", *FAST).stdout)
    assert out["requested"] == len({s.key for s in vocab}) and out["measured"] == out["requested"]
    _fails_cleanly("profile", "ops", "--device", "local", "--space", "nosuch-space", match="nosuch-space")
    _fails_cleanly("profile", "ops", "--device", "local", "--space", "fbnet", "--preset", "smoke", match="one of")
