"""Backpressure (issue 14 item 6) on a real `eventsvm up`, on either engine: a burst of concurrent
creates from two projects against small backlog bounds is answered 202, 429 (a project past its own
bound, nova's overLimit body) or 503 (the two together past the cloud's bound), each refusal with
Retry-After; every accepted server ends ACTIVE, nothing refused reaches the log, and once the
backlog drains a create is accepted again. openstacksdk's compute proxy sees the 429 as an error
naming the bound."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openstack
import openstack.exceptions
import pytest

from eventsvm.api.backlog import RETRY_AFTER_S
from tests.burst import Answer, burst
from tests.e2e.test_up_exposure import EVENTSVM, PASSWORDS, free_port
from tests.processes import stop, wait_for, wait_until_serving

PER_PROJECT = 10
IN_ALL = 15
BURST = 120  # creates per project, far more than either bound holds at once
TIMEOUT_S = 30.0


@dataclass
class Project:
    """A seeded user's project as a client sees it: token, ids and the body of a create."""

    user: str
    token: str
    project_id: str
    server: dict[str, Any]


@dataclass
class BoundedCloud:
    url: str
    compute: str
    demo: Project
    admin: Project

    def statuses(self, project: Project) -> dict[str, str]:
        """Every server of the project and its status."""
        reply = httpx.get(f"{self.compute}/servers/detail?limit=1000",
                          headers={"X-Auth-Token": project.token}, timeout=TIMEOUT_S)
        assert reply.status_code == 200, reply.text
        return {s["id"]: s["status"] for s in reply.json()["servers"]}


def _project(url: str, user: str, network: str) -> Project:
    reply = httpx.post(f"{url}/identity/v3/auth/tokens", timeout=TIMEOUT_S, json={"auth": {"identity": {
        "methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"},
            "password": PASSWORDS[f"EVENTSVM_{user.upper()}_PASSWORD"]}}},
        "scope": {"project": {"name": user, "domain": {"id": "default"}}}}})
    assert reply.status_code == 201, reply.text
    token = reply.headers["X-Subject-Token"]
    headers = {"X-Auth-Token": token}
    image = httpx.get(f"{url}/image/v2/images?name=cirros", headers=headers, timeout=TIMEOUT_S).json()
    networks = httpx.get(f"{url}/network/v2.0/networks?name={network}", headers=headers,
                         timeout=TIMEOUT_S).json()
    server = {"imageRef": image["images"][0]["id"], "flavorRef": "1",
              "networks": [{"uuid": networks["networks"][0]["id"]}]}
    return Project(user, token, reply.json()["token"]["project"]["id"], server)


@pytest.fixture(params=["sqlite", pytest.param("kafka", marks=pytest.mark.kafka)])
def cloud(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BoundedCloud]:
    """`eventsvm up` with a backlog bound of 10 builds per project and 15 in all, hosts and
    quotas large enough that every accepted server can go ACTIVE."""
    port = free_port()
    command = [EVENTSVM, "up", "--data-dir", str(tmp_path / "data"), "--port", str(port),
               "--host-capacity", "vcpus=1024,ram=1048576,disk=16384",
               "--build-backlog-per-project", str(PER_PROJECT), "--build-backlog", str(IN_ALL)]
    if request.param == "kafka":
        command += ["--kafka", request.getfixturevalue("kafka_bootstrap"),
                    "--namespace", f"backpressure{uuid.uuid4().hex[:8]}."]
    output = tmp_path / "up.log"
    with output.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, **PASSWORDS}, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_serving(url, process)
        except AssertionError as exc:  # say why: the cloud's own last lines
            tail = output.read_text(errors="replace").splitlines()[-20:]
            raise AssertionError("\n".join([str(exc), *tail])) from None
        demo, admin = _project(url, "demo", "private"), _project(url, "admin", "public")
        compute = f"{url}/compute/v2.1"
        for project in (demo, admin):  # the quota must not be what refuses them
            lifted = httpx.put(f"{compute}/os-quota-sets/{project.project_id}", timeout=TIMEOUT_S,
                               headers={"X-Auth-Token": admin.token},
                               json={"quota_set": {"instances": -1, "cores": -1, "ram": -1}})
            assert lifted.status_code == 200, lifted.text
        yield BoundedCloud(url, compute, demo, admin)
    finally:
        stop(process)


def _sdk_creates(cloud: BoundedCloud, stop_after: threading.Event) -> tuple[list[str], list[Any]]:
    """Creates through openstacksdk beside the burst, until one is refused with 429: (accepted ids,
    refusals)."""
    conn = openstack.connect(
        auth_url=f"{cloud.url}/identity/v3", username="demo", password=PASSWORDS["EVENTSVM_DEMO_PASSWORD"],
        project_name="demo", user_domain_id="default", project_domain_id="default", region_name="RegionOne")
    accepted: list[str] = []
    refused: list[Any] = []
    server = cloud.demo.server
    while not any(r.status_code == 429 for r in refused) and not stop_after.is_set():
        try:
            accepted.append(conn.compute.create_server(
                name=f"sdk-{len(accepted)}", image_id=server["imageRef"], flavor_id=server["flavorRef"],
                networks=server["networks"]).id)
        except openstack.exceptions.HttpException as exc:
            refused.append(exc)
    conn.close()
    return accepted, refused


def test_a_burst_past_the_backlog_is_refused_with_retry_after_and_every_accepted_server_goes_active(
    cloud: BoundedCloud,
) -> None:
    answers: dict[str, list[Answer]] = {"demo": [], "admin": []}

    def fire(project: Project) -> None:
        answers[project.user] += burst(f"{cloud.compute}/servers", project.token,
                                       lambda n: {**project.server, "name": f"{project.user}-{n}"}, BURST, 8)

    def together(*work: Callable[[], object]) -> None:
        threads = [threading.Thread(target=w) for w in work]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)

    # demo alone, the SDK beside its burst: past its own bound (10 < 15 in all) each create is a 429
    done = threading.Event()
    sdk: list[tuple[list[str], list[Any]]] = []
    together(lambda: fire(cloud.demo), lambda: sdk.append(_sdk_creates(cloud, done)))
    done.set()
    [(sdk_accepted, sdk_refused)] = sdk
    alone = [a.status for a in answers["demo"]]
    assert alone.count(202) + len(sdk_accepted) >= PER_PROJECT and alone.count(429) >= 1, sorted(set(alone))
    assert set(alone) == {202, 429}
    # both projects at once: together they meet the bound in all, and whoever is past it gets a 503
    together(lambda: fire(cloud.demo), lambda: fire(cloud.admin))
    every = answers["demo"] + answers["admin"]
    statuses = [a.status for a in every]
    assert set(statuses) == {202, 429, 503}, sorted(set(statuses))
    assert [a.status for a in answers["admin"]].count(202) >= 1
    for answer in every:
        if answer.status == 429:
            assert answer.retry_after == str(RETRY_AFTER_S)
            assert answer.body == {"overLimit": {
                "code": 429, "retryAfter": str(RETRY_AFTER_S),
                "message": f"The most servers this project may have being built at once is {PER_PROJECT}; "
                           "try again once some are ACTIVE."}}
        elif answer.status == 503:
            assert answer.retry_after == str(RETRY_AFTER_S)
            assert set(answer.body) == {"serviceUnavailable"}

    # openstacksdk raises the 429 as an error carrying nova's message (it does not retry by default)
    assert {r.status_code for r in sdk_refused} <= {429, 503}
    [over_limit] = [r for r in sdk_refused if r.status_code == 429]
    assert f"may have being built at once is {PER_PROJECT};" in str(over_limit)

    # nothing accepted is dropped: every 202'd server goes ACTIVE; nothing refused exists
    accepted = {user: [a.server_id for a in mine if a.status == 202] for user, mine in answers.items()}
    accepted["demo"] += sdk_accepted
    for project in (cloud.demo, cloud.admin):
        ids = accepted[project.user]
        wait_for(lambda p=project, ids=ids: all(cloud.statuses(p).get(i) == "ACTIVE" for i in ids),
                 240, f"every accepted server of {project.user} ACTIVE", poll_s=2)
        assert sorted(cloud.statuses(project)) == sorted(ids)

    # the backlog drained: a create is accepted again
    again = burst(f"{cloud.compute}/servers", cloud.demo.token,
                  lambda _: {**cloud.demo.server, "name": "again"}, 1, 1)
    assert [a.status for a in again] == [202]
