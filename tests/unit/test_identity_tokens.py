"""Fernet tokens: round trip, tampering, expiry, key rotation, and never leaking the token text."""

import logging
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet

from eventsvm.identity.keys import ensure_keys, load, rotate
from eventsvm.identity.tokens import TokenExpired, TokenInvalid, TokenService, epoch_ms


class Clock:
    """A settable clock so expiry is tested without sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def key_dir(tmp_path):
    ensure_keys(tmp_path / "keys")
    return tmp_path / "keys"


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def service(key_dir, clock):
    return TokenService(key_dir, ttl_seconds=3600, clock=clock)


def test_an_issued_token_validates_to_its_claims(service, clock):
    issued = service.issue("user-1", "project-1", ["member", "reader"])
    claims = service.validate(issued.token)
    assert (claims.user_id, claims.project_id) == ("user-1", "project-1")
    assert claims.roles == ("member", "reader")
    assert claims.methods == ("password",)
    assert claims.audit_id == issued.audit_id
    assert claims.issued_at == issued.issued_at == clock.now
    assert claims.expires_at == issued.expires_at == clock.now + timedelta(hours=1)
    assert issued.expires_at.tzinfo is not None


def test_audit_ids_are_short_random_and_url_safe(service):
    ids = {service.issue("u", "p", ["member"]).audit_id for _ in range(20)}
    assert len(ids) == 20
    for audit_id in ids:
        assert len(audit_id) == 22
        assert set(audit_id) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_a_token_past_its_expiry_is_refused(service, clock):
    issued = service.issue("u", "p", ["member"])
    clock.now += timedelta(minutes=59)
    service.validate(issued.token)
    clock.now += timedelta(minutes=1)
    with pytest.raises(TokenExpired):
        service.validate(issued.token)


def test_expired_is_a_kind_of_invalid_so_one_handler_gives_401(service, clock):
    issued = service.issue("u", "p", ["member"])
    clock.now += timedelta(hours=2)
    with pytest.raises(TokenInvalid):
        service.validate(issued.token)


@pytest.mark.parametrize("garbage", ["", "not-a-token", "gAAAAA" + "A" * 100, "x" * 10_000])
def test_garbage_is_invalid(service, garbage):
    with pytest.raises(TokenInvalid):
        service.validate(garbage)


def test_a_tampered_token_is_invalid(service):
    token = service.issue("u", "p", ["member"]).token
    middle = len(token) // 2
    flipped = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    with pytest.raises(TokenInvalid):
        service.validate(flipped)


def test_a_token_from_another_cloud_is_invalid(service, tmp_path, clock):
    ensure_keys(tmp_path / "other")
    foreign = TokenService(tmp_path / "other", clock=clock).issue("u", "p", ["admin"]).token
    with pytest.raises(TokenInvalid):
        service.validate(foreign)


def test_a_fernet_token_with_a_foreign_payload_is_invalid(service, key_dir):
    # genuine encryption, but not a payload this service wrote: still not a token
    forged = Fernet((key_dir / "1").read_bytes()).encrypt(b'{"v":1,"u":"admin"}').decode()
    with pytest.raises(TokenInvalid):
        service.validate(forged)


def test_rotation_keeps_tokens_valid_until_their_key_is_pruned(service, key_dir):
    old = service.issue("u", "p", ["member"]).token
    rotate(key_dir, max_active_keys=3)  # old key 1 becomes secondary
    newer = service.issue("u", "p", ["member"]).token
    assert service.validate(old).user_id == "u"
    rotate(key_dir, max_active_keys=3)  # key 1 pruned
    with pytest.raises(TokenInvalid):
        service.validate(old)
    assert service.validate(newer).user_id == "u"


def test_a_second_service_on_the_same_keys_accepts_tokens_after_rotation(key_dir, clock):
    api_a = TokenService(key_dir, clock=clock)
    api_b = TokenService(key_dir, clock=clock)
    api_b.validate(api_a.issue("u", "p", ["member"]).token)  # both loaded keys now
    rotate(key_dir)
    # a promotes the staged key; b must accept what a now issues
    assert api_b.validate(api_a.issue("u", "p", ["member"]).token).project_id == "p"


def test_the_token_never_appears_in_repr_str_or_exceptions(service, clock, caplog):
    caplog.set_level(logging.DEBUG)
    issued = service.issue("u", "p", ["member"])
    token = issued.token
    assert token not in repr(issued) and token not in str(issued)
    assert token not in repr(service.validate(token))

    tampered = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")
    clock.now += timedelta(days=1)
    for bad in (tampered, token):
        with pytest.raises(TokenInvalid) as caught:
            service.validate(bad)
        text = f"{caught.value!s} {caught.value!r} {caught.getrepr()}"
        assert bad not in text and bad[:40] not in text
        assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert token not in caplog.text and tampered not in caplog.text


def test_ttl_must_be_positive(key_dir):
    with pytest.raises(ValueError):
        TokenService(key_dir, ttl_seconds=0)


def test_a_rescoped_token_keeps_its_parents_expiry_and_joins_its_audit_chain(service, clock):
    first = service.validate(service.issue("user-1", "project-1", ["member"]).token)
    assert first.chain_audit_id is None and first.audit_ids == [first.audit_id]
    clock.now += timedelta(minutes=50)
    child = service.validate(service.issue("user-1", "project-2", ["member"], methods=("token",),
                                           rescoped_from=first).token)
    assert child.issued_at == clock.now and child.expires_at == first.expires_at
    assert child.audit_ids == [child.audit_id, first.audit_id] and child.audit_id != first.audit_id
    clock.now += timedelta(minutes=5)
    grandchild = service.validate(service.issue("user-1", "project-1", ["member"], methods=("token",),
                                                rescoped_from=child).token)
    assert grandchild.audit_chain_id == first.audit_id and grandchild.expires_at == first.expires_at
    clock.now = first.expires_at
    with pytest.raises(TokenExpired):
        service.validate(service.issue("user-1", "project-1", ["member"], rescoped_from=first).token)


def test_a_token_from_before_audit_chains_still_validates(service, key_dir, clock):
    # the payload every token had before chains: no "c"
    payload = ('{"v":1,"u":"user-1","p":"project-1","r":["member"],"m":["password"],"a":"audit-old",'
               f'"i":{epoch_ms(clock.now)},"e":{epoch_ms(clock.now) + 3_600_000}}}')
    old = load(key_dir).encrypt_at_time(payload.encode(), int(clock.now.timestamp())).decode()
    claims = service.validate(old)
    assert claims.audit_ids == ["audit-old"] and claims.audit_chain_id == "audit-old"
    forged = payload[:-1] + ',"c":7}'
    with pytest.raises(TokenInvalid):
        service.validate(load(key_dir).encrypt_at_time(forged.encode(), int(clock.now.timestamp())).decode())
