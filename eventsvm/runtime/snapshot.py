"""Snapshots: a service's folded state saved with the log positions it covers, so that a restart
folds only the tail of its state topics.

A snapshot is one file per service under the data directory: a header (service, state version,
log, positions, checksum) and the pickled state. It is trusted only when everything matches: the
same service, the same state version, the same log, positions the log still has, and a payload
whose SHA-256 is the one recorded. Anything else is ignored (and said so in the log) in favour of a
full replay, which is always correct, merely slower.

The state version covers the code that builds the state: the service's declared `state_version`
(Service.extra) and a fingerprint of the library's and the consumers' source. Any upgrade therefore
costs one full replay, and a state built by older code is never read into newer code.

The checksum catches a torn or corrupted file, not a forger: the file is as trusted as the rest of
the data directory (the SQLite log lives beside it), and it is unpickled, so only the service's own
user may be able to write it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from eventsvm.log.port import EventLog, TopicPartition, UnknownTopic
from eventsvm.log.private_files import FILE_MODE, private_directory, tighten
from eventsvm.runtime.service import Service

log = logging.getLogger(__name__)

MAGIC = b"eventsvm-snapshot\n"
FORMAT = 1
_ROOT = Path(__file__).resolve().parents[1]
# The library code whose changes may change a folded state: not the API, the composition root,
# the read side or the dashboard, which fold nothing a service snapshots.
_NOT_STATE = {"api", "app", "projections", "monitoring"}


@cache
def code_fingerprint(*service_modules: str) -> str:
    """SHA-256 over the folding part of the library and the modules that define a service."""
    digest = hashlib.sha256()
    paths = [p for p in sorted(_ROOT.rglob("*.py")) if p.relative_to(_ROOT).parts[0] not in _NOT_STATE]
    for name in service_modules:
        source = getattr(sys.modules.get(name), "__file__", None)
        if source:
            paths.append(Path(source).resolve())
    for path in paths:
        where = path.relative_to(_ROOT.parent) if path.is_relative_to(_ROOT.parent) else path.name
        digest.update(str(where).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def state_version(service: Service[Any]) -> str:
    """What a snapshot of `service` must have been written by to be read back: its declared
    version and the code of its decide / evolve and of the library they fold with."""
    declared = service.extra.get("state_version", 1)
    modules = tuple(sorted({service.evolve.__module__, service.decide.__module__}))
    return f"{FORMAT}:{service.name}:{declared}:{code_fingerprint(*modules)[:16]}"


@dataclass
class Snapshot:
    """A folded state and where in the log it stops.

    `positions`: per state-topic partition, the offset after the last record folded. `pending`:
    ids of the service's own committed outputs that the state holds but the reader has not yet
    met again (the runner folds them once, at decide time).
    """

    service: str
    version: str
    log: str
    positions: dict[TopicPartition, int]
    state: Any
    pending: set[str] = field(default_factory=set)
    events: int = 0
    written_at_ms: int = 0


class SnapshotStore:
    """Snapshot files of the services of one log, in one directory."""

    def __init__(self, directory: Path, log_identity: str) -> None:
        self.directory = directory
        self.log_identity = log_identity

    def path(self, service_name: str) -> Path:
        """Where the snapshot of a service lives."""
        return self.directory / f"{service_name}.snapshot"

    def save(self, snapshot: Snapshot) -> Path:
        """Write atomically: a crash leaves the previous snapshot, never half of a new one."""
        payload = pickle.dumps((snapshot.state, snapshot.pending), protocol=pickle.HIGHEST_PROTOCOL)
        header = json.dumps({
            "format": FORMAT, "service": snapshot.service, "version": snapshot.version, "log": snapshot.log,
            "positions": [[t, p, o] for (t, p), o in sorted(snapshot.positions.items())],
            "events": snapshot.events, "written_at_ms": snapshot.written_at_ms,
            "sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload),
        }).encode()
        # a snapshot holds what the log does (identities, password hashes): owner only
        private_directory(self.directory)
        path = self.path(snapshot.service)
        # unique per writer: two runners of one service may share a directory (each snapshot is
        # correct on its own; the newer file simply wins)
        temporary = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        os.fchmod(fd, FILE_MODE)  # a leftover of a crashed writer keeps its own mode through O_TRUNC
        with os.fdopen(fd, "wb") as out:
            out.write(MAGIC + len(header).to_bytes(4, "big") + header + payload)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        return path

    def load(self, service: Service[Any], log_: EventLog | None = None) -> Snapshot | None:
        """The service's snapshot if it can be trusted, else None (with the reason logged)."""
        path = self.path(service.name)
        tighten(self.directory)
        tighten(path)  # written by a version that left it readable
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("snapshot %s unreadable (%s); replaying in full", path, exc)
            return None
        reason = None
        try:
            snapshot = self._parse(data, service)
        except _Untrusted as exc:
            snapshot, reason = None, str(exc)
        if snapshot is not None and log_ is not None:
            reason = beyond_log(snapshot.positions, log_)
        if reason is not None:
            log.warning("snapshot %s ignored (%s); replaying in full", path, reason)
            return None
        return snapshot

    def _parse(self, data: bytes, service: Service[Any]) -> Snapshot:
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
            raise _Untrusted("not a snapshot file")
        start = len(MAGIC) + 4
        size = int.from_bytes(data[len(MAGIC):start], "big")
        try:
            header = json.loads(data[start:start + size])
            positions = {(str(t), int(p)): int(o) for t, p, o in header["positions"]}
            expected = (header["format"], header["service"], header["version"], header["log"])
        except (ValueError, KeyError, TypeError) as exc:
            raise _Untrusted(f"unreadable header: {exc}") from None
        wanted = (FORMAT, service.name, state_version(service), self.log_identity)
        labels = ("format", "service", "state version", "log")
        for what, have, want in zip(labels, expected, wanted, strict=True):
            if have != want:
                raise _Untrusted(f"{what} {have!r}, expected {want!r}")
        payload = data[start + size:]
        if len(payload) != header.get("size") or hashlib.sha256(payload).hexdigest() != header.get("sha256"):
            raise _Untrusted("checksum mismatch: the file is torn or corrupt")
        try:
            state, pending = pickle.loads(payload)  # our own file, checksummed (module doc)
        except Exception as exc:  # a state class that no longer unpickles is an old state
            raise _Untrusted(f"state does not load: {type(exc).__name__}: {exc}") from None
        return Snapshot(service.name, header["version"], header["log"], positions, state, set(pending),
                        int(header.get("events", 0)), int(header.get("written_at_ms", 0)))


class _Untrusted(Exception):
    """Why a snapshot file cannot be used."""


def beyond_log(positions: dict[TopicPartition, int], log_: EventLog) -> str | None:
    """Why the log cannot be the one these positions (next offsets) were read from, because it is
    shorter (a snapshot's, a seal's), or None."""
    ends: dict[str, dict[int, int]] = {}
    for (topic, partition), offset in positions.items():
        if topic not in ends:
            try:
                ends[topic] = log_.end_offsets(topic)
            except UnknownTopic:
                return f"topic {topic} no longer exists"
        if offset > ends[topic].get(partition, -1):
            return f"{topic}:{partition} ends before offset {offset}"
    return None


def now_ms() -> int:
    """Wall-clock ms, for the header."""
    return time.time_ns() // 1_000_000
