#!/usr/bin/env python
"""Regenerate (or check) the committed Python stubs of ``edgelat/proto/*.proto``.

The stubs are committed so an agent host needs no protoc; this script is the
one way to rebuild them. It runs ``grpc_tools.protoc`` from the repository root
with ``-I .`` so the generated modules import each other as
``edgelat.proto.agent_pb2``.

    python scripts/gen_proto.py          # rewrite the stubs in place
    python scripts/gen_proto.py --check  # exit 1 with a diff if they are stale
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTOS = ["edgelat/proto/agent.proto", "edgelat/proto/hub.proto"]
SUFFIXES = ["_pb2.py", "_pb2_grpc.py", "_pb2.pyi"]


def generated_files(proto: str) -> list[str]:
    stem = proto[: -len(".proto")]
    return [stem + s for s in SUFFIXES]


def generate(out_dir: Path) -> None:
    """Run protoc on every proto, writing the stubs under ``out_dir`` (same relative paths)."""
    for proto in PROTOS:
        (out_dir / proto).parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable, "-m", "grpc_tools.protoc", "-I", ".",
            f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", f"--pyi_out={out_dir}", proto,
        ]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"protoc failed on {proto}:\n{proc.stderr}")


def check() -> int:
    """Regenerate into a temp dir and diff against the committed stubs."""
    stale = 0
    with tempfile.TemporaryDirectory(prefix="edgelat-proto-") as tmp:
        generate(Path(tmp))
        for proto in PROTOS:
            for rel in generated_files(proto):
                fresh = (Path(tmp) / rel).read_text()
                committed_path = ROOT / rel
                committed = committed_path.read_text() if committed_path.exists() else ""
                if fresh != committed:
                    stale += 1
                    sys.stdout.writelines(
                        difflib.unified_diff(
                            committed.splitlines(keepends=True), fresh.splitlines(keepends=True),
                            fromfile=f"committed/{rel}", tofile=f"regenerated/{rel}",
                        )
                    )
    if stale:
        print(f"{stale} stub file(s) are stale: run `python scripts/gen_proto.py` and commit them", file=sys.stderr)
        return 1
    print("proto stubs are up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if the committed stubs are stale")
    args = parser.parse_args(argv)
    if args.check:
        return check()
    with tempfile.TemporaryDirectory(prefix="edgelat-proto-") as tmp:
        generate(Path(tmp))
        for proto in PROTOS:
            for rel in generated_files(proto):
                shutil.copyfile(Path(tmp) / rel, ROOT / rel)
                print(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
