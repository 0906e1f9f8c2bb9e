"""The hub's commands through click (CliRunner) against a real hub on loopback, and
``hub serve``'s ready line from a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner
from hub_helpers import hub_env, invoke, running_hub, running_link, tokens

from edgelat.cli import main
from edgelat.hub.errors import AuthError
from edgelat.hub.queue import HubStore
from edgelat.profiler.presets import get_preset

QUICK = ["--max-seconds", "0.2", "--min-runs", "3", "--max-runs", "10", "--warmup", "1", "--rounds", "0"]




def test_token_create_writes_an_owner_only_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    out = tmp_path / "alice.tok"
    result = invoke("hub", "token", "create", "--user", "alice", "--role", "user", "--devices", "a,b",
                    "--out", out, "--db", url)
    assert result.exit_code == 0, result.output
    assert "alice" in result.stdout and stat.S_IMODE(out.stat().st_mode) == 0o600
    with HubStore(url).open() as store:
        principal = store.authenticate(out.read_text().strip())
    assert (principal.user, principal.role, principal.devices) == ("alice", "user", ("a", "b"))
    result = invoke("hub", "token", "create", "--user", "x", "--role", "root", "--db", url)
    assert result.exit_code == 2 and "root" in result.output
    result = invoke("hub", "token", "revoke", "--user", "alice", "--db", url)
    assert result.exit_code == 0 and "revoked 1" in result.stdout
    with HubStore(url).open() as store, pytest.raises(AuthError, match="revoked"):
        store.authenticate(out.read_text().strip())


def test_profile_ops_detach_then_jobs_commands(tmp_path):
    specs = tmp_path / "ops.yaml"
    specs.write_text(yaml.safe_dump([s.key for s in get_preset("smoke")[:3]]))
    with running_hub(tmp_path) as hub:
        tok = tokens(hub)
        env = hub_env(hub, tok["user"], tmp_path)
        with running_link(hub, tok["agent"]):
            result = invoke("devices", "list", "--json", env=env)
            assert result.exit_code == 0, result.output
            assert [(d["name"], d["state"]) for d in json.loads(result.stdout)] == [("dev1", "online")]

            result = invoke("profile", "ops", "--device", "dev1", "--ops", specs, *QUICK, "--detach", "--json", env=env)
            assert result.exit_code == 0, result.output
            job_id = json.loads(result.stdout)["job"]

            result = invoke("jobs", "watch", job_id, "--json", env=env)
            assert result.exit_code == 0, result.output
            assert json.loads(result.stdout)["state"] == "done"
            result = invoke("jobs", "show", job_id, "--json", env=env)
            shown = json.loads(result.stdout)
            assert {"id", "state", "user", "device", "done", "total"} <= set(shown)
            assert (shown["id"], shown["state"], shown["user"], shown["device"]) == (job_id, "done", "alice", "dev1")
            assert shown["done"] == shown["total"] == 3
            result = invoke("jobs", "list", env=env)
            assert result.exit_code == 0 and job_id in result.stdout
            assert [j["id"] for j in json.loads(invoke("jobs", "list", "--json", env=env).stdout)] == [job_id]

            # Without --detach the command follows the job and prints what it prints locally.
            result = invoke("profile", "ops", "--device", "dev1", "--ops", specs, *QUICK, env=env)
            assert result.exit_code == 0, result.output
            assert "dev1: 0 measured, 3 already in the table" in result.stderr
            result = invoke("profile", "ops", "--device", "dev1", "--ops", specs, *QUICK, "--json", env=env)
            assert json.loads(result.stdout)["skipped"] == 3

            # A finished job cannot be cancelled; one line, JSON with --json.
            result = invoke("jobs", "cancel", job_id, "--json", env=env)
            assert result.exit_code == 1
            err = json.loads(result.stderr)
            assert err["kind"] == "JobStateError" and len(result.stderr.strip().splitlines()) == 1
            result = invoke("jobs", "retry", "nope", env=env)
            assert result.exit_code == 1 and result.stderr.startswith("error: ") and "nope" in result.stderr

        # An offline device: queued, and the command says so.
        result = invoke("profile", "ops", "--device", "rpi5", "--preset", "smoke", "--detach", env=env)
        assert result.exit_code == 0, result.output
        assert "rpi5" in result.stderr and "queued" in result.stderr
        result = invoke("jobs", "cancel", result.stdout.strip(), env=env)
        assert result.exit_code == 0 and "cancelled" in result.stdout

        bad = hub_env(hub, "elh_unknown", tmp_path, "stranger")
        result = invoke("jobs", "list", env=bad)
        assert result.exit_code == 1 and result.stderr.count("\n") == 1 and "token" in result.stderr


def test_profile_model_through_the_hub(tmp_path):
    from edgelat.lut import store
    from edgelat.profiler.builders import build_model
    from edgelat.profiler.networks import tiny_net

    model = tmp_path / "tiny.onnx"
    model.write_bytes(build_model(tiny_net(48), "onnx"))
    with running_hub(tmp_path) as hub:
        tok = tokens(hub)
        env = hub_env(hub, tok["user"], tmp_path)
        with running_link(hub, tok["agent"]):
            result = invoke("profile", "model", model, "--device", "dev1", *QUICK[:-2], "--json", env=env)
            assert result.exit_code == 0, result.output
            out = json.loads(result.stdout)
            assert out["device"] == "dev1" and out["latency_ms"]["median"] > 0
            assert out["model_ref"].startswith("sha256:")
            result = invoke("profile", "model", model, "--device", "dev1", *QUICK[:-2], env=env)
            assert result.exit_code == 0 and "tiny.onnx on dev1" in result.stdout
            shown = json.loads(invoke("jobs", "list", "--json", env=env).stdout)[0]
            assert "model_b64" not in shown["params"] and shown["params"]["model_bytes"] == model.stat().st_size
    db = store.open_db()
    try:
        assert len(store.model_rows(db, "dev1")) == 1
    finally:
        db.close()


def test_predictor_build_through_the_hub(tmp_path):
    from edgelat.lut import store

    with running_hub(tmp_path) as hub:
        tok = tokens(hub)
        env = hub_env(hub, tok["user"], tmp_path)
        with running_link(hub, tok["agent"]):
            result = invoke("predictor", "build", "--device", "dev1", "--budget-minutes", "0.2", "--detach", "--json",
                            env=env)
            assert result.exit_code == 0, result.output
            job_id = json.loads(result.stdout)["job"]
            result = invoke("jobs", "watch", job_id, "--json", env=env)
            job = json.loads(result.stdout)
            assert job["state"] == "done", job
            assert job["result"]["device"] == "dev1" and job["result"]["kernels_measured"] > 0
    db = store.open_db()
    try:
        assert len(store.kernel_rows(db, "dev1")) == job["result"]["kernels_total"]
    finally:
        db.close()


def test_without_a_hub_jobs_say_how_to_configure_one_and_profile_stays_local(tmp_path):
    result = invoke("jobs", "list")
    assert result.exit_code == 1 and "EDGELAT_HUB" in result.stderr
    result = invoke("profile", "ops", "--device", "local", "--preset", "smoke", *QUICK, "--detach", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["measured"] == 20  # --detach means nothing without a hub


def test_unreachable_hub_database_is_one_line(tmp_path):
    result = invoke("hub", "serve", "--listen", "127.0.0.1:0", "--db", "sqlite:////proc/nowhere/hub.db")
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


def test_hub_serve_prints_one_ready_line(tmp_path):
    env = {**os.environ, "EDGELAT_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-c", "from edgelat.cli import main; main()", "hub", "serve",
                             "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("edgelat hub listening on 127.0.0.1:"), line + proc.stderr.read()
        port = int(line.split("127.0.0.1:")[1].split()[0])
        assert port > 0 and "hub.db" in line
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and rest == ""


def test_agent_serve_dials_out_to_the_hub(tmp_path):
    """``agent serve --hub``: one line once connected, the device online at the hub, SIGTERM ends it;
    a token the hub does not know ends it with one line."""
    from hub_helpers import wait_for

    with running_hub(tmp_path) as hub:
        tok = tokens(hub, agent_devices=["board1"])
        good, bad = tmp_path / "agent.tok", tmp_path / "bad.tok"
        good.write_text(tok["agent"])
        bad.write_text("elh_nobody")
        for f in (good, bad):
            f.chmod(0o600)
        env = {**os.environ, "EDGELAT_HOME": str(tmp_path / "agent-home")}
        cmd = [sys.executable, "-c", "from edgelat.cli import main; main()", "agent", "serve", "--hub", hub.address,
               "--name", "board1", "--token-file"]
        proc = subprocess.Popen(cmd + [str(good)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            line = proc.stdout.readline()
            assert line == f"edgelat agent board1 connected to hub {hub.address} serving board1\n", proc.stderr.read()
            wait_for(lambda: [(d["name"], d["state"]) for d in hub.store.devices()] == [("board1", "online")], 30,
                     "board1 online")
        finally:
            proc.send_signal(signal.SIGTERM)
            rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0 and rest == ""
        wait_for(lambda: hub.store.devices()[0]["state"] == "offline", 30, "board1 offline")
        proc = subprocess.run(cmd + [str(bad)], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 1 and proc.stdout == ""
        assert proc.stderr.startswith("error: the hub at ") and "refused" in proc.stderr
        assert proc.stderr.strip().count("\n") == 0


def test_hub_and_jobs_commands_have_help_with_an_example():
    for command in (["hub", "serve"], ["hub", "token", "create"], ["hub", "token", "revoke"],
                    ["hub", "unquarantine"], ["jobs", "list"],
                    ["jobs", "show"], ["jobs", "watch"], ["jobs", "cancel"], ["jobs", "retry"]):
        result = invoke(*command, "--help")
        assert result.exit_code == 0 and "Usage:" in result.stdout and "Example" in result.stdout, command
    for group in (["hub"], ["hub", "token"], ["jobs"]):
        assert "Commands:" in invoke(*group, "--help").stdout
    for command in (["profile", "ops"], ["profile", "model"], ["devices", "list"], ["predictor", "build"]):
        assert "--hub" in invoke(*command, "--help").stdout, command


def test_an_unreadable_tls_ca_is_one_line_on_both_sides(tmp_path, monkeypatch):
    token = tmp_path / "t.tok"
    token.write_text("secret")
    token.chmod(0o600)
    missing = tmp_path / "nosuch-ca.pem"
    r = CliRunner().invoke(main, ["agent", "serve", "--hub", "127.0.0.1:1", "--token-file", str(token),
                                  "--name", "b1", "--hub-tls-ca", str(missing)])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert f"cannot read the TLS CA certificate (--hub-tls-ca) {missing}" in r.stderr
    monkeypatch.setenv("EDGELAT_HUB", "127.0.0.1:1")
    monkeypatch.setenv("EDGELAT_TOKEN_FILE", str(token))
    monkeypatch.setenv("EDGELAT_HUB_TLS_CA", str(missing))
    r = CliRunner().invoke(main, ["jobs", "list"])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert f"cannot read the TLS CA certificate (EDGELAT_HUB_TLS_CA) {missing}" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_hub_tls_files_that_are_not_pem_and_a_port_in_use_are_one_line(tmp_path, monkeypatch):
    """gRPC would log its own complaints and blame the address; the hub says what is wrong."""
    import socket

    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    r = CliRunner().invoke(main, ["hub", "serve", "--listen", "127.0.0.1:0", "--db", f"sqlite:///{tmp_path / 'q.db'}",
                                  "--tls-cert", str(junk), "--tls-key", str(junk)])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "TLS certificate (--tls-cert) is not a PEM certificate" in r.stderr and "--listen" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = CliRunner().invoke(main, ["hub", "serve", "--listen", f"127.0.0.1:{port}",
                                      "--db", f"sqlite:///{tmp_path / 'q.db'}"])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    token = tmp_path / "t.tok"
    token.write_text("secret")
    token.chmod(0o600)
    monkeypatch.setenv("EDGELAT_HUB", "127.0.0.1:1")
    monkeypatch.setenv("EDGELAT_TOKEN_FILE", str(token))
    monkeypatch.setenv("EDGELAT_HUB_TLS_CA", str(junk))
    r = CliRunner().invoke(main, ["jobs", "list"])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "(EDGELAT_HUB_TLS_CA) is not a PEM certificate" in r.stderr and len(r.stderr.strip().splitlines()) == 1
