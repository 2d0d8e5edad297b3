"""Secrets: random tokens and how they are stored (SHA-256), passwords and how they are stored
(argon2id).

Why two different hashes. A password is chosen by a person and guessable, so a stolen hash must
be expensive to test guesses against: argon2id (argon2-cffi), memory-hard and salted, about
0.1 s per check. A token is 256 random bits made here: no guess list exists and brute force is
out of reach whatever the hash costs, so a fast hash (SHA-256) loses nothing, and a slow one
would spend 0.1 s of CPU on every API request. SHA-256 is also deterministic, so the store
finds a token by its hash through an index instead of testing every row. Only the hash is ever
written: whoever reads the database cannot use what they read.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Literal

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

TokenKind = Literal["session", "apikey"]
# A recognizable prefix lets secret scanners (and people) tell an iacloud credential when one
# leaks into a log or a repository, and tells the two kinds apart.
PREFIX: dict[TokenKind, str] = {"session": "iacs_", "apikey": "iack_"}
_TOKEN_BYTES = 32  # 256 bits
_MAX_TOKEN = 80  # a token is 48 characters; anything much longer is not one


def new_token(kind: TokenKind) -> str:
    return PREFIX[kind] + secrets.token_urlsafe(_TOKEN_BYTES)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def looks_like_token(token: object) -> bool:
    """Cheap shape check before hashing: bounded length and a known prefix."""
    return (
        isinstance(token, str)
        and len(token) <= _MAX_TOKEN
        and token.startswith(tuple(PREFIX.values()))
        and token.isascii()
    )


def same_hash(stored: str, computed: str) -> bool:
    """Constant-time comparison, so the time taken says nothing about how much matched."""
    return hmac.compare_digest(stored.encode(), computed.encode())


class Passwords:
    """argon2id hashing with the library's defaults (RFC 9106's low-memory profile), or
    cheaper parameters passed in by tests."""

    def __init__(self, hasher: argon2.PasswordHasher | None = None) -> None:
        self.hasher = hasher or argon2.PasswordHasher()
        self._dummy: str | None = None

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        """True if `password` matches `stored`. With no stored hash (unknown user) a dummy hash
        is checked anyway, so an unknown user takes as long as a wrong password."""
        if stored is None:
            if self._dummy is None:
                self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
            stored = self._dummy
            password = ""  # never matches the dummy's random password
        try:
            return self.hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        try:
            return self.hasher.check_needs_rehash(stored)
        except (InvalidHashError, ValueError):
            return True
