"""Fresh logs for a benchmark: a SQLite file in a scratch directory, or a throwaway namespace on
the local Kafka broker whose topics are deleted afterwards (event topics are otherwise kept forever)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager

from bench.suite import Context, Samples, Skip, register, scratch_dir
from eventsvm.config import LogConfig
from eventsvm.log.factory import open_log
from eventsvm.log.port import EventLog, LogError

LogOpener = Callable[[], AbstractContextManager[EventLog]]


def sqlite_opener(ctx: Context, prefix: str, partitions: int) -> LogOpener:
    """Each call opens a new SQLite log in its own scratch directory."""

    @contextmanager
    def opener() -> Iterator[EventLog]:
        with scratch_dir(ctx, prefix) as path:
            log = open_log(LogConfig(url=f"sqlite://{path / 'log.db'}", partitions=partitions))
            try:
                yield log
            finally:
                log.close()

    return opener


def kafka_opener(ctx: Context, topics: Iterable[str], partitions: int) -> LogOpener:
    """Each call opens the local broker under a new namespace; `topics` are deleted after. Skips
    the benchmark when no broker answers."""
    config = LogConfig(url=f"kafka://{ctx.kafka_bootstrap}", partitions=partitions, connect_timeout_s=5.0)
    try:
        open_log(config).close()
    except LogError as exc:
        raise Skip(f"no Kafka broker at {ctx.kafka_bootstrap}: {exc}") from None
    names = list(topics)

    @contextmanager
    def opener() -> Iterator[EventLog]:
        namespace = f"bench-{uuid.uuid4().hex[:8]}."
        log = open_log(LogConfig(url=config.url, namespace=namespace, partitions=partitions))
        try:
            yield log
        finally:
            log.close()
            _delete_topics(ctx.kafka_bootstrap, [namespace + name for name in names])

    return opener


def _delete_topics(bootstrap: str, names: list[str]) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})  # must outlive its futures
    for future in admin.delete_topics(names, operation_timeout=30).values():
        try:
            future.result()
        except Exception:  # a topic the benchmark never created: nothing to clean
            pass


def on_both_engines(name: str, run: Callable[[Context, LogOpener], Samples], topics: Iterable[str],
                    partitions: int, sqlite_description: str, kafka_description: str) -> None:
    """Register `run` once per log engine, as `name`.sqlite and `name`.kafka, each given fresh logs
    of that engine."""
    names = list(topics)
    register(f"{name}.sqlite", lambda ctx: run(ctx, sqlite_opener(ctx, f"bench-{name}-", partitions)),
             sqlite_description)
    register(f"{name}.kafka", lambda ctx: run(ctx, kafka_opener(ctx, names, partitions)), kafka_description)
