"""Password hashes: salted scrypt, self-describing, and verification that never raises."""

import pytest

from eventsvm.identity.passwords import hash_password, verify_password


@pytest.fixture(scope="module")
def encoded() -> str:
    return hash_password("correct horse battery staple")


def test_the_right_password_verifies(encoded):
    assert verify_password("correct horse battery staple", encoded)


def test_a_wrong_password_does_not_verify(encoded):
    assert not verify_password("correct horse battery stapl", encoded)
    assert not verify_password("", encoded)


def test_the_hash_names_its_parameters_and_never_contains_the_password(encoded):
    scheme, n, r, p, salt, digest = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert salt and digest
    assert "correct horse" not in encoded


def test_the_same_password_hashes_differently_each_time():
    first, second = hash_password("secret"), hash_password("secret")
    assert first != second
    assert verify_password("secret", first) and verify_password("secret", second)


def test_a_hash_made_with_other_parameters_still_verifies(encoded):
    # a hash from before a cost change: same format, cheaper n
    import base64
    import hashlib

    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(b"old-password", salt=salt, n=1024, r=8, p=1, dklen=32)
    b64 = lambda raw: base64.b64encode(raw).decode().rstrip("=")  # noqa: E731
    old = f"scrypt$1024$8$1${b64(salt)}${b64(digest)}"
    assert verify_password("old-password", old)
    assert not verify_password("new-password", old)


def test_unicode_passwords_round_trip():
    encoded = hash_password("pässwörd-🔑")
    assert verify_password("pässwörd-🔑", encoded)
    assert not verify_password("passwort-🔑", encoded)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "plain-text-password",
        "bcrypt$12$abc$def",
        "scrypt$16384$8$1$salt",
        "scrypt$notanumber$8$1$c2FsdA$aGFzaA",
        "scrypt$16384$8$1$!!!$aGFzaA",
        "scrypt$1000$8$1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
        # a forged hash asking for 128 GiB of memory must be refused, not attempted
        "scrypt$1073741824$8$1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
    ],
)
def test_malformed_encodings_return_false_instead_of_raising(bad):
    assert verify_password("anything", bad) is False


def test_non_string_inputs_return_false():
    assert verify_password(None, "scrypt$16384$8$1$a$b") is False  # type: ignore[arg-type]
    assert verify_password("x", None) is False  # type: ignore[arg-type]


def test_a_password_with_nul_is_neither_hashed_nor_accepted():
    # scrypt's inner HMAC pads its key with zero bytes, so "pw" and "pw" + NUL hash alike
    encoded = hash_password("pw")
    assert verify_password("pw", encoded)
    assert verify_password("pw\x00", encoded) is False
    with pytest.raises(ValueError, match="NUL") as refused:
        hash_password("pw\x00")
    assert "pw" not in str(refused.value)
