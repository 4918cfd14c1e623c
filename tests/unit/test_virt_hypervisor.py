"""The hypervisor wrapper against libvirt's test driver: spawn and destroy are idempotent."""

from __future__ import annotations

import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import libvirt
import pytest

from eventsvm.virt import node
from eventsvm.virt.hypervisor import (
    DomainNotFound,
    DomainState,
    Hypervisor,
    HypervisorUnavailable,
    NodeCapacity,
    SpawnError,
    document_shape,
)
from eventsvm.virt.xml import FlavorMeta, GuestPort, GuestSpec, OwnerMeta, build_domain_xml


def guest_xml(instance_uuid: str, console_log_path: str | None = None, memory_mb: int = 256) -> str:
    spec = GuestSpec(
        instance_uuid=instance_uuid, name="vm", vcpus=1, memory_mb=memory_mb,
        flavor=FlavorMeta(name="m1.tiny", memory_mb=memory_mb, root_gb=1, vcpus=1),
        owner=OwnerMeta(user_id="u", user_name="alice", project_id="p", project_name="demo"),
        created_at=datetime(2024, 1, 1, tzinfo=UTC), console_log_path=console_log_path,
        ports=(GuestPort(port_id=str(uuid.uuid4()), mac="fa:16:3e:00:00:01"),),
    )
    return build_domain_xml(spec)


@pytest.fixture
def node_file(tmp_path: Path) -> Path:
    return node.write_node_xml(tmp_path / "node.xml", vcpus=12, memory_mb=24576, sockets=2)


@pytest.fixture
def hv(node_file: Path):
    # Each connection to a node-file URI has its own domains, so tests cannot see each other's.
    hypervisor = Hypervisor(node.test_uri_for(node_file))
    yield hypervisor
    hypervisor.close()


def new_uuid() -> str:
    return str(uuid.uuid4())


def spawned(hv: Hypervisor) -> str:
    """A new instance with its guest spawned on `hv`."""
    instance = new_uuid()
    hv.spawn(guest_xml(instance), instance)
    return instance


@pytest.fixture
def default_guest() -> Iterator[tuple[Hypervisor, str]]:
    """A guest spawned on test:///default, whose domains every connection in this process shares;
    destroyed after the test."""
    hypervisor = Hypervisor()
    instance = spawned(hypervisor)
    yield hypervisor, instance
    hypervisor.destroy(instance)
    hypervisor.close()


@contextmanager
def another_connection() -> Iterator[libvirt.virConnect]:
    """Another connection to test:///default: it sees the same domains, so a test can change one
    behind the wrapper's back."""
    other = libvirt.open("test:///default")
    try:
        yield other
    finally:
        other.close()


def test_spawn_starts_the_domain_described(hv: Hypervisor) -> None:
    instance = new_uuid()
    info = hv.spawn(guest_xml(instance, memory_mb=384), instance)
    assert info.uuid == instance
    assert info.name == "instance-" + instance[:8]
    assert info.state is DomainState.RUNNING
    assert (info.vcpus, info.memory_mb) == (1, 384)
    assert hv.state(instance) is DomainState.RUNNING
    assert hv.info(instance) == info


def test_spawning_twice_leaves_one_running_domain(hv: Hypervisor) -> None:
    instance = new_uuid()
    first = hv.spawn(guest_xml(instance), instance)
    second = hv.spawn(guest_xml(instance), instance)
    assert second == first
    assert hv.list_instances() == [instance]


def test_concurrent_spawns_of_one_instance_make_one_domain(hv: Hypervisor) -> None:
    instance = new_uuid()
    xml = guest_xml(instance)
    results: list[DomainState] = []
    errors: list[BaseException] = []

    def spawn() -> None:
        try:
            results.append(hv.spawn(xml, instance).state)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=spawn) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert errors == []
    assert results == [DomainState.RUNNING] * 8
    assert hv.list_instances() == [instance]


def test_spawn_after_destroy_makes_a_fresh_domain(hv: Hypervisor) -> None:
    instance = spawned(hv)
    assert hv.destroy(instance) is True
    assert hv.state(instance) is None
    assert hv.list_instances() == []
    assert hv.spawn(guest_xml(instance), instance).state is DomainState.RUNNING
    assert hv.list_instances() == [instance]


def test_destroy_twice_and_destroy_of_unknown_are_fine(hv: Hypervisor) -> None:
    instance = spawned(hv)
    assert hv.destroy(instance) is True
    assert hv.destroy(instance) is False
    assert hv.destroy(new_uuid()) is False
    assert hv.state(instance) is None


def test_spawn_starts_a_domain_that_was_shut_off(default_guest) -> None:
    hv, instance = default_guest
    with another_connection() as other:
        other.lookupByUUIDString(instance).destroy()
        assert hv.state(instance) is DomainState.SHUTDOWN
        assert hv.spawn(guest_xml(instance), instance).state is DomainState.RUNNING
        other.lookupByUUIDString(instance).suspend()
        assert hv.state(instance) is DomainState.PAUSED
        assert hv.spawn(guest_xml(instance), instance).state is DomainState.RUNNING
    assert hv.list_instances().count(instance) == 1


def test_destroy_removes_a_domain_that_is_already_stopped(default_guest) -> None:
    hv, instance = default_guest
    with another_connection() as other:
        other.lookupByUUIDString(instance).destroy()
    assert hv.destroy(instance) is True
    assert hv.state(instance) is None


def test_list_instances_leaves_out_the_test_drivers_own_domain(default_guest) -> None:
    hv, instance = default_guest
    listed = hv.list_instances()
    assert instance in listed
    assert "6695eb01-f6a4-8304-79aa-97f2502e193f" not in listed


def test_a_document_libvirt_rejects_fails_without_retry(hv: Hypervisor) -> None:
    instance = new_uuid()
    bad = guest_xml(instance).replace("<devices>", "<bogus/><devices>")
    with pytest.raises(SpawnError) as caught:
        hv.spawn(bad, instance)
    assert caught.value.retryable is False
    assert f"spawn instance {instance} failed" in caught.value.message
    assert "bogus" in caught.value.message
    assert hv.state(instance) is None


def test_a_bad_document_after_good_ones_of_another_shape_is_still_refused(hv: Hypervisor) -> None:
    for _ in range(3):
        spawned(hv)
    instance = new_uuid()
    with pytest.raises(SpawnError) as caught:
        hv.spawn(guest_xml(instance).replace("<devices>", "<bogus/><devices>"), instance)
    assert "bogus" in caught.value.message and hv.state(instance) is None


def test_the_schema_check_runs_once_per_shape_of_document(hv: Hypervisor,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # libvirt reads its schema for every validation: 6.7 ms a define here, 0.1 ms without it
    validated: list[str] = []
    real = libvirt.virConnect.defineXMLFlags

    def counting(conn: libvirt.virConnect, xml: str, flags: int = 0) -> libvirt.virDomain:
        if flags & libvirt.VIR_DOMAIN_DEFINE_VALIDATE:
            validated.append(xml)
        return real(conn, xml, flags)

    monkeypatch.setattr(libvirt.virConnect, "defineXMLFlags", counting)
    first, second = spawned(hv), spawned(hv)
    assert len(validated) == 1 and first in validated[0]  # the second only differs by its values
    with_log = new_uuid()
    hv.spawn(guest_xml(with_log, console_log_path="/tmp/console.log"), with_log)  # a serial log: new shape
    assert len(validated) == 2 and with_log in validated[1] and hv.state(second) is not None


def test_documents_differing_only_by_values_have_one_shape() -> None:
    one, other = guest_xml(new_uuid(), memory_mb=256), guest_xml(new_uuid(), memory_mb=512)
    assert one != other and document_shape(one) == document_shape(other)
    assert document_shape(one) != document_shape(guest_xml(new_uuid(), console_log_path="/tmp/c.log"))
    assert document_shape(one) != document_shape(one.replace("<devices>", "<bogus/><devices>"))
    assert document_shape(ET.fromstring(one)) == document_shape(one)  # the tree a spawn parsed once


def test_xml_for_another_instance_is_refused(hv: Hypervisor) -> None:
    with pytest.raises(SpawnError, match="carries uuid") as caught:
        hv.spawn(guest_xml(new_uuid()), new_uuid())
    assert caught.value.retryable is False
    assert hv.list_instances() == []


def test_a_domain_name_taken_on_this_host_is_a_retryable_failure(hv: Hypervisor) -> None:
    # Same first 32 bits, so the same instance-%08x name.
    first, second = "abcdef01-0000-4000-8000-000000000001", "abcdef01-0000-4000-8000-000000000002"
    hv.spawn(guest_xml(first), first)
    with pytest.raises(SpawnError) as caught:
        hv.spawn(guest_xml(second), second)
    assert caught.value.retryable is True
    assert "instance-abcdef01" in caught.value.message
    assert hv.list_instances() == [first]


def test_capacity_reflects_the_node_description(hv: Hypervisor) -> None:
    assert hv.capacity() == NodeCapacity(vcpus=12, memory_mb=24576)


def test_each_node_file_connection_is_its_own_host(node_file: Path, hv: Hypervisor) -> None:
    spawned(hv)
    with Hypervisor(node.test_uri_for(node_file)) as other:
        assert other.list_instances() == []
        assert other.capacity() == hv.capacity()


def test_console_output_reads_the_serial_log(hv: Hypervisor, tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    instance = new_uuid()
    hv.spawn(guest_xml(instance, console_log_path=str(log)), instance)
    assert hv.console_output(instance) == ""
    log.write_bytes(b"boot\nlogin: \xff\n")
    assert hv.console_output(instance) == "boot\nlogin: \ufffd\n"
    assert hv.console_output(instance, max_bytes=4) == ": \ufffd\n"


def test_console_output_without_a_log_or_a_domain(hv: Hypervisor) -> None:
    instance = spawned(hv)
    assert hv.console_output(instance) == ""
    with pytest.raises(DomainNotFound):
        hv.console_output(new_uuid())


def test_an_unreachable_hypervisor_says_which(tmp_path: Path) -> None:
    with pytest.raises(HypervisorUnavailable, match="cannot open hypervisor test:///"):
        Hypervisor(node.test_uri_for(tmp_path / "missing.xml"))


def test_a_closed_hypervisor_refuses_work(node_file: Path) -> None:
    hv = Hypervisor(node.test_uri_for(node_file))
    hv.close()
    hv.close()
    with pytest.raises(HypervisorUnavailable, match="closed"):
        hv.list_instances()
    instance = new_uuid()
    with pytest.raises(HypervisorUnavailable):
        hv.spawn(guest_xml(instance), instance)


def test_a_password_in_the_uri_never_reaches_the_message() -> None:
    with pytest.raises(HypervisorUnavailable) as caught:
        Hypervisor("test+tcp://admin:s3cret@127.0.0.1:1/default")
    assert "s3cret" not in str(caught.value)
    assert "admin:***@127.0.0.1" in str(caught.value)


def test_domain_type_of_the_test_driver(hv: Hypervisor) -> None:
    assert hv.domain_type == "test"


def test_power_actions_are_idempotent_on_the_domains_state(hv: Hypervisor) -> None:
    instance = spawned(hv)
    for step, expected in ((hv.pause, DomainState.PAUSED), (hv.pause, DomainState.PAUSED),
                           (hv.unpause, DomainState.RUNNING), (hv.unpause, DomainState.RUNNING),
                           (hv.power_off, DomainState.SHUTDOWN), (hv.power_off, DomainState.SHUTDOWN),
                           (hv.power_on, DomainState.RUNNING), (hv.power_on, DomainState.RUNNING),
                           (hv.suspend, DomainState.SHUTDOWN), (hv.suspend, DomainState.SHUTDOWN)):
        assert step(instance).state is expected, step.__name__
        assert hv.state(instance) is expected
    assert hv.has_saved_memory(instance)
    assert hv.power_on(instance).state is DomainState.RUNNING  # resume: from the saved memory
    assert not hv.has_saved_memory(instance)
    hv.suspend(instance)
    hv.power_off(instance, discard_saved=True)
    assert not hv.has_saved_memory(instance)
    hv.power_on(instance)
    hv.shutdown(instance)  # the test driver's guests obey at once
    assert hv.state(instance) is DomainState.SHUTDOWN
    hv.shutdown(instance)  # nothing to ask of a guest that is off
    assert instance in hv.list_instances()  # still defined: only destroy undefines


def test_power_actions_on_an_unknown_instance_say_so(hv: Hypervisor) -> None:
    instance = str(uuid.uuid4())
    steps = (hv.shutdown, hv.power_off, hv.power_on, hv.pause, hv.unpause, hv.suspend, hv.has_saved_memory)
    for step in steps:
        with pytest.raises(DomainNotFound):
            step(instance)
