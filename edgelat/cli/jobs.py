"""``edgelat jobs``: the jobs of a hub; and the remote mode other commands share.

With ``EDGELAT_HUB`` (or ``--hub``) set, ``profile ops|model``, ``predictor build``,
``search`` and ``devices list`` go through the hub: a command becomes a job,
``--detach`` prints its id, without it the command follows the job and prints what
it prints locally. The read commands (``lut show|export|history``, ``predict``,
``predictor list|report``) read a local copy of the hub's rows (:func:`hub_reads`).
"""

from __future__ import annotations

import datetime as _dt
import functools
from typing import Any, Callable

import click

from edgelat.cli.base import EdgelatGroup, emit_json, json_option, main, progress_lines, stdout_console


@main.group(cls=EdgelatGroup)
def jobs() -> None:
    """List, show, follow, cancel and retry the jobs of a hub (EDGELAT_HUB)."""


def hub_options(f: Callable) -> Callable:
    """``--hub``/``--token-file``: which hub, as whom (default: EDGELAT_HUB, EDGELAT_TOKEN_FILE)."""

    @click.option("--hub", "hub", default=None, metavar="HOST:PORT",
                  help="Go through this hub [default: $EDGELAT_HUB; unset: work locally].")
    @click.option("--token-file", "hub_token_file", type=click.Path(dir_okay=False), default=None,
                  help="The hub token [default: $EDGELAT_TOKEN_FILE].")
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return f(*args, **kwargs)

    return wrapper


def hub_reads(refused: dict[str, str] | None = None, device_param: str = "device") -> Callable[[Callable], Callable]:
    """``--hub``/``--token-file`` on a read command (``lut show``, ``predict``, ...): through a hub the
    command runs unchanged against a local copy of the hub's rows of its ``--device`` (the
    parameter ``device_param`` names; of every
    device the token may read when it has none), refreshed when they changed
    (:mod:`edgelat.hub.reads`). ``refused`` maps options that cannot work on a copy (they would
    measure or write) to the line that refuses them through a hub."""

    def decorate(f: Callable) -> Callable:
        @functools.wraps(f)
        def wrapper(*args: Any, hub: str | None = None, hub_token_file: str | None = None, **kwargs: Any) -> Any:
            if not remote(hub):
                return f(*args, **kwargs)
            from edgelat.errors import BadInput
            from edgelat.hub.reads import hub_tables

            for option, line in (refused or {}).items():
                if kwargs.get(option):
                    raise BadInput(line)
            with hub_tables(hub, hub_token_file, kwargs.get(device_param)):
                return f(*args, **kwargs)

        return hub_options(wrapper)

    return decorate


def detach_option(f: Callable) -> Callable:
    return click.option("--detach", is_flag=True,
                        help="With a hub: print the job id and return; the job runs on the hub.")(f)


def client(hub: str | None, token_file: str | None) -> Any:
    from edgelat.hub.client import HubClient

    return HubClient.from_env(hub, token_file)


def remote(hub: str | None) -> bool:
    """Whether this command goes through a hub."""
    from edgelat.hub.client import configured

    return bool(configured(hub))


def _when(ts: Any) -> str:
    if not ts:
        return "-"
    if isinstance(ts, str):
        return ts[:16].replace("T", " ")
    return _dt.datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M:%S")


#: how long following a job waits for a hub that went away (restarted) before giving up
FOLLOW_OUTAGE_S = 120.0


def follow(c: Any, job: dict[str, Any], label: str, quiet: bool) -> dict[str, Any]:
    """Follow a job to its end with a progress bar on stderr; returns the final job. A hub that
    restarts meanwhile is waited for (the job is kept in its database)."""
    import time

    from edgelat.hub.client import FINAL, HubUnreachable

    job_id = job["id"]
    down_since: float | None = None
    try:
        with progress_lines(label, max(1, int(job.get("total") or 1)), quiet) as bar:
            while True:
                try:
                    for job in c.watch(job_id):
                        down_since = None
                        if job.get("total"):
                            bar.total = float(job["total"])
                        if job.get("done") is not None:
                            bar.update(int(job["done"]), str(job.get("message") or job["state"]))
                        if job["state"] in FINAL:
                            return job
                    return c.get(job_id)
                except HubUnreachable:
                    now = time.monotonic()
                    if down_since is None:
                        down_since = now
                        if not quiet:
                            click.echo(f"the hub went away; waiting for it (the job {job_id} is kept)", err=True)
                    elif now - down_since > FOLLOW_OUTAGE_S:
                        raise
                    time.sleep(1.0)
    except KeyboardInterrupt:
        click.echo(f"\nthe job {job_id} goes on on the hub: edgelat jobs watch {job_id}", err=True)
        raise


def submit(hub: str | None, token_file: str | None, kind: str, device: str, config: dict[str, Any],
           params: dict[str, Any], detach: bool, as_json: bool, label: str, priority: int = 0) -> dict[str, Any] | None:
    """Submit a job; with ``detach`` print its id and return None, else follow it and return the final job
    (raising the job's error when it failed or was cancelled)."""
    from edgelat.errors import DeviceError, EdgelatError

    with client(hub, token_file) as c:
        job, note = c.submit(kind, device, config, params, priority=priority)
        if note:
            click.echo(f"note: {note}", err=True)
        if detach:
            if as_json:
                emit_json({"job": job["id"]})
            else:
                click.echo(job["id"])
            return None
        if not as_json:
            click.echo(f"job {job['id']} submitted to {c.address}", err=True)
        job = follow(c, job, label, as_json)
    if job["state"] == "failed":
        raise DeviceError(f"job {job['id']} failed: {job.get('error') or 'no reason given'}")
    if job["state"] == "cancelled":
        raise EdgelatError(f"job {job['id']} was cancelled")
    return job


def _progress(job: dict[str, Any]) -> str:
    total = job.get("total") or 0
    return f"{job.get('done') or 0}/{total}" if total else "-"


@jobs.command("list")
@click.option("--state", type=click.Choice(["queued", "running", "done", "failed", "cancelled"]), default=None,
              help="Only jobs in this state.")
@click.option("--device", default=None, help="Only jobs for this device.")
@click.option("--user", default=None, help="Only this user's jobs (admins; users see their own).")
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True, help="At most this many.")
@hub_options
@json_option
def list_cmd(state: str | None, device: str | None, user: str | None, limit: int, hub: str | None,
             hub_token_file: str | None, as_json: bool) -> None:
    """List jobs, newest first.

    \b
    Example:
      edgelat jobs list --state running
      edgelat jobs list --json | jq '.[].id'
    """
    with client(hub, hub_token_file) as c:
        rows = c.list_jobs(user=user, state=state, device=device, limit=limit)
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table("id", "state", "user", "device", "kind", "progress", "updated")
    for j in rows:
        table.add_row(str(j["id"]), j["state"], str(j.get("user")), str(j.get("device")), str(j.get("kind")),
                      _progress(j), _when(j.get("updated_at")))
    stdout_console().print(table)


def _print_job(job: dict[str, Any]) -> None:
    click.echo(f"{job['id']}  {job['state']}  {job.get('kind')} on {job.get('device')} for {job.get('user')}")
    click.echo(f"progress: {_progress(job)}  {job.get('message') or ''}".rstrip())
    if job.get("error"):
        click.echo(f"error: {job['error']}")


@jobs.command("show")
@click.argument("job_id")
@hub_options
@json_option
def show_cmd(job_id: str, hub: str | None, hub_token_file: str | None, as_json: bool) -> None:
    """Show a job: state, who ran it, device, progress, error, result.

    \b
    Example:
      edgelat jobs show 3f2a9c --json
    """
    with client(hub, hub_token_file) as c:
        job = c.get(job_id)
    if as_json:
        emit_json(job)
    else:
        _print_job(job)


@jobs.command("watch")
@click.argument("job_id")
@hub_options
@json_option
def watch_cmd(job_id: str, hub: str | None, hub_token_file: str | None, as_json: bool) -> None:
    """Follow a job until it ends (progress on stderr), then show it.

    \b
    Example:
      edgelat jobs watch 3f2a9c
    """
    with client(hub, hub_token_file) as c:
        job = follow(c, c.get(job_id), "job", as_json)
    if as_json:
        emit_json(job)
    else:
        _print_job(job)


@jobs.command("cancel")
@click.argument("job_id")
@hub_options
@json_option
def cancel_cmd(job_id: str, hub: str | None, hub_token_file: str | None, as_json: bool) -> None:
    """Cancel a job; a running one stops at its next measurement (rows stored so far stay).

    \b
    Example:
      edgelat jobs cancel 3f2a9c
    """
    with client(hub, hub_token_file) as c:
        job = c.cancel(job_id)
    if as_json:
        emit_json(job)
    else:
        click.echo(f"job {job['id']}: {job['state']}")


@jobs.command("retry")
@click.argument("job_id")
@hub_options
@json_option
def retry_cmd(job_id: str, hub: str | None, hub_token_file: str | None, as_json: bool) -> None:
    """Queue a failed or cancelled job again (it skips what its device's table already holds).

    \b
    Example:
      edgelat jobs retry 3f2a9c
    """
    with client(hub, hub_token_file) as c:
        job = c.retry(job_id)
    if as_json:
        emit_json(job)
    else:
        click.echo(f"job {job['id']}: {job['state']}")


def devices_list(hub: str | None, token_file: str | None, as_json: bool) -> None:
    """``devices list`` through a hub: state (online, busy, offline, quarantined), last seen, facts."""
    with client(hub, token_file) as c:
        rows = c.devices()
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table("name", "state", "agent", "last seen", "arch", "cpu")
    for r in rows:
        facts = r.get("facts") or {}
        table.add_row(r["name"], r["state"], str(r.get("agent_id") or "-"), _when(r.get("last_seen")),
                      str(facts.get("arch") or "-"), str(facts.get("cpu_model") or "-"))
    stdout_console().print(table)


RUNNER_REFUSED = ("--runner is not available through a hub: the on-device runner is chosen on the host the phone "
                  "is plugged into, by the agent that serves it ('edgelat agent adb --hub ... --runner NAME'), and a "
                  "job does not pick binaries on that host")


def profile_ops(device: str, preset: str | None, ops_file: str | None, space: str | None, force: bool,
                rounds: int | None, runtime_config: Any, protocol: Any, runner: str | None, as_json: bool,
                hub: str | None, token_file: str | None, detach: bool) -> dict[str, Any] | None:
    """``profile ops`` through a hub: the kernels travel as data (a preset or built-in space by name,
    an --ops file or a YAML space as its list of kernels), never as a path on the hub."""
    import dataclasses

    from edgelat.errors import BadInput

    if runner is not None:
        raise BadInput(RUNNER_REFUSED)
    if sum(x is not None for x in (preset, ops_file, space)) > 1:
        raise BadInput("give one of --preset, --ops or --space")
    params: dict[str, Any]
    if ops_file is not None:
        from edgelat.profiler.ops import load_specs

        params = {"specs": [s.to_dict() for s in load_specs(ops_file)]}
    elif space is not None:
        from edgelat.profiler.spaces import BUILTIN, get_space

        params = {"space": space} if space in BUILTIN else \
            {"specs": [s.to_dict() for s in get_space(space).kernel_vocabulary()]}
    else:
        params = {"preset": preset or "mobilenet"}
    params["protocol"] = dataclasses.asdict(protocol)
    if force:  # measured again: the kernels whose row predates the job (a resumed job keeps what it re-measured)
        params["force"] = True
    if rounds is not None:
        params["rounds"] = rounds
    config = {k: v for k, v in runtime_config.to_dict().items() if k != "version"}
    job = submit(hub, token_file, "profile-ops", device, config, params, detach, as_json, "profiling")
    return None if job is None else dict(job.get("result") or {})


def profile_model(path: str, device: str, runtime_config: Any, protocol: Any, runner: str | None,
                  runtime_given: bool, as_json: bool, hub: str | None, token_file: str | None,
                  detach: bool, state: str = "warm", settle_s: float | None = None
                  ) -> tuple[Any, dict[str, Any]] | None:
    """``profile model`` through a hub: the model is read here (self-contained) and travels inside
    the job; returns the model read and the command's ``--json`` object, or None with ``--detach``."""
    import base64
    import dataclasses

    from edgelat.agents.cache import sha256_bytes
    from edgelat.errors import BadInput
    from edgelat.hub.kinds import MAX_MODEL_BYTES
    from edgelat.profiler.intake import read_model

    if runner is not None:
        raise BadInput(RUNNER_REFUSED)
    m = read_model(path)
    if len(m.data) > MAX_MODEL_BYTES:
        raise BadInput(f"{m.path}: {len(m.data) >> 20} MiB is over the {MAX_MODEL_BYTES >> 20} MiB a hub job "
                       "may carry; profile it on the device directly")
    if not runtime_given and m.format == "tflite":
        runtime_config = dataclasses.replace(runtime_config, runtime="litert")
    params = {"model_b64": base64.b64encode(m.data).decode("ascii"), "sha256": sha256_bytes(m.data),
              "format": m.format, "name": m.name, "path": str(m.path), "protocol": dataclasses.asdict(protocol)}
    if state != "warm":
        params["state"] = state
        if settle_s is not None:
            params["settle_s"] = settle_s
    config = {k: v for k, v in runtime_config.to_dict().items() if k != "version"}
    job = submit(hub, token_file, "profile-model", device, config, params, detach, as_json, "profiling")
    if job is None:
        return None
    out = dict(job.get("result") or {})
    if "notes" in out:
        out["notes"] = list(m.notes)  # what reading the file here found (the hub saw only the bytes)
    return m, out


def predictor_build(device: str, budget_s: float, seed: int, runtime_config: Any, as_json: bool,
                    hub: str | None, token_file: str | None, detach: bool) -> dict[str, Any] | None:
    """``predictor build`` through a hub; returns the build's summary (None with ``--detach``)."""
    from edgelat.errors import DeviceError

    config = {k: v for k, v in runtime_config.to_dict().items() if k != "version"}
    job = submit(hub, token_file, "predictor-build", device, config, {"budget_s": budget_s, "seed": seed}, detach,
                 as_json, "building")
    if job is None:
        return None
    result = job.get("result") or {}
    if result.get("interrupted"):
        raise DeviceError(result["interrupted"])
    return result
