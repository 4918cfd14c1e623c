"""The OpenAPI document says what comes back: the response models of the main resources, and the
error codes the API really sends (400, never FastAPI's 422) in the body shape of each service."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from test_api_support import PUBLIC_KEY, Cloud, cloud_fixture  # noqa: F401

from eventsvm.api.authorization import policy_may_refuse
from eventsvm.api.errors import install_error_handlers
from eventsvm.api.openapi import install_openapi

COMPUTE = "/compute/v2.1"


@pytest.fixture(name="document")
def document_fixture(cloud: Cloud) -> dict[str, Any]:
    answer = cloud.client.get("/openapi.json")
    assert answer.status_code == 200
    document: dict[str, Any] = answer.json()
    return document


def _success_schema(document: dict[str, Any], path: str, method: str) -> str:
    responses = document["paths"][path][method]["responses"]
    [success] = [r for code, r in responses.items() if code.startswith("2")]
    ref: str = success["content"]["application/json"]["schema"]["$ref"]
    return ref.rsplit("/", 1)[-1]


def test_no_operation_advertises_the_422_the_api_never_sends(document: dict[str, Any]):
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], (method, path)
    assert "HTTPValidationError" not in json.dumps(document)


@pytest.mark.parametrize(("path", "method", "model"), [
    (f"{COMPUTE}/servers", "get", "ServerList"),
    (f"{COMPUTE}/servers/detail", "get", "ServerDetailList"),
    (f"{COMPUTE}/servers/{{server_id}}", "get", "ServerBody"),
    (f"{COMPUTE}/servers", "post", "ServerCreatedBody"),
    (f"{COMPUTE}/flavors", "get", "FlavorList"),
    (f"{COMPUTE}/flavors/detail", "get", "FlavorDetailList"),
    (f"{COMPUTE}/flavors/{{flavor_id}}", "get", "FlavorBody"),
    (f"{COMPUTE}/os-keypairs", "get", "KeypairList"),
    (f"{COMPUTE}/os-keypairs/{{name}}", "get", "KeypairBody"),
    ("/image/v2/images", "get", "ImageList"),
    ("/image/v2/images/{image_id}", "get", "Image"),
    ("/network/v2.0/networks", "get", "NetworkList"),
    ("/network/v2.0/networks/{network_id}", "get", "NetworkBody"),
    ("/network/v2.0/ports", "get", "PortList"),
    ("/network/v2.0/ports/{port_id}", "get", "PortBody"),
    ("/volume/v3/{project_id}/volumes/detail", "get", "VolumeList"),
    ("/volume/v3/{project_id}/volumes/{volume_id}", "get", "VolumeBody"),
    ("/identity/v3/auth/tokens", "post", "TokenBody"),
    ("/identity/v3/auth/tokens", "get", "TokenBody"),
])
def test_the_main_resources_have_response_schemas(
    document: dict[str, Any], path: str, method: str, model: str
):
    assert _success_schema(document, path, method) == model
    schema = document["components"]["schemas"][model]
    assert schema["properties"] and schema.get("additionalProperties") is True  # open dicts, as OpenStack's


def test_server_fields_keep_nova_names_and_nullable_ones_say_so(document: dict[str, Any]):
    server = document["components"]["schemas"]["Server"]["properties"]
    assert {"OS-EXT-STS:task_state", "OS-SRV-USG:launched_at", "hostId", "accessIPv4"} <= set(server)
    assert {"type": "null"} in server["OS-SRV-USG:launched_at"]["anyOf"]


def _documented(document: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    responses = document["paths"][path][method]["responses"]
    assert str(status) in responses, (method, path, sorted(responses))
    schema: dict[str, Any] = responses[str(status)]["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


@pytest.mark.parametrize(("method", "path", "template", "body", "user", "status"), [
    ("post", f"{COMPUTE}/servers", f"{COMPUTE}/servers", {"server": {}}, "demo", 400),
    ("post", f"{COMPUTE}/servers", f"{COMPUTE}/servers", {"server": {"name": "x", "flavorRef": "1"}},
     "reader", 403),
    ("get", f"{COMPUTE}/servers/nosuch", f"{COMPUTE}/servers/{{server_id}}", None, "demo", 404),
    ("get", f"{COMPUTE}/servers", f"{COMPUTE}/servers", None, None, 401),
    ("get", f"{COMPUTE}/servers?limit=x", f"{COMPUTE}/servers", None, "demo", 400),
    ("post", f"{COMPUTE}/os-keypairs", f"{COMPUTE}/os-keypairs",
     {"keypair": {"name": "keypair-1", "public_key": PUBLIC_KEY}}, "demo", 409),
    ("get", "/network/v2.0/networks/nosuch", "/network/v2.0/networks/{network_id}", None, "demo", 404),
    ("get", "/image/v2/images/nosuch", "/image/v2/images/{image_id}", None, "demo", 404),
    ("post", "/identity/v3/auth/tokens", "/identity/v3/auth/tokens", {"auth": {}}, None, 400),
    ("get", "/volume/v3/elsewhere/volumes", "/volume/v3/{project_id}/volumes", None, "demo", 403),
])
def test_the_errors_the_api_sends_are_documented_in_their_shape(
    cloud: Cloud, document: dict[str, Any], method: str, path: str, template: str, body: Any,
    user: str | None, status: int,
):
    headers = cloud.headers(user) if user else {}
    answer = cloud.client.request(method.upper(), path, json=body, headers=headers)
    assert answer.status_code == status, answer.text
    schema = _documented(document, template, method, status)
    assert set(schema["required"]) <= set(answer.json()), (schema, answer.json())


def test_a_parameter_that_can_fail_validation_documents_a_400_and_a_string_one_does_not():
    app = FastAPI()
    install_error_handlers(app)
    install_openapi(app)

    @app.get("/compute/v2.1/things/{thing_id}")
    def show(thing_id: str, name: str | None = None) -> dict[str, Any]:
        return {}

    @app.get("/compute/v2.1/things")
    def page(limit: int = 10) -> dict[str, Any]:
        return {}

    paths = app.openapi()["paths"]
    assert set(paths["/compute/v2.1/things/{thing_id}"]["get"]["responses"]) == {"200"}
    assert set(paths["/compute/v2.1/things"]["get"]["responses"]) == {"200", "400"}
    refused = TestClient(app).get("/compute/v2.1/things?limit=x")
    assert refused.status_code == 400 and "badRequest" in refused.json()


def test_every_documented_503_names_its_retry_after(document: dict[str, Any]):
    unavailable = [
        operation["responses"]["503"]
        for operations in document["paths"].values()
        for operation in operations.values()
        if "503" in operation["responses"]
    ]
    assert unavailable, "the writes document their 503"
    assert all("Retry-After" in response["headers"] for response in unavailable)


def test_every_operation_a_policy_rule_guards_documents_its_403(document: dict[str, Any]):
    # an operator's policy.yaml may deny any rule-guarded route, so each says what a 403 looks like
    guarded = {(method, path) for path, operations in document["paths"].items() for method in operations
               if policy_may_refuse(method.upper(), path)}
    assert ("get", f"{COMPUTE}/os-networks/{{network_id}}") in guarded
    assert ("post", f"{COMPUTE}/servers/{{server_id}}/action") in guarded
    for method, path in guarded:
        schema = _documented(document, path, method, 403)
        assert schema["required"], (method, path)
    token_issue = document["paths"]["/identity/v3/auth/tokens"]["post"]["responses"]
    assert "403" not in token_issue  # public: no rule to refuse anyone
