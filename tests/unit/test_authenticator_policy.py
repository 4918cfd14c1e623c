"""The authenticator checks os_compute_api:servers:create with the API's enforcer, so the
operator's nova-policy.yaml in the cloud's policy directory decides both: a file that forbids a
member refuses its request on the log (a final failure naming the rule), one that allows a reader
admits it; with no file, nova's defaults (a member of the project, or an admin)."""

from __future__ import annotations

import os
from pathlib import Path

from test_deciders import DEMO_PROJECT, DEMO_USER, SEED, ctx, folded, requested

from consumers import authenticator
from eventsvm.events.model import Event, EventType, new_event
from eventsvm.identity.policy_rules import PolicyEnforcers

REFUSED = "Policy doesn't allow os_compute_api:servers:create to be performed."


def decided(event: Event, policy: PolicyEnforcers | None, history: list[Event] = ()) -> Event:  # type: ignore[assignment]
    state = folded(authenticator.SERVICE, [*SEED, *history])
    [output] = authenticator.decide(state, event, ctx(policy))
    return output.event


def policy_file(directory: Path, create_rule: str) -> PolicyEnforcers:
    """The cloud's policy directory with a nova-policy.yaml overriding servers:create."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "nova-policy.yaml"
    before = path.stat().st_mtime if path.exists() else 0.0
    path.write_text(f'"os_compute_api:servers:create": "{create_rule}"\n')
    # a later modification time even where the file system's clock is coarse: oslo.policy reads
    # a file again when its mtime changes
    later = max(path.stat().st_mtime, before + 1)
    os.utime(path, (later, later))
    return PolicyEnforcers(directory)


def demo_as(role: str) -> list[Event]:
    """The demo user's member role on its project replaced by `role`."""
    pair = {"user_id": DEMO_USER["id"], "project_id": DEMO_PROJECT["id"]}
    return [new_event(EventType.ROLE_UNASSIGNED, DEMO_USER["id"], {**pair, "role": "member"}),
            new_event(EventType.ROLE_ASSIGNED, DEMO_USER["id"], {**pair, "role": role})]


def test_without_a_policy_file_nova_s_default_admits_a_member_and_refuses_a_reader(tmp_path: Path) -> None:
    for policy in (None, PolicyEnforcers(tmp_path / "policy")):
        assert decided(requested(), policy).type == EventType.INSTANCE_AUTHENTICATED
        refused = decided(requested(), policy, demo_as("reader"))
        assert refused.type == EventType.INSTANCE_FAILED
        assert (refused.body["stage"], refused.body["code"], refused.body["reason"]) == (
            "authenticate", 403, REFUSED)


def test_a_policy_file_forbidding_members_refuses_the_request_on_the_log(tmp_path: Path) -> None:
    policy = policy_file(tmp_path / "policy", "role:admin")
    refused = decided(requested(), policy)
    assert refused.type == EventType.INSTANCE_FAILED and refused.body["final"]
    assert (refused.body["code"], refused.body["reason"]) == (403, REFUSED)
    # and what it refuses holds no quota
    state = folded(authenticator.SERVICE, [*SEED, refused])
    assert state.project_usage(DEMO_PROJECT["id"]).instances == 0


def test_a_policy_file_allowing_readers_admits_a_reader(tmp_path: Path) -> None:
    policy = policy_file(tmp_path / "policy", "role:reader and project_id:%(project_id)s")
    reader = demo_as("reader")
    assert decided(requested(), policy, reader).type == EventType.INSTANCE_AUTHENTICATED
    # the file is read again when the operator changes it, as oslo.policy does for nova
    policy_file(tmp_path / "policy", "!")
    assert decided(requested(), policy, reader).type == EventType.INSTANCE_FAILED
