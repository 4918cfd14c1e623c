"""Files only the cloud's owner may read: the log, its WAL and shared memory, the snapshots and the
data directory that holds them (and the keys and clouds.yaml beside them).

The log holds every user's password hash and every project's servers, so nothing of it may be
readable by another account on the machine: directories 0700, files 0600, whatever the umask. A
file or directory left more open by an older version is tightened when it is opened, with a log
line saying so; one that cannot be changed (another owner) is reported and left as it is.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
_OTHERS = stat.S_IRWXG | stat.S_IRWXO


def tighten(path: Path) -> None:
    """Take every group and other permission away from an existing file or directory."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if not mode & _OTHERS:
        return
    try:
        path.chmod(mode & ~_OTHERS)
    except OSError as exc:
        log.warning("%s is open to other users (mode %04o) and cannot be tightened: %s",
                    path, mode, exc.strerror)
        return
    log.warning("tightened %s from mode %04o to %04o: it holds the cloud's data", path, mode,
                mode & ~_OTHERS)


def private_directory(path: Path) -> Path:
    """`path` as a directory only its owner may enter: created 0700 (its missing parents too, as
    mkdir -p would, since the umask filters mkdir's mode), or tightened when it exists."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    for created in missing:
        created.chmod(DIRECTORY_MODE)
    tighten(path)
    return path


def private_file(path: Path) -> Path:
    """`path` as a file only its owner may read: created empty with mode 0600 when absent (SQLite
    gives its WAL and shared-memory files the database file's mode), tightened when it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        tighten(path)
    else:
        os.close(fd)
    return path
