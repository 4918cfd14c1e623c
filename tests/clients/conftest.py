"""A live cloud for the real OpenStack clients: `eventsvm up` as a subprocess on a free port, once
per engine per session (the embedded SQLite log, and Kafka in its own topic namespace)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from live_cloud import BIN, LiveCloud

from tests.processes import stop

START_TIMEOUT_S = 90
ADMIN_PASSWORD = f"admin-{uuid.uuid4().hex[:12]}"
DEMO_PASSWORD = f"demo-{uuid.uuid4().hex[:12]}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _write_public_key(path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    path.write_bytes(key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
                     + b" clients@eventsvm\n")


@contextmanager
def _running_cloud(engine: str, data_dir: Path, request: pytest.FixtureRequest) -> Iterator[LiveCloud]:
    """`eventsvm up` with two compute hosts in `data_dir`, seeded, answering on its identity
    endpoint, with the key pair keypair-1; stopped afterwards."""
    port = _free_port()
    command = [str(BIN / "eventsvm"), "up", "--data-dir", str(data_dir), "--port", str(port), "--hosts", "2"]
    if engine == "kafka":
        command += [
            "--kafka",
            request.getfixturevalue("kafka_bootstrap"),
            "--namespace",
            f"clients{uuid.uuid4().hex[:8]}.",
        ]
    env = {**os.environ, "EVENTSVM_ADMIN_PASSWORD": ADMIN_PASSWORD, "EVENTSVM_DEMO_PASSWORD": DEMO_PASSWORD}
    log_file = data_dir / "up.log"
    with log_file.open("w") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=data_dir, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    cloud = LiveCloud(engine, url, data_dir, data_dir / "clouds.yaml", log_file, data_dir / "id_ed25519.pub")
    _write_public_key(cloud.public_key_file)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (_answers(f"{url}/identity/v3") and cloud.clouds_yaml.exists()):
            if process.poll() is not None:
                pytest.fail(
                    f"eventsvm up exited with {process.returncode}:\n{cloud.log_tail()}", pytrace=False
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"eventsvm up did not answer within {START_TIMEOUT_S}s:\n{cloud.log_tail()}",
                    pytrace=False,
                )
            time.sleep(0.3)
        cloud.openstack("keypair", "create", "--public-key", str(cloud.public_key_file), "keypair-1")
        yield cloud
    finally:
        stop(process)


ENGINES = ["sqlite", pytest.param("kafka", marks=[pytest.mark.kafka, pytest.mark.slow])]


# on Kafka the same client tests are `slow` (`make test-slow`): the Kafka engine is proven in
# `make test` by the contract and e2e suites, and these double the suite's longest part
@pytest.fixture(scope="session", params=ENGINES)
def live_cloud(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCloud]:
    """The cloud the client tests share, one per engine."""
    with _running_cloud(request.param, tmp_path_factory.mktemp(f"cloud-{request.param}"), request) as cloud:
        yield cloud


@pytest.fixture(scope="module", params=ENGINES)
def fuzzed_cloud(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCloud]:
    """A cloud of its own for schemathesis: what it creates (a network named "private", the
    document's example) must not become a second match for the other tests' lookups by name."""
    with _running_cloud(request.param, tmp_path_factory.mktemp(f"fuzzed-{request.param}"), request) as cloud:
        yield cloud
