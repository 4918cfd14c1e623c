"""Unique names are decided by the fold, first claim on the log wins: the same verdict for every
reader, whichever process appended the claim."""

from __future__ import annotations

from eventsvm.events.model import EventType, new_event
from eventsvm.state import names
from eventsvm.state.catalog import CatalogState, evolve_catalog
from eventsvm.state.identity import IdentityState

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA a"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB b"


def keypair_created(user_id, name, public_key):
    body = {"name": name, "user_id": user_id, "public_key": public_key, "fingerprint": "f", "key_type": "ssh"}
    return new_event(EventType.KEYPAIR_CREATED, f"{user_id}:{name}", body, user_id=user_id)


def keypair_deleted(user_id, name):
    return new_event(EventType.KEYPAIR_DELETED, f"{user_id}:{name}", {"name": name, "user_id": user_id})


def flavor_created(flavor_id, name):
    body = {"id": flavor_id, "name": name, "vcpus": 1, "ram_mb": 512, "disk_gb": 1, "ephemeral_gb": 0,
            "swap_mb": 0, "is_public": True, "extra_specs": {}}
    return new_event(EventType.FLAVOR_CREATED, flavor_id, body)


def fold(events):
    state = CatalogState()
    for event in events:
        evolve_catalog(state, event)
    return state


def test_the_first_keypair_claim_keeps_the_name_and_the_second_is_refused():
    first, second = keypair_created("u1", "k1", KEY_A), keypair_created("u1", "k1", KEY_B)
    state = fold([first, second])
    assert state.keypair("u1", "k1")["public_key"] == KEY_A
    assert state.refused == {second.event_id}


def test_keypair_names_are_per_user():
    state = fold([keypair_created("u1", "k1", KEY_A), keypair_created("u2", "k1", KEY_B)])
    assert state.keypair("u2", "k1")["public_key"] == KEY_B
    assert not state.refused


def test_a_deleted_keypair_name_can_be_claimed_again():
    again = keypair_created("u1", "k1", KEY_B)
    state = fold([keypair_created("u1", "k1", KEY_A), keypair_deleted("u1", "k1"), again])
    assert state.keypair("u1", "k1")["public_key"] == KEY_B
    assert again.event_id not in state.refused


def test_a_flavor_name_or_id_already_taken_refuses_the_create():
    same_name, same_id = flavor_created("f2", "m1.tiny"), flavor_created("f1", "m1.other")
    state = fold([flavor_created("f1", "m1.tiny"), same_name, same_id])
    assert set(state.flavors) == {"f1"}
    assert state.flavor_by_name_or_id("m1.tiny")["id"] == "f1"
    assert state.flavor_by_name_or_id("m1.other") is None
    assert state.refused == {same_name.event_id, same_id.event_id}


def test_a_deleted_flavors_name_is_free_again():
    deleted = new_event(EventType.FLAVOR_DELETED, "f1", {"id": "f1"})
    state = fold([flavor_created("f1", "m1.tiny"), deleted, flavor_created("f2", "m1.tiny")])
    assert state.flavor_by_name_or_id("m1.tiny")["id"] == "f2"


def test_a_duplicate_user_name_in_a_domain_is_refused_and_other_domains_are_separate():
    def user(uid, name, domain):
        body = {"id": uid, "name": name, "password_hash": "x", "domain_id": domain}
        return new_event(EventType.USER_CREATED, uid, body)

    duplicate = user("u2", "alice", "DEFAULT")
    other_domain = user("u3", "alice", "other")
    state = IdentityState.from_events([user("u1", "alice", "default"), duplicate, other_domain])
    assert state.user("u2") is None
    assert state.user_by_name("alice", "default").id == "u1"
    assert state.user_by_name("alice", "other").id == "u3"
    assert state.refused == {duplicate.event_id}


def test_every_event_that_takes_or_frees_a_name_has_its_namespace_and_others_have_none():
    assert names.namespace_of(keypair_created("u1", "k1", KEY_A)) == names.keypairs_of("u1")
    assert names.namespace_of(keypair_deleted("u1", "k1")) == names.keypairs_of("u1")
    assert names.namespace_of(flavor_created("f1", "m1.tiny")) == names.FLAVORS
    project = new_event(EventType.PROJECT_CREATED, "p1", {"id": "p1", "name": "demo", "domain_id": "Default"})
    assert names.namespace_of(project) == names.projects_in("default")
    network = new_event(EventType.NETWORK_CREATED, "n1", {"id": "n1", "name": "private"})
    assert names.namespace_of(network) is None
