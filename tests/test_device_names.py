"""Device names stay bound to one board (real agents on loopback, real SQLite, the CLI).

- ``local`` cannot be registered or re-pointed;
- a taken name is re-pointed only with ``--replace`` and an explicit choice for its rows;
- a registered name that answers with other identifying facts is refused, so rows never
  move silently to another board;
- ``devices remove`` deletes the rows, or with ``--keep-rows`` archives them so the name
  starts empty when registered again.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
from agent_helpers import free_port, running_agent
from click.testing import CliRunner

from edgelat import config
from edgelat.values import BenchmarkResult, LatencySummary, RuntimeConfig
from edgelat.cli import main
from edgelat.devices.registry import Registry, fingerprint, identity, identity_change
from edgelat.errors import BadInput, DeviceMismatch
from edgelat.lut import store

FAST = ["--warmup", "1", "--min-runs", "3", "--max-seconds", "0.2"]


@pytest.fixture(scope="module")
def agents(tmp_path_factory):
    """Two real agents on this machine (one board reached at two addresses)."""
    base = tmp_path_factory.mktemp("agents")
    with running_agent(base / "a") as a, running_agent(base / "b") as b:
        yield a, b


def cli(*args: str, ok: bool = True, input: str | None = None):
    r = CliRunner().invoke(main, list(args), input=input)
    if ok:
        assert r.exit_code == 0, r.output
    return r


def refused(*args: str, words: tuple[str, ...] = ()) -> str:
    r = CliRunner().invoke(main, list(args))
    assert r.exit_code != 0 and isinstance(r.exception, SystemExit), r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.output, r.output
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def add_rows(name: str, n: int = 3) -> None:
    db = store.open_db()
    for i in range(n):
        lat = LatencySummary(median=1.0 + i, mean=1.0 + i, std=0.0, p10=1.0, p90=1.0, n=5, rel_ci=0.01, stable=True)
        store.add_kernel_result(db, name, f"add:h{i}", "add", {}, BenchmarkResult("0" * 64, RuntimeConfig(), latency=lat))
    with db.conn:
        db["kernel_predictors"].insert({"device": name, "config_key": RuntimeConfig().key(), "n_rows": n})


def lut_keys(name: str) -> list[str]:
    return sorted(r["kernel_key"] for r in json.loads(cli("lut", "show", "--device", name, "--json").output))


def devices() -> dict[str, dict]:
    return {d["name"]: d for d in json.loads(cli("devices", "list", "--json").output)}


def all_rows(name: str) -> int:
    db = store.open_db()
    return sum(store.device_row_counts(db, name).values())


# ------------------------------------------------------------------ local
def test_local_cannot_be_registered_or_removed(agents):
    a, _ = agents
    refused("devices", "register", "local", "--agent", a.address, words=("'local'", "built in"))
    refused("devices", "register", "local", "--agent", a.address, "--replace", "--keep-rows", words=("'local'",))
    refused("devices", "remove", "local", words=("built in",))
    assert devices()["local"]["transport"] == {"type": "local"}


def test_a_local_row_left_by_older_versions_does_not_re_point_local():
    db = store.open_db()
    with db.conn:
        db["devices"].insert({"name": "local", "kind": "board", "transport_json": '{"type": "agent", "address": "10.0.0.1:1"}',
                              "facts_json": "{}", "status": "available", "first_seen": 1.0, "last_seen": 1.0})
    assert devices()["local"]["transport"] == {"type": "local"}
    assert Registry(db).get("local").transport == {"type": "local"}


# ------------------------------------------------------------------ re-registering
def test_a_taken_name_is_refused_before_the_new_address_is_contacted(agents):
    a, _ = agents
    cli("devices", "register", "rpi5", "--agent", a.address)
    add_rows("rpi5")
    nobody = f"127.0.0.1:{free_port()}"  # nothing listens: a refusal here proves nothing was contacted
    refused("devices", "register", "rpi5", "--agent", nobody, words=("already registered", a.address, "3 rows", "--replace"))
    refused("devices", "register", "rpi5", "--agent", nobody, "--replace", words=("--keep-rows", "--drop-rows"))
    refused("devices", "register", "rpi5", "--agent", nobody, "--keep-rows", words=("--replace",))
    refused("devices", "register", "rpi5", "--agent", nobody, "--replace", "--keep-rows", "--drop-rows", words=("only one",))
    assert devices()["rpi5"]["transport"]["address"] == a.address
    assert lut_keys("rpi5") == ["add:h0", "add:h1", "add:h2"]


def test_registering_the_same_board_at_the_same_address_refreshes_it(agents):
    a, _ = agents
    cli("devices", "register", "rpi5", "--agent", a.address)
    add_rows("rpi5")
    first = devices()["rpi5"]
    cli("devices", "register", "rpi5", "--agent", a.address)
    again = devices()["rpi5"]
    assert again["first_seen"] == first["first_seen"] and again["last_seen"] >= first["last_seen"]
    assert lut_keys("rpi5") == ["add:h0", "add:h1", "add:h2"]


def test_replace_keep_rows_re_points_the_name_with_its_rows(agents):
    a, b = agents
    cli("devices", "register", "rpi5", "--agent", a.address)
    add_rows("rpi5")
    cli("devices", "register", "rpi5", "--agent", b.address, "--replace", "--keep-rows")
    assert devices()["rpi5"]["transport"]["address"] == b.address
    assert lut_keys("rpi5") == ["add:h0", "add:h1", "add:h2"]


def test_replace_drop_rows_deletes_every_row_of_the_name(agents):
    a, b = agents
    cli("devices", "register", "rpi5", "--agent", a.address)
    add_rows("rpi5")
    add_rows("other")
    cli("devices", "register", "rpi5", "--agent", b.address, "--replace", "--drop-rows")
    assert devices()["rpi5"]["transport"]["address"] == b.address
    assert lut_keys("rpi5") == [] and all_rows("rpi5") == 0
    assert all_rows("other") == 7  # only that name's rows: 3 measurements, their history, its predictor


def test_replace_asks_when_interactive(agents, monkeypatch):
    a, b = agents
    cli("devices", "register", "rpi5", "--agent", a.address)
    add_rows("rpi5")
    import edgelat.cli.devices as cli_devices

    monkeypatch.setattr(cli_devices, "_interactive", lambda: True)  # a terminal (CliRunner's stdin is not)
    r = cli("devices", "register", "rpi5", "--agent", b.address, "--replace", input="drop\n")
    assert "keep the name's rows" in r.output
    assert all_rows("rpi5") == 0


# ------------------------------------------------------------------ identity
def _registered_as_another_board(name: str) -> None:
    """What the registry holds when ``name`` was registered for a different board than
    the one now answering at its address (another host name and CPU)."""
    conn = sqlite3.connect(config.db_path())
    facts = json.loads(conn.execute("select facts_json from devices where name = ?", [name]).fetchone()[0])
    facts.update(hostname="board-that-was-here", cpu_model="Cortex-A53")
    with conn:
        conn.execute("update devices set facts_json = ?, fingerprint = ? where name = ?",
                     [json.dumps(facts), fingerprint(facts), name])
    conn.close()


def test_a_name_answering_as_another_board_is_refused_and_nothing_is_stored(agents):
    a, _ = agents
    cli("devices", "register", "rpi5", "--agent", a.address)
    add_rows("rpi5")
    _registered_as_another_board("rpi5")
    before = all_rows("rpi5")
    refused("profile", "ops", "--device", "rpi5", "--preset", "smoke", *FAST,
            words=("answers as another board", "board-that-was-here", "--replace"))
    assert all_rows("rpi5") == before
    # registering the name again at the same address is refused too, unless the rows are decided on
    refused("devices", "register", "rpi5", "--agent", a.address, words=("another board", "--drop-rows"))
    cli("devices", "register", "rpi5", "--agent", a.address, "--replace", "--drop-rows")
    assert all_rows("rpi5") == 0
    out = json.loads(cli("profile", "ops", "--device", "rpi5", "--preset", "smoke", "--json", *FAST).output)
    assert out and all_rows("rpi5") > 0


def test_the_fingerprint_is_stored_at_registration(agents):
    a, _ = agents
    cli("devices", "register", "rpi5", "--agent", a.address)
    dev = devices()["rpi5"]
    facts = json.loads(cli("devices", "show", "rpi5", "--json").output)["facts"]
    assert dev["fingerprint"] and dev["fingerprint"] == fingerprint(facts)
    assert {"hostname", "cpu_model", "arch", "cores"} <= set(identity(facts))


def test_identity_compares_only_what_both_sides_report():
    old = {"hostname": "a", "cpu_model": "X", "cores": 4, "memory_total_bytes": 1}
    assert identity_change(old, {**old, "memory_total_bytes": 2, "cpu_freq_khz": {}}) is None
    assert identity_change(old, {"hostname": "a"}) is None
    assert identity_change(old, {**old, "cores": 8}) == "cores 4 -> 8"
    assert identity({"transport": {"serial": "1A2B"}}) == {"serial": "1A2B"}  # a phone's USB serial


def test_registry_refuses_without_the_cli(tmp_path):
    reg = Registry(store.open_db(tmp_path / "r.db"))
    reg.register("b1", "board", {"type": "agent", "address": "127.0.0.1:1"}, {"hostname": "h1"})
    with pytest.raises(DeviceMismatch):
        reg.register("b1", "board", {"type": "agent", "address": "127.0.0.1:1"}, {"hostname": "h2"})
    with pytest.raises(BadInput):
        reg.register("local", "host", {"type": "local"}, {})
    with pytest.raises(BadInput):
        reg.register("b1", "board", {"type": "agent", "address": "127.0.0.1:1"}, {}, replace="maybe")


# ------------------------------------------------------------------ remove
def test_remove_deletes_the_rows_and_the_name_starts_empty(agents):
    a, _ = agents
    cli("devices", "register", "rpi5", "--agent", a.address)
    add_rows("rpi5")
    r = cli("devices", "remove", "rpi5")
    assert "3 rows" in r.output
    assert "rpi5" not in devices() and all_rows("rpi5") == 0
    cli("devices", "register", "rpi5", "--agent", a.address)
    assert lut_keys("rpi5") == []


def test_remove_keep_rows_archives_them_where_lut_show_reaches(agents):
    a, _ = agents
    cli("devices", "register", "rpi5", "--agent", a.address)
    add_rows("rpi5")
    r = cli("devices", "remove", "rpi5", "--keep-rows")
    archive = next(name for name in devices() if name.startswith("rpi5.archived-"))
    assert archive in r.output and "3 rows" in r.output
    assert devices()[archive]["kind"] == "archived"
    assert lut_keys(archive) == ["add:h0", "add:h1", "add:h2"]
    cli("devices", "register", "rpi5", "--agent", a.address)
    assert lut_keys("rpi5") == []  # the re-registered name does not pick the old rows up
    refused("profile", "ops", "--device", archive, "--preset", "smoke", *FAST, words=("archived", "cannot run models"))
    cli("devices", "remove", archive)
    assert all_rows(archive) == 0


def test_remove_keep_rows_of_a_name_without_rows_leaves_no_empty_archive(agents):
    a, _ = agents
    cli("devices", "register", "rpi5", "--agent", a.address)
    r = cli("devices", "remove", "rpi5", "--keep-rows")
    assert r.output.strip() == "removed rpi5; it had no rows to archive"
    assert not [name for name in devices() if "rpi5" in name]


def test_help_documents_the_options():
    assert "--replace" in cli("devices", "register", "--help").output
    assert "--keep-rows" in cli("devices", "remove", "--help").output
    assert "--drop-rows" in cli("devices", "register-phone", "--help").output
