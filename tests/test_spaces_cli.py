"""``edgelat spaces list`` / ``spaces show``: what each space allows, as strings the other commands take."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from edgelat.cli import main
from edgelat.profiler.spaces import SPACE_NAMES, get_space

EXAMPLE_YAML = Path(__file__).resolve().parents[1] / "profiler" / "spaces" / "data" / "example_space.yaml"


def run(*args: str, code: int = 0):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == code, result.output + result.stderr
    return result


def test_list_names_every_space_with_its_size():
    rows = json.loads(run("spaces", "list", "--json").stdout)
    assert [r["name"] for r in rows] == list(SPACE_NAMES)
    for r in rows:
        space = get_space(r["name"])
        assert r["genes"] == space.dim
        assert r["architectures"] == int(np.prod([len(c) for c in space.choices], dtype=object))
        assert r["kernel_vocabulary"] == len(space.kernel_vocabulary())
    nb = next(r for r in rows if r["name"] == "nasbench201")
    assert nb["architectures"] == 5 ** 6
    assert "nasbench201" in run("spaces", "list").stdout


def test_show_small_space_is_exact_and_its_strings_parse():
    d = json.loads(run("spaces", "show", "nasbench201", "--random", "4", "--json").stdout)
    space = get_space("nasbench201")
    assert d["extremes"] == "exact, over all 15625 architectures"
    everything = np.stack(np.meshgrid(*[np.arange(5)] * 6, indexing="ij"), -1).reshape(-1, 6)
    flops = space.flops(everything)
    assert d["smallest"]["flops"] == int(flops.min()) and d["largest"]["flops"] == int(flops.max())
    for a in [d["smallest"], d["largest"], *d["random"]]:
        g = space.from_string(a["arch"])  # every printed architecture is one the other commands accept
        assert int(space.flops(g)[0]) == a["flops"]
    assert len(d["random"]) == 4
    assert d["choices"] == [{"genes": [0, 5], "values": list(space.choices[0])}]


def test_show_large_space_says_the_extremes_are_sampled():
    d = json.loads(run("spaces", "show", "ofa-mbv3", "--json").stdout)
    assert d["extremes"].startswith("among the first-choice, last-choice and 20000 random architectures")
    space = get_space("ofa-mbv3")
    assert d["smallest"]["flops"] < d["largest"]["flops"]
    assert space.to_string(space.from_string(d["largest"]["arch"])) == d["largest"]["arch"]
    text = run("spaces", "show", "ofa-mbv3").stdout
    assert "genes 0-19: 3, 5, 7" in text and "MFLOPs" in text


def test_show_a_yaml_space_and_bad_names():
    d = json.loads(run("spaces", "show", str(EXAMPLE_YAML), "--random", "0", "--json").stdout)
    assert d["random"] == [] and d["genes"] > 0
    err = run("spaces", "show", "darts", code=1).stderr.strip()
    assert err.startswith("error: unknown search space 'darts'") and "\n" not in err
