"""A lost broker is a pause, never a crash (issue 14 item 0).

Each test runs its own broker on its own port, since it kills it: SIGKILL, no goodbye, then a start
on the same port and data directory, as an operator's restart would be.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, _free_port, _kafka_sh
from tests.processes import stop, wait_for

pytestmark = pytest.mark.kafka

EVENTSVM = str(Path(sys.executable).parent / "eventsvm")
OFFSETS_SCRIPT = Path(__file__).with_name("committed_offsets.py")
SERVERS = 100
DOWN_S = 15.0
ADMIN_PASSWORD = f"admin-{uuid.uuid4().hex[:12]}"
DEMO_PASSWORD = f"demo-{uuid.uuid4().hex[:12]}"


@dataclass
class Broker:
    """A broker of this test alone on `port`."""

    port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it (again: same port, same data directory) and wait until it answers."""
        started = _kafka_sh("start", self.port)
        assert started.returncode == 0, started.stdout + started.stderr

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would end it."""
        pid = int((ROOT / ".kafka" / str(self.port) / "broker.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)


@pytest.fixture
def own_broker() -> Iterator[Broker]:
    """A broker on a free port, stopped and its files removed afterwards."""
    broker = Broker(_free_port())
    try:
        broker.start()
        yield broker
    finally:
        _kafka_sh("stop", broker.port)
        shutil.rmtree(ROOT / ".kafka" / str(broker.port), ignore_errors=True)


def test_reading_committed_offsets_through_a_consumer_survives_a_broker_restart_the_admin_call_does_not(
    own_broker: Broker,
) -> None:
    """The reproducer of the abort: the admin client's list_consumer_group_offsets, asked from a
    few threads while the broker is killed and started again, takes the process down inside
    librdkafka; Consumer.committed, as KafkaLog.committed now asks, goes on answering."""
    own_broker.kill()
    runs = {
        mode: subprocess.Popen([sys.executable, str(OFFSETS_SCRIPT), own_broker.bootstrap, "50", mode],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for mode in ("admin", "consumer")
    }
    time.sleep(10)  # both ask against a dead broker for a while
    own_broker.start()
    outcome = {mode: (proc.wait(timeout=120), *proc.communicate()) for mode, proc in runs.items()}

    code, out, err = outcome["consumer"]
    assert (code, out.strip()) == (0, "survived"), err[-2000:]
    code, out, err = outcome["admin"]
    assert code == -signal.SIGABRT, f"the admin call survived (librdkafka fixed?): {code} {out} {err[-2000:]}"
    assert "rd_kafka_enq_once_del_source_return" in err and "eonce->refcnt > 0" in err


@dataclass
class Creator:
    """Creates servers one after another through the API, retrying a 503 as a client would."""

    url: str
    token: str
    body: Callable[[str], dict[str, Any]]
    count: int = SERVERS
    prefix: str = "chaos"
    burst: int = 0  # with pause_s: sleep pause_s after every `burst` servers accepted
    pause_s: float = 0.0
    # with hold_at: wait for `resume` once hold_at servers are accepted (the test breaks something
    # meanwhile, so the next request is sure to meet it however fast the first ones went)
    hold_at: int = 0
    resume: threading.Event = field(default_factory=threading.Event)
    accepted: dict[str, str] = field(default_factory=dict)  # name -> server id
    unavailable: list[httpx.Response] = field(default_factory=list)
    other: list[httpx.Response] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=120) as client:
            for i in range(self.count):
                name = f"{self.prefix}-{i}"
                if self.hold_at and i == self.hold_at:
                    self.resume.wait()
                while name not in self.accepted:
                    answer = client.post(f"{self.url}/compute/v2.1/servers", json=self.body(name),
                                         headers={"X-Auth-Token": self.token})
                    if answer.status_code == 202:
                        self.accepted[name] = answer.json()["server"]["id"]
                        if self.burst and len(self.accepted) % self.burst == 0:
                            time.sleep(self.pause_s)
                    elif answer.status_code == 503:
                        self.unavailable.append(answer)
                        time.sleep(min(float(answer.headers.get("Retry-After", 1)), 2.0))
                    else:
                        self.other.append(answer)
                        break
        self.done.set()


def token(client: httpx.Client, user: str, password: str) -> tuple[str, str]:
    """(token, project id) of a seeded user in its own project."""
    answer = client.post("/identity/v3/auth/tokens", json={"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": "Default"}, "password": password}}},
        "scope": {"project": {"name": user, "domain": {"name": "Default"}}}}})
    assert answer.status_code == 201, answer.text
    return answer.headers["X-Subject-Token"], answer.json()["token"]["project"]["id"]


@pytest.fixture
def cloud_on(own_broker: Broker, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """`eventsvm up --kafka` on `own_broker` with two hosts: (process, API URL, its log file)."""
    with eventsvm_up(own_broker.bootstrap, tmp_path) as cloud:
        yield cloud


@contextmanager
def eventsvm_up(bootstrap: str, tmp_path: Path, namespace: str = "") -> Iterator[
        tuple[subprocess.Popen[bytes], str, Path]]:
    """`eventsvm up --kafka BOOTSTRAP` with two hosts: (process, API URL, its log file)."""
    port = _free_port()
    namespace = namespace or f"loss{uuid.uuid4().hex[:8]}."
    command = [EVENTSVM, "up", "--kafka", bootstrap, "--namespace", namespace,
               "--data-dir", str(tmp_path), "--port", str(port), "--hosts", "2"]
    env = {**os.environ, "EVENTSVM_ADMIN_PASSWORD": ADMIN_PASSWORD, "EVENTSVM_DEMO_PASSWORD": DEMO_PASSWORD}
    log_file = tmp_path / "up.log"
    with log_file.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: process.poll() is not None or "eventsvm is up" in log_file.read_text(), 120,
                 "eventsvm up started")
        assert process.poll() is None, log_file.read_text()[-3000:]
        yield process, url, log_file
    finally:
        stop(process, grace=60)


def demo_without_quota(url: str) -> tuple[httpx.Client, str, Callable[[str], dict[str, Any]]]:
    """A client of the API at `url`, demo's token with its quota lifted, and the body of a create
    (m1.tiny on the private network)."""
    client = httpx.Client(base_url=url, timeout=120)
    admin, _ = token(client, "admin", ADMIN_PASSWORD)
    demo, project = token(client, "demo", DEMO_PASSWORD)
    lifted = client.put(f"/compute/v2.1/os-quota-sets/{project}", headers={"X-Auth-Token": admin},
                        json={"quota_set": {"instances": -1, "cores": -1, "ram": -1}})
    assert lifted.status_code == 200, lifted.text
    image = client.get("/image/v2/images", headers={"X-Auth-Token": demo}).json()["images"][0]["id"]
    networks = client.get("/network/v2.0/networks", headers={"X-Auth-Token": demo}).json()["networks"]
    network = next(n["id"] for n in networks if n["name"] == "private")

    def body(name: str) -> dict[str, Any]:
        return {"server": {"name": name, "imageRef": image, "flavorRef": "1",
                           "networks": [{"uuid": network}]}}

    return client, demo, body


def test_a_broker_killed_while_servers_are_created_is_a_pause_and_every_accepted_server_becomes_active(
    own_broker: Broker, cloud_on: tuple[subprocess.Popen[bytes], str, Path]
) -> None:
    process, url, log_file = cloud_on
    client, demo, body = demo_without_quota(url)
    creator = Creator(url, demo, body, hold_at=20)
    thread = threading.Thread(target=creator.run, daemon=True)
    thread.start()
    wait_for(lambda: len(creator.accepted) >= 20, 120, "20 servers accepted before the kill")
    own_broker.kill()
    creator.resume.set()  # the rest are created into the outage
    time.sleep(DOWN_S)  # the outage itself
    assert process.poll() is None, log_file.read_text()[-3000:]
    own_broker.start()
    wait_for(creator.done.is_set, 600, f"{SERVERS} servers accepted")
    assert creator.other == [], [(r.status_code, r.text) for r in creator.other]
    assert len(creator.accepted) == SERVERS
    assert creator.unavailable, "no request met the outage"
    for answer in creator.unavailable:
        assert int(answer.headers["Retry-After"]) > 0
        assert answer.json()["serviceUnavailable"]["code"] == 503

    def servers() -> list[dict[str, Any]]:
        listed = client.get("/compute/v2.1/servers/detail", headers={"X-Auth-Token": demo})
        assert listed.status_code == 200, listed.text
        return list(listed.json()["servers"])

    accepted = set(creator.accepted.values())
    wait_for(lambda: {s["id"] for s in servers() if s["status"] == "ACTIVE"} >= accepted, 600,
             "every accepted server ACTIVE")
    found = servers()
    assert process.poll() is None, log_file.read_text()[-3000:]
    assert len({s["id"] for s in found}) == len(found)
    names = [s["name"] for s in found]
    twice = {n: [(s["id"], s["created"]) for s in found if s["name"] == n]
             for n in names if names.count(n) > 1}
    assert not twice, f"servers created twice: {twice}; 503s: {[r.text for r in creator.unavailable]}"
    assert {s["status"] for s in found} == {"ACTIVE"}

    metrics = client.get("/metrics").text
    up = [line for line in metrics.splitlines() if line.startswith("eventsvm_service_up{")]
    assert up and all(line.endswith(" 1.0") for line in up), up
    log_text = log_file.read_text()
    assert "Assertion" not in log_text, log_text[-3000:]
    assert " died" not in log_text, [line for line in log_text.splitlines() if " died" in line]
    client.close()
