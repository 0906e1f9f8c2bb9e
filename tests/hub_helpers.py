"""A real hub on loopback (SQLite queue in a temp dir) and real agents dialling out to it."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from edgelat.agents.hub_link import HubLink
from edgelat.agents.local import LocalBackend
from edgelat.values import MeasurementProtocol
from edgelat.hub.client import FINAL, HubClient
from edgelat.hub.server import Hub

FAST = MeasurementProtocol(warmup=1, min_runs=3, max_runs=10, max_seconds=0.2)
FAST_DICT = {"warmup": 1, "min_runs": 3, "max_runs": 10, "max_seconds": 0.2}


@contextlib.contextmanager
def running_hub(tmp_path: Path, **kwargs: Any) -> Iterator[Hub]:
    kwargs.setdefault("db_url", f"sqlite:///{tmp_path / 'hub.db'}")
    kwargs.setdefault("heartbeat_s", 0.5)
    kwargs.setdefault("expire_every_s", 0.5)
    hub = Hub(listen="127.0.0.1:0", **kwargs).start()
    try:
        yield hub
    finally:
        hub.stop()


class RunningLink:
    """An agent's link in a thread; ``stop()`` ends it for good, ``link.cut()`` breaks its stream."""

    def __init__(self, link: HubLink) -> None:
        self.link = link
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.link.run(self.stop_event)
        except BaseException as exc:  # kept for the test to look at
            self.error = exc

    def stop(self) -> None:
        self.stop_event.set()
        self.link.cut()
        self.thread.join(10)
        self.link.close()


@contextlib.contextmanager
def running_link(hub: Hub, token: str, device: str = "dev1", agent_id: str | None = None,
                 wait: bool = True) -> Iterator[RunningLink]:
    link = HubLink(hub.address, token, {device: LocalBackend()}, agent_id=agent_id or f"agent-{device}",
                   heartbeat_s=0.5, backoff_max_s=1.0)
    running = RunningLink(link)
    running.thread.start()
    try:
        if wait:
            assert link.connected.wait(20), f"the link never connected: {running.error}"
            deadline = time.monotonic() + 20
            while device not in hub.fleet.devices() and time.monotonic() < deadline:
                time.sleep(0.05)
        yield running
    finally:
        running.stop()


def tokens(hub: Hub, agent_devices: list[str] | None = None) -> dict[str, str]:
    """An admin, a user (alice) and an agent token (for ``agent_devices``, default dev1)."""
    return {
        "admin": hub.store.create_token("root", "admin"),
        "user": hub.store.create_token("alice", "user"),
        "agent": hub.store.create_token("lab-pc", "agent", devices=agent_devices or ["dev1"]),
    }


def wait_final(client: HubClient, job_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(job_id)
        if job["state"] in FINAL:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end: {client.get(job_id)}")


def wait_for(predicate: Any, timeout_s: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def invoke(*args: Any, env: dict[str, str] | None = None) -> Any:
    """The CLI run in-process (CliRunner), every argument as a string."""
    from click.testing import CliRunner

    from edgelat.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def hub_env(hub: Hub, secret: str, tmp_path: Path, name: str = "alice") -> dict[str, str]:
    """The environment that sends every command through ``hub`` with ``secret`` (a private token file)."""
    path = tmp_path / f"{name}.tok"
    path.write_text(secret)
    path.chmod(0o600)
    return {"EDGELAT_HUB": hub.address, "EDGELAT_TOKEN_FILE": str(path)}
