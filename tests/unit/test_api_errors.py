"""What every answer shares: request ids, OpenStack error bodies per service, 401s in keystone's
shape, no 500 for nonsense, and no token in any body or log line."""

from __future__ import annotations

import logging

import pytest
from test_api_support import Cloud, cloud_fixture  # noqa: F401

from eventsvm.log.port import LogUnavailable


@pytest.mark.parametrize("path", ["/compute/v2.1/servers", "/image/v2/images", "/network/v2.0/networks",
                                  "/identity/v3/projects"])
def test_no_token_or_a_bad_one_is_keystones_401_on_every_service(cloud: Cloud, path: str):
    for headers in ({}, {"X-Auth-Token": "gAAAAA-not-a-real-token"}):
        answer = cloud.client.get(path, headers=headers)
        assert answer.status_code == 401
        assert answer.json()["error"]["title"] == "Unauthorized"
        assert answer.headers["WWW-Authenticate"].startswith('Keystone uri="')
        assert answer.headers["x-openstack-request-id"].startswith("req-")


def test_every_answer_has_a_fresh_request_id_and_compute_also_the_nova_header(cloud: Cloud):
    first = cloud.client.get("/compute/v2.1/servers", headers=cloud.headers())
    second = cloud.client.get("/compute/v2.1/servers", headers=cloud.headers())
    assert first.headers["x-openstack-request-id"] != second.headers["x-openstack-request-id"]
    assert first.headers["x-compute-request-id"] == first.headers["x-openstack-request-id"]
    assert "x-compute-request-id" not in cloud.client.get("/image/v2/images", headers=cloud.headers()).headers


def test_unknown_paths_and_methods_answer_in_the_services_shape(cloud: Cloud):
    missing = cloud.client.get("/compute/v2.1/os-nosuch", headers=cloud.headers())
    assert missing.status_code == 404 and missing.json()["itemNotFound"]["code"] == 404
    neutron = cloud.client.get("/network/v2.0/nosuch", headers=cloud.headers())
    assert neutron.status_code == 404 and "NeutronError" in neutron.json()
    method = cloud.client.put("/compute/v2.1/servers", headers=cloud.headers())
    assert method.status_code == 405 and method.json()["badMethod"]["code"] == 405


def test_wrong_types_in_query_and_body_are_400s(cloud: Cloud):
    headers = cloud.headers("admin")
    assert (
        cloud.client.get("/compute/v2.1/flavors", params={"minRam": "lots"}, headers=headers).status_code
        == 400
    )
    assert (
        cloud.client.get("/compute/v2.1/flavors", params={"is_public": "maybe"}, headers=headers).status_code
        == 400
    )
    answer = cloud.client.put(
        f"/compute/v2.1/os-quota-sets/{cloud.ids['project:demo']}",
        json={"quota_set": {"instances": "ten"}},
        headers=headers,
    )
    assert answer.status_code == 400
    assert answer.json()["badRequest"]["message"].startswith(
        "Invalid input for field/attribute quota_set.instances"
    )


def test_no_token_or_password_reaches_a_log_line(cloud: Cloud, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    token = cloud.token("demo")
    headers = {"X-Auth-Token": token}
    cloud.client.post("/compute/v2.1/servers", json=cloud.server_request(), headers=headers)
    cloud.client.post("/compute/v2.1/servers", json={"server": {"name": 5}}, headers=headers)
    cloud.client.get("/identity/v3/auth/tokens", headers={**headers, "X-Subject-Token": token})
    cloud.client.post(
        "/identity/v3/auth/tokens",
        json={
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": "demo",
                            "domain": {"name": "Default"},
                            "password": "pa55-in-the-clear",
                        }
                    },
                }
            }
        },
    )
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert token not in text and "pa55-in-the-clear" not in text


def test_the_openapi_document_is_served(cloud: Cloud):
    document = cloud.client.get("/openapi.json").json()
    assert "/compute/v2.1/servers" in document["paths"]
    assert "/identity/v3/auth/tokens" in document["paths"]


def test_a_log_out_of_reach_is_a_503_with_retry_after_in_novas_shape_and_records_nothing(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
):
    def broker_gone(records: object) -> None:
        raise LogUnavailable("append failed: Local: All broker connections are down")

    before = cloud.readmodel.models.instances.by_status()
    monkeypatch.setattr(cloud.readmodel.log, "append", broker_gone)
    answer = cloud.client.post("/compute/v2.1/servers", json=cloud.server_request("vm-down"),
                               headers=cloud.headers())
    assert answer.status_code == 503
    assert int(answer.headers["Retry-After"]) > 0
    body = answer.json()["serviceUnavailable"]
    assert body["code"] == 503 and "unavailable" in body["message"]
    assert "broker" not in body["message"]  # the cause is logged, not shown
    assert cloud.readmodel.models.instances.by_status() == before
    monkeypatch.undo()
    cloud.create_server("vm-back")  # and the same request succeeds once the log is back
