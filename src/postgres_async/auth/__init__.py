"""Authentication exchanges: MD5 and SCRAM-SHA-256(-PLUS). Pure: bytes in, bytes out."""

from postgres_async.auth.md5 import md5_password_message
from postgres_async.auth.scram import (
    SCRAM_SHA_256,
    SCRAM_SHA_256_PLUS,
    ScramAuthenticationError,
    ScramError,
    ScramMechanismError,
    ScramSha256,
    tls_server_end_point,
)

__all__ = [
    "SCRAM_SHA_256",
    "SCRAM_SHA_256_PLUS",
    "ScramAuthenticationError",
    "ScramError",
    "ScramMechanismError",
    "ScramSha256",
    "md5_password_message",
    "tls_server_end_point",
]
