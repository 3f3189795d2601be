"""PostgreSQL's MD5 password authentication (AuthenticationMD5Password): pure."""

from __future__ import annotations

import hashlib

__all__ = ["md5_password_message"]


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        pass
    # Raised outside the handler: the UnicodeEncodeError holds the whole string, which
    # must not ride along as __context__ when it is the password.
    raise ValueError(f"the {what} is not encodable as UTF-8 (lone surrogate?)")


def md5_password_message(user: str, password: str, salt: bytes) -> bytes:
    """The PasswordMessage payload (without its NUL terminator) answering an MD5 challenge.

    PostgreSQL stores md5(password + user) and asks for md5(that hex digest + salt),
    each digest in lowercase hex, the whole prefixed with "md5".
    """
    if len(salt) != 4:
        raise ValueError(f"the MD5 salt must be 4 bytes, got {len(salt)}")
    # usedforsecurity=False lets FIPS-mode builds compute it: the server chose MD5,
    # refusing here would only make the login fail.
    inner = hashlib.md5(
        _utf8(password, "password") + _utf8(user, "user name"), usedforsecurity=False
    ).hexdigest()
    outer = hashlib.md5(inner.encode("ascii") + bytes(salt), usedforsecurity=False).hexdigest()
    return b"md5" + outer.encode("ascii")
