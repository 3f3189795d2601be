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


# Statement names: the unnamed statement (b""), and names of the statement cache.
names = st.one_of(
    st.just(b""),
    st.text(st.characters(codec="ascii", exclude_characters="\0"), min_size=1, max_size=70).map(
        str.encode
    ),
)


@SETTINGS
@given(
    parameters=st.lists(values, max_size=12),
    container=st.sampled_from([list, tuple]),
    statement=names,
    head=st.sampled_from([PARSE, b"", m.Close("S", "old").encode() + PARSE]),
)
def test_same_bytes_as_the_reference_or_none(
    speedups: ModuleType,
    parameters: list[object],
    container: type,
    statement: bytes,
    head: bytes,
) -> None:
    given_parameters = container(parameters)
    wire = speedups.encode_query(head, statement, given_parameters, TAIL)
    if wire is None:
        return
    assert wire == _accel.encode_query_python(head, statement, given_parameters, TAIL)


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
    wire = speedups.encode_query(PARSE, b"", parameters, TAIL)
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
    assert speedups.encode_query(PARSE, b"", parameters, TAIL) is None


def test_a_named_statement_is_bound(speedups: ModuleType) -> None:
    wire = speedups.encode_query(b"", b"__postgres_async_7", [5, None], TAIL)
    assert wire is not None
    bind = m.Bind.decode(wire[5 : len(wire) - len(TAIL)])
    assert bind.statement == "__postgres_async_7"
    assert bind.portal == ""
    assert bind.params == (b"5", None)


def test_bad_arguments_raise(speedups: ModuleType) -> None:
    with pytest.raises(TypeError):
        speedups.encode_query("not bytes", b"", [], TAIL)
    with pytest.raises(TypeError):
        speedups.encode_query(PARSE, "not bytes", [], TAIL)
    with pytest.raises(TypeError):
        speedups.encode_query(PARSE, b"", [])
    with pytest.raises(ValueError, match="NUL"):
        speedups.encode_query(PARSE, b"a\0b", [], TAIL)


def test_bound_when_compiled_is_in_use() -> None:
    if _accel.IMPLEMENTATION == "c":
        assert _accel.encode_query is not None
    else:
        assert _accel.encode_query is None
