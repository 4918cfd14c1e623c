"""The log port and its two engines; `open_log` picks one from a URL."""

from eventsvm.log.port import (
    BEGINNING,
    END,
    EventLog,
    Fenced,
    GroupMember,
    LogError,
    LogUnavailable,
    OutRecord,
    Reader,
    Record,
    UnknownTopic,
    partition_for,
)

__all__ = [
    "BEGINNING",
    "END",
    "EventLog",
    "Fenced",
    "GroupMember",
    "LogError",
    "LogUnavailable",
    "OutRecord",
    "Reader",
    "Record",
    "UnknownTopic",
    "partition_for",
]
