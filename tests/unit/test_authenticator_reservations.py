"""The authenticator's all-or-nothing decision on the servers one POST /servers asked for together
(a reservation): the first decided counts the quota for all, its answer holds the others' share,
and a refusal refuses every server of it. Pure decide/evolve, no log."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from test_deciders import DEMO_PROJECT, SEED, authenticate, body_of, ctx, folded, requested

from consumers import authenticator
from eventsvm.events.model import Event, EventType, new_event


def _quota(instances: int) -> Event:
    return new_event(EventType.QUOTA_SET, DEMO_PROJECT["id"],
                     {"project_id": DEMO_PROJECT["id"], "instances": instances, "cores": -1, "ram_mb": -1})


def _reservation(size: int, reservation_id: str = "r-abcdefgh") -> list[Event]:
    members = []
    for n in range(1, size + 1):
        event = requested()
        event.body.update(name=f"vm-{n}", reservation_id=reservation_id, reservation_size=size)
        members.append(event)
    return members


def _decide_all(members: list[Event], history: list[Event]) -> list[Event]:
    """Decide each server in turn, folding each answer as the runner does."""
    state = folded(authenticator.SERVICE, [*SEED, *history])
    answers = []
    for member in members:
        [out] = authenticator.decide(state, member, ctx())
        state = authenticator.evolve(state, out.event)
        answers.append(out.event)
    return answers


def test_a_reservation_that_fits_is_admitted_whole_and_its_answers_name_it() -> None:
    answers = _decide_all(_reservation(3), [_quota(3)])
    assert [a.type for a in answers] == [EventType.INSTANCE_AUTHENTICATED] * 3
    assert {a.body["reservation_id"] for a in answers} == {"r-abcdefgh"}
    assert {a.body["reservation_size"] for a in answers} == {3}


def test_a_reservation_that_does_not_fit_is_refused_whole() -> None:
    answers = _decide_all(_reservation(3), [_quota(2)])
    assert [a.type for a in answers] == [EventType.INSTANCE_FAILED] * 3
    assert {a.body["code"] for a in answers} == {403}
    assert {a.body["reason"] for a in answers} == {
        "Quota exceeded for instances: Requested 3, but already used 0 of 2 instances"}
    assert {a.body["reservation_id"] for a in answers} == {"r-abcdefgh"}


def test_a_request_decided_between_the_servers_of_a_reservation_cannot_take_their_share() -> None:
    members = _reservation(2)
    state = folded(authenticator.SERVICE, [*SEED, _quota(2)])
    [first] = authenticator.decide(state, members[0], ctx())
    state = authenticator.evolve(state, first.event)
    # another API process's request lands between the two: the second server's share is held
    intruder = authenticator.decide(state, requested(), ctx())
    assert body_of(EventType.INSTANCE_FAILED, intruder)["code"] == 403
    [second] = authenticator.decide(state, members[1], ctx())
    assert second.event.type == EventType.INSTANCE_AUTHENTICATED


def test_a_rebuilt_state_decides_the_rest_of_a_reservation_the_same_way() -> None:
    members = _reservation(3)
    [refused] = authenticate(members[0], [_quota(1)])
    # a restarted authenticator folds its own answers from the log and refuses the others too
    again = authenticate(members[1], [_quota(1), refused.event])
    assert body_of(EventType.INSTANCE_FAILED, again)["code"] == 403
    [admitted] = authenticate(members[0], [_quota(3)])
    assert admitted.event.type == EventType.INSTANCE_AUTHENTICATED
    state = folded(authenticator.SERVICE, [*SEED, _quota(3), admitted.event])
    assert state.project_usage(DEMO_PROJECT["id"], admitted.event.occurred_at).instances == 3


def test_the_held_share_lapses_so_a_server_deleted_before_its_answer_frees_it() -> None:
    members = _reservation(2)
    [first] = authenticate(members[0], [_quota(2)])
    state = folded(authenticator.SERVICE, [*SEED, _quota(2), first.event])
    at = first.event.occurred_at
    assert state.project_usage(DEMO_PROJECT["id"], at).instances == 2
    assert state.project_usage(DEMO_PROJECT["id"], at + authenticator.RESERVATION_HOLD_MS).instances == 1


def test_the_reservation_is_forgotten_once_every_server_is_answered() -> None:
    members = _reservation(2)
    state = folded(authenticator.SERVICE, [*SEED, _quota(5)])
    for member in members:
        [out] = authenticator.decide(state, member, ctx())
        state = authenticator.evolve(state, out.event)
    assert state.reservations == {}
    assert state.project_usage(DEMO_PROJECT["id"]).instances == 2


def test_a_single_server_request_is_counted_as_before() -> None:
    event = requested()
    event.body.update(reservation_id="r-single01", reservation_size=1)
    admitted = authenticate(event, [_quota(1)])
    assert body_of(EventType.INSTANCE_AUTHENTICATED, admitted)["reservation_size"] == 1
    assert body_of(EventType.INSTANCE_FAILED, authenticate(event, [_quota(0)]))["code"] == 403


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["authenticated", "deleted", "failed-final"]),
                          st.integers(0, 5), st.sampled_from([(1, 512), (2, 2048), (4, 8192)])),
                max_size=40))
def test_the_quota_usage_kept_as_running_sums_is_what_counting_the_live_servers_says(
        steps: list[tuple[str, int, tuple[int, int]]]) -> None:
    """The authenticator keeps each project's sums as instances come and go (a create's check
    no longer walks the project's servers); after any order of answers, answers delivered again,
    deletions and final failures, the sums are the live servers' own."""
    state = authenticator.AuthenticatorState()
    live: dict[str, tuple[int, int]] = {}
    for kind, n, (vcpus, ram_mb) in steps:
        server = f"server-{n}"
        if kind == "authenticated":
            event = new_event(EventType.INSTANCE_AUTHENTICATED, server,
                              {"spec": {"flavor": {"vcpus": vcpus, "ram_mb": ram_mb}}},
                              project_id=DEMO_PROJECT["id"])
            if server not in state.gone:
                live[server] = (vcpus, ram_mb)
        elif kind == "deleted":
            event = new_event(EventType.INSTANCE_DELETED, server, {}, project_id=DEMO_PROJECT["id"])
            live.pop(server, None)
        else:
            event = new_event(EventType.INSTANCE_FAILED, server, {"final": True, "stage": "spawn"},
                              project_id=DEMO_PROJECT["id"])
            live.pop(server, None)
        state = authenticator.evolve(state, event)
        used = state.project_usage(DEMO_PROJECT["id"])
        assert (used.instances, used.cores, used.ram_mb) == (
            len(live), sum(c for c, _ in live.values()), sum(r for _, r in live.values()))
    assert (DEMO_PROJECT["id"] in state.usage) == bool(live)  # no entry for a project holding nothing
