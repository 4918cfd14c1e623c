"""Wiring services to the log: compute hosts, their registration, and every runner of a cloud.

Services come from the registry (eventsvm/app/registry.py), the one place that names them.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from eventsvm.app.registry import (
    PIPELINE,
    PipelineSettings,
    host_pool_service,
    host_service,
    pipeline_service,
    policy_dir,
)
from eventsvm.app.writers import API, key_dir, pool_codec, writer_codec, writer_ring
from eventsvm.config import LogConfig
from eventsvm.events.codec import Codec, CodecError
from eventsvm.events.model import EventType, Topic, new_event
from eventsvm.log.factory import open_log
from eventsvm.log.port import BEGINNING, EventLog, OutRecord
from eventsvm.projections.readmodel import ReadModel
from eventsvm.projections.seal import SealStore
from eventsvm.runtime.host_routing import SPAWNER_TOPICS, spawner_partitions, spawner_pools
from eventsvm.runtime.runner import ServiceRunner, StepObserver
from eventsvm.runtime.snapshot import SnapshotStore
from eventsvm.runtime.supervisor import Supervisor
from eventsvm.state.instances import DELETED_RETENTION_MS
from eventsvm.virt import qemu
from eventsvm.virt.compute_host import ComputeHost, HostCapacity
from eventsvm.virt.hypervisor import Hypervisor
from eventsvm.virt.node import test_uri_for, write_node_xml

log = logging.getLogger(__name__)

def default_member_name() -> str:
    """Unique per process; `--member` gives a stable one so a restart fences its old self."""
    return f"{socket.gethostname()}.{os.getpid()}"


def register_host(log_: EventLog, codec: Codec, host: ComputeHost, hypervisor_type: str) -> int:
    """Append host.registered unless the host is already known as it is; returns its slot.

    A host keeps the slot it was first given, so its partition never moves under its spawner.
    """
    register_hosts(log_, [(host, codec)], hypervisor_type)
    return host.slot


def register_hosts(log_: EventLog, hosts: list[tuple[ComputeHost, Codec]], hypervisor_type: str) -> None:
    """register_host for many hosts (each with the codec its spawner signs with), reading the hosts
    topic once: read per host, ten thousand registrations read fifty million records."""
    log_.create_topics([str(Topic.HOSTS)])
    known = _registered(log_, codec=hosts[0][1]) if hosts else {}
    records = []
    for host, codec in hosts:
        first = host.slot if host.slot >= 0 else len(known)
        slot = known[host.name]["slot"] if host.name in known else first
        body = _registration(host, slot, hypervisor_type)
        if known.get(host.name) != body:
            event = new_event(EventType.HOST_REGISTERED, host.name, body)
            records.append(OutRecord(str(Topic.HOSTS), host.name.encode(), codec.encode(event)))
            known[host.name] = body
        host.slot = slot
    for start in range(0, len(records), _REGISTRATION_BATCH):
        log_.append(records[start : start + _REGISTRATION_BATCH])


_REGISTRATION_BATCH = 1000


def _registered(log_: EventLog, codec: Codec) -> dict[str, dict[str, Any]]:
    """Each registered host's latest registration, by name."""
    reader = log_.reader([str(Topic.HOSTS)], BEGINNING)
    known: dict[str, dict[str, Any]] = {}
    try:
        while True:
            records = reader.poll(1000, timeout=0.05)
            for record in records:
                try:
                    event = codec.decode(record.value)
                except CodecError:
                    continue  # forged or damaged: the folds letter it, and it registers nothing
                if event.type == EventType.HOST_REGISTERED:
                    known[event.body["name"]] = event.body
            if not records and reader.at_end():
                break
    finally:
        reader.close()
    return known


def _registration(host: ComputeHost, slot: int, hypervisor_type: str) -> dict[str, Any]:
    cap = host.capacity
    return {
        "name": host.name,
        "slot": slot,
        "vcpus": cap.vcpus,
        "ram_mb": cap.ram_mb,
        "disk_gb": cap.disk_gb,
        "availability_zone": host.availability_zone,
        "enabled": True,
        "cpu_allocation_ratio": cap.cpu_allocation_ratio,
        "ram_allocation_ratio": cap.ram_allocation_ratio,
        "disk_allocation_ratio": cap.disk_allocation_ratio,
        "hypervisor_type": hypervisor_type,
        "hypervisor_uri": host.hypervisor.uri,
        "cpu_arch": "x86_64",
    }


def paused_of(runner: ServiceRunner[Any]) -> Callable[[], bool]:
    """Whether `runner` is waiting for the log, asked at scrape time."""
    return lambda: runner.paused


def seal_store(data_dir: Path, config: LogConfig) -> SealStore:
    """Where this log's verified seal lives (what a reader verified, for the next to skip)."""
    return SealStore(data_dir, key_dir(data_dir), config.identity)


def snapshot_store(data_dir: Path, config: LogConfig) -> SnapshotStore:
    """Where this log's services checkpoint their state (one file per service)."""
    return SnapshotStore(data_dir / "snapshots", config.identity)


def spawner_runner(
    log_: EventLog,
    codec: Codec,
    host: ComputeHost,
    observer: StepObserver | None = None,
    member_name: str | None = None,
    snapshots: SnapshotStore | None = None,
) -> ServiceRunner[Any]:
    """The spawner of `host`, reading what `spawner_partitions` names."""
    return pool_runner(log_, codec, host.name, [host], observer, member_name, snapshots)


def pool_runner(
    log_: EventLog,
    codec: Codec,
    name: str,
    hosts: list[ComputeHost],
    observer: StepObserver | None = None,
    member_name: str | None = None,
    snapshots: SnapshotStore | None = None,
) -> ServiceRunner[Any]:
    """One spawner serving `hosts`, which read the same partitions (`spawner_pools`); `codec`
    signs as each host (`pool_codec`). A pool of one is that host's own spawner."""
    # a spawner may be the first process on a new log: its partitions need the topics to exist
    log_.create_topics([str(t) for t in SPAWNER_TOPICS])
    read = {tuple(spawner_partitions(log_.partitions, h.slot)) for h in hosts}
    if len(read) != 1:
        raise ValueError(f"the hosts of pool {name} read different partitions; spawner_pools groups them")
    single = len(hosts) == 1
    return ServiceRunner(
        log_,
        host_service("spawner", hosts[0].name) if single
        else host_pool_service("spawner", name, [h.name for h in hosts]),
        codec,
        member_name=member_name or name,
        partitions=spawner_partitions(log_.partitions, hosts[0].slot),
        deps=hosts[0] if single else {h.name: h for h in hosts},
        observer=observer,
        snapshots=snapshots,
    )


def simulated_host(
    data_dir: Path, name: str, slot: int, capacity: HostCapacity, broken: str | None = None
) -> ComputeHost:
    """A compute host on libvirt's test driver, with its capacity in a node description."""
    host_dir = (data_dir / "hosts" / name).absolute()
    host_dir.mkdir(parents=True, exist_ok=True)
    node = host_dir / "node.xml"
    write_node_xml(node, vcpus=capacity.vcpus, memory_mb=capacity.ram_mb)
    return ComputeHost(
        name=name,
        slot=slot,
        capacity=capacity,
        hypervisor=Hypervisor(test_uri_for(node)),
        state_dir=host_dir,
        broken=broken,
    )


@dataclass
class ClusterOptions:
    """What `eventsvm up` runs."""

    data_dir: Path
    log: LogConfig
    hosts: int = 1
    capacity: HostCapacity = field(default_factory=HostCapacity)
    broken_hosts: dict[str, str] = field(default_factory=dict)
    max_attempts: int = 3
    allow_resize_to_same_host: bool = False
    host_factory: Callable[[Path, str, int, HostCapacity, str | None], ComputeHost] | None = None
    hypervisor_type: str = "test"
    image_location: str | None = None
    image_properties: dict[str, str] = field(default_factory=dict)
    # seconds a guest has to shut itself down on a stop, and on a soft reboot before a hard one
    shutdown_timeout_s: float = 60.0
    soft_reboot_timeout_s: float = 120.0


class Cluster:
    """Every pipeline service plus one spawner per simulated host, each in its own supervised
    thread with its own connection to the log, and the read model the API serves."""

    def __init__(self, options: ClusterOptions, observer: StepObserver | None = None) -> None:
        self.options = options
        # neither signs nor checks: each writer's codec is `codec_of(writer)`, built on this one
        self.codec = Codec()
        # one ring for every writer of the process: it remembers what it verified, and each
        # record is read by several folds here
        self.ring = writer_ring(options.data_dir)
        self.observer = observer
        self.readmodel: ReadModel | None = None
        self.runners: list[ServiceRunner[Any]] = []
        self.hosts: list[ComputeHost] = []
        self._stop = threading.Event()
        self.supervisor = Supervisor(self._stop)
        self._logs: list[EventLog] = []

    def open_log(self) -> EventLog:
        """A fresh connection to the log (each thread gets its own)."""
        log_ = open_log(self.options.log)
        self._logs.append(log_)
        return log_

    def codec_of(self, writer: str) -> Codec:
        """The codec `writer` signs with in this cluster, trusting what the cluster's ring trusts."""
        return writer_codec(self.options.data_dir, writer, self.codec, self.ring)

    def start_readmodel(self, deleted_retention_ms: int | None = DELETED_RETENTION_MS) -> ReadModel:
        """Fold the log into the read model and keep it current; deleted servers leave it
        `deleted_retention_ms` (log time) after their deletion, or never for None."""
        self.readmodel = ReadModel(self.open_log(), self.codec_of(API))
        self.readmodel.models.instances.deleted_retention_ms = deleted_retention_ms
        self.readmodel.start(seals=seal_store(self.options.data_dir, self.options.log))
        return self.readmodel

    def start_services(self) -> None:
        """Register the hosts, then start every service's runner thread."""
        opts = self.options
        factory = opts.host_factory or simulated_host
        for index in range(opts.hosts):
            name = f"compute-{index + 1}"
            host = factory(opts.data_dir, name, index, opts.capacity, opts.broken_hosts.get(name))
            host.shutdown_timeout_s = opts.shutdown_timeout_s
            host.soft_reboot_timeout_s = opts.soft_reboot_timeout_s
            self.hosts.append(host)
        # one codec signing as every host: a codec per host would read the key directory per host
        signing = pool_codec(opts.data_dir, [host.name for host in self.hosts], self.codec, self.ring)
        registry = self.open_log()
        register_hosts(registry, [(host, signing) for host in self.hosts], opts.hypervisor_type)
        pools = spawner_pools({host.name: host.slot for host in self.hosts}, registry.partitions)
        member = default_member_name()
        snapshots = snapshot_store(opts.data_dir, opts.log)
        settings = PipelineSettings(max_attempts=opts.max_attempts,
                                    allow_resize_to_same_host=opts.allow_resize_to_same_host,
                                    policy_dir=policy_dir(opts.data_dir))
        for name in PIPELINE:
            service, deps = pipeline_service(name, settings)
            self.runners.append(
                ServiceRunner(
                    self.open_log(),
                    service,
                    self.codec_of(name),
                    member_name=f"{name}.{member}",
                    deps=deps,
                    observer=self.observer,
                    snapshots=snapshots,
                )
            )
        by_name = {host.name: host for host in self.hosts}
        for pool, names in pools.items():
            codec = pool_codec(opts.data_dir, names, self.codec, self.ring)
            self.runners.append(pool_runner(self.open_log(), codec, pool, [by_name[n] for n in names],
                                            self.observer, snapshots=snapshots))
        for runner in self.runners:
            runner.start()
        for runner in self.runners:
            self.supervisor.add(runner.service.name, runner.run, paused_of(runner))
        self.supervisor.start()

    def stop(self) -> None:
        """Finish the steps in hand, commit, and close everything."""
        self._stop.set()
        self.supervisor.join(timeout=30)
        if self.readmodel is not None:
            self.readmodel.close()
        for host in self.hosts:
            host.hypervisor.close()
        for log_ in self._logs:
            try:
                log_.close()
            except Exception:  # closing is best effort; the data is already committed
                log.debug("closing a log connection failed", exc_info=True)


def qemu_cluster_options(options: ClusterOptions, guest_dir: Path = qemu.DEFAULT_GUEST_DIR,
                         boot_timeout_s: float = qemu.DEFAULT_BOOT_TIMEOUT_S) -> ClusterOptions:
    """`options` with every simulated host on real QEMU and the guest as the seeded `cirros`
    image (kernel_id / ramdisk_id properties, as nova boots AMI-style images)."""
    if shutil.which("bash") is None:
        raise qemu.QemuSetupError("bash is needed to prepare QEMU")
    guest = qemu.ensure_guest_image(guest_dir)
    uri = qemu.ensure_libvirtd(options.data_dir / "libvirt")
    capacity = options.capacity
    if capacity == HostCapacity():
        # No --host-capacity: offer what this machine has rather than the simulated default.
        with Hypervisor(uri) as probe:
            node = probe.capacity()
        free_gb = shutil.disk_usage(options.data_dir).free // 2**30
        capacity = HostCapacity(vcpus=node.vcpus, ram_mb=node.memory_mb, disk_gb=max(1, int(free_gb)))

    def factory(data_dir: Path, name: str, slot: int, host_capacity: HostCapacity, broken: str | None
                ) -> ComputeHost:
        return qemu.qemu_compute_host(name, slot, host_capacity, uri, data_dir / "hosts" / name, guest,
                                 broken=broken, boot_timeout_s=boot_timeout_s)

    return replace(options, capacity=capacity, host_factory=factory, hypervisor_type="QEMU",
                   image_location=guest.location, image_properties=guest.properties())
