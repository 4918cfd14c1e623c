"""Fixtures shared by every test directory: the real Kafka broker that kafka tests run against."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_timeout
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

ROOT = Path(__file__).resolve().parent.parent


def _broker_answers(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=5)
    except (OSError, KafkaException):
        return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kafka_sh(command: str, port: int) -> subprocess.CompletedProcess[str]:
    # 600 s: on a fresh machine the first start downloads the broker's jars with Maven.
    return subprocess.run(["bash", str(ROOT / "scripts" / "kafka.sh"), command, str(port)],
                          capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """"127.0.0.1:PORT" of a running broker: EVENTSVM_TEST_KAFKA, else one on 9092, else one
    started here for the session. Never skips: a kafka test without a broker fails."""
    given = os.environ.get("EVENTSVM_TEST_KAFKA")
    if given:
        yield given
        return
    if _broker_answers("127.0.0.1:9092"):
        yield "127.0.0.1:9092"
        return
    port = _free_port()
    started = _kafka_sh("start", port)
    if started.returncode != 0:
        pytest.fail(f"could not start a Kafka broker: {started.stdout}{started.stderr}", pytrace=False)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        _kafka_sh("stop", port)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: pytest_timeout.Settings) -> bool | None:
    """pytest-timeout's thread method, with the test's name first: its stack dump alone does not
    say which test (or which test's fixture) ran over, and it ends the whole run."""
    if settings.method != "thread":
        return None

    def expired() -> None:
        capture = item.config.pluginmanager.getplugin("capturemanager")
        if capture is not None:
            capture.suspend_global_capture(item)
        item.config.get_terminal_writer().line(
            f"\n{item.nodeid} ran over its {settings.timeout:g} s bound (setup, call and teardown)")
        pytest_timeout.timeout_timer(item, settings)

    timer = threading.Timer(settings.timeout, expired)
    timer.name = f"timeout {item.nodeid}"

    def cancel() -> None:
        timer.cancel()
        timer.join()

    item.cancel_timeout = cancel  # what pytest-timeout's cancel hook calls
    timer.start()
    return True


# Tests that SIGKILL a process over and over: on the embedded engine they stay in `make test`; on
# Kafka (a group to rejoin after each kill, 25-40 s each) they run with the chaos suites in
# `make chaos-bounded`, which CI runs too, to keep `make test` inside its time.
KILLS_ON_KAFKA = frozenset({
    "test_billing_killed_at_arbitrary_points_still_records_each_usage_exactly_once",
    "test_restarting_every_service_mid_flight_loses_and_duplicates_nothing",
    "test_every_input_gives_exactly_one_output_although_the_worker_is_killed",
    "test_a_member_name_is_held_by_one_holder_until_it_lets_go",
})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/chaos/ is a chaos test and every one under tests/qemu/ a slow one, so
    `make test` can leave them to their own targets (scripts/test.sh) without a marker per file."""
    for item in items:
        if item.nodeid.startswith("tests/chaos/"):
            item.add_marker(pytest.mark.chaos)
        elif getattr(item, "originalname", "") in KILLS_ON_KAFKA and item.get_closest_marker("kafka"):
            item.add_marker(pytest.mark.chaos)
        elif item.nodeid.startswith("tests/qemu/"):
            item.add_marker(pytest.mark.slow)
