"""The client side of SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 5802, RFC 7677) as
PostgreSQL speaks it, and the tls-server-end-point channel binding hash (RFC 5929).

This module owns the choice of mechanism, the bytes of the client's messages, and the
checking of every server message: anything malformed raises `ScramError`, and a server
that cannot prove it knows the password raises `ScramAuthenticationError`. Pure: no
I/O; the caller runs `client_final` (PBKDF2) in a thread when `needs_slow_hash` says so.

Why not `scramp.ScramClient`: it refuses things PostgreSQL and libpq accept, so some
logins that work with psql would fail here. PostgreSQL takes the user from the
StartupMessage and libpq sends an empty SCRAM user name (scramp requires one); the
server allows iteration counts below 4096 (`scram_iterations` >= 1, PostgreSQL 16+) and
short salts in a verifier set by hand (scramp refuses both); and when SASLprep rejects
a password both libpq and the server use its raw UTF-8 bytes (scramp raises). So the
exchange is written here, small and strict, with scramp's SASLprep; the tests check it
against scramp's server side and RFC 7677's example.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_ITERATIONS",
    "SCRAM_SHA_256",
    "SCRAM_SHA_256_PLUS",
    "SLOW_HASH_ITERATIONS",
    "ScramAuthenticationError",
    "ScramError",
    "ScramMechanismError",
    "ScramSha256",
    "tls_server_end_point",
]

SCRAM_SHA_256: Final = "SCRAM-SHA-256"
SCRAM_SHA_256_PLUS: Final = "SCRAM-SHA-256-PLUS"
# Above this many PBKDF2 rounds the caller should hash off the event loop (4096, the
# server default, takes a few milliseconds).
SLOW_HASH_ITERATIONS: Final = 16384
# A guard against a server that would keep us hashing for minutes; PostgreSQL's own
# default is 4096 and no sane setting comes near this (about 5 s of CPU).
MAX_ITERATIONS: Final = 10_000_000
_NONCE_BYTES: Final = 18  # as libpq
_KEY_LENGTH: Final = 32  # SHA-256


class ScramError(ValueError):
    """A SCRAM exchange failed: a malformed or unexpected server message (a protocol
    violation), or a failure of a subclass's kind. Never carries the password."""


class ScramMechanismError(ScramError):
    """The server offers no SASL mechanism this client can use."""


class ScramAuthenticationError(ScramError):
    """The server reported a SCRAM error, or could not prove it knows the password."""


def _describe(text: str) -> str:
    # Server-controlled text goes into messages only quoted and cut short.
    return repr(text[:64] + ("..." if len(text) > 64 else ""))


def _password_bytes(password: str) -> bytes:
    # Imported here, not at the top: scramp imports ssl, and this module stays
    # importable without any I/O module.
    from scramp.utils import ScramException, saslprep

    prepared: str | None
    try:
        prepared = saslprep(password)
    except ScramException:
        # libpq and the server both fall back to the raw password when SASLprep
        # rejects it (prohibited or unassigned characters), so must we.
        prepared = None
    if prepared is None or not prepared:
        prepared = password
    try:
        return prepared.encode("utf-8")
    except UnicodeEncodeError:
        pass
    # Raised outside the handler: the UnicodeEncodeError holds the password.
    raise ValueError("the password is not encodable as UTF-8 (lone surrogate?)")


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ScramError(f"malformed SCRAM message: {what} is not valid base64") from None


def _is_printable(text: str) -> bool:
    # RFC 5802 "printable": %x21-2B / %x2D-7E, i.e. visible ASCII except ','.
    return bool(text) and all(0x21 <= ord(c) <= 0x7E and c != "," for c in text)


def _decode(message: bytes, what: str) -> str:
    if not isinstance(message, bytes | bytearray | memoryview):
        raise ScramError(f"{what} must be bytes, not {type(message).__name__}")
    try:
        return bytes(message).decode("utf-8")
    except UnicodeDecodeError:
        raise ScramError(f"malformed SCRAM {what}: invalid UTF-8") from None


def _check_server_error(text: str, what: str) -> None:
    if text.startswith("e="):
        raise ScramAuthenticationError(
            f"server reported a SCRAM error in {what}: {_describe(text[2:])}"
        )
    if text.startswith("m="):
        raise ScramError(f"server requires an unsupported SCRAM extension in {what}")


@dataclass(frozen=True, slots=True)
class _ServerFirst:
    nonce: str
    salt: bytes
    iterations: int


def _parse_server_first(message: bytes, client_nonce: str) -> _ServerFirst:
    """Parse `r=<nonce>,s=<base64 salt>,i=<count>` strictly.

    Extensions are refused, as libpq refuses them: PostgreSQL never sends any.
    """
    text = _decode(message, "server-first-message")
    _check_server_error(text, "server-first-message")
    parts = text.split(",")
    if len(parts) != 3 or [p[:2] for p in parts] != ["r=", "s=", "i="]:
        raise ScramError(
            "malformed SCRAM server-first-message: expected exactly the attributes r, s, i"
        )
    nonce, salt_b64, count = (p[2:] for p in parts)
    if not _is_printable(nonce):
        raise ScramError("malformed SCRAM server-first-message: invalid nonce characters")
    if not nonce.startswith(client_nonce) or len(nonce) <= len(client_nonce):
        raise ScramError("invalid SCRAM server-first-message: the nonce does not extend ours")
    salt = _b64decode(salt_b64, "the salt")
    if not salt:
        raise ScramError("invalid SCRAM server-first-message: empty salt")
    # No leading zero (RFC 5802 posit-number); the length cap keeps int() trivial.
    if not (count.isascii() and count.isdigit()) or count[0] == "0" or len(count) > 9:
        raise ScramError(f"invalid SCRAM server-first-message: iteration count {_describe(count)}")
    iterations = int(count)
    if iterations > MAX_ITERATIONS:
        raise ScramError(
            f"SCRAM iteration count {iterations} exceeds this client's limit of {MAX_ITERATIONS}"
        )
    return _ServerFirst(nonce, salt, iterations)


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, "sha256")


_INITIAL, _FIRST_SENT, _FINAL_SENT, _DONE, _FAILED = range(5)


class ScramSha256:
    """One client-side SCRAM-SHA-256(-PLUS) exchange.

    `mechanisms` are the names the server offered (AuthenticationSASL). With
    `channel_binding` (type name and data, e.g. `("tls-server-end-point",
    tls_server_end_point(der))`) and a server offering SCRAM-SHA-256-PLUS, the exchange
    binds to the TLS channel; otherwise it is plain SCRAM-SHA-256 (telling the server
    whether the client could have bound, so a stripped PLUS offer is detected).

    Calls go `client_first()`, `client_final(server_first)`,
    `verify_server_final(server_final)`; a call out of order raises ScramError, as
    does any call after a failure. Only `server_verified` being True means the server
    proved it knows the password: the caller must not accept AuthenticationOk before.
    """

    __slots__ = (
        "_cbind_input",
        "_client_first_bare",
        "_client_nonce",
        "_expected_server_signature",
        "_gs2_header",
        "_mechanism",
        "_password",
        "_stage",
        "_user",
    )

    def __init__(
        self,
        user: str,
        password: str,
        mechanisms: Sequence[str],
        channel_binding: tuple[str, bytes] | None = None,
        *,
        sasl_username: str = "",
        client_nonce: str | None = None,
    ) -> None:
        """`user` is the startup user, used in error messages only: PostgreSQL ignores
        the SCRAM user name, which is `sasl_username` (empty, as libpq sends it; tests
        set it to talk to servers that need one). `client_nonce` is for tests too.
        """
        self._user = user
        offered = list(mechanisms)
        gs2_header: str
        if channel_binding is not None:
            cb_name, cb_data = channel_binding
            if not _is_cb_name(cb_name):
                raise ValueError(f"invalid channel binding type name {cb_name!r}")
            if not isinstance(cb_data, bytes) or not cb_data:
                raise ValueError("channel binding data must be non-empty bytes")
        if channel_binding is not None and SCRAM_SHA_256_PLUS in offered:
            self._mechanism = SCRAM_SHA_256_PLUS
            gs2_header = f"p={channel_binding[0]},,"
            self._cbind_input = gs2_header.encode("ascii") + channel_binding[1]
        elif SCRAM_SHA_256 in offered:
            self._mechanism = SCRAM_SHA_256
            # "y": we could bind but the server did not offer it; a server that did
            # offer PLUS then knows a man in the middle removed it.
            gs2_header = "y,," if channel_binding is not None else "n,,"
            self._cbind_input = gs2_header.encode("ascii")
        else:
            shown = ", ".join(_describe(m) for m in offered[:8]) or "none"
            if SCRAM_SHA_256_PLUS in offered:
                raise ScramMechanismError(
                    f"server requires channel binding ({SCRAM_SHA_256_PLUS}) but no TLS "
                    f"channel binding data is available (offered: {shown})"
                )
            raise ScramMechanismError(
                "server offers no supported SASL authentication mechanism "
                f"(offered: {shown}; supported: {SCRAM_SHA_256}, {SCRAM_SHA_256_PLUS})"
            )

        if client_nonce is None:
            client_nonce = base64.b64encode(secrets.token_bytes(_NONCE_BYTES)).decode("ascii")
        elif not _is_printable(client_nonce):
            raise ValueError("client_nonce must be printable ASCII without ','")
        self._client_nonce = client_nonce
        self._password = _password_bytes(password)
        escaped = sasl_username.replace("=", "=3D").replace(",", "=2C")
        self._client_first_bare = f"n={escaped},r={client_nonce}".encode()
        self._gs2_header = gs2_header.encode("ascii")
        self._expected_server_signature = b""
        self._stage = _INITIAL

    def __repr__(self) -> str:
        return f"<ScramSha256 {self._mechanism} user={self._user!r} stage={self._stage}>"

    @property
    def mechanism(self) -> str:
        """The mechanism name to send in SASLInitialResponse."""
        return self._mechanism

    @property
    def server_verified(self) -> bool:
        """True once `verify_server_final` accepted the server's signature."""
        return self._stage == _DONE

    def _expect(self, stage: int, what: str) -> None:
        if self._stage == _FAILED:
            raise ScramError(f"SCRAM exchange already failed; unexpected {what}")
        if self._stage != stage:
            self._stage = _FAILED
            raise ScramError(f"unexpected {what} at this point of the SCRAM exchange")

    def client_first(self) -> bytes:
        """The client-first-message (SASLInitialResponse data)."""
        self._expect(_INITIAL, "client-first-message")
        self._stage = _FIRST_SENT
        return self._gs2_header + self._client_first_bare

    def needs_slow_hash(self, server_first: bytes) -> bool:
        """Whether `client_final(server_first)` should run off the event loop.

        Raises ScramError if the message is malformed; changes no state.
        """
        return _parse_server_first(server_first, self._client_nonce).iterations > (
            SLOW_HASH_ITERATIONS
        )

    def client_final(self, server_first: bytes) -> bytes:
        """Check the server-first-message and compute the client-final-message.

        Runs PBKDF2 with the server's iteration count: may be slow. Touches nothing
        but this object, so it may run in a worker thread.
        """
        self._expect(_FIRST_SENT, "server-first-message")
        try:
            parsed = _parse_server_first(server_first, self._client_nonce)
        except ScramError:
            self._stage = _FAILED
            raise
        salted = hashlib.pbkdf2_hmac("sha256", self._password, parsed.salt, parsed.iterations)
        client_key = _hmac(salted, b"Client Key")
        stored_key = hashlib.sha256(client_key).digest()
        server_key = _hmac(salted, b"Server Key")
        without_proof = (
            b"c=" + base64.b64encode(self._cbind_input) + b",r=" + parsed.nonce.encode("ascii")
        )
        auth_message = self._client_first_bare + b"," + bytes(server_first) + b"," + without_proof
        client_signature = _hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, client_signature, strict=True))
        self._expected_server_signature = _hmac(server_key, auth_message)
        self._stage = _FINAL_SENT
        return without_proof + b",p=" + base64.b64encode(proof)

    def verify_server_final(self, server_final: bytes) -> None:
        """Check the server-final-message (AuthenticationSASLFinal data).

        Raises ScramAuthenticationError if the server's signature is wrong (it does
        not know the password) and ScramError if the message is malformed.
        """
        self._expect(_FINAL_SENT, "server-final-message")
        self._stage = _FAILED  # until proven otherwise
        text = _decode(server_final, "server-final-message")
        _check_server_error(text, "server-final-message")
        if not text.startswith("v=") or "," in text:
            raise ScramError(
                "malformed SCRAM server-final-message: expected exactly the attribute v"
            )
        signature = _b64decode(text[2:], "the server signature")
        if len(signature) != _KEY_LENGTH or not hmac.compare_digest(
            signature, self._expected_server_signature
        ):
            raise ScramAuthenticationError(
                f"SCRAM server signature mismatch for user {self._user!r}: the server "
                "could not prove it knows the password"
            )
        self._stage = _DONE


def _is_cb_name(name: object) -> bool:
    # RFC 5056 cb-name: 1*(ALPHA / DIGIT / "." / "-")
    return (
        isinstance(name, str)
        and bool(name)
        and all(c.isascii() and (c.isalnum() or c in ".-") for c in name)
    )


# --------------------------------------------------------------------------- channel binding

# Signature algorithm OID -> the hash RFC 5929 prescribes (MD5 and SHA-1 become SHA-256).
_SIGNATURE_HASHES: Final = {
    "1.2.840.113549.1.1.4": "sha256",  # md5WithRSAEncryption
    "1.2.840.113549.1.1.5": "sha256",  # sha1WithRSAEncryption
    "1.2.840.113549.1.1.14": "sha224",
    "1.2.840.113549.1.1.11": "sha256",
    "1.2.840.113549.1.1.12": "sha384",
    "1.2.840.113549.1.1.13": "sha512",
    "1.2.840.10045.4.1": "sha256",  # ecdsa-with-SHA1
    "1.2.840.10045.4.3.1": "sha224",
    "1.2.840.10045.4.3.2": "sha256",
    "1.2.840.10045.4.3.3": "sha384",
    "1.2.840.10045.4.3.4": "sha512",
    "1.2.840.10040.4.3": "sha256",  # dsa-with-sha1
    "2.16.840.1.101.3.4.3.1": "sha224",  # dsa-with-sha224
    "2.16.840.1.101.3.4.3.2": "sha256",  # dsa-with-sha256
}
# Digest algorithm OIDs, for RSASSA-PSS whose hash sits in the parameters.
_DIGESTS: Final = {
    "1.3.14.3.2.26": "sha256",  # SHA-1
    "2.16.840.1.101.3.4.2.4": "sha224",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}
_RSASSA_PSS: Final = "1.2.840.113549.1.1.10"


def _der_read(data: bytes, pos: int) -> tuple[int, int, int]:
    """Read one DER TLV at `pos`: (tag, start of value, end of value)."""
    if pos + 2 > len(data):
        raise ValueError("malformed certificate: truncated")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if tag & 0x1F == 0x1F:
        raise ValueError("malformed certificate: unexpected high tag number")
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4 or pos + count > len(data):
            raise ValueError("malformed certificate: bad length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("malformed certificate: truncated")
    return tag, pos, pos + length


def _der_oid(data: bytes, pos: int) -> tuple[str, int]:
    """Read an OBJECT IDENTIFIER at `pos`: (dotted string, end)."""
    tag, start, end = _der_read(data, pos)
    if tag != 0x06 or start == end:
        raise ValueError("malformed certificate: expected an OID")
    arcs: list[int] = []
    value = 0
    for byte in data[start:end]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if data[end - 1] & 0x80:
        raise ValueError("malformed certificate: truncated OID")
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]]), end


def tls_server_end_point(der_certificate: bytes) -> bytes:
    """The tls-server-end-point channel binding data (RFC 5929) for the server's
    DER-encoded certificate: its hash with the hash of its signature algorithm.

    Raises ValueError when the algorithm names no single hash (e.g. Ed25519), where
    PostgreSQL cannot bind either.
    """
    data = bytes(der_certificate)
    tag, start, _ = _der_read(data, 0)  # Certificate ::= SEQUENCE
    if tag != 0x30:
        raise ValueError("malformed certificate: expected a SEQUENCE")
    _, _, tbs_end = _der_read(data, start)  # tbsCertificate
    tag, alg_start, alg_end = _der_read(data, tbs_end)  # signatureAlgorithm
    if tag != 0x30:
        raise ValueError("malformed certificate: expected an AlgorithmIdentifier")
    oid, pos = _der_oid(data, alg_start)
    hash_name = _SIGNATURE_HASHES.get(oid)
    if oid == _RSASSA_PSS:
        hash_name = "sha256"  # the parameters' hashAlgorithm defaults to SHA-1
        if pos < alg_end:
            tag, params_start, params_end = _der_read(data, pos)  # RSASSA-PSS-params
            if tag == 0x30 and params_start < params_end:
                tag, inner_start, _ = _der_read(data, params_start)
                if tag == 0xA0:  # [0] EXPLICIT hashAlgorithm
                    _, digest_start, _ = _der_read(data, inner_start)
                    digest_oid, _ = _der_oid(data, digest_start)
                    hash_name = _DIGESTS.get(digest_oid)
    if hash_name is None:
        raise ValueError(
            f"cannot compute tls-server-end-point: signature algorithm {oid} names no "
            "single hash function"
        )
    return hashlib.new(hash_name, data).digest()
