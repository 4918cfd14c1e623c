"""The log, its WAL and shared memory, the snapshots and the data directory are the owner's alone
(issue 14 item 8): created 0600 / 0700 whatever the umask, and tightened, with a log line, when an
older version left them open."""

from __future__ import annotations

import logging
import os
import random
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers import scheduler
from eventsvm.app.cli import build_parser
from eventsvm.app.options import log_config
from eventsvm.config import LogConfig
from eventsvm.events.codec import Codec
from eventsvm.events.model import INSTANCE_TOPICS
from eventsvm.log.factory import open_log
from eventsvm.projections.readmodel import ALL_TOPICS
from eventsvm.runtime.runner import ServiceRunner
from eventsvm.runtime.snapshot import SnapshotStore
from tests.factories import event_records, instance_chain, sqlite_log


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask an operator might have, so only the code decides the modes."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def test_a_new_sqlite_log_and_its_wal_and_shm_are_0600(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "log.db"
    with sqlite_log(path, 2, INSTANCE_TOPICS) as log:
        log.append(event_records(instance_chain(random.Random(1))))
        wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
        assert wal.exists() and shm.exists(), "the log runs in WAL mode"
        assert (mode(path), mode(wal), mode(shm)) == (0o600, 0o600, 0o600)


def test_an_existing_open_log_is_tightened_with_a_log_line(
        tmp_path: Path, open_umask: None, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "log.db"
    with sqlite_log(path, 2, INSTANCE_TOPICS) as log:
        log.append(event_records(instance_chain(random.Random(2))))
    leftovers = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
    for file in leftovers:
        file.touch()
        file.chmod(0o644)
    caplog.set_level(logging.WARNING, logger="eventsvm.log.private_files")
    log = open_log(LogConfig(url=f"sqlite://{path}", partitions=2))
    try:
        assert [mode(f) for f in leftovers] == [0o600] * 3
        for file in leftovers:
            assert f"tightened {file} from mode 0644 to 0600" in caplog.text
    finally:
        log.close()


def test_snapshots_are_0600_in_a_0700_directory_and_old_ones_are_tightened(
        tmp_path: Path, open_umask: None, caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(3)
    with sqlite_log(tmp_path / "log.db", 2, ALL_TOPICS) as log:
        log.append(event_records([e for _ in range(3) for e in instance_chain(rng)]))
        store = SnapshotStore(tmp_path / "snapshots", "the-log")
        runner = ServiceRunner(log, scheduler.SERVICE, Codec(), member_name="test", snapshots=store,
                               snapshot_every=1)
        runner.rebuild()
        path = store.path("scheduler")
        assert (mode(store.directory), mode(path)) == (0o700, 0o600)
        store.directory.chmod(0o755)
        path.chmod(0o644)
        caplog.set_level(logging.WARNING, logger="eventsvm.log.private_files")
        assert store.load(scheduler.SERVICE, log) is not None
        assert (mode(store.directory), mode(path)) == (0o700, 0o600)
        assert f"tightened {path} from mode 0644 to 0600" in caplog.text
        if runner._reader is not None:
            runner._reader.close()


def test_the_data_directory_of_up_run_and_seed_is_0700_even_with_missing_parents(
        tmp_path: Path, open_umask: None, caplog: pytest.LogCaptureFixture) -> None:
    data_dir = tmp_path / "new" / "data"
    args = build_parser().parse_args(["seed", "--data-dir", str(data_dir)])
    log_config(args, keeps_files=True)
    assert (mode(data_dir), mode(data_dir.parent)) == (0o700, 0o700)
    data_dir.chmod(0o755)
    caplog.set_level(logging.WARNING, logger="eventsvm.log.private_files")
    log_config(args)  # the embedded log lives there
    assert mode(data_dir) == 0o700 and f"tightened {data_dir} from mode 0755 to 0700" in caplog.text


def test_reading_a_broker_leaves_the_data_directory_alone(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    args = build_parser().parse_args(["replay", "--data-dir", str(data_dir), "--kafka", "127.0.0.1:1"])
    log_config(args)
    assert not data_dir.exists()
