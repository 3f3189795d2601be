"""PgasyncError: SQLSTATE classes, fields, str() and its limits, pickling."""

from __future__ import annotations

import builtins
import copy
import json
import pickle
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import postgres_async.errors as errors
from postgres_async import _pgerror, _sqlstate
from postgres_async.errors import (
    PgasyncError,
    PostgresField,
    UniqueViolation,
    client_error,
    error_class_for,
    set_error_reporting_limits,
)


@pytest.fixture(autouse=True)
def _default_limits() -> Iterator[None]:
    set_error_reporting_limits()
    yield
    set_error_reporting_limits()


def server_error(phase: str | None = None, **fields: str) -> PgasyncError:
    return PgasyncError.from_fields(fields, phase=phase)


def shown_query(text: str) -> str:
    """The query as str(err) shows it (undoing the JSON quoting)."""
    start = text.index('query "') + len("query ")
    value, _ = json.JSONDecoder().raw_decode(text, start)
    assert isinstance(value, str)
    return value


# Class lookup


def test_exact_code_gives_its_class() -> None:
    assert error_class_for("23505") is UniqueViolation
    assert issubclass(UniqueViolation, errors.IntegrityConstraintViolation)
    assert issubclass(errors.IntegrityConstraintViolation, PgasyncError)
    assert error_class_for("40P01") is errors.DeadlockDetected
    assert error_class_for("42601") is errors.PostgresSyntaxError


def test_unknown_code_in_known_class_gives_the_class_base() -> None:
    assert error_class_for("23999") is errors.IntegrityConstraintViolation
    err = server_error(C="23999", M="new in a future server")
    assert type(err) is errors.IntegrityConstraintViolation
    assert err.postgres_error_code == "23999"


@pytest.mark.parametrize("code", ["ZZ999", "10999", "", "2350", "235050", "23505 "])
def test_unknown_code_gives_pgasync_error(code: str) -> None:
    assert error_class_for(code) is PgasyncError


def test_from_fields_without_code_is_plain() -> None:
    err = server_error(M="no code")
    assert type(err) is PgasyncError
    assert err.postgres_error_code is None


def test_from_fields_ignores_the_class_it_is_called_on() -> None:
    err = UniqueViolation.from_fields({"C": "40P01", "M": "deadlock"})
    assert type(err) is errors.DeadlockDetected


def test_every_generated_class_is_consistent() -> None:
    classes = _sqlstate.SQLSTATE_CLASSES
    assert len(classes) == len(set(classes.values())) == len(_sqlstate.__all__)
    for code, cls in classes.items():
        assert cls.sqlstate == code
        assert error_class_for(code) is cls
        assert getattr(errors, cls.__name__) is cls
        assert cls.__name__ in errors.__all__
        assert cls.__name__ not in dir(builtins)
        base = classes.get(code[:2] + "000")
        expected_parent = PgasyncError if base is None or base is cls else base
        assert cls.__bases__ == (expected_parent,)


def test_shared_condition_names_get_one_class_each() -> None:
    assert errors.StringDataRightTruncation.sqlstate == "22001"
    assert errors.StringDataRightTruncationWarning.sqlstate == "01004"
    assert issubclass(errors.StringDataRightTruncationWarning, errors.PostgresWarning)
    assert errors.NullValueNotAllowed.sqlstate == "22004"
    assert errors.NullValueNotAllowedExternalRoutineInvocation.sqlstate == "39004"
    assert errors.ModifyingSqlDataNotPermitted.sqlstate == "2F002"
    assert errors.ModifyingSqlDataNotPermittedExternalRoutine.sqlstate == "38002"
    assert errors.PostgresWarning.sqlstate == "01000"
    assert errors.PostgresSystemError.sqlstate == "58000"


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("08001", errors.SqlclientUnableToEstablishSqlconnection),
        ("08003", errors.ConnectionDoesNotExist),
        ("08000", errors.ConnectionException),
        ("08P01", errors.ProtocolViolation),
        ("28P01", errors.InvalidPassword),
        ("28000", errors.InvalidAuthorizationSpecification),
        ("57014", errors.QueryCanceled),
    ],
)
def test_client_error_uses_the_code_class(code: str, cls: type[PgasyncError]) -> None:
    err = client_error(code, "it failed")
    assert type(err) is cls
    assert err.postgres_error_code == code
    assert err.fields == {}
    assert str(err) == f"it failed (SQLSTATE {code})"


def test_subclass_constructed_directly_has_its_code() -> None:
    err = UniqueViolation("dup")
    assert err.postgres_error_code == "23505"
    assert err.message == "dup"
    assert err.args == ("dup",)
    assert UniqueViolation("dup", code="23P99").postgres_error_code == "23P99"
    assert isinstance(err, errors.IntegrityConstraintViolation)


def test_no_code_is_none() -> None:
    err = PgasyncError("plain")
    assert err.postgres_error_code is None
    assert err.postgres_field(PostgresField.CODE) is None
    assert err.phase is None
    assert err.query is None
    assert err.parameters is None
    assert str(err) == "plain"


def test_server_code_wins_over_client_code() -> None:
    assert PgasyncError("m", code="08000", fields={"C": "57P01"}).postgres_error_code == "57P01"


# Fields


@pytest.mark.parametrize("field", list(PostgresField))
def test_every_field_round_trips(field: PostgresField) -> None:
    value = f"value of {field.name}"
    err = PgasyncError.from_fields({"C": "XX000", field.value: value})
    assert err.postgres_field(field) == value
    assert PostgresField(field.value) is field
    assert pickle.loads(pickle.dumps(err)).postgres_field(field) == value


def test_fields_are_copied_and_unknown_ones_kept() -> None:
    fields = {"C": "22012", "M": "division by zero", "Z": "future field"}
    err = PgasyncError.from_fields(fields)
    fields["M"] = "changed"
    assert err.message == "division by zero"
    assert err.fields["Z"] == "future field"


# str()


def test_str_full_example() -> None:
    err = server_error(
        "Postgres Server Error (state=Binding)",
        S="ERROR",
        V="ERROR",
        C="22P02",
        M='invalid input syntax for type integer: "a"',
        F="numutils.c",
        L="617",
        R="pg_strtoint32_safe",
    )
    err.tag_query("SELECT $1::int", ["a"])
    assert str(err) == (
        "query \"SELECT $1::int\" parameters ('a',): Postgres Server Error (state=Binding): "
        'ERROR 22P02: invalid input syntax for type integer: "a"'
    )


def test_str_server_error_parts() -> None:
    err = server_error(S="FATAL", C="57P01", M="terminating connection")
    assert str(err) == "FATAL 57P01: terminating connection"
    err = server_error(
        S="ERROR",
        C="23505",
        M='duplicate key value violates unique constraint "t_pkey"',
        D="Key (id)=(1) already exists.",
        H="Try another id.",
    )
    assert str(err) == (
        'ERROR 23505: duplicate key value violates unique constraint "t_pkey"'
        "; DETAIL: Key (id)=(1) already exists.; HINT: Try another id."
    )
    assert str(server_error(M="only a message")) == "only a message"


def test_str_is_one_line() -> None:
    err = server_error("phase\nline", S="ERROR", C="P0001", M="a\nb", D="c\r\nd")
    err.tag_query("select\n1", ["x\ny"])
    text = str(err)
    assert "\n" not in text
    assert "\r" not in text
    assert text == (
        "query \"select\\n1\" parameters ('x\\ny',): phase\\nline: "
        "ERROR P0001: a\\nb; DETAIL: c\\r\\nd"
    )


def test_unicode_line_breaks_are_escaped_and_the_query_still_decodes() -> None:
    query = "select 1 -- \u2028 \x85 \v end"
    err = server_error(C="42601", M="m\u2029")
    err.tag_query(query, ["\u2028"])
    text = str(err)
    assert len(text.splitlines()) == 1
    assert shown_query(text) == query
    assert text.endswith("parameters ('\\u2028',): 42601: m\\u2029")


def test_str_parameters() -> None:
    err = client_error("08P01", "bad")
    err.tag_query("q", [None, "it's", ""])
    assert str(err) == 'query "q" parameters (None, "it\'s", \'\'): bad (SQLSTATE 08P01)'
    err.tag_query("q", [])
    assert err.parameters is None
    assert str(err) == 'query "q": bad (SQLSTATE 08P01)'


def test_original_error_is_chained() -> None:
    dead = server_error(
        "ErrorResponse received asynchronously, assuming connection is dead",
        S="FATAL",
        C="57P01",
        M="terminating connection due to administrator command",
    )
    err = client_error(
        "08003", "query issued against previously-failed connection", original_error=dead
    )
    err.tag_query("", None)
    assert err.postgres_error_code == "08003"
    assert err.original_error is dead
    assert str(err) == (
        'query "": query issued against previously-failed connection (SQLSTATE 08003)'
        "; original error: ErrorResponse received asynchronously, assuming connection is"
        " dead: FATAL 57P01: terminating connection due to administrator command"
    )


def test_repr() -> None:
    quoted = UniqueViolation('it\'s "dup"')
    assert repr(quoted) == "UniqueViolation('it\\'s \"dup\"', code='23505')"
    assert repr(PgasyncError("x")) == "PgasyncError('x')"
    err = server_error(C="42601", M="syntax error at end of input")
    assert repr(err) == "PostgresSyntaxError('syntax error at end of input', code='42601')"


# Limits (upstream test_error_code.ml "long queries are shrunk around the error position")


def test_long_query_is_shrunk_around_the_error_position() -> None:
    nums = ", ".join(map(str, range(10000)))
    query = "select $1, " + nums + ", foobar, " + nums
    index = query.index("foobar")
    err = server_error(
        "Postgres Server Error (state=Parsing)",
        S="ERROR",
        C="42703",
        M='column "foobar" does not exist',
        P=str(index + 1),
    )
    err.tag_query(query, [nums])
    text = str(err)
    window = shown_query(text)
    assert window.startswith("... 29, 9830, ")
    assert window.endswith(", 224, 2 ...")
    inner = window[len("... ") : -len(" ...")]
    assert inner == query[index - 1024 : index + 1024]
    assert inner[1024:].startswith("foobar, 0, 1")
    assert f"parameters ({nums[:128]!r}...,)" in text
    assert text.endswith(
        ': Postgres Server Error (state=Parsing): ERROR 42703: column "foobar" does not exist'
    )


def test_long_query_without_position_is_shown_from_its_start() -> None:
    query = "x" * 5000
    err = server_error(C="42601", M="m")
    err.tag_query(query, None)
    assert shown_query(str(err)) == "x" * 1024 + " ..."


def test_query_within_the_limit_is_whole() -> None:
    query = "y" * 2048
    err = server_error(C="42601", M="m", P="2000")
    err.tag_query(query, None)
    assert shown_query(str(err)) == query


def test_position_at_the_end_and_beyond() -> None:
    query = "".join(chr(ord("a") + i % 26) for i in range(3000))
    for position in ("3000", "99999"):
        err = server_error(C="42601", M="m", P=position)
        err.tag_query(query, None)
        shown = shown_query(str(err))
        assert shown.startswith("... ")
        assert not shown.endswith(" ...")
        assert query.endswith(shown[4:])


def test_many_parameters_are_omitted() -> None:
    err = client_error("54023", "too many")
    err.tag_query("q", [str(i) for i in range(100000)])
    first = ", ".join(repr(str(i)) for i in range(15))
    assert f"parameters ({first}, remaining 99985 parameter(s) omitted)" in str(err)


def test_exactly_the_limit_of_parameters_is_shown_whole() -> None:
    err = client_error("54023", "m")
    err.tag_query("q", [str(i) for i in range(16)])
    assert "omitted" not in str(err)
    assert "'15'" in str(err)


def test_set_error_reporting_limits() -> None:
    set_error_reporting_limits(query_length=10, parameter_length=2, parameters=2)
    err = server_error(C="42601", M="m", P="11")
    err.tag_query("0123456789abcdefghij", ["abc", "d", "e"])
    assert str(err) == (
        "query \"... 56789abcde ...\" parameters ('ab'..., remaining 2 parameter(s) omitted)"
        ": 42601: m"
    )
    set_error_reporting_limits()
    assert str(err).startswith("query \"0123456789abcdefghij\" parameters ('abc', 'd', 'e')")


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_set_error_reporting_limits_rejects_bad_values(bad: object) -> None:
    with pytest.raises(ValueError, match="query_length"):
        set_error_reporting_limits(query_length=bad)  # type: ignore[arg-type]


@settings(deadline=None, max_examples=300)
@given(
    sql=st.text(max_size=400),
    position=st.one_of(st.none(), st.integers(-5, 500).map(str), st.text(max_size=4)),
    limit=st.integers(0, 300),
)
def test_shrink_query_bounds(sql: str, position: str | None, limit: int) -> None:
    shown = _pgerror.shrink_query(sql, position, limit)
    if len(sql) <= limit:
        assert shown == sql
        return
    # shown must be "[... ]sql[start:end][ ...]", markers exactly where text was cut.
    candidates = []
    for start in range(len(sql) + 1):
        head = "... " if start > 0 else ""
        if not shown.startswith(head):
            continue
        for tail in (" ...", ""):
            rest = shown[len(head) :]
            if not rest.endswith(tail):
                continue
            inner = rest[: len(rest) - len(tail)]
            end = start + len(inner)
            if sql[start:end] == inner and (end < len(sql)) == bool(tail):
                candidates.append(inner)
    assert candidates
    assert min(len(inner) for inner in candidates) <= 2 * (limit // 2)


@settings(deadline=None, max_examples=200)
@given(
    parameters=st.lists(st.one_of(st.none(), st.text(max_size=40)), max_size=40),
    max_count=st.integers(0, 20),
    max_length=st.integers(0, 30),
)
def test_show_parameters_bounds(
    parameters: list[str | None], max_count: int, max_length: int
) -> None:
    shown = _pgerror.show_parameters(parameters, max_count, max_length)
    assert shown.startswith("(")
    assert shown.endswith(")")
    kept = parameters if len(parameters) <= max_count else parameters[: max(max_count - 1, 0)]
    note = ""
    if len(kept) < len(parameters):
        note = f"remaining {len(parameters) - len(kept)} parameter(s) omitted"
        assert shown.endswith(note + ")")
    # Each kept value is at most its cut repr plus "..." and a ", " separator.
    bound = sum(len(repr(p if p is None else p[:max_length])) + 5 for p in kept)
    assert len(shown) <= 3 + bound + len(note)


@settings(deadline=None, max_examples=200)
@given(
    fields=st.dictionaries(st.characters(codec="ascii"), st.text(max_size=50), max_size=8),
    phase=st.one_of(st.none(), st.text(max_size=20)),
    sql=st.one_of(st.none(), st.text(max_size=3000)),
    parameters=st.lists(st.one_of(st.none(), st.text(max_size=300)), max_size=20),
)
def test_str_never_raises_and_is_one_line(
    fields: dict[str, str], phase: str | None, sql: str | None, parameters: list[str | None]
) -> None:
    err = PgasyncError.from_fields(fields, phase=phase)
    if sql is not None:
        err.tag_query(sql, parameters)
    text = str(err)
    assert len(text.splitlines()) <= 1
    assert len(repr(err).splitlines()) <= 1
    assert str(pickle.loads(pickle.dumps(err))) == text


# Pickling


def test_pickle_keeps_class_message_code_fields_and_tags() -> None:
    original = server_error("x", S="FATAL", C="57P01", M="bye")
    err = client_error("08003", "closed", original_error=original)
    err.tag_query("select $1", ["p"])
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(err, protocol=proto))
        assert type(back) is errors.ConnectionDoesNotExist
        assert back.message == "closed"
        assert back.args == ("closed",)
        assert back.postgres_error_code == "08003"
        assert back.query == "select $1"
        assert back.parameters == ("p",)
        assert back.original_error is not None
        assert type(back.original_error) is errors.AdminShutdown
        assert back.original_error.fields == original.fields
        assert back.original_error.phase == "x"
        assert str(back) == str(err)
    plain = pickle.loads(pickle.dumps(PgasyncError("m", code="XX123")))
    assert type(plain) is PgasyncError
    assert plain.postgres_error_code == "XX123"
    assert copy.copy(err).fields == err.fields


def test_public_module_names() -> None:
    assert PgasyncError.__module__ == "postgres_async.errors"
    assert UniqueViolation.__module__ == "postgres_async.errors"
    assert b"postgres_async.errors" in pickle.dumps(UniqueViolation("x"))
