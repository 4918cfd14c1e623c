"""Fixtures the unit tests of the log-reading tools share (audit, replay)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from eventsvm.log.port import EventLog
from eventsvm.projections.readmodel import ALL_TOPICS
from tests.factories import sqlite_log


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Where the test's embedded-engine log keeps its file."""
    return tmp_path / "log.db"


@pytest.fixture
def log(db: Path) -> Iterator[EventLog]:
    """An embedded-engine log at `db` with every topic, on three partitions."""
    with sqlite_log(db, 3, ALL_TOPICS) as opened:
        yield opened
