"""``edgelat agent serve``: the gRPC agent on a board or GPU host.

Only light modules are imported here and in the serve path (grpc, protobuf,
numpy, the runtime itself when a model runs): a board should have the agent
listening within a second or two, and its idle memory should stay small.
"""

from __future__ import annotations

import sys
from typing import Callable

import click

from edgelat.cli.base import agent


def insecure_option(f: Callable) -> Callable:
    """``--insecure``: allow a non-loopback --listen without a token."""
    return click.option(
        "--insecure", is_flag=True,
        help="Listen beyond loopback without --token-file. Anyone who reaches the port can then upload "
             "models and run them here: only on a network you trust.",
    )(f)


def tls_options(f: Callable) -> Callable:
    """``--tls-cert``/``--tls-key``: serve TLS."""
    f = click.option("--tls-key", type=click.Path(dir_okay=False), default=None,
                     help="PEM private key of --tls-cert.")(f)
    return click.option("--tls-cert", type=click.Path(dir_okay=False), default=None,
                        help="PEM certificate (with --tls-key) to serve TLS.")(f)


def hub_link_options(f: Callable) -> Callable:
    """``--hub``/``--name``/``--hub-tls-ca``: dial out to a hub instead of listening."""
    f = click.option("--hub-tls-ca", type=click.Path(dir_okay=False), default=None,
                     help="With --hub: CA certificate of a hub that serves TLS.")(f)
    f = click.option("--name", "hub_name", default=None,
                     help="With --hub: the device name this agent serves [default: the host name].")(f)
    return click.option("--hub", "hub_address", default=None, metavar="HOST:PORT",
                        help="Dial out to this hub and serve it (no inbound port; needs --token-file with an "
                             "agent token).")(f)


def run_hub_link(devices: dict, hub_address: str, token_file: str | None, agent_id: str, hub_tls_ca: str | None,
                 cache_dir: object, cache_max_bytes: int, upload_idle_s: float) -> None:
    """Serve ``devices`` to a hub over an outbound stream; one ready line on stdout once connected."""
    from edgelat.agents.hub_link import serve_hub
    from edgelat.config import check_ca, read_pem, read_token_file
    from edgelat.errors import BadInput

    if token_file is None:
        raise BadInput("--hub needs --token-file with an agent token (edgelat hub token create --role agent)")
    token = read_token_file(token_file)
    what = "TLS CA certificate (--hub-tls-ca)"
    tls_ca = check_ca(read_pem(hub_tls_ca, what), what) if hub_tls_ca else None
    said = []

    def ready(link: object) -> None:
        if not said:  # once, not at every reconnection
            said.append(True)
            click.echo(f"edgelat agent {agent_id} connected to hub {hub_address} serving {', '.join(devices)}")
            sys.stdout.flush()

    serve_hub(devices, hub_address, token, on_ready=ready, agent_id=agent_id, tls_ca=tls_ca, cache_dir=cache_dir,
              cache_max_bytes=cache_max_bytes, upload_idle_s=upload_idle_s)


def upload_idle_option(f: Callable) -> Callable:
    return click.option(
        "--upload-idle-s", type=click.FloatRange(min=0.1, max=3600), default=30.0, show_default=True,
        help="Drop an upload that sends no data for this many seconds (a stalled or vanished client).",
    )(f)


@agent.command("serve")
@click.option(
    "--listen", default="127.0.0.1:50051", show_default=True, metavar="HOST:PORT",
    help="Address to listen on; 0.0.0.0:PORT for all interfaces (needs --token-file or --insecure), "
         "port 0 picks a free port.",
)
@click.option(
    "--token-file", type=click.Path(dir_okay=False), default=None,
    help="File holding a shared token (chmod 600); clients must send it (authorization: Bearer <token>).",
)
@tls_options
@insecure_option
@click.option(
    "--cache-dir", type=click.Path(file_okay=False), default=None,
    help="Where received models are kept by content hash [default: $EDGELAT_HOME/agent-models].",
)
@click.option(
    "--cache-max-mb", type=click.FloatRange(min=0, min_open=True), default=2048.0, show_default=True,
    help="Cap on the model cache; the least recently used models are dropped first.",
)
@upload_idle_option
@click.option(
    "--memory-limit-mb", type=click.FloatRange(min=0), default=None,
    help="Memory cap of the process that runs the models (RLIMIT_DATA); a model over it fails alone. "
         "0 for no cap [default: 75% of this machine's RAM].",
)
@click.option(
    "--time-grace-s", type=click.FloatRange(min=0.1, max=86400), default=300.0, show_default=True,
    help="Seconds a model may take beyond twice its --max-seconds (loading, first run) before it is stopped.",
)
@hub_link_options
def serve_cmd(
    listen: str, token_file: str | None, tls_cert: str | None, tls_key: str | None, insecure: bool,
    cache_dir: str | None, cache_max_mb: float, upload_idle_s: float, memory_limit_mb: float | None,
    time_grace_s: float, hub_address: str | None = None, hub_name: str | None = None, hub_tls_ca: str | None = None,
) -> None:
    """Serve this machine's runtimes to edgelat hosts over gRPC.

    The host sends each model once (by content hash) and asks for benchmarks;
    the timing loop runs here, so network time never enters a latency. Models
    run in a worker process with memory and time limits: one that crashes the
    runtime or overruns fails alone and the agent goes on. Stop it with Ctrl-C
    or SIGTERM.

    \b
    Example (on the board):
      (umask 077; openssl rand -hex 16 > ~/.edgelat-token)
      edgelat agent serve --listen 0.0.0.0:50051 --token-file ~/.edgelat-token \\
          --tls-cert board.crt --tls-key board.key --memory-limit-mb 1500
    Then on the host:
      edgelat devices register jetson --agent board.local:50051 --token-file ~/.edgelat-token \\
          --tls-ca board.crt
    Or dial out to a hub (no inbound port):
      edgelat agent serve --hub hub.lab:50100 --token-file agent.tok --name rpi5
    """
    import logging

    from edgelat.agents.local import LocalBackend
    from edgelat.agents.sandbox import SandboxedBackend, default_memory_bytes
    from edgelat.agents.server import serve
    from edgelat.config import home, read_token_file
    from edgelat.errors import BadInput

    token = read_token_file(token_file) if token_file is not None else None
    if (tls_cert is None) != (tls_key is None):
        raise BadInput("TLS needs both --tls-cert and --tls-key")
    if memory_limit_mb is None:
        memory_bytes = default_memory_bytes()
    else:
        memory_bytes = int(memory_limit_mb * (1 << 20)) or None

    # Operators see each stored model and each benchmark on stderr; stdout has only the ready line.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    if hub_address:
        import socket

        name = hub_name or socket.gethostname()
        backend = SandboxedBackend(LocalBackend, memory_bytes=memory_bytes, grace_s=time_grace_s)
        run_hub_link({name: backend}, hub_address, token_file, name, hub_tls_ca,
                     cache_dir or home() / "agent-models", int(cache_max_mb * (1 << 20)), upload_idle_s)
        return

    def ready(server: object) -> None:
        host = listen.rpartition(":")[0]
        auth = "token required" if token else "no token"
        tls = ", TLS" if tls_cert else ""
        click.echo(f"edgelat agent listening on {host}:{server.edgelat_port} ({auth}{tls})")  # type: ignore[attr-defined]
        sys.stdout.flush()

    serve(
        SandboxedBackend(LocalBackend, memory_bytes=memory_bytes, grace_s=time_grace_s),
        listen,
        on_ready=ready,
        token=token,
        tls_cert=tls_cert,
        tls_key=tls_key,
        insecure=insecure,
        upload_idle_s=upload_idle_s,
        cache_dir=cache_dir or home() / "agent-models",
        cache_max_bytes=int(cache_max_mb * (1 << 20)),
    )
