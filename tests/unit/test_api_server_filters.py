"""The server list's pattern filters (name, ip, ip6) run in linear time and outside the read
model's lock: one request with a pathological pattern cannot stall the others (issue 14)."""

from __future__ import annotations

import threading
import time

from test_api_support import Cloud, cloud_fixture  # noqa: F401

from eventsvm.api import compute

SERVERS = "/compute/v2.1/servers"
AT_2_5 = {"OpenStack-API-Version": "compute 2.5"}


def test_a_catastrophic_backtracking_pattern_answers_at_once(cloud: Cloud):
    cloud.create_server("a" * 28 + "!")
    started = time.monotonic()
    answer = cloud.client.get(SERVERS, params={"name": "^(a+)+$"}, headers=cloud.headers())
    # Python's re needs 15 s and more for this; RE2 microseconds
    assert time.monotonic() - started < 2
    assert answer.status_code == 200 and answer.json()["servers"] == []


def test_patterns_only_a_backtracking_engine_runs_are_nova_400(cloud: Cloud):
    for field, pattern in [("name", r"(a)\1"), ("name", "(?=a)"), ("ip", "(["), ("ip6", "*")]:
        # ip6 filters a non-admin's list from microversion 2.5
        answer = cloud.client.get(SERVERS, params={field: pattern}, headers=AT_2_5 | cloud.headers())
        assert answer.status_code == 400, (field, pattern)
        assert answer.json() == {"badRequest": {
            "code": 400, "message": f"Invalid regular expression for filter {field}"}}


def test_ip_and_ip6_match_an_address_of_their_family_from_its_start(cloud: Cloud):
    web, _ = cloud.create_server("web"), cloud.create_server("db")
    cloud.advance(web, "active")  # 10.0.0.5

    def names(params: dict[str, str]) -> list[str]:
        listed = cloud.client.get(SERVERS, params=params, headers=AT_2_5 | cloud.headers()).json()["servers"]
        return sorted(s["name"] for s in listed)

    assert names({"ip": "10.0.0"}) == ["web"]
    assert names({"ip": r"10\.0\.0\.5$"}) == ["web"]
    assert names({"ip": "0.0.5"}) == []  # nova's re.match: from the address's start
    assert names({"ip6": "10"}) == []
    assert names({"ip": "10", "ip6": "fd00"}) == ["web"]
    assert names({"ip": "10", "name": "^db"}) == []


class _Blocking:
    """A pattern whose every match waits for the test, as a slow pattern would."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def search(self, text: str) -> bool:
        self.entered.set()
        assert self.release.wait(10)
        return True

    match = search


def test_no_lock_is_held_while_a_pattern_runs(cloud: Cloud, monkeypatch):
    cloud.create_server("vm1")
    blocking = _Blocking()
    monkeypatch.setattr(compute, "user_pattern", lambda p, field: blocking if p is not None else None)
    headers = cloud.headers()
    listed: dict[str, object] = {}

    def list_servers() -> None:
        listed["answer"] = cloud.client.get(SERVERS, params={"name": "slow"}, headers=headers)

    lister = threading.Thread(target=list_servers)
    lister.start()
    try:
        assert blocking.entered.wait(10)
        flavors: dict[str, object] = {}
        other = threading.Thread(target=lambda: flavors.setdefault(
            "answer", cloud.client.get("/compute/v2.1/flavors", headers=headers)))
        other.start()
        other.join(5)
        assert not other.is_alive(), "flavor list waited for the pattern"
        assert flavors["answer"].status_code == 200  # type: ignore[attr-defined]
        assert lister.is_alive()  # the pattern is still running
    finally:
        blocking.release.set()
        lister.join(10)
    assert [s["name"] for s in listed["answer"].json()["servers"]] == ["vm1"]  # type: ignore[attr-defined]
