"""The Fernet key repository: setup, rotation and pruning, as keystone-manage fernet_* do it."""

import stat

import pytest
from cryptography.fernet import Fernet, InvalidToken

from eventsvm.identity.keys import KeyRepositoryError, ensure_keys, key_indexes, load, rotate


def test_setup_creates_a_staged_and_a_primary_key_readable_only_by_the_owner(tmp_path):
    key_dir = tmp_path / "fernet-keys"
    ensure_keys(key_dir)
    assert key_indexes(key_dir) == [0, 1]
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    for index in (0, 1):
        path = key_dir / str(index)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        Fernet(path.read_bytes())  # a valid key


def test_setup_twice_keeps_the_existing_keys(tmp_path):
    ensure_keys(tmp_path)
    before = {i: (tmp_path / str(i)).read_bytes() for i in key_indexes(tmp_path)}
    ensure_keys(tmp_path)
    assert {i: (tmp_path / str(i)).read_bytes() for i in key_indexes(tmp_path)} == before


def test_rotation_promotes_the_staged_key_and_stages_a_new_one(tmp_path):
    ensure_keys(tmp_path)
    staged = (tmp_path / "0").read_bytes()
    assert rotate(tmp_path) == 2
    assert key_indexes(tmp_path) == [0, 1, 2]
    assert (tmp_path / "2").read_bytes() == staged
    assert (tmp_path / "0").read_bytes() != staged


def test_rotation_prunes_the_oldest_secondary_keys(tmp_path):
    ensure_keys(tmp_path)
    for _ in range(4):
        rotate(tmp_path, max_active_keys=3)
    assert key_indexes(tmp_path) == [0, 4, 5]


def test_load_encrypts_with_the_primary_and_decrypts_with_every_active_key(tmp_path):
    ensure_keys(tmp_path)
    keys = {i: Fernet((tmp_path / str(i)).read_bytes()) for i in key_indexes(tmp_path)}
    fernet = load(tmp_path)
    keys[1].decrypt(fernet.encrypt(b"x"))  # primary (highest index) encrypts
    with pytest.raises(InvalidToken):
        keys[0].decrypt(fernet.encrypt(b"x"))
    # a token made with the staged key (e.g. by a node that already rotated) is accepted
    assert fernet.decrypt(keys[0].encrypt(b"from another node")) == b"from another node"


def test_load_of_an_empty_repository_says_what_to_do(tmp_path):
    with pytest.raises(KeyRepositoryError, match="no Fernet keys"):
        load(tmp_path / "missing")


def test_a_corrupt_key_file_is_named_but_its_content_is_not_shown(tmp_path):
    ensure_keys(tmp_path)
    (tmp_path / "1").write_bytes(b"not-a-key-SECRETISH")
    with pytest.raises(KeyRepositoryError) as caught:
        load(tmp_path)
    assert "key file 1" in str(caught.value)
    assert "SECRETISH" not in str(caught.value)


def test_rotation_needs_room_for_a_staged_and_a_primary_key(tmp_path):
    ensure_keys(tmp_path)
    with pytest.raises(ValueError):
        rotate(tmp_path, max_active_keys=1)


def test_setup_recovers_a_rotation_interrupted_after_promotion(tmp_path):
    ensure_keys(tmp_path)
    (tmp_path / "0").rename(tmp_path / "2")  # the staged key was promoted, then the process died
    ensure_keys(tmp_path)
    assert key_indexes(tmp_path) == [0, 1, 2]
