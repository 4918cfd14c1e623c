"""`eventsvm up --processes`: a child SIGKILLed mid-flight is started again and counted, and the
cloud finishes every server it accepted; SIGTERM to `up` stops every child; SIGKILL to `up`
takes every child with it (PR_SET_PDEATHSIG), so nothing is left running either way."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import httpx

from tests.e2e.test_backpressure import _project
from tests.processes import stop, wait_for
from tests.up_children import TIMEOUT_S, alive, start_up

SERVERS = 8
KILLED = ("scheduler", "resolver", "compute-1")


def _statuses(url: str, auth: str) -> dict[str, str]:
    """Every server's status; empty while the API is between two lives."""
    try:
        reply = httpx.get(f"{url}/compute/v2.1/servers/detail", headers={"X-Auth-Token": auth},
                          timeout=TIMEOUT_S)
    except httpx.HTTPError:
        return {}
    return {s["id"]: s["status"] for s in reply.json()["servers"]} if reply.status_code == 200 else {}


def test_children_killed_mid_flight_are_restarted_and_every_server_goes_active(tmp_path: Path) -> None:
    cloud = start_up(tmp_path, "--hosts", "2")
    try:
        demo = _project(cloud.url, "demo", "private")
        auth, body = demo.token, demo.server
        ids = []
        for n in range(SERVERS):
            reply = httpx.post(f"{cloud.url}/compute/v2.1/servers", headers={"X-Auth-Token": auth},
                               json={"server": {**body, "name": f"survivor-{n}"}}, timeout=TIMEOUT_S)
            assert reply.status_code == 202, reply.text
            ids.append(reply.json()["server"]["id"])
        before = cloud.children()
        for name in KILLED:
            os.kill(before[name]["pid"], signal.SIGKILL)
        wait_for(lambda: all(row["restarts"] >= 1 and row["up"]
                             for name, row in cloud.children().items() if name in KILLED),
                 60, "the killed children started again")
        after = cloud.children()
        assert all(after[n]["pid"] != before[n]["pid"] for n in KILLED), (before, after)
        assert all(after[n]["restarts"] == 0 for n in after if n not in KILLED), after
        wait_for(lambda: all(_statuses(cloud.url, auth).get(i) in ("ACTIVE", "ERROR") for i in ids), 240,
                 f"every server built after the kills:\n{cloud.tail()}")
        statuses = _statuses(cloud.url, auth)
        assert [statuses[i] for i in ids] == ["ACTIVE"] * SERVERS, statuses
        metrics = httpx.get(f"{cloud.url}/metrics", timeout=TIMEOUT_S).text
        for name in KILLED:
            found = re.search(rf'eventsvm_service_restarts_total{{service="{name}"}} (\S+)', metrics)
            assert found and float(found.group(1)) >= 1, metrics[:2000]
        pids = [row["pid"] for row in cloud.children().values()]
        stop(cloud.process)
        assert cloud.process.returncode == 0, cloud.tail()
        assert not [pid for pid in pids if alive(pid)], "children outlived `up`"
    finally:
        if cloud.process.poll() is None:
            cloud.process.kill()


def test_up_killed_with_sigkill_takes_its_children_with_it(tmp_path: Path) -> None:
    cloud = start_up(tmp_path, "--hosts", "1", "--api-workers", "2")
    pids = [row["pid"] for row in cloud.children().values()]
    # four services, one spawner, two APIs
    assert len(pids) == 7 and all(alive(pid) for pid in pids), cloud.children()
    cloud.process.kill()
    cloud.process.wait(10)
    deadline = time.monotonic() + 30
    while [pid for pid in pids if alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in pids if alive(pid)]
    for pid in left:  # leave nothing behind even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left, f"children outlived a SIGKILLed `up`: {left}"
