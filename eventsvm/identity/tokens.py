"""Fernet bearer tokens, as keystone issues them: nothing is stored, the token carries its claims.

The claims (user, project, roles, methods, audit id, audit chain, issue and expiry times) are
serialised as compact JSON and encrypted and signed with Fernet (AES-128-CBC + HMAC-SHA256) under
the repository's primary key; any active key (see eventsvm.identity.keys) decrypts, so rotation
does not log anybody out.
The token string itself is a bearer secret: it is never logged, stored, or put in an error message.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.fernet import InvalidToken, MultiFernet

from eventsvm.identity.keys import key_indexes, load

PAYLOAD_VERSION = 1
# Real tokens are ~300 characters; refuse absurd input before spending cycles on it.
MAX_TOKEN_LENGTH = 4096
# How long a validated token's claims are kept (keystonemiddleware's token_cache_time is 300 s),
# and how many: only the cryptography is cached, the identity model is asked on every use.
TOKEN_CACHE_S = 300.0
TOKEN_CACHE_SIZE = 10_000


class TokenInvalid(Exception):
    """The token is garbage, was tampered with, or no active key decrypts it."""


class TokenExpired(TokenInvalid):
    """The token was genuine but its expiry has passed (a kind of invalid, so one handler covers both)."""


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly issued token; the secret `token` string is left out of repr and str."""

    token: str = field(repr=False)
    audit_id: str
    issued_at: datetime
    expires_at: datetime
    chain_audit_id: str | None = None


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a valid token says about its bearer; safe to log (holds no secret)."""

    user_id: str
    project_id: str
    roles: tuple[str, ...]
    methods: tuple[str, ...]
    audit_id: str
    issued_at: datetime
    expires_at: datetime
    # the audit id of the password-issued token a re-scoped one descends from; None for that one
    chain_audit_id: str | None = None

    @property
    def audit_chain_id(self) -> str:
        """Keystone's audit_chain_id: the original token's audit id, shared by the whole chain."""
        return self.chain_audit_id or self.audit_id

    @property
    def audit_ids(self) -> list[str]:
        """Keystone's `audit_ids`: this token's audit id, then the chain's when re-scoped."""
        return [self.audit_id] if self.chain_audit_id is None else [self.audit_id, self.chain_audit_id]

    @property
    def issued_at_ms(self) -> int:
        """Issue time in epoch milliseconds, the unit events use."""
        return epoch_ms(self.issued_at)

    @property
    def expires_at_ms(self) -> int:
        """Expiry in epoch milliseconds (what a token_revoked event records)."""
        return epoch_ms(self.expires_at)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def epoch_ms(moment: datetime) -> int:
    """An aware datetime as integer milliseconds since the epoch (exact, no float rounding)."""
    return (moment - _EPOCH) // _MILLISECOND


def _from_ms(ms: int) -> datetime:
    return _EPOCH + ms * _MILLISECOND


def new_audit_id() -> str:
    """A random url-safe id (22 characters) that names a token without revealing it."""
    return secrets.token_urlsafe(16)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class TokenService:
    """Issues and validates Fernet tokens with the keys in `key_dir`, picking up rotations by itself."""

    def __init__(
        self,
        key_dir: Path | str,
        ttl_seconds: int = 3600,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self._key_dir = Path(key_dir)
        self._ttl = timedelta(seconds=ttl_seconds)
        self._clock = clock
        self._keys: tuple[tuple[int, ...], MultiFernet] | None = None
        # token -> (claims, the key indexes then, when it was validated)
        self._validated: dict[str, tuple[TokenClaims, tuple[int, ...], float]] = {}
        self._validated_lock = threading.Lock()
        self._fernet()  # fail at start-up, not on the first request, when the repository is empty

    def issue(
        self,
        user_id: str,
        project_id: str,
        roles: Iterable[str],
        methods: Iterable[str] = ("password",),
        rescoped_from: TokenClaims | None = None,
    ) -> IssuedToken:
        """A new project-scoped token for `user_id`, valid for the configured TTL.

        A token re-scoped from another (keystone's `token` method) expires with it and joins its
        audit chain, as keystone's do: renewing cannot outlive the password that began the chain,
        and revoking the chain's first token revokes every token in it.
        """
        issued_ms = epoch_ms(self._clock())
        expires_ms = issued_ms + int(self._ttl.total_seconds() * 1000)
        chain: str | None = None
        if rescoped_from is not None:
            expires_ms = min(expires_ms, rescoped_from.expires_at_ms)
            chain = rescoped_from.audit_chain_id
        audit_id = new_audit_id()
        payload: dict[str, Any] = {
            "v": PAYLOAD_VERSION,
            "u": user_id,
            "p": project_id,
            "r": list(roles),
            "m": list(methods),
            "a": audit_id,
            "i": issued_ms,
            "e": expires_ms,
        }
        if chain is not None:
            payload["c"] = chain  # absent from first tokens, so tokens from before chains still parse
        plaintext = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        token = self._fernet().encrypt_at_time(plaintext, issued_ms // 1000).decode("ascii")
        return IssuedToken(
            token=token, audit_id=audit_id, issued_at=_from_ms(issued_ms), expires_at=_from_ms(expires_ms),
            chain_audit_id=chain,
        )

    def validate(self, token: str) -> TokenClaims:
        """The claims of a genuine, unexpired token; raises TokenInvalid or TokenExpired otherwise.

        Only the cryptography and the clock are checked here; whether the user, project, role and
        audit id are still good is IdentityState.check_token_still_valid's question, asked on
        every use. A token's decryption is done once and cached (as keystonemiddleware caches
        validations) for TOKEN_CACHE_S, until the keys change (a rotation may prune the key it
        was made with) or it expires.
        """
        keys_at, fernet = self._current_keys()
        now = time.monotonic()
        hit = self._validated.get(token) if isinstance(token, str) else None
        if hit is not None and hit[1] == keys_at and now - hit[2] < TOKEN_CACHE_S:
            claims = hit[0]
        else:
            claims = _decrypt(fernet, token)
            with self._validated_lock:
                if len(self._validated) >= TOKEN_CACHE_SIZE:
                    # the oldest first: dicts keep insertion order
                    del self._validated[next(iter(self._validated))]
                self._validated[token] = (claims, keys_at, now)
        if self._clock() >= claims.expires_at:
            raise TokenExpired("The token has expired.")
        return claims

    def _fernet(self) -> MultiFernet:
        return self._current_keys()[1]

    def _current_keys(self) -> tuple[tuple[int, ...], MultiFernet]:
        """The key files' indexes and the keys. Every rotation adds a new highest index, so the list
        of file names changes exactly when the keys do; a directory listing is much cheaper than
        re-reading the keys per request."""
        indexes = tuple(key_indexes(self._key_dir))
        cached = self._keys
        if cached is None or cached[0] != indexes:
            cached = (indexes, load(self._key_dir))
            self._keys = cached
        return cached


def _decrypt(fernet: MultiFernet, token: str) -> TokenClaims:
    """The claims inside a genuine token; TokenInvalid otherwise (its expiry is not checked here)."""
    plaintext: bytes | None = None
    if isinstance(token, str) and 0 < len(token) <= MAX_TOKEN_LENGTH:
        try:
            plaintext = fernet.decrypt(token)
        except InvalidToken:
            pass
    # Raised outside the except block so no chained exception can carry anything derived from it.
    if plaintext is None:
        raise TokenInvalid("The token is not valid.")
    claims = _parse_claims(plaintext)
    if claims is None:
        raise TokenInvalid("The token is not valid.")
    return claims


def _parse_claims(plaintext: bytes) -> TokenClaims | None:
    try:
        payload: Any = json.loads(plaintext)
    except ValueError:
        return None
    if not isinstance(payload, dict) or payload.get("v") != PAYLOAD_VERSION:
        return None
    strings = [payload.get(k) for k in ("u", "p", "a")]
    lists = [payload.get(k) for k in ("r", "m")]
    times = [payload.get(k) for k in ("i", "e")]
    if not all(isinstance(s, str) for s in strings):
        return None
    if not all(isinstance(lst, list) and all(isinstance(x, str) for x in lst) for lst in lists):
        return None
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in times):
        return None
    chain = payload.get("c")
    if chain is not None and not isinstance(chain, str):
        return None
    return TokenClaims(
        user_id=payload["u"],
        project_id=payload["p"],
        roles=tuple(payload["r"]),
        methods=tuple(payload["m"]),
        audit_id=payload["a"],
        issued_at=_from_ms(payload["i"]),
        expires_at=_from_ms(payload["e"]),
        chain_audit_id=chain,
    )
