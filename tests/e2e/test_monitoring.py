"""Monitoring on both engines: what /metrics and the dashboard's state say about a real pipeline run."""

from __future__ import annotations

import functools
import time
import uuid
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from eventsvm.api.auth import valid_claims
from eventsvm.app.seed import choose_passwords, seed_events
from eventsvm.config import LogConfig
from eventsvm.events.codec import Codec
from eventsvm.events.model import EventType, new_event, now_ms
from eventsvm.identity.keys import ensure_keys
from eventsvm.identity.tokens import TokenService
from eventsvm.log.factory import open_log
from eventsvm.monitoring.metrics import PipelineMonitor
from eventsvm.monitoring.router import Monitoring, make_monitoring
from eventsvm.projections.readmodel import ReadModel
from tests.e2e.conftest import Cloud, CloudFactory, wait_quiet

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: TestClient) -> Samples:
    """/metrics parsed: (sample name, sorted labels) -> value."""
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def client_for(monitoring: Monitoring) -> TestClient:
    app = FastAPI()
    app.include_router(monitoring.router)
    return TestClient(app)


def history(monitor: PipelineMonitor) -> Samples:
    """The counters a monitor accumulated about instances (not the gauges read at scrape time)."""
    counted = ("eventsvm_failures_total", "eventsvm_stage_latency_seconds_count",
               "eventsvm_reschedules_total")
    result: Samples = {}
    for family in monitor.registry.collect():
        for s in family.samples:
            instance_event = s.name == "eventsvm_events_total" and s.labels["type"].startswith("instance.")
            if s.name in counted or instance_event:
                result[s.name, tuple(sorted(s.labels.items()))] = s.value
    return result


def token_of(tokens: TokenService, cloud: Cloud, user: str, project: str, roles: tuple[str, ...]) -> str:
    identity = cloud.readmodel.models.identity
    found_user = identity.user_by_name(user, "default")
    found_project = identity.project_by_name(project, "default")
    assert found_user is not None and found_project is not None
    return tokens.issue(found_user.id, found_project.id, roles).token


def test_metrics_and_dashboard_state_follow_a_pipeline_run(make_cloud: CloudFactory, tmp_path: Path) -> None:
    cloud = make_cloud(hosts=2, broken_hosts={"compute-1": "disk on fire"})
    ensure_keys(tmp_path / "keys")
    tokens = TokenService(tmp_path / "keys")
    monitoring = make_monitoring(cloud.readmodel, lag_interval_s=0.5,
                                 claims_of=functools.partial(valid_claims, tokens, cloud.readmodel))
    client = client_for(monitoring)
    admin = {"X-Auth-Token": token_of(tokens, cloud, "admin", "admin", ("admin",))}
    try:
        ids = [cloud.submit(f"vm-{n}") for n in range(6)]
        doomed = cloud.submit("typo", flavor="no-such-flavor")
        servers = cloud.wait_for(ids, {"ACTIVE", "ERROR"})
        assert {s.status for s in servers.values()} == {"ACTIVE"}
        cloud.wait_for([doomed], {"ERROR"})
        wait_quiet(cloud)  # the counts below are final: no step is left to add to them
        retried = sum(s.attempt > 1 for s in servers.values())
        assert retried, "the weighers spread load, so some build must have tried the broken host first"

        samples = scrape(client)
        assert value(samples, "eventsvm_events_total", topic="eventsvm.instance.spawned",
                     type="instance.spawned") == 6
        assert value(samples, "eventsvm_events_total", topic="eventsvm.instance.requested",
                     type="instance.requested") == 7
        failures = "eventsvm_failures_total"
        assert value(samples, failures, stage="authenticate", reason="not_found", final="true") == 1
        assert value(samples, failures, stage="spawn", reason="hypervisor", final="false") == retried
        assert value(samples, "eventsvm_reschedules_total") == retried
        for before, after in (("requested", "authenticated"), ("authenticated", "scheduled"),
                              ("scheduled", "resources-resolved"), ("resources-resolved", "spawned"),
                              ("requested", "spawned")):
            count = value(samples, "eventsvm_stage_latency_seconds_count", from_stage=before, to_stage=after)
            assert count == 6, (before, after, count)
        whole = value(samples, "eventsvm_stage_latency_seconds_sum", from_stage="requested",
                      to_stage="spawned")
        assert 0 < whole < 6 * 60
        assert value(samples, "eventsvm_instances", status="ACTIVE") == 6
        assert value(samples, "eventsvm_instances", status="ERROR") == 1
        # m1.tiny has 1 vCPU
        assert value(samples, "eventsvm_host_used", host="compute-2", resource="vcpus") == 6
        assert value(samples, "eventsvm_host_used", host="compute-1", resource="ram_mb") == 0
        assert value(samples, "eventsvm_host_capacity", host="compute-1", resource="vcpus") > 6
        assert value(samples, "eventsvm_instances_stuck", stage="requested") == 0

        # an idle pipeline drains its lag (a Kafka transaction marker may stand after the last
        # committed record, hence 1)
        deadline = time.monotonic() + 15
        while True:
            monitoring.lag.refresh()
            samples = scrape(client)
            lag = {labels: v for (name, labels), v in samples.items() if name == "eventsvm_consumer_lag"}
            if all(v <= 1 for v in lag.values()):
                break
            assert time.monotonic() < deadline, f"lag does not drain: {lag}"
            time.sleep(0.2)
        groups = {dict(labels)["group"] for labels in lag}
        assert {"eventsvm.authenticator", "eventsvm.scheduler", "eventsvm.resolver",
                "eventsvm.spawner.compute-2"} <= groups

        state = client.get("/dashboard/state", headers=admin).json()
        assert state["view"] == "admin"
        flow = {s["name"]: s for s in state["stages"]}
        assert flow["spawned"]["passed"] == 6 and flow["requested"]["passed"] == 7
        assert flow["spawned"]["now"] == 6 and flow["requested"]["now"] == 0
        assert state["statuses"]["ACTIVE"] == 6
        hosts = {h["name"]: h for h in state["hosts"]}
        assert hosts["compute-2"]["instances"] == 6 and hosts["compute-1"]["instances"] == 0
        typo = next(f for f in state["failures"] if f["instance_id"] == doomed)
        assert typo["final"] and typo["name"] == "typo" and "could not be found" in typo["reason"]
        assert any(f["category"] == "hypervisor" and "disk on fire" in f["reason"] for f in state["failures"])
        end_to_end = next(r for r in state["latency"] if (r["from"], r["to"]) == ("requested", "spawned"))
        assert end_to_end["count"] == 6 and 0 < end_to_end["p50"] <= end_to_end["p99"]
        page = client.get("/dashboard")
        assert page.status_code == 200 and 'id="flow"' in page.text
        assert_project_data_needs_an_admin(client, tokens, cloud, [*ids, doomed], state)
    finally:
        monitoring.close()

    # A monitor attached to a read model that has already folded the log (the API starts it
    # first) must count the same history as one that followed every event live.
    later = ReadModel(cloud.cluster.open_log(), cloud.cluster.codec)
    later.start(tail=False)
    replayed = PipelineMonitor()
    replayed.attach(later)
    assert replayed.passed == monitoring.monitor.passed
    assert history(replayed) == history(monitoring.monitor)
    later.close()


def assert_project_data_needs_an_admin(client: TestClient, tokens: TokenService, cloud: Cloud,
                                       ids: list[str], admin_state: dict) -> None:
    """Without an admin's token the dashboard counts failures but names no server, and /metrics
    carries no project's, user's or server's name or id in any label."""
    member = {"X-Auth-Token": token_of(tokens, cloud, "demo", "demo", ("member", "reader"))}
    user_id, project_id = cloud.demo
    secrets = {*ids, user_id, project_id, "typo", *(f"vm-{n}" for n in range(6))}
    for headers in ({}, member):
        answer = client.get("/dashboard/state", headers=headers)
        assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
        state = answer.json()
        assert state["view"] == "summary" and state["failures"] == [] and state["stuck"]["instances"] == []
        assert [s for s in secrets if s in answer.text] == [], "project data without an admin token"
        # the health a monitoring user needs is all there
        assert state["statuses"] == admin_state["statuses"] and state["stages"] == admin_state["stages"]
        assert {"stage": "authenticate", "category": "not_found", "final": True, "count": 1} in (
            state["failure_counts"])
    for bad in ("not-a-token", tokens.issue("no-such-user", "no-such-project", ("admin",)).token):
        assert client.get("/dashboard/state", headers={"X-Auth-Token": bad}).status_code == 401
    metrics = client.get("/metrics").text
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            assert not set(sample.labels.values()) & secrets, (sample.name, sample.labels)
    assert [s for s in secrets if s in metrics] == []


def test_an_instance_waiting_past_the_limit_is_stuck_until_it_moves_on(engine_url: tuple[str, str],
                                                                        tmp_path: Path) -> None:
    url, namespace = engine_url
    readmodel = ReadModel(open_log(LogConfig(url=url, namespace=namespace, partitions=2)), Codec())
    ensure_keys(tmp_path / "keys")
    tokens = TokenService(tmp_path / "keys")
    # attached before the first fold: every event reaches the monitor through the listener
    monitoring = make_monitoring(readmodel, stuck_after_s=1.0, start_lag=False,
                                 claims_of=functools.partial(valid_claims, tokens, readmodel))
    # The monitor's clock is the test's: "stuck" is decided by the time it reads, not by how long
    # this machine took to get from one request to the next.
    clock = [now_ms()]
    monitoring.monitor.clock = lambda: clock[0]
    readmodel.start()
    client = client_for(monitoring)
    try:
        readmodel.append(seed_events(choose_passwords("admin-pw", "demo-pw")))
        identity = readmodel.models.identity
        admin_user, admin_project = identity.user_by_name("admin", "default"), identity.project_by_name(
            "admin", "default")
        assert admin_user is not None and admin_project is not None
        admin = {"X-Auth-Token": tokens.issue(admin_user.id, admin_project.id, ("admin",)).token}
        instance_id = str(uuid.uuid4())
        # no authenticator runs, so the request waits in `requested`
        requested = new_event(EventType.INSTANCE_REQUESTED, instance_id, {
            "name": "waiting", "flavor_id": "1", "image_id": str(uuid.uuid4()), "networks": [],
            "key_name": None,
            "availability_zone": None, "server_group_id": None, "block_devices": [], "metadata": {},
            "roles": ["member"], "token_audit_id": "audit"}, user_id="u", project_id="p")
        readmodel.append([requested])
        # exactly at the limit it is still waiting, not stuck
        clock[0] = requested.occurred_at + 1_000
        state = client.get("/dashboard/state").json()
        assert state["stuck"]["count"] == 0 and state["stages"][0]["now"] == 1
        assert value(scrape(client), "eventsvm_instances_stuck", stage="requested") == 0
        clock[0] += 1
        state = client.get("/dashboard/state", headers=admin).json()
        assert [(s["id"], s["name"], s["stage"]) for s in state["stuck"]["instances"]] == [
            (instance_id, "waiting", "requested")]
        counted = client.get("/dashboard/state").json()["stuck"]  # no token: counted, not named
        assert (counted["count"], counted["instances"]) == (1, [])
        assert value(scrape(client), "eventsvm_instances_stuck", stage="requested") == 1
        readmodel.append([new_event(EventType.INSTANCE_DELETED, instance_id, {
            "host": None, "terminated_at": now_ms(), "stage": "resolver"}, sequence=2)])
        assert client.get("/dashboard/state").json()["stuck"]["count"] == 0
        assert value(scrape(client), "eventsvm_instances_stuck", stage="requested") == 0
    finally:
        monitoring.close()
        readmodel.close()
        readmodel.log.close()
