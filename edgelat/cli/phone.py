"""Phones over ADB: ``edgelat devices register-phone`` and ``edgelat agent adb``.

Heavy imports (adb-shell, grpc) happen inside the commands so ``edgelat
--help`` stays fast.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from edgelat.cli.agent import hub_link_options, insecure_option, run_hub_link, tls_options, upload_idle_option
from edgelat.cli.base import agent, devices, emit_json, json_option, open_registry
from edgelat.cli.devices import replace_options
from edgelat.devices.runtime import RUNNERS
from edgelat.results import public_row


def _ghz(khz: Any) -> str:
    return f"{khz / 1e6:.2f}" if isinstance(khz, (int, float)) else "?"


def summary_line(name: str, facts: dict[str, Any]) -> str:
    """One line a user reads after registering: what the phone is and what can run on it."""
    clusters = ", ".join(
        f"{len(c['cpus'])}x {c['role']} {_ghz(c.get('min_khz'))}-{_ghz(c.get('max_khz'))} GHz"
        for c in facts.get("clusters") or []
    )
    from edgelat.agents.adb.facts import RUNNER_BINARIES

    runners = facts.get("runners") or {}
    present = [r for r in RUNNER_BINARIES if runners.get(r)]
    py = runners.get("python")
    if py:
        mods = [f"{m} {v}" for m, v in (py.get("modules") or {}).items() if v and m != "numpy"]
        present.append(f"python {py.get('version', '')} ({', '.join(mods) or 'no runtime'})")
    android = f"Android {facts.get('android_version') or '?'} (SDK {facts.get('sdk') or '?'})"
    return (
        f"registered phone {name}: {facts.get('manufacturer') or '?'} {facts.get('model') or '?'} "
        f"({facts.get('soc') or '?'}), {android}, {facts.get('abi') or '?'}, {facts.get('cores') or '?'} cores"
        f"{': ' + clusters if clusters else ''}; runners: {', '.join(present) or 'none found'}"
    )


@devices.command("register-phone")
@click.argument("name")
@click.option("--serial", metavar="SERIAL", help="USB serial of the phone (as 'adb devices' lists it).")
@click.option("--address", metavar="HOST:PORT", help="adb-over-TCP address of the phone (adb tcpip 5555).")
@click.option("--runner", type=click.Choice(RUNNERS), default="benchmark_model", show_default=True,
              help="Benchmark program used on the phone for onnxruntime/litert configs.")
@click.option("--python", "python", default="python3", show_default=True, metavar="PATH",
              help="The phone's Python interpreter, for --runner python.")
@click.option("--benchmark-model", "benchmark_model", type=click.Path(dir_okay=False), default=None,
              metavar="PATH", help="Host path of a TFLite benchmark_model binary to push to /data/local/tmp/edgelat/.")
@click.option("--auth-timeout", type=click.FloatRange(min=1), default=30.0, show_default=True,
              help="Seconds to wait for you to accept the 'Allow USB debugging' prompt on the phone.")
@click.option("--model-cache-mb", type=click.FloatRange(min=0, max=1024 * 1024), default=None, metavar="MB",
              help="Models kept in /data/local/tmp/edgelat/ between runs; the least recently used are "
                   "deleted past this size [default: 1024]. Example: --model-cache-mb 256")
@replace_options
@json_option
def register_phone(
    name: str, serial: str | None, address: str | None, runner: str, python: str,
    benchmark_model: str | None, auth_timeout: float, model_cache_mb: float | None, replace: str | None,
    as_json: bool,
) -> None:
    """Register an Android phone reached over ADB (USB or TCP) and read its facts.

    The first connection makes the phone show "Allow USB debugging?": unlock it
    and accept. The host key lives in $EDGELAT_HOME/adbkey, so the phone
    remembers this computer.

    \b
    Examples:
      edgelat devices register-phone pixel7 --serial 1A2B3C
      edgelat devices register-phone pixel7 --address 192.168.1.20:5555 \\
          --benchmark-model ~/tflite/benchmark_model --model-cache-mb 256
      edgelat devices register-phone board --address 10.0.0.7:5555 --runner python --python /usr/bin/python3
      edgelat devices register-phone pixel7 --address 192.168.1.31:5555 --replace --keep-rows   # same phone, new address
      edgelat devices show pixel7
    """
    from edgelat.devices.phones import register_phone as register

    done = register(name, serial, address, runner, python, benchmark_model, auth_timeout, model_cache_mb, replace,
                    on_note=lambda line: click.echo(f"note: {line}", err=True))
    if done.missing_runner:
        click.echo(f"warning: runner {runner} was not found on the phone: {done.missing_runner}", err=True)
    if as_json:
        emit_json(public_row(done.device.to_dict()))
    else:
        click.echo(summary_line(name, done.device.facts))


@agent.command("adb")
@click.option("--device", "device_name", metavar="NAME", help="A phone registered with 'devices register-phone'.")
@click.option("--serial", metavar="SERIAL", help="USB serial of the phone.")
@click.option("--address", metavar="HOST:PORT", help="adb-over-TCP address of the phone.")
@click.option("--runner", type=click.Choice(RUNNERS), default=None,
              help="Benchmark program on the phone [default: the registered one, else benchmark_model].")
@click.option("--python", "python", default=None, metavar="PATH", help="The phone's Python, for --runner python.")
@click.option(
    "--listen", default="127.0.0.1:50052", show_default=True, metavar="HOST:PORT",
    help="Address the gRPC agent listens on; port 0 picks a free port.",
)
@click.option(
    "--token-file", type=click.Path(dir_okay=False), default=None,
    help="File holding a shared token (chmod 600); clients must send it (authorization: Bearer <token>).",
)
@tls_options
@insecure_option
@upload_idle_option
@hub_link_options
def agent_adb(
    device_name: str | None, serial: str | None, address: str | None, runner: str | None,
    python: str | None, listen: str, token_file: str | None, tls_cert: str | None, tls_key: str | None,
    insecure: bool, upload_idle_s: float, hub_address: str | None = None, hub_name: str | None = None,
    hub_tls_ca: str | None = None,
) -> None:
    """Serve a phone over gRPC: the same Agent service as 'agent serve', run through ADB.

    Run it on the computer the phone is plugged into (or that reaches it over
    adb-over-TCP); hosts then profile the phone as they would a board.

    \b
    Examples:
      edgelat agent adb --device pixel7 --listen 0.0.0.0:50052 --token-file ~/.edgelat-token \\
          --tls-cert lab-pc.crt --tls-key lab-pc.key
      edgelat agent adb --serial 1A2B3C
      edgelat agent adb --hub hub.lab:50100 --token-file agent.tok   # every registered phone, dialling out
    Then on a host:
      edgelat devices register pixel7-remote --agent lab-pc:50052 --token-file ~/.edgelat-token \\
          --tls-ca lab-pc.crt
    """
    from edgelat.agents.adb.bridge import backend_from_transport
    from edgelat.agents.server import check_listen, serve
    from edgelat.config import home, read_token_file
    from edgelat.devices.phones import serve_transport
    from edgelat.errors import BadInput

    if hub_address and not (device_name or serial or address):  # every phone registered on this host
        return _serve_all_phones(hub_address, token_file, hub_name, hub_tls_ca, runner, python, upload_idle_s)
    if sum(bool(x) for x in (device_name, serial, address)) != 1:
        raise BadInput("give exactly one of --device NAME, --serial SERIAL or --address HOST:PORT")
    if (tls_cert is None) != (tls_key is None):
        raise BadInput("TLS needs both --tls-cert and --tls-key")
    token = read_token_file(token_file) if token_file is not None and not hub_address else None
    if not hub_address:
        check_listen(listen, token, insecure)  # before touching the phone
    device = open_registry()[1].get(device_name) if device_name else None
    transport = serve_transport(device, serial, address, runner, python)
    backend = backend_from_transport(transport, device.facts if device is not None else {})
    label = device_name or serial or address
    backend.describe()  # connect now: an unauthorised or unreachable phone fails before we listen
    if hub_address:  # dial out to the hub instead of listening
        name = hub_name or device_name or serial or str(address).replace(":", "-")
        run_hub_link({name: backend}, hub_address, token_file, name, hub_tls_ca, home() / "adb-agent-models",
                     2 << 30, upload_idle_s)
        return

    def ready(server: Any) -> None:
        host = listen.rpartition(":")[0]
        auth = "token required" if token else "no token"
        tls = ", TLS" if tls_cert else ""
        click.echo(f"edgelat agent adb serving phone {label} on {host}:{server.edgelat_port} "
                   f"(runner {backend.runner}, {auth}{tls})")
        sys.stdout.flush()

    serve(backend, listen, on_ready=ready, token=token, tls_cert=tls_cert, tls_key=tls_key, insecure=insecure,
          upload_idle_s=upload_idle_s, cache_dir=home() / "adb-agent-models")


def _serve_all_phones(hub_address: str, token_file: str | None, agent_id: str | None, hub_tls_ca: str | None,
                      runner: str | None, python: str | None, upload_idle_s: float) -> None:
    """``agent adb --hub`` without a phone named: every phone registered here, each under its name.
    A phone that does not answer is left out with a note (serve it later by restarting)."""
    import socket

    from edgelat.agents.adb.bridge import backend_from_transport
    from edgelat.config import home
    from edgelat.devices.phones import serve_transport
    from edgelat.errors import BadInput, EdgelatError

    _, registry = open_registry()
    phones = [d for d in registry.list() if d.transport.get("type") == "adb"]
    if not phones:
        raise BadInput("no phone is registered on this computer: register them with 'edgelat devices register-phone' "
                       "or name one with --device/--serial/--address")
    backends: dict[str, Any] = {}
    for device in phones:
        backend = backend_from_transport(serve_transport(device, runner=runner, python=python), device.facts)
        try:
            backend.describe()
        except EdgelatError as exc:
            click.echo(f"note: {device.name} left out: {' '.join(str(exc).split())}", err=True)
            backend.close()
            continue
        backends[device.name] = backend
    if not backends:
        raise BadInput("none of the registered phones answered; check the cables and 'adb devices'")
    run_hub_link(backends, hub_address, token_file, agent_id or socket.gethostname(), hub_tls_ca,
                 home() / "adb-agent-models", 2 << 30, upload_idle_s)
