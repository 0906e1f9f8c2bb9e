"""``edgelat agent serve``: the gRPC agent on a board or GPU host.

Only light modules are imported here and in the serve path (grpc, protobuf,
numpy, the runtime itself when a model runs): a board should have the agent
listening within a second or two, and its idle memory should stay small.
"""

from __future__ import annotations

import sys

import click

from edgelat.cli.base import agent


@agent.command("serve")
@click.option(
    "--listen", default="127.0.0.1:50051", show_default=True, metavar="HOST:PORT",
    help="Address to listen on; 0.0.0.0:PORT for all interfaces, port 0 picks a free port.",
)
@click.option(
    "--token-file", type=click.Path(dir_okay=False), default=None,
    help="File holding a shared token; clients must send it (authorization: Bearer <token>).",
)
@click.option("--tls-cert", type=click.Path(dir_okay=False), default=None, help="PEM certificate (with --tls-key) to serve TLS.")
@click.option("--tls-key", type=click.Path(dir_okay=False), default=None, help="PEM private key of --tls-cert.")
@click.option(
    "--cache-dir", type=click.Path(file_okay=False), default=None,
    help="Where received models are kept by content hash [default: $EDGELAT_HOME/agent-models].",
)
@click.option(
    "--cache-max-mb", type=click.FloatRange(min=0, min_open=True), default=2048.0, show_default=True,
    help="Cap on the model cache; the least recently used models are dropped first.",
)
def serve_cmd(
    listen: str, token_file: str | None, tls_cert: str | None, tls_key: str | None,
    cache_dir: str | None, cache_max_mb: float,
) -> None:
    """Serve this machine's runtimes to edgelat hosts over gRPC.

    The host sends each model once (by content hash) and asks for benchmarks;
    the timing loop runs here, so network time never enters a latency. Stop it
    with Ctrl-C or SIGTERM.

    \b
    Example (on the board):
      echo "$(openssl rand -hex 16)" > ~/.edgelat-token
      edgelat agent serve --listen 0.0.0.0:50051 --token-file ~/.edgelat-token
    Then on the host:
      edgelat devices register jetson --agent board.local:50051 --token-file ~/.edgelat-token
    """
    import logging

    from edgelat.agents.local import LocalBackend
    from edgelat.agents.server import serve
    from edgelat.config import home, read_token_file
    from edgelat.errors import BadInput

    token = read_token_file(token_file) if token_file is not None else None
    if (tls_cert is None) != (tls_key is None):
        raise BadInput("TLS needs both --tls-cert and --tls-key")

    # Operators see each stored model and each benchmark on stderr; stdout has only the ready line.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    def ready(server: object) -> None:
        host = listen.rpartition(":")[0]
        auth = "token required" if token else "no token"
        tls = ", TLS" if tls_cert else ""
        click.echo(f"edgelat agent listening on {host}:{server.edgelat_port} ({auth}{tls})")  # type: ignore[attr-defined]
        sys.stdout.flush()

    serve(
        LocalBackend(),
        listen,
        on_ready=ready,
        token=token,
        tls_cert=tls_cert,
        tls_key=tls_key,
        cache_dir=cache_dir or home() / "agent-models",
        cache_max_bytes=int(cache_max_mb * (1 << 20)),
    )
