"""Salted scrypt password hashes in a self-describing string.

The encoding is `scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>`, so the cost can be raised later while
hashes made with the old parameters still verify.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

SCHEME = "scrypt"
# scrypt's usual interactive-login cost: 16 MiB and roughly 50 ms per hash on these machines.
N, R, P = 2**14, 8, 1
SALT_BYTES = 16
HASH_BYTES = 32
# A stored hash is data, not code: bound what it may ask for so a forged one cannot exhaust memory.
_MAX_N, _MAX_R, _MAX_P = 2**20, 32, 16
_MAX_MEM = 1024**3


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    # OpenSSL refuses scrypt above 32 MiB unless maxmem says more; 128*r*(n+p+2) is what it needs.
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024
    secret = password.encode("utf-8", "surrogatepass")
    return hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=length)


NUL_REFUSED = "a password may not contain a NUL character"


def acceptable(password: str) -> bool:
    """False for a password holding NUL. scrypt's inner HMAC pads its key with zero bytes, so "pw"
    and "pw" + NUL would be one login; C-string layers elsewhere cut at NUL too."""
    return "\x00" not in password


def hash_password(password: str) -> str:
    """Hash `password` with scrypt and a fresh random salt; the result names its own parameters."""
    if not acceptable(password):
        raise ValueError(NUL_REFUSED)
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(password, salt, N, R, P, HASH_BYTES)
    return f"{SCHEME}${N}${R}${P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """True when `password` matches `encoded`; False for a mismatch or any malformed encoding."""
    if not isinstance(password, str) or not isinstance(encoded, str) or not acceptable(password):
        return False
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        return False
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, expected = _unb64(parts[4]), _unb64(parts[5])
    except (ValueError, binascii.Error):
        return False
    if not (1 < n <= _MAX_N and n & (n - 1) == 0 and 0 < r <= _MAX_R and 0 < p <= _MAX_P):
        return False
    if not salt or not 16 <= len(expected) <= 64 or 128 * r * (n + p + 2) > _MAX_MEM:
        return False
    try:
        actual = _scrypt(password, salt, n, r, p, len(expected))
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(actual, expected)
