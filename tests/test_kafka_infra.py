"""The Kafka engine against the real broker: topic settings, an unreachable broker, and one
read-process-write step end to end (the full port behaviour lives in tests/contract/)."""

from __future__ import annotations

import shutil
import socket
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from eventsvm.config import LogConfig
from eventsvm.log.kafka import KafkaLog
from eventsvm.log.port import BEGINNING, LogUnavailable, OutRecord, Record


@pytest.fixture
def log(kafka_bootstrap: str) -> Iterator[KafkaLog]:
    namespace = f"test-{uuid.uuid4().hex[:10]}."
    opened = KafkaLog(kafka_bootstrap, LogConfig(url=f"kafka://{kafka_bootstrap}", namespace=namespace,
                                                 partitions=3))
    yield opened
    opened.close()


def _poll_until(poll, count: int, within_s: float = 20.0) -> list[Record]:
    got: list[Record] = []
    deadline = time.monotonic() + within_s
    while len(got) < count and time.monotonic() < deadline:
        got += poll(timeout=0.2)
    return got


@pytest.mark.kafka
def test_topics_are_kept_forever_with_the_configured_partitions(log: KafkaLog, kafka_bootstrap: str) -> None:
    log.create_topics(["instance.requested"])
    log.create_topics(["instance.requested"], partitions=7)  # existing topics stay as they are

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    name = log.physical("instance.requested")
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    settings = admin.describe_configs([resource])[resource].result(timeout=10)
    assert settings["retention.ms"].value == "-1"
    assert settings["min.insync.replicas"].value == "1"
    assert len(admin.list_topics(name, timeout=10).topics[name].partitions) == 3
    assert log.partitions("instance.requested") == 3
    assert log.list_topics() == ["instance.requested"]


def test_unreachable_broker_is_reported_within_the_bound() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    started = time.monotonic()
    with pytest.raises(LogUnavailable, match=f"Kafka broker at {closed} did not answer within 2 s"):
        KafkaLog(closed, LogConfig(url=f"kafka://{closed}", connect_timeout_s=2))
    assert time.monotonic() - started < 5


@pytest.mark.kafka
def test_a_step_appends_its_outputs_and_commits_its_input(log: KafkaLog) -> None:
    log.create_topics(["requested", "scheduled"])
    placed = log.append([OutRecord("requested", f"inst-{i}".encode(), b"req") for i in range(6)])
    assert [p for p, _ in placed] == [log.partition_of(OutRecord("requested", f"inst-{i}".encode(), b""))
                                     for i in range(6)]

    member = log.member("scheduler", ["requested"], member_name="scheduler-1")
    consumed = _poll_until(member.poll, 6)
    assert sorted(r.key or b"" for r in consumed) == [f"inst-{i}".encode() for i in range(6)]
    member.commit_step([OutRecord("scheduled", r.key, b"host-1") for r in consumed], consumed)

    expected = {p: max(o for q, o in placed if q == p) + 1 for p, _ in placed}
    assert log.committed("scheduler", "requested") == expected
    reader = log.reader(["scheduled"], BEGINNING)
    outputs = _poll_until(reader.poll, 6)
    assert sorted(r.key or b"" for r in outputs) == [f"inst-{i}".encode() for i in range(6)]
    assert {r.value for r in outputs} == {b"host-1"}
    assert reader.at_end()
    member.close()
    # A new member of the group starts after what was committed: nothing is processed twice.
    again = log.member("scheduler", ["requested"], member_name="scheduler-1")
    assert _poll_until(again.poll, 1, within_s=3) == []



@pytest.mark.kafka
def test_the_broker_scripts_kafka_sh_starts_keeps_its_data_owner_only(tmp_path: Path) -> None:
    # the broker's data is the log (password hashes, every project's servers): scripts/kafka.sh
    # starts it under umask 077 and tightens what an older version left open
    port = _free_port()
    root = Path(__file__).resolve().parent.parent
    directory = root / ".kafka" / str(port)
    directory.mkdir(parents=True)
    directory.chmod(0o755)
    leftover = directory / "left-by-an-older-version"
    leftover.write_text("x")
    leftover.chmod(0o644)
    script = ["bash", str(root / "scripts" / "kafka.sh")]
    started = subprocess.run([*script, "start", str(port)], capture_output=True, text=True, timeout=600)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "tightening" in started.stderr
        bootstrap = f"127.0.0.1:{port}"
        log = KafkaLog(bootstrap, LogConfig(url=f"kafka://{bootstrap}", partitions=1))
        try:
            log.create_topics(["instance.requested"])
            log.append([OutRecord("instance.requested", b"k", b"v")])
        finally:
            log.close()
        open_to_others = [
            f"{stat.S_IMODE(p.lstat().st_mode):04o} {p}" for p in [directory, *directory.rglob("*")]
            if not p.is_symlink() and stat.S_IMODE(p.lstat().st_mode) & 0o077]
        assert not open_to_others
        assert any(p.name.startswith("instance.requested-") for p in (directory / "data").iterdir())
    finally:
        subprocess.run([*script, "stop", str(port)], capture_output=True, text=True, timeout=120)
        shutil.rmtree(directory, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
