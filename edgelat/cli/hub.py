"""``edgelat hub``: serve a lab's shared hub, make its tokens."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from edgelat.cli.base import EdgelatGroup, emit_json, json_option, main


@main.group(cls=EdgelatGroup)
def hub() -> None:
    """Share a device fleet: one hub that agents dial out to and users submit jobs to."""


def _shown_url(url: str) -> str:
    """A database URL with its password hidden (it goes to a terminal or a log)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


@hub.command("serve")
@click.option("--listen", default="127.0.0.1:50100", show_default=True, metavar="HOST:PORT",
              help="Address to listen on (every call needs a token); port 0 picks a free port.")
@click.option("--db", "db_url", default=None, metavar="URL",
              help="Queue database: sqlite:///PATH or postgresql://USER@HOST/DB "
                   "[default: SQLite in $EDGELAT_HOME/hub.db].")
@click.option("--tls-cert", type=click.Path(dir_okay=False), default=None, help="PEM certificate (with --tls-key).")
@click.option("--tls-key", type=click.Path(dir_okay=False), default=None, help="PEM private key of --tls-cert.")
@click.option("--heartbeat-timeout-s", type=click.FloatRange(1, 300), default=20.0, show_default=True,
              help="Drop an agent silent this long; its job goes back to the queue.")
@click.option("--lease-ttl-s", type=click.FloatRange(1, 3600), default=20.0, show_default=True,
              help="A lease not renewed this long expires (a hub killed mid-job) and its job is requeued.")
def serve_cmd(listen: str, db_url: str | None, tls_cert: str | None, tls_key: str | None,
              heartbeat_timeout_s: float, lease_ttl_s: float) -> None:
    """Run the hub: agents dial in, users' jobs queue in its database and run on their devices.

    Results land in the hub's own tables ($EDGELAT_HOME of the hub). Prints one
    line when it is ready; stop it with Ctrl-C or SIGTERM (queued and running
    jobs are kept and resume at the next start).

    \b
    Examples:
      edgelat hub serve --listen 0.0.0.0:50100 --tls-cert c.pem --tls-key k.pem
      edgelat hub serve --db postgresql://hub@db/edgelat
    """
    import logging

    from edgelat.hub.server import default_db_url, serve

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    url = db_url or default_db_url()

    def ready(h: Any) -> None:
        tls = ", TLS" if tls_cert else ""
        click.echo(f"edgelat hub listening on {h.address} (hub {h.hub_id}, db {_shown_url(url)}{tls})")
        sys.stdout.flush()

    serve(on_ready=ready, listen=listen, db_url=url, tls_cert=tls_cert, tls_key=tls_key,
          heartbeat_timeout_s=heartbeat_timeout_s, lease_ttl_s=lease_ttl_s)


@hub.group("token", cls=EdgelatGroup)
def token() -> None:
    """Create and revoke the hub's tokens (roles: admin, user, agent)."""


def write_secret(path: str, secret: str) -> None:
    """Write a token file readable by its owner only (0600), replacing one already there."""
    from edgelat.errors import BadInput

    file = Path(path).expanduser()
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret + "\n")
        os.chmod(file, 0o600)
    except OSError as exc:
        raise BadInput(f"cannot write the token file {path}: {exc.strerror or exc}") from None


@token.command("create")
@click.option("--user", required=True, help="Who the token is for (recorded on every job it submits).")
@click.option("--role", type=click.Choice(["admin", "user", "agent"]), required=True,
              help="admin: tokens and every job; user: submit and read own jobs; agent: serve devices.")
@click.option("--devices", default=None, metavar="A,B",
              help="Devices the token may use (user) or serve (agent) [default: any].")
@click.option("--expires-days", type=click.FloatRange(min=0, min_open=True), default=None,
              help="The token stops working after this many days [default: never].")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write the secret to this file (mode 0600) instead of printing it.")
@click.option("--db", "db_url", default=None, metavar="URL", help="The hub's database [default: $EDGELAT_HOME/hub.db].")
@click.option("--hub", "hub_address", default=None, metavar="HOST:PORT",
              help="Ask a running hub instead of its database (needs an admin EDGELAT_TOKEN_FILE).")
@json_option
def token_create(user: str, role: str, devices: str | None, expires_days: float | None, out: str | None,
                 db_url: str | None, hub_address: str | None, as_json: bool) -> None:
    """Create a token; the secret is shown once (the hub keeps only its hash).

    \b
    Examples:
      edgelat hub token create --user admin --role admin --out admin.tok
      edgelat hub token create --user alice --role user --out alice.tok
      edgelat hub token create --user lab-pc --role agent --devices pixel7,rpi5 --out agent.tok
    """
    names = [d.strip() for d in devices.split(",") if d.strip()] if devices else None
    expires_s = expires_days * 86400 if expires_days else None
    if hub_address:
        from edgelat.hub.client import HubClient

        with HubClient.from_env(hub_address) as client:
            secret = client.create_token(user, role, devices=names, expires_s=expires_s)
    else:
        from edgelat.hub.queue import HubStore
        from edgelat.hub.server import default_db_url

        store = HubStore(db_url or default_db_url()).open()
        try:
            secret = store.create_token(user, role, devices=names, expires_s=expires_s)
        finally:
            store.close()
    if out:
        write_secret(out, secret)
    info = {"user": user, "role": role, "devices": names, "file": str(Path(out).resolve()) if out else None}
    if as_json:
        emit_json(info if out else {**info, "secret": secret})
    elif out:
        click.echo(f"{role} token for {user} written to {out} (mode 0600)")
    else:
        click.echo(secret)


@token.command("revoke")
@click.option("--user", required=True, help="Revoke every token of this user.")
@click.option("--db", "db_url", default=None, metavar="URL", help="The hub's database [default: $EDGELAT_HOME/hub.db].")
def token_revoke(user: str, db_url: str | None) -> None:
    """Revoke every token of a user (their running jobs go on; new calls are refused).

    \b
    Example:
      edgelat hub token revoke --user alice
    """
    from edgelat.hub.queue import HubStore
    from edgelat.hub.server import default_db_url

    store = HubStore(db_url or default_db_url()).open()
    try:
        n = store.revoke_token(user)
    finally:
        store.close()
    click.echo(f"revoked {n} token(s) of {user}")


@hub.command("unquarantine")
@click.argument("device")
@click.option("--db", "db_url", default=None, metavar="URL", help="The hub's database [default: $EDGELAT_HOME/hub.db].")
def unquarantine(device: str, db_url: str | None) -> None:
    """Let a quarantined device take jobs again (it lost several leases in a row: check its cable,
    its agent's log, 'edgelat devices list' shows the last error).

    \b
    Example:
      edgelat hub unquarantine pixel7
    """
    from edgelat.hub.queue import HubStore
    from edgelat.hub.server import default_db_url

    store = HubStore(db_url or default_db_url()).open()
    try:
        store.release_quarantine(device)
    finally:
        store.close()
    click.echo(f"{device} may take jobs again")
