"""Read commands through a hub (``lut show|export|history``, ``predict``, ``predictor list``):
a real hub on loopback whose own tables (a file apart from this test's ``$EDGELAT_HOME``) a job
filled, read through ReadTables into a local copy; and ``--force``/``--sustained`` carried by jobs."""

from __future__ import annotations

import csv
import json

import pytest
from hub_helpers import hub_env, invoke, running_hub, running_link, tokens

from edgelat.lut import store
from edgelat.profiler.presets import get_preset

QUICK = ["--max-seconds", "0.2", "--min-runs", "3", "--max-runs", "10", "--warmup", "1"]




def _one_line(result, *words):
    assert result.exit_code != 0, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    for w in words:
        assert w in result.stderr, result.stderr


def _tiny_model(tmp_path):
    from edgelat.profiler.builders import build_model
    from edgelat.profiler.networks import tiny_net

    model = tmp_path / "tiny.onnx"
    model.write_bytes(build_model(tiny_net(48), "onnx"))
    return model


def _hub_rows(path, device, models=False):
    db = store.open_db(path)
    try:
        return store.model_rows(db, device) if models else store.kernel_rows(db, device)
    finally:
        db.close()


def _model_kernels(tables, model):
    """The kernel keys the model splits into on dev1 (with the fusion rules the hub's build measured)."""
    from edgelat.predictors.fusion import load_rules
    from edgelat.predictors.graph import split_file
    from edgelat.values import RuntimeConfig

    db = store.open_db(tables)
    try:
        rules = load_rules(db, "dev1", RuntimeConfig())
    finally:
        db.close()
    return {k.key for k in split_file(model, rules).kernels}


def _copies(home):
    return sorted(p for p in (home / "hub-tables").rglob("*.db"))


def test_read_commands_show_the_hubs_tables_and_refresh_after_a_job(tmp_path, edgelat_home):
    tables = tmp_path / "hub-tables.db"  # the hub's tables: not this test's $EDGELAT_HOME/edgelat.db
    model = _tiny_model(tmp_path)
    with running_hub(tmp_path, tables_path=tables) as hub:
        tok = tokens(hub)
        env = hub_env(hub, tok["user"], tmp_path)
        with running_link(hub, tok["agent"]):
            # Jobs fill the hub's tables: kernel rows, then a predictor fitted on them (a build short of
            # time under load may measure nothing itself; it still fits on the rows there).
            result = invoke("profile", "ops", "--device", "dev1", "--preset", "smoke", *QUICK, "--rounds", "0",
                            env=env)
            assert result.exit_code == 0, result.output
            result = invoke("predictor", "build", "--device", "dev1", "--budget-minutes", "0.2", "--json", env=env)
            assert result.exit_code == 0, result.output
            built = json.loads(result.stdout)
            kernels = {r["kernel_key"]: r["median_ms"] for r in _hub_rows(tables, "dev1")}
            assert built["device"] == "dev1" and len(kernels) == built["kernels_total"] >= 20

            # The local tables know nothing of dev1: every read below would fail on them.
            _one_line(invoke("lut", "show", "--device", "dev1"), "dev1")
            assert json.loads(invoke("predictor", "list", "--json").stdout) == []

            result = invoke("lut", "show", "--device", "dev1", "--json", "--limit", "0", env=env)
            assert result.exit_code == 0, result.output
            shown = json.loads(result.stdout)  # nothing else on stdout: it parses
            assert {r["kernel_key"]: r["latency_ms"]["median"] for r in shown} == kernels
            result = invoke("lut", "show", "--device", "dev1", "--limit", "0", env=env)
            assert result.exit_code == 0 and "dev1: onnxruntime" in result.stdout

            out = tmp_path / "t.csv"
            result = invoke("lut", "export", "--device", "dev1", "--out", out, env=env)
            assert result.exit_code == 0 and result.stdout == f"wrote {len(kernels)} rows to {out}\n"
            with open(out) as f:
                assert {r["kernel_key"] for r in csv.DictReader(f)} == set(kernels)

            result = invoke("lut", "history", "--device", "dev1", "--json", "--limit", "1000", env=env)
            assert result.exit_code == 0, result.output
            assert {r["item_key"] for r in json.loads(result.stdout)} >= set(kernels)

            result = invoke("predictor", "list", "--json", env=env)
            assert result.exit_code == 0, result.output
            listed = json.loads(result.stdout)
            assert [(p["level"], p["device"]) for p in listed] == [("kernel", "dev1")]
            result = invoke("predictor", "list", "--device", "dev1", env=env)
            assert result.exit_code == 0 and "dev1" in result.stdout and "regressors" in result.stdout
            result = invoke("predictor", "report", "--device", "dev1", "--json", env=env)
            assert result.exit_code == 0, result.output
            assert json.loads(result.stdout)["device"] == "dev1"
            _one_line(invoke("predictor", "report", "--device", "dev1"), "dev1")  # not locally

            # Nothing changed on the hub: the copy is used as it is (not fetched again).
            (copy,) = [p for p in _copies(edgelat_home) if p.name.startswith("dev1-")]
            inode = copy.stat().st_ino
            assert invoke("lut", "show", "--device", "dev1", "--json", env=env).exit_code == 0
            assert copy.stat().st_ino == inode

            # A new job measures the model's kernels on the hub (again, for those it has): the next reads
            # fetch the new rows.
            keys = _model_kernels(tables, model)
            ops = tmp_path / "model-ops.json"
            ops.write_text(json.dumps(sorted(keys)))
            result = invoke("profile", "ops", "--device", "dev1", "--ops", ops, "--force", *QUICK, "--rounds", "0",
                            env=env)
            assert result.exit_code == 0, result.output
            result = invoke("lut", "show", "--device", "dev1", "--json", "--limit", "0", env=env)
            assert {r["kernel_key"] for r in json.loads(result.stdout)} == set(kernels) | keys
            assert [p.name for p in _copies(edgelat_home) if p.name.startswith("dev1-")] != [copy.name]

            result = invoke("predict", model, "--device", "dev1", "--json", env=env)
            assert result.exit_code == 0, result.output
            predicted = json.loads(result.stdout)
            assert predicted["device"] == "dev1" and predicted["latency_ms"] > 0
            _one_line(invoke("predict", model, "--device", "dev1"), "dev1")  # not locally
    assert not (edgelat_home / "edgelat.db").exists() or _hub_rows(edgelat_home / "edgelat.db", "dev1") == []


def test_bad_token_unknown_device_and_no_hub_are_one_line(tmp_path):
    tables = tmp_path / "hub-tables.db"
    with running_hub(tmp_path, tables_path=tables) as hub:
        tok = tokens(hub)
        bob = hub_env(hub, hub.store.create_token("bob", "user", devices=["dev1"]), tmp_path, "bob")
        env = hub_env(hub, tok["user"], tmp_path)
        # No job ran yet: the hub has no tables; a device it never measured is one line.
        _one_line(invoke("lut", "show", "--device", "dev1", env=env), "dev1", "hub")
        result = invoke("predictor", "list", "--json", env=env)
        assert result.exit_code == 0 and json.loads(result.stdout) == []
        with running_link(hub, tok["agent"]):
            specs = tmp_path / "ops.json"
            specs.write_text(json.dumps([s.key for s in get_preset("smoke")[:2]]))
            result = invoke("profile", "ops", "--device", "dev1", "--ops", specs, *QUICK, "--rounds", "0", env=env)
            assert result.exit_code == 0, result.output
        # The Python API reads the same copy when given the hub.
        import edgelat
        from edgelat.errors import BadInput, UnknownDevice

        tok_file = env["EDGELAT_TOKEN_FILE"]
        dev = edgelat.device("dev1", hub=hub.address, token_file=tok_file)
        assert sorted(dev.table()["kernel_key"]) == sorted(s.key for s in get_preset("smoke")[:2])
        assert len(dev.history()) == 2
        with pytest.raises(UnknownDevice):
            edgelat.device("dev1")  # the embedded database has no dev1
        with pytest.raises(BadInput, match="job"):
            dev.profile_model("m.onnx")
        with pytest.raises(UnknownDevice, match="nosuch"):
            edgelat.predictor("nosuch", hub=hub.address, token_file=tok_file)
        _one_line(invoke("lut", "show", "--device", "nosuch", env=env), "nosuch", hub.address)
        _one_line(invoke("lut", "export", "--device", "nosuch", "--out", tmp_path / "x.csv", env=env), "nosuch")
        assert not (tmp_path / "x.csv").exists()
        result = invoke("lut", "history", "--device", "nosuch", "--json", env=env)
        assert result.exit_code != 0 and json.loads(result.stderr)["kind"] == "UnknownDevice"
        _one_line(invoke("lut", "show", "--device", "dev1", env=hub_env(hub, "elh_nobody", tmp_path, "x")), "token")
        _one_line(invoke("lut", "show", "--device", "dev1", env=hub_env(hub, tok["agent"], tmp_path, "agent")),
                  "agent token")
        _one_line(invoke("predict", "m.onnx", "--device", "dev1", "--measure-if-unsure", env=env),
                  "--measure-if-unsure")
        result = invoke("devices", "show", "dev1", "--json", env=env)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["transport"] == {"type": "hub"}  # the hub's registry row
        # A token that names devices reads only those.
        assert invoke("lut", "show", "--device", "dev1", "--json", env=bob).exit_code == 0
        result = invoke("predictor", "list", "--json", env=bob)
        assert result.exit_code == 0 and json.loads(result.stdout) == []
        address = hub.address
    result = invoke("lut", "show", "--device", "dev1", "--hub", address, "--token-file", tmp_path / "alice.tok")
    _one_line(result, address)


def test_snapshot_holds_only_the_devices_rows(tmp_path):
    """lut.snapshot copies one device's registry row and rows; its marker moves when they change."""
    from edgelat.devices.registry import Registry
    from edgelat.lut import snapshot

    src = tmp_path / "src.db"
    db = store.open_db(src)
    reg = Registry(db)
    for name in ("a", "b"):
        reg.register(name, "imported", {"type": "imported"}, {})
    store.upsert_rows(db, "arch_measurements", [
        {"space": "s", "arch": "x", "device": "a", "latency_ms": 1.0, "source": "t"},
        {"space": "s", "arch": "x", "device": "b", "latency_ms": 2.0, "source": "t"}])
    conn = snapshot.open_source(src)
    before = snapshot.marker(conn, ["a"])
    out = tmp_path / "copy.db"
    assert snapshot.write_snapshot(src, ["a"], out) == before == snapshot.snapshot_marker(out)
    copy = store.open_db(out)
    assert [r["name"] for r in copy["devices"].rows] == ["a"]
    assert [(r["device"], r["latency_ms"]) for r in copy["arch_measurements"].rows] == [("a", 1.0)]
    copy.close()
    assert snapshot.marker(conn, ["a"]) == before
    store.upsert_rows(db, "arch_measurements", [{"space": "s", "arch": "x", "device": "b", "latency_ms": 3.0,
                                                 "source": "t"}])
    assert snapshot.marker(conn, ["a"]) == before  # another device's change
    store.upsert_rows(db, "arch_measurements", [{"space": "s", "arch": "x", "device": "a", "latency_ms": 1.5,
                                                 "source": "t"}])
    assert snapshot.marker(conn, ["a"]) != before  # a figure replaced in place
    conn.close()
    db.close()


def test_force_and_sustained_go_through_the_hub_and_runner_says_why_not(tmp_path):
    model = _tiny_model(tmp_path)
    tables = tmp_path / "hub-tables.db"
    specs = tmp_path / "ops.json"
    specs.write_text(json.dumps([s.key for s in get_preset("smoke")[:2]]))
    with running_hub(tmp_path, tables_path=tables) as hub:
        tok = tokens(hub)
        env = hub_env(hub, tok["user"], tmp_path)
        with running_link(hub, tok["agent"]):
            args = ["profile", "ops", "--device", "dev1", "--ops", specs, *QUICK, "--rounds", "0", "--json"]
            first = json.loads(invoke(*args, env=env).stdout)
            assert (first["measured"], first["skipped"]) == (2, 0)
            when = {r["kernel_key"]: r["measured_at"] for r in _hub_rows(tables, "dev1")}
            result = invoke(*args, "--force", env=env)
            assert result.exit_code == 0, result.output
            again = json.loads(result.stdout)
            assert (again["measured"], again["skipped"]) == (2, 0)
            assert all(r["measured_at"] > when[r["kernel_key"]] for r in _hub_rows(tables, "dev1"))

            result = invoke("profile", "model", model, "--device", "dev1", *QUICK, "--sustained", "--settle-s",
                            "0.2", "--json", env=env)
            assert result.exit_code == 0, result.output
            assert json.loads(result.stdout)["state"] == "sustained"
            assert [r["model_ref"].endswith("@sustained") for r in _hub_rows(tables, "dev1", models=True)] == [True]
        _one_line(invoke("profile", "model", model, "--device", "dev1", "--runner", "benchmark_model", env=env),
                  "agent adb")


@pytest.mark.parametrize("command", [["devices", "show"], ["lut", "show"], ["lut", "export"], ["lut", "history"], ["predict"],
                                     ["predictor", "list"], ["predictor", "report"]])
def test_read_commands_take_a_hub(command):
    assert "--hub" in invoke(*command, "--help").stdout


def test_a_resumed_forced_job_does_not_measure_its_own_rows_again(tmp_path):
    """``force`` on a hub measures again the rows older than the job; run again under the same job
    (a lease that resumes it) it measures nothing twice."""
    from datetime import datetime, timezone

    from hub_helpers import FAST_DICT

    from edgelat.agents.client import LocalClient
    from edgelat.agents.local import LocalBackend
    from edgelat.hub.kinds import run_profile_ops

    db = store.open_db(tmp_path / "tables.db")
    keys = [s.key for s in get_preset("smoke")[:2]]
    client = LocalClient(LocalBackend())
    base = {"config": {}, "params": {"specs": keys, "protocol": FAST_DICT, "rounds": 0}}
    first = run_profile_ops(db, "local", client, base, lambda *a: True)
    assert (first["measured"], first["skipped"]) == (2, 0)
    created = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    forced = {**base, "created_at": created, "params": {**base["params"], "force": True}}
    again = run_profile_ops(db, "local", client, forced, lambda *a: True)
    assert (again["measured"], again["skipped"]) == (2, 0)
    resumed = run_profile_ops(db, "local", client, forced, lambda *a: True)
    assert (resumed["measured"], resumed["skipped"], resumed["requested"]) == (0, 2, 2)
    db.close()
