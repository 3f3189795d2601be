"""MD5 and SCRAM-SHA-256(-PLUS): known answers, exchanges against scramp's server side
and a hand-computed one, strict parsing of server messages, channel binding hashes."""

from __future__ import annotations

import ast
import base64
import contextlib
import datetime
import hashlib
import hmac
import pathlib
from collections.abc import Callable

import pytest
import scramp
from hypothesis import given, settings
from hypothesis import strategies as st

import postgres_async.auth as auth
from postgres_async.auth import (
    ScramAuthenticationError,
    ScramError,
    ScramMechanismError,
    ScramSha256,
    md5_password_message,
    tls_server_end_point,
)
from postgres_async.auth.scram import MAX_ITERATIONS, SLOW_HASH_ITERATIONS

SHA256 = ["SCRAM-SHA-256"]
BOTH = ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]
CB = ("tls-server-end-point", hashlib.sha256(b"certificate").digest())
NONCE = "fyko+d2lbbFgONRv9qkxdawL"


# --------------------------------------------------------------------------- purity


def test_auth_modules_import_no_io_module() -> None:
    src = pathlib.Path(auth.__file__).parent
    for path in src.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in {"asyncio", "socket", "ssl"}, path


# --------------------------------------------------------------------------- MD5


def _md5_reference(user: str, password: str, salt: bytes) -> bytes:
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return b"md5" + hashlib.md5(inner.encode() + salt).hexdigest().encode()


@pytest.mark.parametrize(
    ("user", "password", "salt"),
    [
        ("postgres", "secret", b"\x01\x02\x03\x04"),
        ("alice", "", b"\x00\x00\x00\x00"),
        ("jürgen", "pässwörd ✓", b"\xff\xfe\xfd\xfc"),
    ],
)
def test_md5_known_answer(user: str, password: str, salt: bytes) -> None:
    assert md5_password_message(user, password, salt) == _md5_reference(user, password, salt)


def test_md5_fixed_vector() -> None:
    # Worked by hand: md5("secretpostgres"), then md5(that hex + "abcd").
    inner = hashlib.md5(b"secretpostgres").hexdigest()
    expected = b"md5" + hashlib.md5(inner.encode() + b"abcd").hexdigest().encode()
    assert md5_password_message("postgres", "secret", b"abcd") == expected
    assert len(expected) == 35


def test_md5_rejects_bad_salt_and_unencodable_password() -> None:
    with pytest.raises(ValueError, match="4 bytes"):
        md5_password_message("u", "p", b"abc")
    with pytest.raises(ValueError, match="password") as info:
        md5_password_message("u", "bad\ud800secret", b"abcd")
    assert "secret" not in str(info.value)
    assert info.value.__context__ is None


# --------------------------------------------------------------------------- SCRAM helpers


def _scramp_exchange(
    client: ScramSha256,
    server_password: str,
    *,
    mechanism: str = "SCRAM-SHA-256",
    server_cb: tuple[str, bytes] | None = None,
) -> None:
    """Run a whole exchange of `client` against scramp's server side."""
    mech = scramp.ScramMechanism(mechanism)
    info = mech.make_auth_info(server_password, iteration_count=4096)
    server = mech.make_server(lambda _user: info, channel_binding=server_cb)
    server.set_client_first(client.client_first().decode())
    server_first = server.get_server_first().encode()
    assert not client.needs_slow_hash(server_first)
    client_final = client.client_final(server_first)
    # On a bad proof the server answers e=...; the client must take that as a failure.
    with contextlib.suppress(scramp.ScramException):
        server.set_client_final(client_final.decode())
    client.verify_server_final(server.get_server_final().encode())


class _HandServer:
    """An independent server side written from RFC 5802 with hashlib, for what
    scramp's server refuses (empty user name, few iterations, short salts)."""

    def __init__(self, password: bytes, salt: bytes, iterations: int) -> None:
        salted = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
        self.client_key = hmac.digest(salted, b"Client Key", "sha256")
        self.stored_key = hashlib.sha256(self.client_key).digest()
        self.server_key = hmac.digest(salted, b"Server Key", "sha256")
        self.salt = salt
        self.iterations = iterations

    def first(self, client_first: bytes) -> bytes:
        header, _, self.bare = client_first.partition(b",,")
        assert header in (b"n", b"y") or header.startswith(b"p=")
        self.header = header + b",,"
        client_nonce = self.bare.split(b",r=")[1]
        self.server_first = (
            (b"r=" + client_nonce + b"SERVERNONCE,s=" + base64.b64encode(self.salt))
            + b",i="
            + str(self.iterations).encode()
        )
        return self.server_first

    def final(self, client_final: bytes, cb_data: bytes = b"") -> bytes:
        without_proof, _, proof_b64 = client_final.rpartition(b",p=")
        assert without_proof.startswith(b"c=" + base64.b64encode(self.header + cb_data))
        auth_message = self.bare + b"," + self.server_first + b"," + without_proof
        signature = hmac.digest(self.stored_key, auth_message, "sha256")
        client_key = bytes(
            a ^ b for a, b in zip(base64.b64decode(proof_b64), signature, strict=True)
        )
        assert hashlib.sha256(client_key).digest() == self.stored_key, "bad proof"
        server_signature = hmac.digest(self.server_key, auth_message, "sha256")
        return b"v=" + base64.b64encode(server_signature)


def _at_final(password: str = "pencil", iterations: int = 1) -> tuple[ScramSha256, _HandServer]:
    """A client that has sent its client-final-message (cheaply: few iterations)."""
    client = ScramSha256("bob", password, SHA256)
    server = _HandServer(password.encode(), b"saltsaltsalt", iterations)
    client_final = client.client_final(server.first(client.client_first()))
    server.final(client_final)
    return client, server


# --------------------------------------------------------------------------- SCRAM exchanges


def test_rfc7677_example() -> None:
    client = ScramSha256(
        "user", "pencil", SHA256, sasl_username="user", client_nonce="rOprNGfwEbeRWgbNEkqO"
    )
    assert client.client_first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    server_first = (
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    assert client.client_final(server_first) == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert not client.server_verified
    client.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    assert client.server_verified


@pytest.mark.parametrize(
    ("client_password", "server_password"),
    [
        ("pencil", "pencil"),
        ("pässwörd ünïcödé", "pässwörd ünïcödé"),
        ("\u2168", "IX"),  # SASLprep: ROMAN NUMERAL NINE normalises (NFKC) to "IX"
        ("pass\u00adword", "password"),  # SASLprep: soft hyphen maps to nothing
        ("a\u00a0b", "a b"),  # SASLprep: non-ASCII space maps to a space
    ],
)
def test_exchange_against_scramp_server(client_password: str, server_password: str) -> None:
    client = ScramSha256("bob", client_password, SHA256, sasl_username="bob")
    assert client.mechanism == "SCRAM-SHA-256"
    _scramp_exchange(client, server_password)
    assert client.server_verified


def test_wrong_password_fails_at_verify_without_leaking_it() -> None:
    client = ScramSha256("bob", "wrong-secret", SHA256, sasl_username="bob")
    with pytest.raises(ScramAuthenticationError) as info:
        _scramp_exchange(client, "pencil")
    assert "wrong-secret" not in str(info.value)
    assert "wrong-secret" not in repr(client)
    assert not client.server_verified


def test_impostor_server_that_does_not_know_the_password_is_detected() -> None:
    # The server accepts any proof and signs with keys derived from another password.
    client = ScramSha256("bob", "pencil", SHA256)
    impostor = _HandServer(b"not-the-password", b"saltsaltsalt", 4096)
    client_final = client.client_final(impostor.first(client.client_first()))
    without_proof = client_final.rpartition(b",p=")[0]
    auth_message = impostor.bare + b"," + impostor.server_first + b"," + without_proof
    forged = hmac.digest(impostor.server_key, auth_message, "sha256")
    with pytest.raises(ScramAuthenticationError, match="signature mismatch"):
        client.verify_server_final(b"v=" + base64.b64encode(forged))
    assert not client.server_verified


def test_default_client_first_has_empty_user_name_and_random_nonce() -> None:
    first = ScramSha256("bob", "pencil", SHA256).client_first()
    other = ScramSha256("bob", "pencil", SHA256).client_first()
    assert first.startswith(b"n,,n=,r=")
    assert len(first) == len(b"n,,n=,r=") + 24  # 18 random bytes in base64
    assert first != other


def test_user_name_is_escaped_when_sent() -> None:
    client = ScramSha256("x", "p", SHA256, sasl_username="a=b,c", client_nonce="abc")
    assert client.client_first() == b"n,,n=a=3Db=2Cc,r=abc"


@pytest.mark.parametrize("iterations", [1, 4095])
def test_low_iteration_counts_and_short_salts_are_accepted(iterations: int) -> None:
    # PostgreSQL 16+ allows scram_iterations down to 1; libpq accepts that.
    client = ScramSha256("bob", "pencil", SHA256)
    server = _HandServer(b"pencil", b"s", iterations)
    server_final = server.final(client.client_final(server.first(client.client_first())))
    client.verify_server_final(server_final)
    assert client.server_verified


def test_password_rejected_by_saslprep_is_used_raw_like_libpq() -> None:
    password = "pass\u200eword\x07"  # LRM and BEL are prohibited output
    client = ScramSha256("bob", password, SHA256)
    server = _HandServer(password.encode(), b"saltsaltsalt", 1)
    server_final = server.final(client.client_final(server.first(client.client_first())))
    client.verify_server_final(server_final)


def test_unencodable_password_raises_without_leaking() -> None:
    with pytest.raises(ValueError, match="password") as info:
        ScramSha256("bob", "top\ud800secret", SHA256)
    assert "secret" not in str(info.value)
    assert info.value.__context__ is None


# --------------------------------------------------------------------------- mechanism choice


@pytest.mark.parametrize(
    ("offered", "channel_binding", "mechanism", "header"),
    [
        (SHA256, None, "SCRAM-SHA-256", b"n,,"),
        (BOTH, None, "SCRAM-SHA-256", b"n,,"),
        (SHA256, CB, "SCRAM-SHA-256", b"y,,"),
        (BOTH, CB, "SCRAM-SHA-256-PLUS", b"p=tls-server-end-point,,"),
        (["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"], CB, "SCRAM-SHA-256-PLUS", b"p=tls-"),
        (["OTHER", "SCRAM-SHA-256"], None, "SCRAM-SHA-256", b"n,,"),
    ],
)
def test_mechanism_choice(
    offered: list[str],
    channel_binding: tuple[str, bytes] | None,
    mechanism: str,
    header: bytes,
) -> None:
    client = ScramSha256("bob", "pencil", offered, channel_binding)
    assert client.mechanism == mechanism
    assert client.client_first().startswith(header)


def test_no_supported_mechanism_lists_the_offered_ones() -> None:
    with pytest.raises(ScramMechanismError, match=r"SCRAM-SHA-1.*OAUTHBEARER"):
        ScramSha256("bob", "pencil", ["SCRAM-SHA-1", "OAUTHBEARER"])
    with pytest.raises(ScramMechanismError, match="none"):
        ScramSha256("bob", "pencil", [])
    with pytest.raises(ScramMechanismError, match="channel binding"):
        ScramSha256("bob", "pencil", ["SCRAM-SHA-256-PLUS"])
    assert issubclass(ScramMechanismError, ScramError)
    assert issubclass(ScramError, ValueError)


@pytest.mark.parametrize(
    "channel_binding",
    [("bad name!", b"x"), ("tls-server-end-point", b""), ("", b"x")],
)
def test_invalid_channel_binding_arguments(channel_binding: tuple[str, bytes]) -> None:
    with pytest.raises(ValueError, match="channel binding"):
        ScramSha256("bob", "pencil", BOTH, channel_binding)


def test_plus_exchange_against_scramp_server() -> None:
    client = ScramSha256("bob", "pencil", BOTH, CB, sasl_username="bob")
    _scramp_exchange(client, "pencil", mechanism="SCRAM-SHA-256-PLUS", server_cb=CB)
    assert client.server_verified


def test_plus_exchange_with_other_channel_fails() -> None:
    # A man in the middle terminates TLS: the client sees another certificate.
    client = ScramSha256(
        "bob", "pencil", BOTH, ("tls-server-end-point", b"other"), sasl_username="bob"
    )
    with pytest.raises(ScramAuthenticationError):
        _scramp_exchange(client, "pencil", mechanism="SCRAM-SHA-256-PLUS", server_cb=CB)


def test_plus_exchange_against_hand_server() -> None:
    client = ScramSha256("bob", "pencil", BOTH, CB)
    server = _HandServer(b"pencil", b"saltsaltsalt", 1)
    client_final = client.client_final(server.first(client.client_first()))
    client.verify_server_final(server.final(client_final, cb_data=CB[1]))
    assert client.server_verified


# --------------------------------------------------------------------------- strict parsing


def _server_first(r: str = NONCE + "srv", s: str = "c2FsdHNhbHRzYWx0", i: str = "4096") -> bytes:
    return f"r={r},s={s},i={i}".encode()


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (b"", "expected exactly"),
        (b"\xff\xfe", "UTF-8"),
        (_server_first(s="not base64!"), "base64"),
        (_server_first(s="c2FsdA"), "base64"),  # missing padding
        (_server_first(s=""), "empty salt|expected"),
        (_server_first(r=NONCE), "does not extend"),
        (_server_first(r="other" + NONCE + "x"), "does not extend"),
        (_server_first(r=NONCE + "s\x00x"), "nonce"),
        (_server_first(r=NONCE + "é"), "nonce"),
        (_server_first(i="0"), "iteration"),
        (_server_first(i="-1"), "iteration"),
        (_server_first(i="04096"), "iteration"),
        (_server_first(i="abc"), "iteration"),
        (_server_first(i="٤٠٩٦"), "iteration"),  # Unicode digits
        (_server_first(i="4096 "), "iteration"),
        (_server_first(i="9" * 5000), "iteration"),
        (_server_first(i=str(MAX_ITERATIONS + 1)), "exceeds"),
        (_server_first(i=""), "iteration"),
        (b"s=c2FsdHNhbHRzYWx0,r=" + NONCE.encode() + b"x,i=4096", "expected exactly"),
        (b"r=" + NONCE.encode() + b"x,s=c2FsdHNhbHRzYWx0", "expected exactly"),
        (_server_first() + b",x=ext", "expected exactly"),
        (b"m=ext," + _server_first(), "unsupported SCRAM extension"),
        (b"e=unknown-user", "unknown-user"),
    ],
)
def test_malformed_server_first(message: bytes, match: str) -> None:
    client = ScramSha256("bob", "pencil", SHA256, client_nonce=NONCE)
    client.client_first()
    with pytest.raises(ScramError, match=match):
        client.needs_slow_hash(message)
    with pytest.raises(ScramError, match=match):
        client.client_final(message)
    with pytest.raises(ScramError, match="already failed"):
        client.client_final(_server_first())


def test_needs_slow_hash() -> None:
    client = ScramSha256("bob", "pencil", SHA256, client_nonce=NONCE)
    client.client_first()
    assert not client.needs_slow_hash(_server_first(i="4096"))
    assert not client.needs_slow_hash(_server_first(i=str(SLOW_HASH_ITERATIONS)))
    assert client.needs_slow_hash(_server_first(i=str(SLOW_HASH_ITERATIONS + 1)))
    assert client.needs_slow_hash(_server_first(i=str(MAX_ITERATIONS)))


@pytest.mark.parametrize(
    ("message", "error", "match"),
    [
        (b"", ScramError, "expected exactly"),
        (b"\xc3", ScramError, "UTF-8"),
        (b"v=", ScramAuthenticationError, "mismatch"),
        (b"v=!!!!", ScramError, "base64"),
        (b"v=" + base64.b64encode(b"x" * 32), ScramAuthenticationError, "mismatch"),
        (b"v=" + base64.b64encode(b"x" * 31), ScramAuthenticationError, "mismatch"),
        (b"v=AAAA,x=ext", ScramError, "expected exactly"),
        (b"e=invalid-proof", ScramAuthenticationError, "invalid-proof"),
        (b"e=" + b"x" * 500, ScramAuthenticationError, r"\.\.\."),
        (b"m=ext", ScramError, "extension"),
    ],
)
def test_malformed_server_final(message: bytes, error: type[Exception], match: str) -> None:
    client, _ = _at_final()
    with pytest.raises(error, match=match) as info:
        client.verify_server_final(message)
    assert len(str(info.value)) < 300
    assert not client.server_verified


def test_calls_out_of_order_raise_scram_error() -> None:
    client = ScramSha256("bob", "pencil", SHA256, client_nonce=NONCE)
    with pytest.raises(ScramError, match="unexpected server-first"):
        client.client_final(_server_first())  # before client_first
    client = ScramSha256("bob", "pencil", SHA256)
    client.client_first()
    with pytest.raises(ScramError, match="unexpected server-final"):
        client.verify_server_final(b"v=AAAA")  # a SASLFinal before SASLContinue
    client, server = _at_final()
    with pytest.raises(ScramError, match="unexpected server-first"):
        client.client_final(server.server_first)  # a second SASLContinue
    client = ScramSha256("bob", "p", SHA256)
    client.client_first()
    with pytest.raises(ScramError, match="unexpected client-first"):
        client.client_first()


def test_verified_exchange_refuses_more_messages() -> None:
    client = ScramSha256("bob", "pencil", SHA256)
    server = _HandServer(b"pencil", b"saltsaltsalt", 1)
    final = server.final(client.client_final(server.first(client.client_first())))
    client.verify_server_final(final)
    assert client.server_verified
    with pytest.raises(ScramError, match="unexpected server-final"):
        client.verify_server_final(final)


# --------------------------------------------------------------------------- fuzzing

_PIECES = st.sampled_from(
    [
        "r=",
        "s=",
        "i=",
        ",",
        "=",
        NONCE,
        "srv",
        "c2FsdHNhbHRzYWx0",
        "AAAA",
        "==",
        "1",
        "0",
        "4096",
        "-",
        "e=",
        "m=",
        "v=",
        "\x00",
        "é",
        "٤",
        " ",
    ]
)
_STRUCTURED = st.lists(_PIECES, max_size=12).map(lambda parts: "".join(parts).encode())


def _fresh_client() -> ScramSha256:
    client = ScramSha256("bob", "pencil", SHA256, client_nonce=NONCE)
    client.client_first()
    return client


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | _STRUCTURED)
def test_fuzz_server_first_only_raises_scram_error(message: bytes) -> None:
    client = _fresh_client()
    for call in (client.needs_slow_hash, client.client_final):
        with contextlib.suppress(ScramError):
            call(message)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=200)
    | _STRUCTURED
    | st.binary(min_size=32, max_size=32).map(lambda sig: b"v=" + base64.b64encode(sig))
)
def test_fuzz_server_final_only_raises_scram_error(message: bytes) -> None:
    client, _ = _at_final()
    with pytest.raises(ScramError):
        client.verify_server_final(message)
    assert not client.server_verified


# --------------------------------------------------------------------------- channel binding


def _certificate(sign: Callable[..., object], key: object) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    cert = sign(builder)
    return cert.public_bytes(Encoding.DER)  # type: ignore[attr-defined,no-any-return]


def _signed_certificates() -> list[tuple[str, bytes, str]]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()

    def pss(h: hashes.HashAlgorithm) -> padding.PSS:
        return padding.PSS(mgf=padding.MGF1(h), salt_length=padding.PSS.DIGEST_LENGTH)

    certs = [
        ("rsa-sha256", _certificate(lambda b: b.sign(rsa_key, hashes.SHA256()), rsa_key), "sha256"),
        ("rsa-sha384", _certificate(lambda b: b.sign(rsa_key, hashes.SHA384()), rsa_key), "sha384"),
        ("rsa-sha512", _certificate(lambda b: b.sign(rsa_key, hashes.SHA512()), rsa_key), "sha512"),
        ("ecdsa-sha256", _certificate(lambda b: b.sign(ec_key, hashes.SHA256()), ec_key), "sha256"),
        ("ecdsa-sha384", _certificate(lambda b: b.sign(ec_key, hashes.SHA384()), ec_key), "sha384"),
        (
            "rsa-pss-sha384",
            _certificate(
                lambda b: b.sign(rsa_key, hashes.SHA384(), rsa_padding=pss(hashes.SHA384())),
                rsa_key,
            ),
            "sha384",
        ),
        ("ed25519", _certificate(lambda b: b.sign(ed_key, None), ed_key), ""),
    ]
    return certs


def test_tls_server_end_point_uses_the_signature_hash() -> None:
    from cryptography import x509

    for name, der, expected_hash in _signed_certificates():
        if not expected_hash:
            with pytest.raises(ValueError, match="no single hash"):
                tls_server_end_point(der)
            continue
        # The oracle: cryptography's own reading of the signature hash.
        algorithm = x509.load_der_x509_certificate(der).signature_hash_algorithm
        assert algorithm is not None
        assert algorithm.name == expected_hash, name
        assert tls_server_end_point(der) == hashlib.new(expected_hash, der).digest(), name


def test_tls_server_end_point_trustme_certificate() -> None:
    import trustme
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    for key_type in (trustme.KeyType.RSA, trustme.KeyType.ECDSA):
        ca = trustme.CA(key_type=key_type)
        pem = ca.issue_cert("db.example.com").cert_chain_pems[0].bytes()
        cert = x509.load_pem_x509_certificate(pem)
        der = cert.public_bytes(Encoding.DER)
        algorithm = cert.signature_hash_algorithm
        assert algorithm is not None
        assert tls_server_end_point(der) == hashlib.new(algorithm.name, der).digest()


@pytest.mark.parametrize("der", [b"", b"\x30", b"\x30\x85\x00\x00\x00\x00\x00", b"\x02\x01\x00"])
def test_tls_server_end_point_malformed(der: bytes) -> None:
    with pytest.raises(ValueError, match="malformed"):
        tls_server_end_point(der)
