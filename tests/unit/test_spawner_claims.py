"""A compute host's claimed capacity, kept as running sums per host (a spawn's capacity check no
longer sums every claim of its pool): after any order of holds, frees, moves of a claim between
hosts and forgotten placements, each host's sums are what counting its claims says."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.spawner import SpawnerState
from eventsvm.scheduler.claims import Claim

HOSTS = ("compute-1", "compute-2", "compute-3")
KEYS = ("a", "b", "c", "d", "a:resize")
SIZES = (Claim(1, 512, 1), Claim(2, 2048, 20), Claim(4, 8192, 40))

_STEP = st.one_of(
    st.tuples(st.just("hold"), st.sampled_from(HOSTS), st.sampled_from(KEYS), st.sampled_from(SIZES)),
    st.tuples(st.just("free"), st.sampled_from((None, *HOSTS)), st.sampled_from(KEYS), st.none()),
    st.tuples(st.just("unplace"), st.none(), st.sampled_from(KEYS), st.none()),
)


def _counted(state: SpawnerState, host: str, leaving_out: str = "") -> tuple[int, int, int]:
    """What the claims placed on `host` add up to, counted one by one."""
    held = [c for key, c in state.claims.items() if key != leaving_out and state.placed.get(key) == host]
    return sum(c.vcpus for c in held), sum(c.ram_mb for c in held), sum(c.disk_gb for c in held)


@settings(max_examples=300, deadline=None)
@given(st.lists(_STEP, max_size=40))
def test_each_hosts_claimed_sums_are_its_claims_counted(
        steps: list[tuple[str, str | None, str, Claim | None]]) -> None:
    state = SpawnerState(hosts=frozenset(HOSTS))
    for kind, host, key, claim in steps:
        if kind == "hold":
            assert host is not None and claim is not None
            state.hold(host, key, claim)
        elif kind == "free":
            state.free(key, host)
        else:
            state.unplace(key)
        for name in HOSTS:
            assert state.used(name) == _counted(state, name)
            for leaving_out in KEYS:
                assert state.used(name, leaving_out) == _counted(state, name, leaving_out)
    # a host with nothing claimed on it keeps no sums
    assert set(state.totals) == {h for h in HOSTS if _counted(state, h) != (0, 0, 0)}
