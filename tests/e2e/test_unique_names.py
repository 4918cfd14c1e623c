"""Two API processes on one log create the same keypair name at the same moment: the log decides,
so exactly one request succeeds and the other gets nova's 409, on both engines."""

from __future__ import annotations

import base64
import os
import socket
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.processes import wait_until_serving

ROOT = Path(__file__).resolve().parents[2]
PASSWORDS = {"EVENTSVM_ADMIN_PASSWORD": "admin-pw", "EVENTSVM_DEMO_PASSWORD": "demo-pw"}
ROUNDS = 5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _public_key(seed: int) -> str:
    kind = b"ssh-ed25519"
    blob = struct.pack(">I", len(kind)) + kind + struct.pack(">I", 32) + bytes([seed]) * 32
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} key{seed}"


@pytest.fixture(params=["sqlite", pytest.param("kafka", marks=pytest.mark.kafka)])
def log_flags(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    """The `eventsvm` log options of one shared log on the engine under test."""
    flags = ["--data-dir", str(tmp_path / "data")]
    if request.param == "kafka":
        namespace = f"uniq{uuid.uuid4().hex[:8]}."
        flags += ["--kafka", request.getfixturevalue("kafka_bootstrap"), "--namespace", namespace]
    return flags


def _eventsvm(*args: str) -> list[str]:
    return [sys.executable, "-m", "eventsvm.app.cli", *args]


@pytest.fixture
def two_apis(log_flags: list[str]) -> Iterator[tuple[str, str]]:
    """The base URLs of two `eventsvm run api` processes over one seeded log."""
    env = {**os.environ, **PASSWORDS, "PYTHONPATH": str(ROOT)}
    seeded = subprocess.run(
        _eventsvm("seed", *log_flags), env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert seeded.returncode == 0, seeded.stderr
    processes: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for _ in range(2):
            port = _free_port()
            api = _eventsvm("run", "api", "--port", str(port), *log_flags)
            processes.append(subprocess.Popen(api, env=env))
            urls.append(f"http://127.0.0.1:{port}")
        for url, process in zip(urls, processes, strict=True):
            wait_until_serving(url, process)
        yield urls[0], urls[1]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _demo_token(url: str) -> str:
    auth = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": "demo", "domain": {"id": "default"}, "password": "demo-pw"}},
            },
            "scope": {"project": {"name": "demo", "domain": {"id": "default"}}},
        }
    }
    answer = httpx.post(f"{url}/identity/v3/auth/tokens", json=auth, timeout=30.0)
    assert answer.status_code == 201, answer.text
    return answer.headers["x-subject-token"]


def _create_at_once(
    urls: tuple[str, str], headers: dict[str, str], name: str, keys: tuple[str, str]
) -> list[int]:
    """POST the same keypair name to both APIs at the same moment (a barrier); the two statuses."""
    answers: list[httpx.Response | None] = [None, None]
    start = threading.Barrier(2)

    def create(i: int) -> None:
        body = {"keypair": {"name": name, "public_key": keys[i]}}
        with httpx.Client(timeout=30.0) as client:
            start.wait()
            answers[i] = client.post(f"{urls[i]}/compute/v2.1/os-keypairs", json=body, headers=headers)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = [a.status_code if a is not None else 0 for a in answers]
    assert sorted(statuses) == [200, 409], [a.text if a is not None else None for a in answers]
    loser = answers[statuses.index(409)]
    assert loser is not None
    nova_409 = {"conflictingRequest": {"code": 409, "message": f"Key pair '{name}' already exists."}}
    assert loser.json() == nova_409
    return statuses


def test_the_same_keypair_name_from_two_api_processes_at_once_is_created_once(two_apis: tuple[str, str]):
    headers = {"X-Auth-Token": _demo_token(two_apis[0])}
    for round_ in range(ROUNDS):
        name = f"k{round_}"
        keys = (_public_key(2 * round_ + 1), _public_key(2 * round_ + 2))
        statuses = _create_at_once(two_apis, headers, name, keys)
        winner_key = keys[statuses.index(200)]
        for url in two_apis:  # both processes hold the same verdict: the winner's key, once
            listed = httpx.get(f"{url}/compute/v2.1/os-keypairs", headers=headers, timeout=30.0).json()
            mine = [k["keypair"] for k in listed["keypairs"] if k["keypair"]["name"] == name]
            assert [k["public_key"] for k in mine] == [winner_key]
