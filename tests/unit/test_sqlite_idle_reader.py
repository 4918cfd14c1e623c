"""An idle reader of the embedded engine asks SQLite whether anything was committed since its last
fetch (`PRAGMA data_version`) instead of reading every partition's head in a transaction, and
still sees every record appended through another connection: the same process's log, another
log object on the file, another process."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from eventsvm.config import LogConfig
from eventsvm.log.port import BEGINNING, OutRecord
from eventsvm.log.sqlite import SqliteLog, _SqliteMember, _Store


def _log(path: Path) -> SqliteLog:
    return SqliteLog(str(path), LogConfig(url=f"sqlite://{path}", partitions=2))


def test_an_idle_reader_reads_no_heads_yet_sees_every_append(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "log.db"
    log = _log(path)
    log.create_topics(["t"])
    reader = log.reader(["t"], BEGINNING)
    heads_read: list[int] = []
    heads = _Store.heads

    def counted(store: _Store, conn: object, tps: object) -> object:
        heads_read.append(1)
        return heads(store, conn, tps)  # type: ignore[arg-type]

    monkeypatch.setattr(_Store, "heads", counted)
    assert reader.poll(timeout=0) == []
    before = len(heads_read)
    for _ in range(5):
        assert reader.poll(timeout=0) == []
    assert len(heads_read) == before  # nothing committed since: no transaction, no heads

    log.append([OutRecord("t", b"k", b"same process", 0)])
    assert [r.value for r in reader.poll(timeout=1)] == [b"same process"]

    other = _log(path)
    other.append([OutRecord("t", b"k", b"another log object", 1)])
    assert [r.value for r in reader.poll(timeout=1)] == [b"another log object"]

    script = ("import sys; from eventsvm.config import LogConfig; from eventsvm.log.port import OutRecord; "
              "from eventsvm.log.sqlite import SqliteLog; p = sys.argv[1]; "
              "SqliteLog(p, LogConfig(url='sqlite://' + p, partitions=2)).append("
              "[OutRecord('t', b'k', b'another process', 0)])")
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=60)
    assert [r.value for r in reader.poll(timeout=1)] == [b"another process"]
    assert reader.poll(timeout=0) == []


def test_a_fetch_cut_short_by_max_records_reads_on_without_a_new_commit(tmp_path: Path) -> None:
    log = _log(tmp_path / "log.db")
    log.create_topics(["t"])
    log.append([OutRecord("t", b"k", str(n).encode(), 0) for n in range(5)])
    reader = log.reader(["t"], BEGINNING)
    assert [r.value for r in reader.poll(max_records=3, timeout=0)] == [b"0", b"1", b"2"]
    assert [r.value for r in reader.poll(max_records=3, timeout=0)] == [b"3", b"4"]


def test_an_idle_member_skips_its_queries_yet_sees_appends_its_own_commits_rewinds_and_joins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A group member's idle poll is the same check, with this connection's own changes counted
    too (SQLite's data_version ignores them): what it appends to its own input, what another
    connection appends, a rewind to its committed offsets, and a member joining are all seen."""
    path = tmp_path / "log.db"
    log = _log(path)
    log.create_topics(["t"])
    member = log.member("g", ["t"], member_name="one")
    generation_reads: list[int] = []
    read_generation = _SqliteMember._read_generation

    def counted(self: _SqliteMember) -> int:
        generation_reads.append(1)
        return read_generation(self)

    monkeypatch.setattr(_SqliteMember, "_read_generation", counted)
    assert member.poll(timeout=0) == []
    before = len(generation_reads)
    for _ in range(5):
        assert member.poll(timeout=0) == []
    assert len(generation_reads) == before  # idle: not even the group's generation was read

    _log(path).append([OutRecord("t", b"k", b"another connection", 0)])
    first = member.poll(timeout=1)
    assert [r.value for r in first] == [b"another connection"]
    member.commit_step([], first)
    assert member.poll(timeout=0) == []  # quiet again
    member.commit_step([OutRecord("t", b"k", b"its own output", 1)], [])  # onto its own input
    assert [r.value for r in member.poll(timeout=1)] == [b"its own output"]
    assert member.poll(timeout=0) == []
    member.rewind()  # the last record was read, not committed: read again, with nothing committed since
    assert [r.value for r in member.poll(timeout=1)] == [b"its own output"]

    second = _log(path).member("g", ["t"], member_name="two")
    deadline = time.monotonic() + 10
    while len(member.assignment()) != 1 and time.monotonic() < deadline:
        member.poll(timeout=0.05)
        second.poll(timeout=0.05)
    assert len(member.assignment()) == 1 and len(second.assignment()) == 1  # the join was seen
