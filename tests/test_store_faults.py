"""Storage faults through real commands: one line, exit != 0, no traceback, nothing changed.

Real SQLite files throughout; "disk full" on a real small tmpfs when this process
may mount one, and always through SQLite's page limit (the same SQLITE_FULL).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import pickle
import sqlite3
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgelat import config
from edgelat.values import BenchmarkResult, LatencySummary, RuntimeConfig
from edgelat.cli import main
from edgelat.errors import StoreCorrupt, StoreFull, StoreSchema
from edgelat.lut import schema, store

COMMANDS = (["lut", "show", "--device", "local"], ["devices", "list"])


def _result(median: float) -> BenchmarkResult:
    lat = LatencySummary(median=median, mean=median, std=0.01, p10=median * 0.9, p90=median * 1.1, n=20,
                         rel_ci=0.01, stable=True)
    return BenchmarkResult(model_sha256="0" * 64, config=RuntimeConfig(), latency=lat, energy_note="no sensor")


def seeded_db(n: int = 40) -> Path:
    """The default database with ``n`` kernel rows on ``local`` and a registered board."""
    db = store.open_db()
    for i in range(n):
        store.add_kernel_result(db, "local", f"add:h{i}", "add", {"op": "add", "h": i}, _result(1.0 + i))
    db["devices"].insert({"name": "rpi5", "kind": "board", "transport_json": '{"type": "agent", "address": "127.0.0.1:1"}',
                          "facts_json": "{}", "status": "available", "first_seen": 1.0, "last_seen": 1.0})
    db.conn.commit()
    db.conn.close()
    return config.db_path()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def folder_state(folder: Path) -> dict[str, str]:
    """Every file of the folder and its hash (a damaged database must not gain a new sibling)."""
    return {p.name: digest(p) for p in sorted(folder.iterdir()) if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


def run_fails(args: list[str], *expect: str, env: dict[str, str] | None = None) -> str:
    """Run a command that must fail with one line naming ``expect``; returns that line."""
    r = CliRunner().invoke(main, args, env=env)
    assert r.exit_code not in (0, None), r.output
    assert isinstance(r.exception, SystemExit), repr(r.exception)  # not an escaped exception
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert "Traceback" not in r.output
    for word in expect:
        assert word in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------ EDGELAT_HOME
def test_home_is_created_0700_whatever_the_umask(edgelat_home):
    old = os.umask(0)
    try:
        r = CliRunner().invoke(main, ["devices", "list", "--json"])
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(edgelat_home.stat().st_mode) == 0o700
    assert stat.S_IMODE(config.db_path().stat().st_mode) & 0o077 == 0


def test_home_that_is_a_file(edgelat_home):
    edgelat_home.parent.mkdir(parents=True, exist_ok=True)
    edgelat_home.write_text("not a folder")
    for args in COMMANDS:
        run_fails(args, "EDGELAT_HOME", "is a file")
    assert edgelat_home.read_text() == "not a folder"
    # a file further up: the message names it, not the home that was never made
    inner = edgelat_home / "inner"
    for args in COMMANDS:
        line = run_fails(args, env={"EDGELAT_HOME": str(inner)})
        assert line == (f"error: EDGELAT_HOME ({inner}) cannot be created: {edgelat_home} is a file, not a folder: "
                        "move the file away or set EDGELAT_HOME to a folder"), line
    assert edgelat_home.read_text() == "not a folder"


# ------------------------------------------------------------------ damaged files
def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _garbage(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 8192, dtype=np.uint8).tobytes())


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100])


def _damaged_pages(path: Path) -> None:
    """A valid header and schema page, every other page overwritten: found only when read."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    noise = np.random.default_rng(1).integers(0, 256, len(data) - page, dtype=np.uint8).tobytes()
    data[page:] = noise
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, words", [
    (_empty, ("empty (0 bytes)", "left as it is")),
    (_garbage, ("not an SQLite database", "left as it is")),
    (_truncated, ("truncated", "left as it is")),
    (_damaged_pages, ("damaged", "left as it is")),
])
def test_a_damaged_database_is_refused_and_left_as_it_is(damage, words):
    path = seeded_db()
    damage(path)
    before = folder_state(path.parent)
    for args in COMMANDS:
        run_fails(args, *words)
        assert folder_state(path.parent) == before  # never replaced, never a new file beside it


def test_an_empty_database_is_not_replaced_by_open_db():
    path = seeded_db()
    path.write_bytes(b"")
    with pytest.raises(StoreCorrupt, match="0 bytes"):
        store.open_db(path)
    assert path.read_bytes() == b""


def test_creation_is_atomic_and_leaves_no_temporary_file(edgelat_home):
    store.open_db().conn.close()
    assert sorted(p.name for p in edgelat_home.iterdir() if not p.name.endswith(("-wal", "-shm"))) == ["edgelat.db"]


# ------------------------------------------------------------------ schema versions
#: The schema as it was before versioning (user_version 0), written out table by table.
LEGACY_TABLES = [
    """CREATE TABLE "devices" ("name" TEXT PRIMARY KEY, "kind" TEXT, "transport_json" TEXT, "facts_json" TEXT,
       "status" TEXT, "first_seen" REAL, "last_seen" REAL)""",
    """CREATE TABLE "kernel_measurements" ("device" TEXT, "config_key" TEXT, "runtime" TEXT, "runtime_version" TEXT,
       "threads" INTEGER, "provider" TEXT, "precision" TEXT, "kernel_key" TEXT, "op" TEXT, "spec_json" TEXT,
       "median_ms" REAL, "mean_ms" REAL, "std_ms" REAL, "p10_ms" REAL, "p90_ms" REAL, "n" INTEGER, "rel_ci" REAL,
       "stable" INTEGER, "session_ms" REAL, "first_run_ms" REAL, "energy_mj" REAL, "energy_note" TEXT,
       "peak_memory_bytes" INTEGER, "environment_json" TEXT, "agent_version" TEXT, "measured_at" REAL,
       PRIMARY KEY ("device", "config_key", "kernel_key"))""",
    """CREATE INDEX "idx_kernel_measurements_device_config_key_op" ON "kernel_measurements" ("device", "config_key", "op")""",
    """CREATE TABLE "model_measurements" ("device" TEXT, "config_key" TEXT, "runtime" TEXT, "runtime_version" TEXT,
       "threads" INTEGER, "provider" TEXT, "precision" TEXT, "model_ref" TEXT, "model_name" TEXT,
       "median_ms" REAL, "mean_ms" REAL, "std_ms" REAL, "p10_ms" REAL, "p90_ms" REAL, "n" INTEGER, "rel_ci" REAL,
       "stable" INTEGER, "session_ms" REAL, "first_run_ms" REAL, "energy_mj" REAL, "energy_note" TEXT,
       "peak_memory_bytes" INTEGER, "environment_json" TEXT, "agent_version" TEXT, "measured_at" REAL,
       PRIMARY KEY ("device", "config_key", "model_ref"))""",
    """CREATE TABLE "arch_measurements" ("space" TEXT, "arch" TEXT, "device" TEXT, "latency_ms" REAL, "source" TEXT,
       PRIMARY KEY ("space", "arch", "device"))""",
    """CREATE INDEX "idx_arch_measurements_space_device" ON "arch_measurements" ("space", "device")""",
    """CREATE TABLE "kernel_predictors" ("device" TEXT, "config_key" TEXT, "n_rows" INTEGER, "fitted_at" REAL,
       "sklearn_version" TEXT, "meta_json" TEXT, "blob" BLOB, PRIMARY KEY ("device", "config_key"))""",
    """CREATE TABLE "fusion_rules" ("device" TEXT, "config_key" TEXT, "op" TEXT, "act" TEXT, "verdict" TEXT,
       "fused_ms" REAL, "first_ms" REAL, "second_ms" REAL, "overhead_ms" REAL, "saved_ms" REAL,
       "second_cost_ms" REAL, "measured_at" REAL, PRIMARY KEY ("device", "config_key", "op", "act"))""",
    # predictor_models, kernel_calibrations, arch_predictors, predictor_builds were created on first use:
    # this database never had them
]


class _Trap:
    """Unpickling this creates a marker file: proof that a pickle was (not) loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def legacy_db(path: Path, marker: Path) -> dict[str, list[tuple]]:
    """A database as the unversioned code wrote it, with rows; returns its rows by table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = wal")
    for sql in LEGACY_TABLES:
        conn.execute(sql)
    conn.execute("insert into devices values ('rpi5', 'board', '{\"type\": \"agent\", \"address\": \"127.0.0.1:1\"}', "
                 "'{\"hostname\": \"rpi5\", \"cpu_model\": \"Cortex-A76\"}', 'available', 1.0, 2.0)")
    cfg = RuntimeConfig()
    for i in range(5):
        conn.execute(
            "insert into kernel_measurements (device, config_key, runtime, threads, provider, precision, kernel_key, "
            "op, spec_json, median_ms, n, stable, measured_at) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ["rpi5", cfg.key(), cfg.runtime, cfg.threads, cfg.provider, cfg.precision, f"add:h{i}", "add", "{}",
             1.5 + i, 20, 1, 3.0],
        )
    conn.execute("insert into arch_measurements values ('nasbench201', '|none~0|+|none~0|none~1|+|none~0|none~1|none~2|', "
                 "'rpi5', 4.25, 'x.csv')")
    conn.execute("insert into kernel_predictors values (?, ?, 5, 3.0, '1.0', '{}', ?)",
                 ["rpi5", cfg.key(), pickle.dumps(_Trap(marker))])
    conn.commit()
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    rows = {t: conn.execute(f"select * from {t} order by 1, 2, 3").fetchall()
            for t in ("devices", "kernel_measurements", "arch_measurements", "kernel_predictors")}
    conn.close()
    return rows


def test_an_older_schema_is_migrated_and_keeps_its_rows(tmp_path):
    marker = tmp_path / "unpickled"
    before = legacy_db(config.db_path(), marker)
    r = CliRunner().invoke(main, ["lut", "show", "--device", "rpi5", "--json"])
    assert r.exit_code == 0, r.output
    assert sorted(row["kernel_key"] for row in json.loads(r.output)) == [f"add:h{i}" for i in range(5)]
    conn = sqlite3.connect(config.db_path())
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST
    for table, rows in before.items():
        n = len(rows[0])
        assert [tuple(r[:n]) for r in conn.execute(f"select * from {table} order by 1, 2, 3").fetchall()] == rows
    names = {r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")}
    assert set(schema.BASE_TABLES) <= names  # the tables this database never had were created
    assert "format" in schema.columns(conn, "kernel_predictors")
    assert not marker.exists()


def test_every_migration_runs_once_and_a_fresh_database_equals_a_migrated_one(tmp_path):
    """Fresh databases are built by the same migrations that upgrade old ones."""
    fresh = store.open_db(tmp_path / "fresh.db")
    legacy_db(tmp_path / "old.db", tmp_path / "m")
    old = store.open_db(tmp_path / "old.db")
    store.open_db(tmp_path / "old.db")  # reopening at the latest version changes nothing

    def shape(db):
        return {t: schema.columns(db.conn, t) for t in db.table_names()}

    assert shape(fresh) == shape(old)
    assert schema.version(old.conn) == schema.version(fresh.conn) == len(schema.MIGRATIONS)


def test_a_newer_schema_is_refused():
    path = seeded_db()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {schema.LATEST + 3}")
    conn.commit()
    conn.close()
    before = digest(path)
    for args in COMMANDS:
        run_fails(args, f"schema version {schema.LATEST + 3}", "upgrade edgelat")
    assert digest(path) == before
    with pytest.raises(StoreSchema):
        store.open_db(path)


# ------------------------------------------------------------------ pickles
def test_a_pickled_predictor_is_refused_without_being_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    legacy_db(config.db_path(), marker)
    r = CliRunner().invoke(main, ["devices", "list"])  # migrates
    assert r.exit_code == 0, r.output
    line = run_fails(["predictor", "report", "--device", "rpi5"], "old format", "edgelat predictor build --device rpi5")
    assert "pickle" in line
    assert not marker.exists()


def test_a_predictor_saved_by_another_version_asks_for_a_rebuild(tmp_path):
    """A stored predictor of another data format version (other features) is not read as this one's."""
    from edgelat.predictors.kernel import FORMAT, KernelPredictor

    db = store.open_db()
    cfg = RuntimeConfig()
    other = FORMAT.rsplit("-", 1)[0] + "-1"
    assert other != FORMAT
    db["kernel_predictors"].insert({"device": "local", "config_key": cfg.key(), "n_rows": 1, "fitted_at": 1.0,
                                    "sklearn_version": "x", "meta_json": "{}", "blob": b"", "format": other})
    db.conn.commit()
    with pytest.raises(StoreSchema, match="another version of edgelat"):
        KernelPredictor.load(db, "local", cfg)
    run_fails(["predictor", "report", "--device", "local"], "another version", "edgelat predictor build --device local")


def test_a_pickle_in_a_new_format_row_is_not_loaded_either(tmp_path):
    """Even a row that claims the data format cannot smuggle a pickle: the arrays are
    read with allow_pickle=False."""
    from edgelat.predictors.kernel import FORMAT, KernelPredictor

    marker = tmp_path / "unpickled"
    db = store.open_db()
    cfg = RuntimeConfig()
    meta = {"ops": ["add"], "choice": {"add": "linear"}, "cv_mape": {}, "n_rows": {}, "params": {},
            "state": {"models": {"add": {"kind": "linear", "prefix": "m0/"}}, "cv_pred": {}, "fitted_at": 1.0}}
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([_Trap(marker)], dtype=object), allow_pickle=True)
    db["kernel_predictors"].insert({"device": "local", "config_key": cfg.key(), "n_rows": 1, "fitted_at": 1.0,
                                    "sklearn_version": "x", "meta_json": json.dumps(meta), "blob": buf.getvalue(),
                                    "format": FORMAT})
    db.conn.commit()
    with pytest.raises(StoreCorrupt, match="rebuild it"):
        KernelPredictor.load(db, "local", cfg)
    run_fails(["predictor", "report", "--device", "local"], "damaged", "edgelat predictor build --device local")
    assert not marker.exists()


# ------------------------------------------------------------------ read-only
def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _umount(path: Path) -> None:
    """Unmount a test filesystem (the commands' connections are closed first; lazily if still busy)."""
    gc.collect()
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture(params=["file", "folder"])
def read_only_home(request, tmp_path, edgelat_home, monkeypatch):
    """A database that cannot be written: by permissions (its file, or its folder) for a
    normal user; for root, whom permissions do not stop, on a read-only mount (the file
    case for root is :func:`test_an_immutable_database_file`)."""
    path = seeded_db()
    if os.geteuid() != 0:
        target = path if request.param == "file" else edgelat_home
        target.chmod(0o444 if request.param == "file" else 0o555)
        yield path
        target.chmod(0o600 if request.param == "file" else 0o700)
        return
    if request.param == "file":
        pytest.skip("root writes through file permissions; see test_an_immutable_database_file")
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)):
        pytest.skip("root without permission to mount a read-only filesystem")
    try:
        (mnt / "home").mkdir(mode=0o700)
        (mnt / "home" / path.name).write_bytes(path.read_bytes())
        assert _mount("-o", "remount,ro", str(mnt))
        monkeypatch.setenv("EDGELAT_HOME", str(mnt / "home"))
        yield mnt / "home" / path.name
    finally:
        _umount(mnt)


def test_a_read_only_database_or_folder(read_only_home):
    before = digest(read_only_home)
    for args in COMMANDS:
        run_fails(args, "read-only", "writable")
    assert digest(read_only_home) == before


def test_a_full_disk_when_the_database_is_created(tmp_path, monkeypatch):
    """Creation is all or nothing: a full disk leaves no empty file that would later be refused."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=8k", "tmpfs", str(mnt)):
        pytest.skip("mount is not permitted here")
    try:
        monkeypatch.setenv("EDGELAT_HOME", str(mnt / "home"))
        run_fails(["devices", "list"], "the disk is full", "free some space")
        assert [p.name for p in (mnt / "home").iterdir()] == []
    finally:
        _umount(mnt)


@pytest.mark.skipif(os.geteuid() != 0, reason="chattr +i needs root")
def test_an_immutable_database_file(edgelat_home):
    path = seeded_db()
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem has no immutable flag")
    try:
        before = digest(path)
        for args in COMMANDS:
            run_fails(args, "read-only")
        assert digest(path) == before
    finally:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


# ------------------------------------------------------------------ locked
def test_locked_past_the_timeout():
    path = seeded_db()
    before = digest(path)
    holder = sqlite3.connect(path)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")  # in WAL mode this keeps readers out as well
    try:
        for args in COMMANDS:
            run_fails(args, "locked by another process", "waited 0.2 s", "EDGELAT_DB_TIMEOUT",
                      env={"EDGELAT_DB_TIMEOUT": "0.2"})
    finally:
        holder.rollback()
        holder.close()
    assert digest(path) == before


def test_a_writer_waiting_past_the_timeout_writes_nothing():
    seeded_db()
    holder = sqlite3.connect(config.db_path())
    holder.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    try:
        run_fails(["devices", "remove", "rpi5"], "locked", env={"EDGELAT_DB_TIMEOUT": "0.2"})
    finally:
        holder.rollback()
        holder.close()
    r = CliRunner().invoke(main, ["devices", "list", "--json"])
    assert [d["name"] for d in json.loads(r.output)] == ["local", "rpi5"]
    assert len(store.kernel_rows(store.open_db(), "local")) == 40


def test_a_bad_timeout_value_is_one_line():
    run_fails(["devices", "list"], "EDGELAT_DB_TIMEOUT", env={"EDGELAT_DB_TIMEOUT": "soon"})


# ------------------------------------------------------------------ disk full
def _arch_csv(path: Path, n: int) -> Path:
    from edgelat.profiler.spaces import get_space

    space = get_space("nasbench201")
    archs = sorted(set(space.to_strings(space.sample(np.random.default_rng(0), n))))
    lines = ["arch,pixel3"] + [f"{a},{1.0 + i / 7:.6f}" for i, a in enumerate(archs)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _seed_for_import() -> Path:
    path = seeded_db()
    db = store.open_db()
    db["devices"].insert({"name": "pixel3", "kind": "imported", "transport_json": '{"type": "imported"}',
                          "facts_json": "{}", "status": "imported", "first_seen": 1.0, "last_seen": 1.0})
    db.conn.commit()
    db.conn.close()
    return path


def _rows(path: Path) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    try:
        return (conn.execute("select count(*) from kernel_measurements").fetchone()[0],
                conn.execute("select count(*) from arch_measurements").fetchone()[0])
    finally:
        conn.close()


def test_disk_full_on_a_real_small_filesystem(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    src = _seed_for_import()
    csv_path = _arch_csv(tmp_path / "archs.csv", 15000)
    mnt = tmp_path / "small"
    mnt.mkdir()
    if not _mount("-t", "tmpfs", "-o", f"size={src.stat().st_size + 96 * 1024}", "tmpfs", str(mnt)):
        pytest.skip("mount is not permitted here")
    try:
        home = mnt / "home"
        home.mkdir(mode=0o700)
        (home / src.name).write_bytes(src.read_bytes())
        monkeypatch.setenv("EDGELAT_HOME", str(home))
        before, rows = digest(home / src.name), _rows(home / src.name)
        run_fails(["lut", "import-archs", str(csv_path), "--space", "nasbench201"], "disk")
        assert digest(home / src.name) == before
        assert _rows(home / src.name) == rows  # nothing half-written: the import was one transaction
        r = CliRunner().invoke(main, ["lut", "show", "--device", "local", "--json"])
        assert r.exit_code == 0 and len(json.loads(r.output)) == rows[0]
    finally:
        _umount(mnt)


def test_disk_full_through_the_page_limit(tmp_path, monkeypatch):
    """SQLite's page limit gives the very error a full disk gives (SQLITE_FULL)."""
    path = _seed_for_import()
    csv_path = _arch_csv(tmp_path / "archs.csv", 15000)
    before, rows = digest(path), _rows(path)
    configure = store._configure

    def capped(db, timeout_s):
        configure(db, timeout_s)
        (pages,) = db.conn.execute("PRAGMA page_count").fetchone()
        db.conn.execute(f"PRAGMA max_page_count = {pages + 2}")

    monkeypatch.setattr(store, "_configure", capped)
    line = run_fails(["lut", "import-archs", str(csv_path), "--space", "nasbench201"], "disk is full", "free some space")
    assert digest(path) == before and _rows(path) == rows
    with pytest.raises(StoreFull):
        db = store.open_db()
        with store._faults.translated():
            store.upsert_rows(db, "arch_measurements", [
                {"space": "s", "arch": f"a{i}", "device": "pixel3", "latency_ms": 1.0, "source": "x" * 500}
                for i in range(2000)])
    assert line.count("error:") == 1


# ------------------------------------------------------------------ predictors are data
def test_a_stored_kernel_predictor_is_data_and_predicts_as_before(tmp_path):
    """Forest and boosted regressors go in as numeric arrays (no pickle) and the loaded
    predictor answers as the fitted one did."""
    import io

    from edgelat.predictors.kernel import KernelPredictor, components
    from edgelat.predictors.sampling import KernelSampler

    specs = KernelSampler(0).initial(400)
    rng = np.random.default_rng(0)
    y = np.array([components(s)[1:4].sum() / 1e6 + components(s)[4] / 1e6 + 0.01 for s in specs])
    y *= rng.uniform(0.9, 1.1, len(y))
    ops = sorted({s.op for s in specs})
    cfg = RuntimeConfig()
    db = store.open_db()
    for forced in ("forest", "boosted"):
        model = KernelPredictor(choice={op: forced for op in ops}, n_folds=2).fit(specs, y)
        assert forced in model.choice_.values()
        model.save(db, "local", cfg)
        blob = db.execute("select blob from kernel_predictors").fetchone()[0]
        with np.load(io.BytesIO(blob), allow_pickle=False) as arrays:  # refuses any object array
            assert all(arrays[k].dtype.kind in "iuf" for k in arrays.files)
        loaded = KernelPredictor.load(db, "local", cfg)
        probe = KernelSampler(1).initial(200)
        probe = [s for s in probe if s.op in model.models_]
        assert probe
        np.testing.assert_allclose(loaded.predict_regressors(probe), model.predict_regressors(probe), rtol=1e-12)
        assert loaded.cv_pred_ == model.cv_pred_ and loaded.choice_ == model.choice_


def _wal_with_shm(path: Path) -> tuple[sqlite3.Connection, Path]:
    """A WAL database held open (so its -shm file exists): the connection and that file."""
    conn = sqlite3.connect(path)
    conn.execute("pragma journal_mode=wal")
    conn.execute("create table t (x)")
    conn.commit()
    shm = Path(f"{path}-shm")
    assert shm.exists()
    return conn, shm


def test_a_journal_file_removed_by_another_connection_mid_check_is_not_read_only(tmp_path, monkeypatch):
    """Another connection closing may delete its -shm between our checks (seen with many hub job
    threads on one table): a file that vanished is not a read-only one."""
    from edgelat.lut import faults

    db_path = tmp_path / "edgelat.db"
    conn, shm = _wal_with_shm(db_path)
    real_access = os.access

    def racing_access(p, mode, *a, **kw):
        if Path(p) == shm and shm.exists():
            shm.unlink()  # the other connection closes right now
        return real_access(p, mode, *a, **kw)

    monkeypatch.setattr(faults.os, "access", racing_access)
    faults.preflight(db_path)  # no StoreReadOnly
    conn.close()


def test_a_journal_file_made_again_while_it_was_checked_is_not_called_read_only(tmp_path, monkeypatch):
    """Another connection closing removes the -shm file just as access() looks (it says "not
    writable") and one opening makes it again before exists() does: the file is writable, and
    opening the database must not fail as read-only (a hub's job did, once, under load)."""
    from edgelat.lut import faults

    path = tmp_path / "e.db"
    conn, shm = _wal_with_shm(path)
    calls = {"n": 0}
    real = os.access

    def racing(p, mode, *args, **kwargs):
        if Path(p) == shm:
            calls["n"] += 1
            if calls["n"] == 1:  # gone for that instant
                return False
        return real(p, mode, *args, **kwargs)

    monkeypatch.setattr(faults.os, "access", racing)
    try:
        faults.preflight(path)  # no StoreReadOnly
        assert calls["n"] == 2
        os.chmod(shm, 0o444)
        if real(shm, os.W_OK):  # root: permissions do not stop it, so nothing to refuse
            return
        calls["n"] = 1  # past the race: a file that stays refused is still reported
        with pytest.raises(faults.StoreReadOnly, match="-shm is read-only"):
            faults.preflight(path)
    finally:
        conn.close()
