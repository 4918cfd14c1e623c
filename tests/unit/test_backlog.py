"""Backpressure at POST /servers (issue 14 item 6): the pure decision, the count of unfinished
builds the API keeps from its read model, and what a refused caller is answered."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_api_support import Cloud, cloud_fixture  # noqa: F401

from eventsvm.api.app import create_app
from eventsvm.api.backlog import RETRY_AFTER_S, BuildBacklog
from eventsvm.api.context import ApiContext
from eventsvm.api.errors import TooManyRequests
from eventsvm.app.cli import build_parser
from eventsvm.app.options import UsageError, backlog_limits
from eventsvm.events.model import EventType
from eventsvm.state.backlog import (
    DEFAULT_IN_ALL,
    DEFAULT_PER_PROJECT,
    UNBOUNDED,
    Backlog,
    BacklogLimits,
    refusal,
)

SERVERS = "/compute/v2.1/servers"


# -- the decision ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("project", "in_all", "servers", "expected"),
    [
        (0, 0, 1, None),
        (1, 5, 1, None),  # exactly at both bounds still fits
        (2, 5, 1, 429),  # past the project's bound
        (0, 6, 1, 503),  # past the bound in all
        (2, 6, 1, 429),  # past both: the project is told it is its own share
        (0, 0, 3, 429),  # a multi-create counts each server
        (0, 5, 2, 503),
    ],
)
def test_refusal_is_429_past_the_project_s_bound_and_503_past_the_bound_in_all(
    project: int, in_all: int, servers: int, expected: int | None
) -> None:
    assert refusal(Backlog(project, in_all), servers, BacklogLimits(per_project=2, in_all=6)) == expected


def test_an_unbounded_limit_never_refuses() -> None:
    limits = BacklogLimits(per_project=UNBOUNDED, in_all=UNBOUNDED)
    assert refusal(Backlog(10**6, 10**7), 1000, limits) is None
    assert refusal(Backlog(10**6, 0), 1, BacklogLimits(per_project=UNBOUNDED, in_all=10)) is None
    assert refusal(Backlog(0, 10), 1, BacklogLimits(per_project=UNBOUNDED, in_all=10)) == 503


# -- through the API ---------------------------------------------------------------------------
@pytest.fixture
def bounded(cloud: Cloud) -> Iterator[TestClient]:
    """The same cloud behind an API that lets a project build 2 servers and the cloud 3."""
    context = ApiContext(readmodel=cloud.readmodel, tokens=cloud.tokens,
                         backlog=BuildBacklog(BacklogLimits(per_project=2, in_all=3)))
    with TestClient(create_app(context)) as client:
        yield client


def _create(cloud: Cloud, client: TestClient, user: str = "demo", **extra: Any) -> Any:
    body = cloud.server_request("web", **extra)
    if user != "demo":
        del body["server"]["key_name"]  # the keypair and the private network are demo's
        body["server"]["networks"] = [{"uuid": cloud.ids["network:public"]}]
    return client.post(SERVERS, json=body, headers=cloud.headers(user))


def _requested(cloud: Cloud) -> int:
    return len(cloud.events(EventType.INSTANCE_REQUESTED))


def test_past_the_project_s_backlog_a_create_gets_nova_s_429_and_appends_nothing(
    cloud: Cloud, bounded: TestClient
) -> None:
    first = _create(cloud, bounded).json()["server"]["id"]
    assert _create(cloud, bounded).status_code == 202
    refused = _create(cloud, bounded)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == str(RETRY_AFTER_S)
    assert refused.json() == {"overLimit": {
        "code": 429, "retryAfter": str(RETRY_AFTER_S),
        "message": "The most servers this project may have being built at once is 2; "
                   "try again once some are ACTIVE."}}
    assert _requested(cloud) == 2
    # ACTIVE, ERROR and deleted each free a place
    cloud.advance(first, "active")
    second = _create(cloud, bounded)
    assert second.status_code == 202, second.text
    assert _create(cloud, bounded).status_code == 429
    cloud.advance(second.json()["server"]["id"], "error")
    assert _create(cloud, bounded).status_code == 202
    assert _requested(cloud) == 4


def test_a_multi_create_counts_each_server(cloud: Cloud, bounded: TestClient) -> None:
    assert _create(cloud, bounded, min_count=3, max_count=3).status_code == 429
    assert _requested(cloud) == 0
    assert _create(cloud, bounded, min_count=2, max_count=2).status_code == 202
    assert _requested(cloud) == 2


def test_past_the_backlog_in_all_any_project_gets_503_with_retry_after(
    cloud: Cloud, bounded: TestClient
) -> None:
    assert _create(cloud, bounded, min_count=2, max_count=2).status_code == 202
    other = _create(cloud, bounded, user="alice")
    assert other.status_code == 202, other.text
    refused = _create(cloud, bounded, user="alice")
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == str(RETRY_AFTER_S)
    assert set(refused.json()) == {"serviceUnavailable"}
    assert _requested(cloud) == 3


def test_builds_on_the_log_before_the_api_started_are_counted(cloud: Cloud) -> None:
    # the default API of the fixture accepted these; a new API process over the same log counts them
    ids = [cloud.create_server(f"old-{n}") for n in range(2)]
    context = ApiContext(readmodel=cloud.readmodel, tokens=cloud.tokens,
                         backlog=BuildBacklog(BacklogLimits(per_project=2, in_all=10)))
    with TestClient(create_app(context)) as client:
        assert _create(cloud, client).status_code == 429
        cloud.advance(ids[0], "deleted")
        assert _create(cloud, client).status_code == 202


def test_concurrent_creates_in_one_process_cannot_all_pass_the_same_check(cloud: Cloud) -> None:
    backlog = BuildBacklog(BacklogLimits(per_project=5, in_all=UNBOUNDED))
    project = cloud.ids["project:demo"]
    admitted: list[int] = []
    refused: list[int] = []
    release = threading.Event()

    def create() -> None:
        try:
            with backlog.admit(cloud.readmodel, project, 1):
                admitted.append(1)
                release.wait(10)  # hold the place as an append in progress does
        except TooManyRequests:
            refused.append(1)
        finally:
            if len(admitted) + len(refused) == 20:
                release.set()

    threads = [threading.Thread(target=create) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert (len(admitted), len(refused)) == (5, 15)
    with cloud.readmodel.lock:  # and every place is given back once the appends are done
        assert backlog.backlog(project) == Backlog(0, 0)


def test_the_openapi_document_lists_429_with_retry_after_on_the_create(cloud: Cloud) -> None:
    document = cloud.client.get("/openapi.json").json()
    answers = document["paths"][SERVERS]["post"]["responses"]
    assert set(answers["429"]["headers"]) == {"Retry-After"}
    assert "overLimit" in answers["429"]["content"]["application/json"]["schema"]["properties"]
    assert "servers being built" in answers["503"]["description"]


def test_eventsvm_up_and_run_api_take_the_backlog_bounds() -> None:
    parser = build_parser()
    assert backlog_limits(parser.parse_args(["up"])) == BacklogLimits(DEFAULT_PER_PROJECT, DEFAULT_IN_ALL)
    chosen = parser.parse_args(["run", "api", "--build-backlog-per-project", "7", "--build-backlog", "-1"])
    assert backlog_limits(chosen) == BacklogLimits(7, UNBOUNDED)
    with pytest.raises(UsageError, match="--build-backlog must be at least 1"):
        backlog_limits(parser.parse_args(["up", "--build-backlog", "0"]))
