"""The EventLog contract runs once per engine: every test takes `engine` and is parametrized over
SQLite (a file under tmp_path) and Kafka (a real broker from the `kafka_bootstrap` fixture)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from uuid import uuid4

import pytest

from eventsvm.config import LogConfig
from eventsvm.log.factory import open_log
from eventsvm.log.port import EventLog


@dataclass
class Engine:
    """How a test opens the log under test; every log opened here shares one namespace."""

    name: str
    url: str
    namespace: str = field(default_factory=lambda: f"t{uuid4().hex[:8]}.")
    opened: list[EventLog] = field(default_factory=list)

    # A silent member's partitions move after this long: short for tests, but Kafka brokers
    # refuse sessions below group.min.session.timeout.ms (6 s unless the broker lowers it).
    short_session_s: float = 1.0

    def config(self, partitions: int = 4, session_timeout_s: float = 10.0) -> LogConfig:
        """The LogConfig for this engine and namespace."""
        return LogConfig(url=self.url, namespace=self.namespace, partitions=partitions,
                         session_timeout_s=session_timeout_s)

    def open(self, partitions: int = 4, session_timeout_s: float = 10.0) -> EventLog:
        """Open (another handle on) the log; it is closed when the test ends."""
        log = open_log(self.config(partitions, session_timeout_s))
        self.opened.append(log)
        return log


@pytest.fixture(params=["sqlite", pytest.param("kafka", marks=pytest.mark.kafka)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The engine under test, isolated from every other test (own file or own topic namespace)."""
    if request.param == "sqlite":
        url = f"sqlite://{tmp_path / 'log.db'}"
    else:
        url = f"kafka://{request.getfixturevalue('kafka_bootstrap')}"
    engine = Engine(request.param, url, short_session_s=1.0 if request.param == "sqlite" else 6.0)
    yield engine
    for log in reversed(engine.opened):
        try:
            log.close()
        except Exception:  # noqa: BLE001 - a test that closed (or broke) its log already
            pass

