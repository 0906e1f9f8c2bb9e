"""Property-based tests of every search space's architecture strings (hypothesis).

``from_string`` on arbitrary text, and on mutations of valid strings, either
parses to a valid genotype that round-trips through ``to_string``, or raises
BadInput: never another exception.
"""

from __future__ import annotations

import re
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgelat.errors import BadInput
from edgelat.profiler.spaces import SPACE_NAMES, get_space
from edgelat.profiler.spaces.yaml_space import example_path

ALL = list(SPACE_NAMES) + ["yaml-example"]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces that appear in the strings (so mutations stay close to the grammar) and ones that break naive code.
PIECES = ["{", "}", "[", "]", "(", ")", ",", ":", "'", '"', " ", "ks", "e", "d", "r", "w", "|", "~", "+", "_",
          "skip", "k3_e1", "none", "nor_conv_3x3", "3", "7", "224", "3.0", "-1", "1e400", "9" * 400, "nan",
          "inf", "True", "None", "[]", "{}", "{[]: 1}", "{1: 2}", "1j", "b'x'", "\x00", "\u00a0", "\n"]


def space_of(name: str):
    return get_space(str(example_path()) if name == "yaml-example" else name)


def check(space, text: str) -> None:
    try:
        g = space.from_string(text)
    except BadInput as exc:
        assert "\n" not in str(exc).strip() or "\n" in text  # one line (it may quote the input)
        return
    g = space.check(g)[0]  # a valid genotype
    again = space.from_string(space.to_string(g))
    assert np.array_equal(again, g)


# Edits that keep a string meaning the same architecture (so the round trip is exercised)...
GENTLE = ["space", "float", "quotes", "tuple", "none"]
# ...and edits that usually break it.
ROUGH = ["insert", "delete", "replace", "swap-token"]


@st.composite
def mutated(draw: st.DrawFn, name: str) -> str:
    space = space_of(name)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    text = space.to_string(space.sample(rng, 1)[0])
    rough = draw(st.integers(0, 9)) >= 6  # about a third of the cases get a breaking edit
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(ROUGH if rough else GENTLE))
        i = draw(st.integers(0, len(text)))
        if op == "space":
            ws = draw(st.sampled_from([" ", "  ", "\t", " \n "]))
            bounds = [m.start() for m in re.finditer(r"[,:\[\]{}]", text)] or [0]
            j = bounds[draw(st.integers(0, len(bounds) - 1))]
            text = text[:j] + ws + text[j:] if space.name != "nasbench201" else ws + text + ws
        elif op == "float":
            text = re.sub(r"(?<![\w.])(\d+)(?![\w.])", lambda m: m.group(1) + ".0", text, count=1)
        elif op == "quotes":
            text = text.replace("'", '"')
        elif op == "tuple":
            k = text.find("[")
            if k >= 0:
                close = text.find("]", k)
                text = text[:k] + "(" + text[k + 1:close] + ")" + text[close + 1:]
        elif op == "insert":
            text = text[:i] + draw(st.sampled_from(PIECES) | st.text(max_size=3)) + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 8)):]
        elif op == "replace":
            text = text[:i] + draw(st.sampled_from(PIECES)) + text[i + 1:]
        elif op == "swap-token":
            tokens = list(re.finditer(r"[A-Za-z0-9_.]+", text))
            if tokens:
                m = tokens[draw(st.integers(0, len(tokens) - 1))]
                text = text[: m.start()] + draw(st.sampled_from(PIECES)) + text[m.end():]
    return text


@pytest.mark.parametrize("name", ALL)
def test_arbitrary_text(name: str) -> None:
    space = space_of(name)

    @FUZZ
    @given(st.text(max_size=200) | st.lists(st.sampled_from(PIECES), max_size=30).map("".join))
    @example("{[]: 1}")
    @example("{1: 2, 'ks': 3}")
    @example("{'ks': [" + "1" + "0" * 400 + "], 'e': [], 'd': [], 'r': 1}")
    @example("[" * 5000)
    def run(text: str) -> None:
        check(space, text)

    run()


@pytest.mark.parametrize("name", ALL)
def test_mutated_valid_strings(name: str) -> None:
    space = space_of(name)

    @FUZZ
    @given(mutated(name))
    def run(text: str) -> None:
        check(space, text)

    run()


# ---- regressions the fuzzing found --------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "{[]: 1}",  # literal_eval raises TypeError (unhashable key)
    "{{1, 2}: 3}",
    "{1: 2, 'ks': 3}",  # sorting the keys for the message raised TypeError
])
def test_mobile_space_odd_dicts_are_bad_input(text: str) -> None:
    with pytest.raises(BadInput):
        get_space("ofa-mbv3").from_string(text)


def test_mobile_space_huge_number_is_bad_input() -> None:
    space = get_space("ofa-mbv3")
    good = space.decode(space.sample(np.random.default_rng(0), 1)[0])
    good["ks"][0] = 10**400  # float() of it raised OverflowError
    with pytest.raises(BadInput, match=r"ks\[0\]"):
        space.from_string(repr(good))
    good["ks"][0] = 3
    good["r"] = 10**400
    with pytest.raises(BadInput, match="r ="):
        space.from_string(repr(good))


def test_mobile_space_malformed_number_prints_no_syntax_warning() -> None:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(BadInput, match="malformed architecture"):
            get_space("proxyless").from_string("{'ks': [3if 1 else 2], 'e': [3], 'd': [2], 'r': 224}")
    assert not caught
