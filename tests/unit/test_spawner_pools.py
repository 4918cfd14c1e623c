"""Pools of compute hosts: which hosts one spawner serves (those whose work shares partitions),
and the codec that signs each host's events with that host's own key, read at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers import spawner
from eventsvm.app.cluster import simulated_host
from eventsvm.app.writers import key_dir, pool_codec, spawner_writer, writer_ring
from eventsvm.events.builders import deleted
from eventsvm.events.codec import Codec, Forged
from eventsvm.events.model import Event, EventType, new_event
from eventsvm.events.signing import signer, signers
from eventsvm.runtime.host_routing import spawner_pools
from eventsvm.virt.compute_host import HostCapacity
from tests.unit.test_deciders import ctx, resolved_for

CODEC = Codec()


def test_hosts_reading_the_same_partitions_are_one_pool_and_a_host_alone_is_its_own() -> None:
    slots = {f"compute-{n + 1}": n for n in range(5)}
    assert spawner_pools(slots, lambda _topic: 2) == {
        "pool-0": ["compute-1", "compute-3", "compute-5"], "pool-1": ["compute-2", "compute-4"]}
    assert spawner_pools(slots, lambda _topic: 8) == {name: [name] for name in slots}
    ten_thousand = spawner_pools({f"compute-{n}": n for n in range(10_000)}, lambda _topic: 4)
    assert sorted(ten_thousand) == ["pool-0", "pool-1", "pool-2", "pool-3"]
    assert sorted(len(hosts) for hosts in ten_thousand.values()) == [2500] * 4


def _spawned(host: str) -> Event:
    return new_event(EventType.INSTANCE_SPAWNED, "i-1", {
        "host": host, "domain_name": "instance-1", "power_state": 1, "launched_at": 1, "attempt": 1,
        "flavor": {"id": "1", "name": "m1.tiny", "vcpus": 1, "ram_mb": 512, "disk_gb": 1},
        "addresses": [], "claim": None})


def test_a_pool_signs_each_hosts_events_with_that_hosts_key(tmp_path: Path) -> None:
    codec = pool_codec(tmp_path, ["compute-1", "compute-3"], CODEC)
    ring = writer_ring(tmp_path)
    reader = CODEC.keyed(None, ring)
    for host in ("compute-1", "compute-3"):
        data = codec.encode(_spawned(host))
        assert ring.named_writer(data) == spawner_writer(host)
        assert reader.decode(data).body["host"] == host
    # a host the pool does not serve: signed by the pool's first host, whom the ring refuses
    outsider = codec.encode(_spawned("compute-2"))
    with pytest.raises(Forged):
        reader.decode(outsider)


def test_keys_read_at_once_are_the_keys_each_writer_signs_with(tmp_path: Path) -> None:
    writers = [spawner_writer(f"compute-{n}") for n in range(50)]
    first = signers(key_dir(tmp_path), writers)
    again = signers(key_dir(tmp_path), writers)  # made once, then read
    assert {w: s.public.public_bytes_raw() for w, s in first.items()} == {
        w: s.public.public_bytes_raw() for w, s in again.items()}
    one = signer(key_dir(tmp_path), writers[7])
    assert one.public.public_bytes_raw() == first[writers[7]].public.public_bytes_raw()
    assert len(list(key_dir(tmp_path).glob("*.pub"))) == 50


def test_a_large_pool_spawns_on_the_named_host_counts_claims_per_host_and_cleans_up_where_placed(
        tmp_path: Path) -> None:
    tiny_host = HostCapacity(vcpus=1, ram_mb=1024, disk_gb=10, cpu_allocation_ratio=1.0)
    names = [f"h{n}" for n in range(spawner.SEARCHED_POOL + 2)]
    hosts = {name: simulated_host(tmp_path, name, n, tiny_host) for n, name in enumerate(names)}
    service = spawner.pool_service("pool-0", list(hosts))
    state = service.initial_state()

    def decide(event: Event) -> list[Event]:
        nonlocal state
        outcomes = [o.event for o in service.decide(state, event, ctx(hosts))]
        for outcome in outcomes:
            state = service.evolve(state, outcome)
        return outcomes

    try:
        first = resolved_for("h3")
        [spawned] = decide(first)
        assert spawned.type == EventType.INSTANCE_SPAWNED and spawned.body["host"] == "h3"
        assert {n for n, h in hosts.items() if h.hypervisor.list_instances()} == {"h3"}
        # h3's one vCPU is taken; h4's is not: each host's claims are its own
        [refused] = decide(resolved_for("h3"))
        assert refused.type == EventType.INSTANCE_FAILED and refused.body["host"] == "h3"
        [elsewhere] = decide(resolved_for("h4"))
        assert elsewhere.type == EventType.INSTANCE_SPAWNED
        assert state.used("h3") == state.used("h4") == (1, 512, 1)
        assert state.used("h5") == (0, 0, 0)
        # a work item for a host outside the pool is not this pool's
        assert decide(resolved_for("h99")) == []
        # deleted: its guest goes from where the claims placed it, found without asking every host
        gone = deleted(first, "h3", "spawner")
        state = service.evolve(state, gone)  # the fold may be ahead of the input
        assert decide(gone) == []
        assert {n for n, h in hosts.items() if h.hypervisor.list_instances()} == {"h4"}
        assert state.guest_hosts(first.aggregate_id) == {"h3"}
    finally:
        for host in hosts.values():
            host.hypervisor.close()
