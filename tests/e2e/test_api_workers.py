"""Several API processes on one log (`eventsvm up --api-workers 2`, and one more `eventsvm run api
--shared-port` beside it): what is written through one is read through another at once (a
POST on one worker and the GET right after it on the other never answer 404), and a token revoked
through one is refused by every worker from the moment the revocation is answered, though each
worker caches the tokens it validated. Here each worker's tail is usually quicker than the client;
tests/unit/test_api_peers.py takes the tail away, so only the catch-up can make those pass."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_backpressure import _project
from tests.e2e.test_up_exposure import EVENTSVM, PASSWORDS, free_port
from tests.processes import stop, wait_until_serving
from tests.up_children import TIMEOUT_S, ChildCloud, start_up

PAIRS = 12


@dataclass
class Workers:
    """The shared port of `up`'s two workers, and a third API process on a port of its own."""

    cloud: ChildCloud
    shared: str  # either of up's two workers, as the kernel picks
    other: str  # certainly another process than whichever answered on `shared`


@pytest.fixture(scope="module", params=["sqlite", pytest.param("kafka", marks=pytest.mark.kafka)])
def workers(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    tmp_path = tmp_path_factory.mktemp("workers")
    engine: list[str] = []
    if request.param == "kafka":
        engine = ["--kafka", request.getfixturevalue("kafka_bootstrap"),
                  "--namespace", f"workers{uuid.uuid4().hex[:8]}."]
    cloud = start_up(tmp_path, "--api-workers", "2", "--hosts", "1", *engine)
    port = free_port()
    command = [EVENTSVM, "run", "api", "--shared-port", "--data-dir", str(cloud.data_dir),
               "--port", str(port), *engine]
    with (tmp_path / "other.log").open("wb") as out:
        other = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                 env={**os.environ, **PASSWORDS})
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, other, timeout=180)
        yield Workers(cloud, cloud.url, url)
    finally:
        stop(other)
        stop(cloud.process)


def _post(url: str, path: str, auth: str, body: object) -> httpx.Response:
    # a connection of its own each time: the kernel spreads new connections across the workers
    return httpx.post(f"{url}{path}", json=body, headers={"X-Auth-Token": auth}, timeout=TIMEOUT_S)


def _get(url: str, path: str, auth: str) -> httpx.Response:
    return httpx.get(f"{url}{path}", headers={"X-Auth-Token": auth}, timeout=TIMEOUT_S)


def test_what_one_worker_wrote_the_other_reads_at_once(workers: Workers) -> None:
    demo_project = _project(workers.shared, "demo", "private")
    demo, project, body = demo_project.token, demo_project.project_id, demo_project.server
    admin = _project(workers.other, "admin", "public").token
    lifted = httpx.put(f"{workers.shared}/compute/v2.1/os-quota-sets/{project}", timeout=TIMEOUT_S,
                       headers={"X-Auth-Token": admin},
                       json={"quota_set": {"instances": -1, "cores": -1, "ram": -1}})
    assert lifted.status_code == 200, lifted.text
    misses = []
    for n in range(PAIRS):
        first, second = (workers.shared, workers.other) if n % 2 else (workers.other, workers.shared)
        name = f"rw-{n}-{uuid.uuid4().hex[:6]}"
        # a keypair, then a server naming it on the other worker, then that server read back
        made = _post(first, "/compute/v2.1/os-keypairs", demo, {"keypair": {"name": name}})
        assert made.status_code == 200, made.text
        shown = _get(second, f"/compute/v2.1/os-keypairs/{name}", demo)
        created = _post(second, "/compute/v2.1/servers", demo,
                        {"server": {**body, "name": name, "key_name": name}})
        assert created.status_code == 202, created.text
        server = _get(first, f"/compute/v2.1/servers/{created.json()['server']['id']}", demo)
        network = _post(first, "/network/v2.0/networks", demo, {"network": {"name": name}})
        assert network.status_code == 201, network.text
        seen = _get(second, f"/network/v2.0/networks/{network.json()['network']['id']}", demo)
        user = _post(second, "/identity/v3/users", admin, {"user": {"name": name, "password": "pw-" + name}})
        assert user.status_code == 201, user.text
        found = _get(first, f"/identity/v3/users/{user.json()['user']['id']}", admin)
        misses += [(n, what, r.status_code) for what, r in
                   (("keypair", shown), ("server", server), ("network", seen), ("user", found))
                   if r.status_code != 200]
    assert not misses, misses


def test_creates_and_shows_through_the_shared_port_never_miss(workers: Workers) -> None:
    demo = _project(workers.shared, "demo", "private").token
    misses = []
    for n in range(3 * PAIRS):
        name = f"shared-{n}-{uuid.uuid4().hex[:6]}"
        made = _post(workers.shared, "/compute/v2.1/os-keypairs", demo, {"keypair": {"name": name}})
        assert made.status_code == 200, made.text
        shown = _get(workers.shared, f"/compute/v2.1/os-keypairs/{name}", demo)
        if shown.status_code != 200:
            misses.append((name, shown.status_code))
    assert not misses, misses


def test_a_token_revoked_through_one_worker_is_refused_by_every_worker_at_once(workers: Workers) -> None:
    for n in range(6):
        here, there = (workers.shared, workers.other) if n % 2 else (workers.other, workers.shared)
        doomed = _project(here, "demo", "private").token
        # validated, and so cached, by both before the revocation
        assert _get(there, "/compute/v2.1/servers", doomed).status_code == 200
        assert _get(here, "/compute/v2.1/servers", doomed).status_code == 200
        revoked = httpx.delete(f"{here}/identity/v3/auth/tokens", timeout=TIMEOUT_S,
                               headers={"X-Auth-Token": doomed, "X-Subject-Token": doomed})
        assert revoked.status_code == 204, revoked.text
        assert _get(there, "/compute/v2.1/servers", doomed).status_code == 401
        assert _get(here, "/compute/v2.1/servers", doomed).status_code == 401


def test_up_refuses_an_api_worker_count_below_one(tmp_path: Path) -> None:
    done = subprocess.run([EVENTSVM, "up", "--api-workers", "0", "--data-dir", str(tmp_path / "data")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "--api-workers must be at least 1" in done.stderr
