"""Which state of the device a whole-model figure describes, said out loud.

``warm``: after warm-up runs, as one ``edgelat profile model`` measures a model (the device
otherwise lightly loaded). ``sustained``: after the device has run the load unmeasured for
:data:`SETTLE_S` seconds first: on shared hosts the first minute or two of continuous
whole-model load can run faster than the load goes on at, and a phone's thermal throttling
is the same shape, stronger (figures from one machine: docs/calibration.md). A model run
continuously in an app sees the sustained figure.

Both states of one model file are stored as separate whole-model rows: the warm one under
the model's reference, the sustained one under :func:`state_ref` (its environment records
``state`` and the settling time), so neither overwrites the other and ``predict`` can say
which measured figure it sits next to.
"""

from __future__ import annotations

from edgelat.errors import BadInput

STATES: tuple[str, ...] = ("warm", "sustained")
DEFAULT_STATE = "warm"
#: seconds of unmeasured load before a sustained measurement (the predictor build uses the same)
SETTLE_S = 120.0


def check_state(state: str) -> str:
    """``state`` if it is one of :data:`STATES`; BadInput naming the valid ones otherwise."""
    if state not in STATES:
        raise BadInput(f"unknown state {state!r}; valid: {', '.join(STATES)}")
    return state


def state_ref(model_ref: str, state: str) -> str:
    """The whole-model row reference of ``model_ref`` measured in ``state``."""
    return model_ref if check_state(state) == DEFAULT_STATE else f"{model_ref}@{state}"


def state_name(name: str, state: str) -> str:
    """A model's display name with its state (the default state adds nothing)."""
    return name if check_state(state) == DEFAULT_STATE else f"{name} ({state})"
