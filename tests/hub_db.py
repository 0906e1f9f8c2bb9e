"""Hub database fixtures: every hub queue test runs on SQLite and on a real PostgreSQL.

PostgreSQL comes from ``EDGELAT_TEST_PG`` (a URL) when set; otherwise a throwaway cluster is
created with the installed ``initdb``/``pg_ctl`` (as the ``postgres`` user when running as
root), listening on a free loopback port, for the whole session. When neither works the
PostgreSQL half skips and says why. Each test gets its own schema on that server.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from edgelat.hub.queue import HubStore

ENGINES = ("sqlite", "postgresql")


def _pg_bindir() -> str | None:
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return str(Path(os.path.realpath(found)).parent)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return str(Path(candidates[-1]).parent) if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """A throwaway PostgreSQL cluster in a temporary folder (stopped and removed by ``stop``)."""

    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.port = _free_port()
        self.prefix: list[str] = []
        owner = None
        if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
            import pwd

            owner = pwd.getpwnam("postgres")
        self.dir = tempfile.mkdtemp(prefix="edgelat-pg-")
        if owner is not None:
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            runuser = shutil.which("runuser")
            self.prefix = [runuser, "-u", "postgres", "--"] if runuser else ["su", "postgres", "-s", "/bin/sh", "-c"]
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, args: list[str], timeout: float = 60) -> None:
        if self.prefix and self.prefix[0] == "su":
            import shlex

            cmd = self.prefix + [" ".join(shlex.quote(a) for a in args)]
        else:
            cmd = self.prefix + args
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"{Path(args[0]).name} failed: {tail[0]}")

    def start(self) -> None:
        data = os.path.join(self.dir, "data")
        self._run([os.path.join(self.bindir, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
                   "-E", "UTF8", "--no-sync"])
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run([os.path.join(self.bindir, "pg_ctl"), "-D", data, "-l", os.path.join(self.dir, "log"),
                   "-o", opts, "-w", "-t", "60", "start"], timeout=90)

    def stop(self) -> None:
        try:
            self._run([os.path.join(self.bindir, "pg_ctl"), "-D", os.path.join(self.dir, "data"),
                       "-m", "immediate", "-w", "stop"])
        except (RuntimeError, OSError, subprocess.SubprocessError):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def given_or_throwaway(arg: str | None) -> tuple[str | None, PgCluster | None, str]:
    """For the hub benchmarks: a PostgreSQL URL (``arg``, else ``EDGELAT_TEST_PG``, else a throwaway
    cluster started here), the cluster to stop afterwards (None when given), or why there is none."""
    url = arg or os.environ.get("EDGELAT_TEST_PG")
    if url:
        return url, None, ""
    bindir = _pg_bindir()
    if bindir is None:
        return None, None, "PostgreSQL is not installed; pass --pg URL or set EDGELAT_TEST_PG"
    cluster = PgCluster(bindir)
    try:
        cluster.start()
    except Exception as exc:  # noqa: BLE001 - reported; the SQLite half still runs
        cluster.stop()
        return None, None, f"could not start a throwaway cluster: {exc}"
    return cluster.url, cluster, ""


def _reachable(url: str) -> str | None:
    """None when a PostgreSQL server answers at ``url``, else the reason it does not."""
    try:
        import psycopg
    except ImportError as exc:
        return f"psycopg is not installed ({exc})"
    try:
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means: skip with its reason
        return " ".join(str(exc).split())[:200]
    return None


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str | None]:
    """The base URL of a reachable PostgreSQL, or a skip with the reason there is none."""
    url = os.environ.get("EDGELAT_TEST_PG")
    if url:
        why = _reachable(url)
        if why:
            pytest.skip(f"EDGELAT_TEST_PG={url} is not reachable: {why}")
        yield url
        return
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb/pg_ctl on PATH or in /usr/lib/postgresql); "
                    "install Debian's postgresql or set EDGELAT_TEST_PG=postgresql://...")
    cluster: PgCluster | None = None
    try:
        cluster = PgCluster(bindir)
        cluster.start()
        why = _reachable(cluster.url)
        if why:
            raise RuntimeError(why)
    except (RuntimeError, OSError, KeyError, subprocess.SubprocessError) as exc:
        if cluster is not None:
            cluster.stop()
        pytest.skip(f"could not start a throwaway PostgreSQL cluster: {exc}")
    try:
        yield cluster.url
    finally:
        cluster.stop()


def _pg_schema_url(base: str) -> tuple[str, str]:
    """A fresh schema on the server and a URL whose connections use it."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    sep = "&" if "?" in base else "?"
    return name, f"{base}{sep}options=-csearch_path%3D{name}"


@pytest.fixture(params=ENGINES)
def hub_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty hub database URL: a SQLite file, or a fresh schema on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub.db'}"
        return
    base = request.getfixturevalue("pg_server")
    name, url = _pg_schema_url(base)
    try:
        yield url
    finally:
        import psycopg

        try:
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{name}" CASCADE')
        except psycopg.Error:
            pass


@pytest.fixture
def make_store(hub_url: str) -> Iterator[Callable[..., HubStore]]:
    """Open HubStores on the test's database (several: several hubs); all closed at the end."""
    opened: list[HubStore] = []

    def make(hub_id: str = "hub-a", **kwargs) -> HubStore:
        store = HubStore(hub_url, hub_id=hub_id, **kwargs).open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[..., HubStore]) -> HubStore:
    return make_store()
