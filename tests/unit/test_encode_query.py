"""The compiled ``encode_query`` against its reference: the same bytes, or None.

None means "take the Python path", which then gives every other type its text form and
every bad value its error; so the compiled function may decline anything, but what it
returns must be exactly the reference's bytes. It must not decline the common types,
or the fast path would silently never run.
"""

from __future__ import annotations

import os
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postgres_async import _accel
from postgres_async.protocol import messages as m

SETTINGS = settings(
    max_examples=int(os.environ.get("POSTGRES_ASYNC_DIFF_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PARSE = m.encode_parse("SELECT $1, $2")
TAIL = m.Describe("P").encode() + m.Execute().encode() + m.Sync().encode()

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(),
    st.text(alphabet=st.characters(codec="ascii")),
    st.floats(),
    st.binary(max_size=8),
)


@SETTINGS
@given(
    parameters=st.lists(values, max_size=12),
    container=st.sampled_from([list, tuple]),
)
def test_same_bytes_as_the_reference_or_none(
    speedups: ModuleType, parameters: list[object], container: type
) -> None:
    given_parameters = container(parameters)
    wire = speedups.encode_query(PARSE, given_parameters, TAIL)
    if wire is None:
        return
    assert wire == _accel.encode_query_python(PARSE, given_parameters, TAIL)


@pytest.mark.parametrize(
    "parameters",
    [
        None,
        [],
        (),
        ["text", "", "é€𝄞"],
        [0, -1, 2**63 - 1, -(2**63), True, False, None],
        ("mixed", 42, None, True),
    ],
)
def test_common_types_take_the_compiled_path(
    speedups: ModuleType, parameters: list[object] | tuple[object, ...] | None
) -> None:
    wire = speedups.encode_query(PARSE, parameters, TAIL)
    assert wire is not None
    assert (
        wire
        == PARSE
        + m.encode_bind_text([None if v is None else _text(v).encode() for v in parameters or ()])
        + TAIL
    )
    assert m.Bind.decode(wire[len(PARSE) + 5 : len(wire) - len(TAIL)]).params == tuple(
        None if v is None else _text(v).encode() for v in parameters or ()
    )


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@pytest.mark.parametrize(
    "parameters",
    [
        ["nul\0inside"],
        ["lone \ud800 surrogate"],
        [2**64],
        [-(2**63) - 1],
        [1.5],
        [b"bytes"],
        [m],  # any other object: the reference raises TypeError
        "a str is not a list of parameters",
        iter([1, 2]),
        [0] * 65536,
    ],
)
def test_what_only_the_reference_handles_is_declined(
    speedups: ModuleType, parameters: object
) -> None:
    assert speedups.encode_query(PARSE, parameters, TAIL) is None


def test_bad_arguments_raise(speedups: ModuleType) -> None:
    with pytest.raises(TypeError):
        speedups.encode_query("not bytes", [], TAIL)
    with pytest.raises(TypeError):
        speedups.encode_query(PARSE, [])


def test_bound_when_compiled_is_in_use() -> None:
    if _accel.IMPLEMENTATION == "c":
        assert _accel.encode_query is not None
    else:
        assert _accel.encode_query is None
