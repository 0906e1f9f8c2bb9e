"""Token and reachability errors from the command line against a real agent process:
one line on stderr, non-zero exit, and the database exactly as it was."""

from __future__ import annotations

import json

from agent_helpers import running_agent
from click.testing import CliRunner
from test_cli_core import FAST, _fails_cleanly

from edgelat.cli import main
from edgelat.profiler.presets import get_preset


def test_missing_wrong_and_right_token(tmp_path):
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token\n")
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    ops = tmp_path / "ops.json"
    ops.write_text(json.dumps([s.key for s in get_preset("smoke")[:2]]))
    assert CliRunner().invoke(main, ["devices", "list"]).exit_code == 0  # the database exists
    with running_agent(tmp_path / "agent", token="s3cret") as agent:
        _fails_cleanly("devices", "register", "rpi", "--agent", agent.address, match="token")
        _fails_cleanly("devices", "register", "rpi", "--agent", agent.address, "--token-file", str(wrong),
                       match="token")
        _fails_cleanly("devices", "register", "rpi", "--agent", agent.address, "--token-file", str(empty),
                       match="empty")
        ok = CliRunner().invoke(main, ["devices", "register", "rpi", "--agent", agent.address,
                                       "--token-file", str(agent.token_file), "--json"])
        assert ok.exit_code == 0, ok.stderr
        assert json.loads(ok.stdout)["facts"]["agent_version"]
        done = CliRunner().invoke(main, ["profile", "ops", "--device", "rpi", "--ops", str(ops), "--json", *FAST])
        assert done.exit_code == 0, done.stderr
        assert json.loads(done.stdout)["measured"] == 2
        # The agent comes back with another token than the registered token file holds: refused, nothing written.
        agent.token_file.write_text("rotated\n")
    with running_agent(tmp_path / "agent2", token="rotated-elsewhere",
                       extra_args=["--listen", agent.address]):
        _fails_cleanly("profile", "ops", "--device", "rpi", "--ops", str(ops), "--force", *FAST, match="token")
