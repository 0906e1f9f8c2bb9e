"""``edgelat agent serve`` as a user runs it: ready line, clear errors, light imports, clean shutdown."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from agent_helpers import agent, agent_command, free_port, onnx_conv_model, running_agent, start_agent  # noqa: F401
from edgelat.cli import main

# What a board must not have to load to serve benchmarks (host-side stack only).
HEAVY = ["pandas", "sklearn", "scipy", "matplotlib", "onnx", "sqlite_utils", "rich"]


def serve(*args: str):
    return CliRunner().invoke(main, ["agent", "serve", *args])


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_help_has_an_example():
    result = CliRunner().invoke(main, ["agent", "serve", "--help"])
    assert result.exit_code == 0
    for word in ("--listen", "--token-file", "--tls-cert", "--cache-max-mb", "Example", "edgelat agent serve --listen"):
        assert word in result.output


def test_bad_inputs_give_one_line_errors(tmp_path):
    empty = tmp_path / "empty-token"
    empty.write_text("  \n")
    assert "token file" in one_line_error(serve("--listen", "127.0.0.1:0", "--token-file", str(empty)))
    assert "cannot read the token file" in one_line_error(
        serve("--listen", "127.0.0.1:0", "--token-file", str(tmp_path / "missing"))
    )
    assert "--tls-key" in one_line_error(serve("--listen", "127.0.0.1:0", "--tls-cert", str(empty)))
    spaced = tmp_path / "spaced-token"
    spaced.write_text("two words")
    assert "printable ASCII without spaces" in one_line_error(serve("--listen", "127.0.0.1:0", "--token-file", str(spaced)))
    assert "bad listen address 'nonsense'" in one_line_error(serve("--listen", "nonsense"))
    assert "HOST:PORT" in one_line_error(serve("--listen", "127.0.0.1:99999"))
    assert "cannot read the TLS key" in one_line_error(
        serve("--listen", "127.0.0.1:0", "--tls-cert", str(empty), "--tls-key", str(tmp_path / "nokey"))
    )


def test_port_in_use_is_a_clear_error(tmp_path):
    with running_agent(tmp_path / "first") as first:
        proc = subprocess.run(
            agent_command("--listen", first.address, "--cache-dir", str(tmp_path / "c2")),
            capture_output=True, text=True, timeout=60,
        )
    assert proc.returncode == 1
    # one line, said before gRPC tries (its C core would log its own complaint on stderr first)
    assert proc.stderr.strip().splitlines() == [
        f"error: cannot listen on {first.address}: address already in use; pick another --listen"
    ], proc.stderr


def _serve_fails(tmp_path, *args: str) -> str:
    """Run ``agent serve`` in its own process (gRPC's C core logs straight to fd 2); its one line."""
    proc = subprocess.run(agent_command("--listen", "127.0.0.1:0", "--cache-dir", str(tmp_path / "c"), *args),
                          capture_output=True, text=True, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_tls_files_that_cannot_be_used_are_one_line_naming_the_file_at_fault(tmp_path):
    from agent_helpers import self_signed_tls

    cert, key, _ = self_signed_tls(tmp_path / "one")
    other_cert, other_key, _ = self_signed_tls(tmp_path / "two")
    text = tmp_path / "not-pem"
    text.write_text("s3cret\n")
    assert "TLS certificate (--tls-cert) is not a PEM certificate" in _serve_fails(
        tmp_path, "--tls-cert", str(text), "--tls-key", str(key))
    assert "TLS key (--tls-key) is not an unencrypted PEM private key" in _serve_fails(
        tmp_path, "--tls-cert", str(cert), "--tls-key", str(text))
    assert "TLS key (--tls-key) does not belong to the certificate" in _serve_fails(
        tmp_path, "--tls-cert", str(cert), "--tls-key", str(other_key))
    assert "TLS key (--tls-key) is not an unencrypted PEM private key" in _serve_fails(
        tmp_path, "--tls-cert", str(cert), "--tls-key", str(other_cert))


def test_an_address_of_another_machine_is_one_line(tmp_path):
    import socket

    address = "203.0.113.77"  # TEST-NET-3, documentation only
    with socket.socket() as probe:
        try:
            probe.bind((address, 0))
            pytest.skip(f"{address} is an address of this machine")
        except OSError:
            pass
    line = _serve_fails(tmp_path, "--listen", f"{address}:0", "--insecure")
    assert line == f"error: cannot listen on {address}:0: cannot assign requested address; pick another --listen"


def test_a_ca_that_is_not_pem_is_one_line_before_any_connection(tmp_path):
    from edgelat.agents.remote import GrpcClient
    from edgelat.errors import BadInput

    text = tmp_path / "not-pem"
    text.write_text("s3cret\n")
    with pytest.raises(BadInput, match="TLS CA certificate is not a PEM certificate"):
        GrpcClient("127.0.0.1:1", tls_ca=text)
    r = CliRunner().invoke(main, ["devices", "register", "b1", "--agent", "127.0.0.1:1", "--tls-ca", str(text)])
    assert r.exit_code == 1 and "not a PEM certificate" in r.output and "did not answer" not in r.output


def test_ready_line_without_token(agent):  # noqa: F811  (the fixture)
    assert agent.ready_line == f"edgelat agent listening on 127.0.0.1:{agent.port} (no token)"
    assert agent.transport == {"type": "agent", "address": agent.address}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_shut_down_cleanly(tmp_path, sig):
    started = start_agent(tmp_path)
    assert started.stop(sig) == 0
    assert "Traceback" not in "".join(started.output)


PROBE = textwrap.dedent(
    """
    import json, os, signal, sys, threading, time

    port, model_path, cache_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    HEAVY = json.loads(sys.argv[4])

    def loaded():
        return sorted(m for m in HEAVY if m in sys.modules)

    def probe():
        from edgelat.agents.remote import GrpcClient
        from edgelat.values import BenchmarkItem, MeasurementProtocol, RuntimeConfig
        from edgelat.errors import AgentUnreachable

        report = {}
        deadline = time.monotonic() + 60
        while True:
            try:
                with GrpcClient(f"127.0.0.1:{port}", timeout_s=5) as c:
                    c.describe()
                    report["after_start"] = loaded()
                    sha = c.put_model(open(model_path, "rb").read())
                    r = c.benchmark(BenchmarkItem(sha, "onnx"), RuntimeConfig(),
                                    MeasurementProtocol(warmup=1, min_runs=3, max_runs=10, max_seconds=0.3))
                    report["benchmark_ok"] = r.ok
                    report["after_benchmark"] = loaded()
                break
            except AgentUnreachable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        print("PROBE " + json.dumps(report), flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=probe, daemon=True).start()
    from edgelat.cli import main
    main(["agent", "serve", "--listen", f"127.0.0.1:{port}", "--cache-dir", cache_dir])
    """
)


def test_agent_process_stays_light(tmp_path):
    """The serving process never imports the host-side stack, at startup or after a benchmark."""
    model = tmp_path / "m.onnx"
    model.write_bytes(onnx_conv_model(seed=9))
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(free_port()), str(model), str(tmp_path / "cache"), json.dumps(HEAVY)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (line,) = [l for l in proc.stdout.splitlines() if l.startswith("PROBE ")]
    report = json.loads(line[len("PROBE "):])
    assert report == {"after_start": [], "benchmark_ok": True, "after_benchmark": []}, report
