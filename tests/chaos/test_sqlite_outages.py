"""The embedded engine's outages are pauses too: a file locked by another process for a moment is
waited for, one locked for longer or a full disk pauses the services, and once the file is
writable again every requested server is built, each once, with no service thread lost."""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventsvm.log import sqlite as sqlite_engine
from tests import processes
from tests.e2e.conftest import Cloud, CloudFactory, make_cloud  # noqa: F401 - a fixture (F811 below)


@pytest.fixture
def engine_url(tmp_path: Path) -> tuple[str, str]:
    """The embedded engine only (make_cloud's engine)."""
    return f"sqlite://{tmp_path / 'log.db'}", ""


# a lock held for a moment is the outage under test: look often
wait_for = functools.partial(processes.wait_for, poll_s=0.05)


def any_paused(cloud: Cloud) -> bool:
    return any(runner.paused for runner in cloud.cluster.runners)


def assert_every_service_ran_through(cloud: Cloud) -> None:
    services = cloud.cluster.supervisor.services
    assert services and all(s.up for s in services)
    assert [s.restarts for s in services] == [0] * len(services), "a thread died instead of pausing"


def assert_built_once(cloud: Cloud, ids: list[str]) -> None:
    built = cloud.wait_for(ids, {"ACTIVE"}, timeout=120)
    hosts = cloud.cluster.hosts
    running = [domain for host in hosts for domain in host.hypervisor.list_instances()]
    assert sorted(running) == sorted(ids), "a server was spawned twice or not at all"
    assert all(inst.status == "ACTIVE" for inst in built.values())


def set_limit(connections: list[sqlite3.Connection], pages: int) -> None:
    """Let each open connection grow the file to `pages` pages at most."""
    for conn in list(connections):
        try:
            conn.execute(f"PRAGMA max_page_count = {pages}")
        except sqlite3.ProgrammingError:  # closed by now (a reader or member that was replaced)
            connections.remove(conn)


@pytest.fixture
def locker(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """Another process's connection to the log file, as `sqlite3 log.db` would open it."""
    conn = sqlite3.connect(tmp_path / "log.db", isolation_level=None, timeout=30)
    yield conn
    if conn.in_transaction:
        conn.execute("ROLLBACK")
    conn.close()


def test_an_append_during_a_brief_lock_waits_for_it_and_succeeds(
    make_cloud: CloudFactory, locker: sqlite3.Connection  # noqa: F811
) -> None:
    cloud = make_cloud(hosts=1)
    cloud.unlimited_quota()
    locker.execute("BEGIN EXCLUSIVE")
    submitted: list[str] = []
    thread = threading.Thread(target=lambda: submitted.append(cloud.submit("during-lock")))
    started = time.monotonic()
    thread.start()
    wait_for(lambda: time.monotonic() - started > 2.0, 5, "the lock held for 2 s")
    assert submitted == []  # it waits for the lock rather than failing
    locker.execute("COMMIT")
    thread.join(30)
    assert len(submitted) == 1
    assert_built_once(cloud, submitted)
    assert_every_service_ran_through(cloud)


def test_a_lock_held_past_the_busy_timeout_pauses_the_services_and_loses_nothing(
    make_cloud: CloudFactory, locker: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(sqlite_engine, "_BUSY_TIMEOUT_S", 0.2)
    cloud = make_cloud(hosts=1)
    cloud.unlimited_quota()
    ids = [cloud.submit(f"locked-{i}") for i in range(10)]
    locker.execute("BEGIN EXCLUSIVE")
    wait_for(lambda: any_paused(cloud), 60, "a service paused on the locked file")
    assert any("database is locked" in r.getMessage() for r in caplog.records)
    locker.execute("COMMIT")
    assert_built_once(cloud, ids)
    wait_for(lambda: not any_paused(cloud), 60, "every service resumed")
    assert_every_service_ran_through(cloud)


def test_a_full_disk_pauses_the_services_and_once_space_is_back_every_server_is_built(
    make_cloud: CloudFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,  # noqa: F811
) -> None:
    # A real SQLITE_FULL without a tiny filesystem: every connection of the log gets a page limit
    # (PRAGMA max_page_count) at the file's current size while the "disk" is full.
    connections: list[sqlite3.Connection] = []
    limit: list[int] = []
    connect = sqlite_engine._Store.connect

    def tracked(store: sqlite_engine._Store) -> sqlite3.Connection:
        conn = connect(store)
        if limit:
            conn.execute(f"PRAGMA max_page_count = {limit[0]}")
        connections.append(conn)
        return conn

    monkeypatch.setattr(sqlite_engine._Store, "connect", tracked)
    cloud = make_cloud(hosts=1)
    cloud.unlimited_quota()
    ids = [cloud.submit(f"full-{i}") for i in range(10)]
    pages = connections[0].execute("PRAGMA page_count").fetchone()[0]
    limit.append(pages)
    set_limit(connections, pages)
    wait_for(lambda: any_paused(cloud), 60, "a service paused on the full disk")
    assert any("database or disk is full" in r.getMessage() for r in caplog.records)
    limit.clear()
    set_limit(connections, 1073741823)
    assert_built_once(cloud, ids)
    wait_for(lambda: not any_paused(cloud), 60, "every service resumed")
    assert_every_service_ran_through(cloud)
