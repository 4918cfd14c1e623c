"""Events no fold can apply, on a state topic, the identity topic and an instance topic, and garbage
on the identity and catalog topics: every process keeps serving, through a restart too, and each
such record has its dead letter with the reason."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from eventsvm.api.app import create_app
from eventsvm.api.context import ApiContext
from eventsvm.app import registry
from eventsvm.events.model import Event, EventType, Topic
from eventsvm.identity.keys import ensure_keys
from eventsvm.identity.tokens import TokenService
from eventsvm.log.port import OutRecord
from eventsvm.projections import readmodel as readmodel_module
from eventsvm.projections.readmodel import FOLD_NAME, Models
from tests.e2e.conftest import Cloud, CloudFactory
from tests.factories import sample_event, signed_records

# aggregates every fold of the cloud refuses, standing in for content a fold cannot apply
POISON: set[str] = set()


def refusing(fold: Any) -> Any:
    def guarded(*args: Any) -> Any:
        event = next(a for a in args if isinstance(a, Event))
        if event.aggregate_id in POISON:
            raise LookupError(f"{event.type} of {event.aggregate_id}: nothing to apply it to")
        return fold(*args)

    return guarded


@pytest.fixture
def refusing_folds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every service's evolve and the read model's fold refuse the POISON aggregates."""
    for name, entry in list(registry.SERVICES.items()):
        def build(host: str, entry: registry.ServiceEntry = entry) -> Any:
            service = entry.service(host)
            return dataclasses.replace(service, evolve=refusing(service.evolve))

        monkeypatch.setitem(registry.SERVICES, name, dataclasses.replace(entry, service=build))
    monkeypatch.setattr(readmodel_module, "fold", refusing(readmodel_module.fold))
    POISON.clear()


def poison(kind: EventType, **body: Any) -> Event:
    event = sample_event(kind)
    event.aggregate_id = str(uuid.uuid4())
    event.body.update(body)
    POISON.add(event.aggregate_id)
    return event


def letters(models: Models) -> set[tuple[str, str, str]]:
    return {(d.body["source_topic"], d.body["group"], d.body["error_type"]) for d in models.dead_letters}


def boot_through_the_api(cloud: Cloud, client: TestClient, name: str) -> None:
    """Log in as demo, POST a server, wait for it to be ACTIVE, and GET it."""
    login = client.post("/identity/v3/auth/tokens", json={"auth": {
        "identity": {"methods": ["password"], "password": {
            "user": {"name": "demo", "domain": {"id": "default"}, "password": "demo-pw"}}},
        "scope": {"project": {"name": "demo", "domain": {"id": "default"}}}}})
    assert login.status_code == 201, login.text
    headers = {"X-Auth-Token": login.headers["X-Subject-Token"]}
    answer = client.post("/compute/v2.1/servers", headers=headers, json={"server": {
        "name": name, "imageRef": cloud.image_id(), "flavorRef": "1",
        "networks": [{"uuid": cloud.network_id()}]}})
    assert answer.status_code == 202, answer.text
    server_id = answer.json()["server"]["id"]
    server = cloud.wait_for([server_id], {"ACTIVE", "ERROR"})[server_id]
    assert server.status == "ACTIVE", server.fault
    shown = client.get(f"/compute/v2.1/servers/{server_id}", headers=headers)
    assert shown.status_code == 200 and shown.json()["server"]["status"] == "ACTIVE"


def test_events_no_fold_can_apply_are_dead_lettered_and_every_process_keeps_serving(
    make_cloud: CloudFactory, refusing_folds: None, tmp_path: Path
) -> None:
    cloud = make_cloud(hosts=1)
    host = poison(EventType.HOST_REGISTERED, name="ghost-host")  # a state topic (scheduler, resolver)
    revoked = poison(EventType.TOKEN_REVOKED)  # the identity topic (authenticator)
    failed = poison(EventType.INSTANCE_FAILED, final=True, retryable=False)  # an instance topic (all)
    cloud.readmodel.log.append([
        *signed_records(cloud.options.data_dir, [host, revoked, failed]),  # as their writers sign
        OutRecord(str(Topic.IDENTITY), b"garbage", b"\x00 not avro"),
        OutRecord(str(Topic.CATALOG), b"garbage", b"\x00 not avro"),
    ])
    expected = {
        (str(Topic.HOSTS), "eventsvm.scheduler", "FoldError"),
        (str(Topic.HOSTS), "eventsvm.resolver", "FoldError"),
        (str(Topic.HOSTS), FOLD_NAME, "FoldError"),
        (str(Topic.IDENTITY), "eventsvm.authenticator", "FoldError"),
        (str(Topic.IDENTITY), FOLD_NAME, "FoldError"),
        (str(Topic.FAILED), "eventsvm.authenticator", "FoldError"),
        (str(Topic.FAILED), "eventsvm.scheduler", "FoldError"),
        (str(Topic.FAILED), "eventsvm.resolver", "FoldError"),
        (str(Topic.FAILED), "eventsvm.spawner.compute-1", "FoldError"),
        (str(Topic.FAILED), FOLD_NAME, "FoldError"),
    }
    ensure_keys(tmp_path / "keys")
    for attempt in ("first", "after-restart"):
        if attempt == "after-restart":
            cloud.restart()  # every service and the read model fold those records again on the way up
        api = create_app(ApiContext(readmodel=cloud.readmodel, tokens=TokenService(tmp_path / "keys")))
        with TestClient(api) as client:
            boot_through_the_api(cloud, client, f"vm-{attempt}")
        models = cloud.readmodel.models
        assert cloud.readmodel.wait_until(lambda m: expected <= letters(m), 30), letters(models)
        undecodable = [d.body for d in models.dead_letters if d.body["error_type"] == "CodecError"]
        # one letter each for the garbage on identity and catalog, whichever reader wrote it first
        assert sorted(d["source_topic"] for d in undecodable) == [str(Topic.CATALOG), str(Topic.IDENTITY)]
        folds = [d for d in models.dead_letters if d.body["error_type"] == "FoldError"]
        assert len(folds) == len(expected)  # a rebuild wrote some again: the read model keeps one each
        assert all(d.aggregate_id.startswith(d.body["source_topic"]) for d in folds)
        assert all("LookupError" in d.body["reason"] for d in folds)
        alive = {t.name for t in threading.enumerate() if t.is_alive()}
        assert {r.service.name for r in cloud.cluster.runners} <= alive
