"""The embedded engine's group commit: appends of many threads share transactions, each caller
gets its own records' positions, every record lands once, and one caller's bad append (a topic
that does not exist) fails alone."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from eventsvm.config import LogConfig
from eventsvm.log.port import BEGINNING, OutRecord, UnknownTopic
from eventsvm.log.sqlite import SqliteLog

THREADS, APPENDS = 16, 40


def test_concurrent_appends_each_get_their_own_positions_and_a_bad_one_fails_alone(tmp_path: Path) -> None:
    log = SqliteLog(str(tmp_path / "log.db"), LogConfig(url=f"sqlite://{tmp_path / 'log.db'}", partitions=2))
    log.create_topics(["t"])
    batches: list[int] = []
    commit = log._commit_appends

    def counted(batch: list) -> None:  # type: ignore[type-arg]
        batches.append(len(batch))
        commit(batch)

    log._commit_appends = counted  # type: ignore[method-assign]
    positions: dict[tuple[int, int], tuple[bytes, bytes]] = {}
    failures: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def appender(n: int) -> None:
        start.wait()
        for i in range(APPENDS):
            if n == 0 and i % 10 == 5:
                with pytest.raises(UnknownTopic):
                    log.append([OutRecord("missing", b"k", b"lost", 0)])
                continue
            values = [f"{n}-{i}-a".encode(), f"{n}-{i}-b".encode()]
            try:
                got = log.append([OutRecord("t", b"k", v, n % 2) for v in values])
            except BaseException as exc:
                failures.append(exc)
                return
            with lock:
                for where, value in zip(got, values, strict=True):
                    assert where not in positions, (where, value, positions.get(where))
                    positions[where] = (b"k", value)

    threads = [threading.Thread(target=appender, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert max(batches) > 1 and len(batches) < THREADS * APPENDS  # transactions were shared
    reader = log.reader(["t"], BEGINNING)
    stored: dict[tuple[int, int], bytes] = {}
    while records := reader.poll(1000, 0.1):
        stored.update({(r.partition, r.offset): r.value for r in records})
    reader.close()
    log.close()
    written = THREADS * APPENDS * 2 - 4 * 2  # thread 0's four bad appends wrote nothing
    assert len(stored) == written == len(positions)
    assert stored == {where: value for where, (_, value) in positions.items()}
    for part in (0, 1):  # offsets dense from 0 in each partition
        offsets = sorted(o for p, o in stored if p == part)
        assert offsets == list(range(len(offsets)))
