"""Open the engine a LogConfig names."""

from __future__ import annotations

from eventsvm.config import LogConfig, parse_log_url
from eventsvm.log.port import EventLog


def open_log(config: LogConfig) -> EventLog:
    """Open (and, for SQLite, create) the log; raise LogUnavailable with one clear line if not."""
    engine, location = parse_log_url(config.url)
    if engine == "kafka":
        # imported here: librdkafka is loaded only by processes that use Kafka
        from eventsvm.log.kafka import KafkaLog

        return KafkaLog(location, config)
    from eventsvm.log.sqlite import SqliteLog  # the embedded engine's module, likewise only when used

    return SqliteLog(location, config)
