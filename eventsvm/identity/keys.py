"""A Fernet key repository on disk, laid out like keystone's (`fernet_setup` / `fernet_rotate`).

The directory holds one key per file, named by an integer. `0` is the staged key: every node can
already decrypt with it, so it can become primary without a window where other nodes reject tokens.
The highest number is the primary key, the one new tokens are encrypted with; the ones between are
secondary keys that only decrypt tokens issued before the last rotations.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from cryptography.fernet import Fernet, MultiFernet

KEY_FILE_MODE = 0o600
KEY_DIR_MODE = 0o700
STAGED = 0
_LOCK_NAME = ".lock"


class KeyRepositoryError(Exception):
    """The key directory is missing, empty, or holds a file that is not a Fernet key."""


def key_indexes(key_dir: Path | str) -> list[int]:
    """The indexes of the key files present, ascending (so staged first and primary last)."""
    try:
        names = os.listdir(key_dir)
    except FileNotFoundError:
        return []
    return sorted(int(name) for name in names if name.isdigit())


def ensure_keys(key_dir: Path | str) -> None:
    """Create the repository if needed so it holds a staged key and a primary key (fernet_setup)."""
    directory = Path(key_dir)
    if not directory.is_dir():
        directory.mkdir(mode=KEY_DIR_MODE, parents=True, exist_ok=True)
        # mkdir's mode is filtered by the umask; the keys must not be readable by anyone else.
        directory.chmod(KEY_DIR_MODE)
    with _locked(directory):
        indexes = key_indexes(directory)
        if STAGED not in indexes:
            _write_key(directory, STAGED)
        if not any(index > STAGED for index in indexes):
            _promote_staged(directory)


def rotate(key_dir: Path | str, max_active_keys: int = 3) -> int:
    """Promote the staged key to primary, stage a new key, prune the oldest secondaries.

    `max_active_keys` counts the staged, primary and secondary keys together, as in keystone.
    Returns the new primary key's index.
    """
    if max_active_keys < 2:
        raise ValueError("max_active_keys must be at least 2 (a staged and a primary key)")
    directory = Path(key_dir)
    if not directory.is_dir():
        raise KeyRepositoryError(f"no key repository at {directory}")
    with _locked(directory):
        if STAGED not in key_indexes(directory):
            # An earlier rotation stopped after promoting; finish it rather than promote nothing.
            _write_key(directory, STAGED)
        primary = _promote_staged(directory)
        retired = [index for index in key_indexes(directory) if index != STAGED][: -(max_active_keys - 1)]
        for index in retired:
            (directory / str(index)).unlink()
        _sync_dir(directory)
    return primary


def load(key_dir: Path | str) -> MultiFernet:
    """Every active key as one MultiFernet: primary first (it encrypts), then secondaries, staged last."""
    directory = Path(key_dir)
    indexes = key_indexes(directory)
    if not indexes:
        raise KeyRepositoryError(f"no Fernet keys in {directory}; run the key setup first")
    fernets = []
    for index in reversed(indexes):
        try:
            raw = (directory / str(index)).read_bytes().strip()
        except FileNotFoundError:
            continue  # renamed or pruned by a rotation running right now; the next load sees it
        try:
            fernets.append(Fernet(raw))
        except ValueError:
            # Name the file, never its content: it is a secret even when malformed.
            raise KeyRepositoryError(f"key file {index} in {directory} is not a Fernet key") from None
    if not fernets:
        raise KeyRepositoryError(f"no Fernet keys in {directory}; run the key setup first")
    return MultiFernet(fernets)


def _promote_staged(directory: Path) -> int:
    primary = max(key_indexes(directory)) + 1
    # rename is atomic, so a reader sees the staged key either at 0 or as the new primary.
    os.rename(directory / str(STAGED), directory / str(primary))
    _write_key(directory, STAGED)
    return primary


def _write_key(directory: Path, index: int) -> None:
    temporary = directory / f".tmp-{index}-{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, KEY_FILE_MODE)
    try:
        os.fchmod(fd, KEY_FILE_MODE)
        os.write(fd, Fernet.generate_key())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, directory / str(index))
    _sync_dir(directory)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise setup and rotation between processes sharing the directory."""
    fd = os.open(directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT, KEY_FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
