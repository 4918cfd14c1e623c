"""The response models document the bodies; they never change them.

FastAPI validates a route's answer against its response model and serialises it again. These tests
record, for every such answer, the body as the route built it and as it went out, and require the
two to be the same JSON (same keys, same explicit nulls, same types: 1 stays 1, never 1.0). Routes
that answer with a JSONResponse skip that step; their bodies are held to the model directly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import fastapi.routing
import pytest
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel
from test_api_support import PASSWORD, PUBLIC_KEY, Cloud, cloud_fixture  # noqa: F401

from eventsvm.api import responses

COMPUTE = "/compute/v2.1"


def canonical(value: Any) -> str:
    """JSON text that tells 1 from 1.0 and null from missing, independent of key order."""
    return json.dumps(value, sort_keys=True)


@pytest.fixture(name="passes")
def passes_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str, str]]]:
    """(model, body as built, body as sent) of every answer FastAPI re-serialised."""
    seen: list[tuple[str, str, str]] = []
    original = fastapi.routing.serialize_response

    async def recording(**kwargs: Any) -> Any:
        sent = await original(**kwargs)
        field = kwargs.get("field")
        if field is not None:
            model = getattr(field.field_info.annotation, "__name__", str(field.field_info.annotation))
            out = json.loads(sent) if isinstance(sent, bytes) else sent  # FastAPI may hand back JSON text
            seen.append((model, canonical(jsonable_encoder(kwargs["response_content"])), canonical(out)))
        return sent

    monkeypatch.setattr(fastapi.routing, "serialize_response", recording)
    yield seen


def _busy_cloud(cloud: Cloud) -> dict[str, str]:
    """Servers in BUILD, ACTIVE and ERROR, a volume, an image with custom properties."""
    ids = {
        "building": cloud.create_server("building"),
        "active": cloud.create_server("active"),
        "failed": cloud.create_server("failed"),
    }
    cloud.advance(ids["active"], "active")
    cloud.advance(ids["failed"], "error")
    project = cloud.ids["project:demo"]
    answer = cloud.client.post(f"/volume/v3/{project}/volumes", json={"volume": {"size": 1}},
                               headers=cloud.headers())
    assert answer.status_code == 202, answer.text
    ids["volume"] = answer.json()["volume"]["id"]
    answer = cloud.client.post("/image/v2/images", headers=cloud.headers("admin"), json={
        "name": "custom", "visibility": "public", "hw_disk_bus": "virtio", "os_distro": "cirros"})
    assert answer.status_code == 201, answer.text
    ids["image"] = answer.json()["id"]
    answer = cloud.client.post(f"{COMPUTE}/flavors", headers=cloud.headers("admin"), json={
        "flavor": {"name": "m1.swap", "ram": 256, "vcpus": 1, "disk": 0, "swap": 512}})
    assert answer.status_code == 200, answer.text
    answer = cloud.client.post("/network/v2.0/networks", headers=cloud.headers("admin"),
                               json={"network": {"name": "lab"}})
    assert answer.status_code == 201, answer.text
    return ids


def _read_everything(cloud: Cloud, ids: dict[str, str], user: str) -> None:
    project = cloud.ids[f"project:{cloud.home(user)}"]
    port_id = cloud.instance(ids["active"]).ports[0]["port_id"]
    paths = [
        f"{COMPUTE}/servers", f"{COMPUTE}/servers/detail", f"{COMPUTE}/servers?limit=1",
        f"{COMPUTE}/servers/detail?limit=1", f"{COMPUTE}/flavors", f"{COMPUTE}/flavors/detail",
        f"{COMPUTE}/flavors/1", f"{COMPUTE}/os-keypairs", "/image/v2/images",
        f"/image/v2/images/{ids['image']}", f"/image/v2/images/{cloud.ids['image']}",
        "/network/v2.0/networks", f"/network/v2.0/networks/{cloud.ids['network:public']}",
        "/network/v2.0/ports",
        f"/volume/v3/{project}/volumes", f"/volume/v3/{project}/volumes/detail",
    ]
    if user != "alice":
        paths += [f"{COMPUTE}/servers/{ids[k]}" for k in ("building", "active", "failed")]
        paths += [f"/network/v2.0/ports/{port_id}", f"/volume/v3/{project}/volumes/{ids['volume']}",
                  f"/network/v2.0/networks/{cloud.ids['network:private']}"]
    if user == "demo":
        paths.append(f"{COMPUTE}/os-keypairs/keypair-1")
    for path in paths:
        answer = cloud.client.get(path, headers=cloud.headers(user))
        assert answer.status_code == 200, (path, answer.text)


@pytest.mark.parametrize("user", ["demo", "admin", "alice"])
def test_every_modelled_answer_goes_out_exactly_as_the_route_built_it(
    cloud: Cloud, passes: list[tuple[str, str, str]], user: str
):
    ids = _busy_cloud(cloud)
    passes.clear()
    _read_everything(cloud, ids, user)
    changed = [(model, built, sent) for model, built, sent in passes if built != sent]
    assert not changed, changed[0]
    expected = {"FlavorList", "FlavorDetailList", "FlavorBody",
                "KeypairList", "ImageList", "Image", "NetworkList", "NetworkBody", "PortList", "VolumeList"}
    if user != "alice":
        expected |= {"ServerBody", "PortBody", "VolumeBody"}
    assert expected <= {model for model, _, _ in passes}


def test_the_answers_hold_the_nulls_and_extras_the_models_must_keep(cloud: Cloud,
                                                                    passes: list[tuple[str, str, str]]):
    ids = _busy_cloud(cloud)
    admin = cloud.headers("admin")
    server = cloud.client.get(f"{COMPUTE}/servers/{ids['building']}", headers=admin).json()["server"]
    assert server["OS-SRV-USG:launched_at"] is None and server["OS-EXT-SRV-ATTR:host"] is None
    failed = cloud.client.get(f"{COMPUTE}/servers/{ids['failed']}", headers=admin).json()["server"]
    assert failed["fault"]["code"] == 500
    image = cloud.client.get(f"/image/v2/images/{ids['image']}", headers=admin).json()
    assert image["hw_disk_bus"] == "virtio" and image["checksum"] is None
    keypair = cloud.client.get(f"{COMPUTE}/os-keypairs/keypair-1", headers=cloud.headers()).json()["keypair"]
    assert keypair["deleted_at"] is None and keypair["updated_at"] is None
    volumes = f"/volume/v3/{cloud.ids['project:demo']}/volumes"
    brief = cloud.client.get(volumes, headers=cloud.headers()).json()
    assert set(brief["volumes"][0]) == {"id", "name", "links"}  # unset detail fields stay out
    assert brief["volumes"][0]["name"] is None
    assert all(built == sent for _, built, sent in passes)
    assert {"VolumeBody", "Image", "FlavorBody", "NetworkBody", "ServerBody", "KeypairBody"} <= {
        model for model, _, _ in passes}  # the creates among them


def _model_of(cloud: Cloud, path: str, method: str) -> type[BaseModel]:
    """The response model the OpenAPI document names for the operation's success answer."""
    operation = cloud.client.get("/openapi.json").json()["paths"][path][method]
    [success] = [r for code, r in operation["responses"].items() if code.startswith("2")]
    name = success["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    model = getattr(responses, name)
    assert issubclass(model, BaseModel)
    return model


def _holds(model: type[BaseModel], body: dict[str, Any]) -> None:
    """The body validates against the model and comes out of it unchanged."""
    again = model.model_validate(body).model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert canonical(again) == canonical(body)


def test_answers_sent_as_json_responses_match_their_models(cloud: Cloud):
    created = cloud.client.post(f"{COMPUTE}/servers", json=cloud.server_request("vm9"),
                                headers=cloud.headers())
    _holds(_model_of(cloud, f"{COMPUTE}/servers", "post"), created.json())
    imported = cloud.client.post(f"{COMPUTE}/os-keypairs", headers=cloud.headers(),
                                 json={"keypair": {"name": "second", "public_key": PUBLIC_KEY}})
    assert imported.status_code == 200, imported.text
    _holds(_model_of(cloud, f"{COMPUTE}/os-keypairs", "post"), imported.json())
    auth = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "demo", "domain": {"name": "Default"}, "password": PASSWORD}}},
        "scope": {"project": {"name": "demo", "domain": {"name": "Default"}}}}}
    issued = cloud.client.post("/identity/v3/auth/tokens", json=auth)
    assert issued.status_code == 201, issued.text
    _holds(responses.TokenBody, issued.json())
    token = issued.headers["X-Subject-Token"]
    for query in ("", "?nocatalog"):
        checked = cloud.client.get(f"/identity/v3/auth/tokens{query}",
                                   headers={"X-Auth-Token": token, "X-Subject-Token": token})
        assert checked.status_code == 200, checked.text
        _holds(_model_of(cloud, "/identity/v3/auth/tokens", "get"), checked.json())
    assert "catalog" not in checked.json()["token"]


@pytest.mark.parametrize("user", ["demo", "admin"])
def test_server_lists_sent_as_built_match_their_models(cloud: Cloud, user: str):
    # the server lists skip FastAPI's validation (a page is up to 1,000 servers): each page, in
    # full and brief, paged, all projects, oldest and newest microversion, is held to its model
    ids = _busy_cloud(cloud)
    assert ids["failed"]
    # the admin's own project has none: all projects', with the admin's extra attributes
    scope = "all_tenants=1&" if user == "admin" else ""
    queries = [f"?{scope}", f"?{scope}limit=1", f"?{scope}limit=2"]
    for version in ("2.1", "latest"):
        headers = cloud.headers(user) | {"X-OpenStack-Nova-API-Version": version}
        for path in ("servers", "servers/detail"):
            for query in queries:
                answer = cloud.client.get(f"{COMPUTE}/{path}{query}", headers=headers)
                assert answer.status_code == 200, answer.text
                _holds(_model_of(cloud, f"{COMPUTE}/{path}", "get"), answer.json())
                assert answer.json()["servers"]
                assert ("servers_links" in answer.json()) == ("limit" in query)
