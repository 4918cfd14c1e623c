"""Configuration, read in one place and passed down (STYLE.md: no os.environ lookups elsewhere)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# glance's image_size_cap: the most bytes one image's data may hold (its default, 1 TiB); the API's
# --image-size-cap changes it
IMAGE_SIZE_CAP = 1 << 40


class ConfigError(Exception):
    """Configuration that cannot work; the CLI prints it as one line and exits non-zero."""


@dataclass(frozen=True)
class LogConfig:
    """Which engine holds the log and how its topics are made.

    `url` is `kafka://host:port[,host:port]` or `sqlite:///path/file.db` (a bare path means
    SQLite). `namespace` prefixes every topic name so several systems (or tests) share a broker.
    """

    url: str
    namespace: str = ""
    partitions: int = 4
    # None: from the cluster's size when the topic is made (3 and 2 on three brokers or more,
    # else 1 and 1), so one broker and a production cluster both work with no flag
    replication_factor: int | None = None
    min_insync_replicas: int | None = None
    connect_timeout_s: float = 10.0
    # how long a silent group member keeps its partitions (Kafka's session.timeout.ms; the
    # broker's floor is 6 s by default)
    session_timeout_s: float = 10.0

    @property
    def engine(self) -> str:
        """'kafka' or 'sqlite'."""
        return parse_log_url(self.url)[0]

    @property
    def identity(self) -> str:
        """Names this log among the logs one data directory may serve (engine, place and
        namespace): what a snapshot or a seal was taken of."""
        return f"{self.url}#{self.namespace}"


def parse_log_url(url: str) -> tuple[str, str]:
    """Split a log URL into (engine, location); raise ConfigError for anything else."""
    if url.startswith("kafka://"):
        servers = url[len("kafka://") :].strip("/")
        if not servers:
            raise ConfigError(f"log URL {url!r} names no broker (kafka://host:port)")
        return "kafka", servers
    if url.startswith("sqlite://"):
        path = url[len("sqlite://") :]
        if not path:
            raise ConfigError(f"log URL {url!r} names no file (sqlite:///path/to/log.db)")
        return "sqlite", path
    if "://" in url:
        raise ConfigError(f"unknown log engine in {url!r}: use kafka://host:port or sqlite:///path")
    return "sqlite", url


@dataclass(frozen=True)
class Settings:
    """Everything a process of eventsvm needs to know, from flags and the environment."""

    data_dir: Path
    log: LogConfig
    admin_password: str | None = None
    demo_password: str | None = None
    libvirt_uri: str = "test:///default"
    max_attempts: int = 3
    extra: Mapping[str, str] = field(default_factory=dict)


def env_passwords(environ: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """The seeded admin and demo passwords from EVENTSVM_ADMIN_PASSWORD / EVENTSVM_DEMO_PASSWORD."""
    env = os.environ if environ is None else environ
    return env.get("EVENTSVM_ADMIN_PASSWORD"), env.get("EVENTSVM_DEMO_PASSWORD")


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the embedded engine keeps its files unless --data-dir says otherwise."""
    env = os.environ if environ is None else environ
    return Path(env.get("EVENTSVM_DATA_DIR", "./data"))


def log_config_from_flags(
    data_dir: Path, kafka: str | None, log_url: str | None = None, partitions: int = 4, namespace: str = ""
) -> LogConfig:
    """The log chosen by the shared `--data-dir` / `--kafka` / `--log` flags."""
    if log_url:
        url = log_url
    elif kafka:
        url = kafka if kafka.startswith("kafka://") else f"kafka://{kafka}"
    else:
        url = f"sqlite://{(data_dir / 'log.db').resolve()}"
    parse_log_url(url)
    return LogConfig(url=url, partitions=partitions, namespace=namespace)
