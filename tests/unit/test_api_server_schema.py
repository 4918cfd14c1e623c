"""Nova's closed server schema (issue 14 item 7): a name with control characters or an escape
sequence, a field nova does not know and a flavorRef that is not a string or an integer are each
refused with nova's 400 and its words, at create and at rename, and nothing reaches the log."""

from __future__ import annotations

from typing import Any

import pytest
from test_api_support import Cloud, cloud_fixture  # noqa: F401

from eventsvm.events.model import EventType

SERVERS = "/compute/v2.1/servers"
INVALID_NAME = "An invalid 'name' value was provided. The name must be: printable characters. " \
               "Can not start or end with whitespace."
HOSTILE_NAMES = [
    "vm\x00", "nul\x00inside", "\x1b[31mred\x1b[0m", "bell\x07", "line\nbreak", "tab\there", "cr\r",
    "del\x7f", "c1\x9b31m", "bidi\u202eexe.txt", "zero\u200bwidth", "para\u2029graph", "\u00a0lead",
    "trail ", " lead", "   ",
]


def _create(cloud: Cloud, body: dict[str, Any]) -> Any:
    return cloud.client.post(SERVERS, json=body, headers=cloud.headers())


def _refused(cloud: Cloud, answer: Any, message: str, before: int) -> None:
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    fault = answer.json()["badRequest"]
    assert fault["code"] == 400
    assert message in fault["message"], fault["message"]
    assert len(cloud.records()) == before, "a refused request appended to the log"


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_name_nova_refuses_is_a_400_at_create(cloud: Cloud, name: str):
    before = len(cloud.records())
    _refused(cloud, _create(cloud, cloud.server_request(name)), INVALID_NAME, before)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_name_nova_refuses_is_a_400_at_rename(cloud: Cloud, name: str):
    server_id = cloud.create_server("vm")
    before = len(cloud.records())
    rename = {"server": {"name": name}}
    answer = cloud.client.put(f"{SERVERS}/{server_id}", headers=cloud.headers(), json=rename)
    _refused(cloud, answer, INVALID_NAME, before)


@pytest.mark.parametrize(
    "name", ["web 1", "caf\u00e9", "\u6570\u636e\u5e93", "a\u00a0b", "\U0001f680 rocket", "x" * 255])
def test_printable_names_with_inner_spaces_and_other_scripts_are_accepted(cloud: Cloud, name: str):
    server_id = cloud.create_server(name)
    shown = cloud.client.get(f"{SERVERS}/{server_id}", headers=cloud.headers()).json()["server"]
    assert shown["name"] == name


def test_an_unknown_server_field_is_nova_additional_properties_400(cloud: Cloud):
    before = len(cloud.records())
    body = cloud.server_request("vm", x=1)
    answer = _create(cloud, body)
    _refused(cloud, answer, "Additional properties are not allowed ('x' was unexpected)", before)
    assert answer.json()["badRequest"]["message"].startswith("Invalid input for field/attribute server.")
    two = cloud.server_request("vm", zeta=1, alpha=2)
    _refused(cloud, _create(cloud, two), "('alpha', 'zeta' was unexpected)", before)


def test_an_unknown_top_level_field_is_a_400(cloud: Cloud):
    before = len(cloud.records())
    body = {**cloud.server_request("vm"), "servers": {}}
    _refused(cloud, _create(cloud, body), "Additional properties are not allowed ('servers' was unexpected)",
             before)


def test_fields_nova_knows_and_this_cloud_ignores_are_still_accepted(cloud: Cloud):
    # what novaclient, openstacksdk and tempest send at 2.1 besides the fields this cloud uses
    server_id = cloud.create_server(
        "vm", user_data="IyEvYmluL3NoCg==", config_drive=True, security_groups=[{"name": "default"}],
        **{"OS-DCF:diskConfig": "AUTO"}, personality=[],
    )
    answer = cloud.client.post(SERVERS, headers=cloud.headers(), json={
        **cloud.server_request("hinted"), "os:scheduler_hints": {}})
    assert answer.status_code == 202, answer.text
    assert len(cloud.events(EventType.INSTANCE_REQUESTED)) == 2 and server_id


@pytest.mark.parametrize(("flavor_ref", "message"), [
    (True, "Invalid input for field/attribute flavorRef. Value: True. "
           "True is not of type 'string', 'integer'"),
    (False, "False is not of type 'string', 'integer'"),
    (None, "None is not of type 'string', 'integer'"),
    (1.0, "1.0 is not of type 'string', 'integer'"),
    ({"id": 1}, "is not of type 'string', 'integer'"),
    ("", "'' is too short"),
])
def test_a_flavor_ref_that_is_not_a_string_or_an_integer_is_a_400(cloud: Cloud, flavor_ref: Any,
                                                                   message: str):
    before = len(cloud.records())
    _refused(cloud, _create(cloud, cloud.server_request("vm", flavorRef=flavor_ref)), message, before)


def test_a_flavor_ref_integer_still_names_the_flavor(cloud: Cloud):
    cloud.create_server("vm", flavorRef=1)
    [event] = cloud.events(EventType.INSTANCE_REQUESTED)
    assert event.body["flavor_id"] == "1"


def test_a_missing_flavor_ref_is_a_400(cloud: Cloud):
    body = cloud.server_request("vm")
    del body["server"]["flavorRef"]
    answer = _create(cloud, body)
    assert answer.status_code == 400 and "badRequest" in answer.json()


@pytest.mark.parametrize("name", ["vm\x00", "\x1b[31mred", " lead"])
def test_a_name_nova_refuses_is_a_400_at_rebuild_before_any_state_check(cloud: Cloud, name: str):
    # nova checks the rebuild body against its schema first: the server's state (still building
    # here) does not turn a bad name into a 409
    server_id = cloud.create_server("vm")
    before = len(cloud.records())
    rebuild = {"rebuild": {"imageRef": cloud.ids["image"], "name": name}}
    answer = cloud.client.post(f"{SERVERS}/{server_id}/action", headers=cloud.headers(), json=rebuild)
    _refused(cloud, answer, INVALID_NAME, before)
