"""`eventsvm up` and `eventsvm run`: start the cloud, or one of its services, in this process."""

from __future__ import annotations

import argparse
import functools
import logging
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eventsvm.app.children import c_allocator, die_with_parent, run_children
from eventsvm.app.cluster import (
    Cluster,
    ClusterOptions,
    default_member_name,
    pool_runner,
    qemu_cluster_options,
    register_hosts,
    seal_store,
    simulated_host,
    snapshot_store,
)
from eventsvm.app.options import (
    UsageError,
    apply_departed_horizon,
    backlog_limits,
    deleted_retention_ms,
    image_size_cap,
    on_sigterm,
    parse_capacity,
)
from eventsvm.app.registry import SERVICES, PipelineSettings, pipeline_service, policy_dir
from eventsvm.app.seed import (
    choose_passwords,
    is_seeded,
    seed_events,
    update_clouds_yaml_url,
    write_clouds_yaml,
)
from eventsvm.app.writers import API, SEED, pool_codec, spawner_writer, writer_codec
from eventsvm.config import IMAGE_SIZE_CAP, LogConfig
from eventsvm.identity.keys import ensure_keys
from eventsvm.identity.tokens import TokenService
from eventsvm.log.factory import open_log
from eventsvm.projections.billing import LedgerView
from eventsvm.projections.readmodel import ReadModel
from eventsvm.runtime import heap
from eventsvm.runtime.host_routing import spawner_pools
from eventsvm.runtime.runner import ServiceRunner
from eventsvm.runtime.supervisor import StateFileCollector
from eventsvm.state.backlog import BacklogLimits
from eventsvm.virt.compute_host import ComputeHost
from eventsvm.virt.hypervisor import Hypervisor
from eventsvm.virt.node import is_test_driver
from eventsvm.virt.qemu import BOOT_LINE, ensure_guest_image, qemu_compute_host

if TYPE_CHECKING:
    from fastapi import FastAPI

    from eventsvm.api.context import ApiContext
    from eventsvm.monitoring.router import Monitoring

log = logging.getLogger(__name__)


def seed_once(
    readmodel: ReadModel,
    data_dir: Path,
    auth_url: str,
    passwords_env: tuple[str | None, str | None],
    image_location: str | None = None,
    image_properties: dict[str, str] | None = None,
) -> str | None:
    """Seed a new cloud; returns a notice for the console (generated passwords are shown once)."""
    clouds = data_dir / "clouds.yaml"
    if is_seeded(readmodel.models.identity):
        if update_clouds_yaml_url(clouds, auth_url):
            return None
        admin, demo = passwords_env
        if admin and demo:
            write_clouds_yaml(clouds, auth_url, choose_passwords(admin, demo))
            return None
        return (
            f"note: this log was seeded elsewhere; no {clouds} was written "
            "(set EVENTSVM_ADMIN_PASSWORD and EVENTSVM_DEMO_PASSWORD to write one)"
        )
    passwords = choose_passwords(*passwords_env)
    readmodel.append(seed_events(passwords, image_location, image_properties))
    write_clouds_yaml(clouds, auth_url, passwords)
    if passwords.generated:
        return (
            f"generated passwords (shown once; also in {clouds}): "
            f"admin={passwords.admin} demo={passwords.demo}"
        )
    return None


def seed_log(
    data_dir: Path, config: LogConfig, auth_url: str, passwords_env: tuple[str | None, str | None]
) -> str:
    """`eventsvm seed`: what it did, as one line for the console."""
    log_ = open_log(config)
    readmodel = ReadModel(log_, writer_codec(data_dir, SEED))
    try:
        readmodel.start(tail=False)
        already = is_seeded(readmodel.models.identity)
        notice = seed_once(readmodel, data_dir, auth_url, passwords_env)
    finally:
        readmodel.close()
        log_.close()
    done = "already seeded" if already else "seeded"
    return f"{done}: {config.url}; clouds.yaml: {data_dir / 'clouds.yaml'}" + (
        f"\n{notice}" if notice else ""
    )


class ApiServer:
    """uvicorn serving the OpenStack API, /metrics and /dashboard over one read model."""

    def __init__(self, readmodel: ReadModel, data_dir: Path, bind: str, port: int,
                 enable_instance_password: bool = True, backlog: BacklogLimits | None = None,
                 shared_port: bool = False, listening: socket.socket | None = None,
                 image_size_cap: int = IMAGE_SIZE_CAP) -> None:
        # imported here: uvicorn, FastAPI and pydantic take ~0.5 s to load, which `eventsvm run
        # scheduler` and the other service processes never need
        import uvicorn

        from eventsvm.app.http_limits import BoundedHeadProtocol

        app, self.context, self.monitoring = serving_app(
            readmodel, data_dir, f"http://{bind}:{port}", enable_instance_password=enable_instance_password,
            backlog=backlog, peers=shared_port, image_size_cap=image_size_cap)
        # The socket is bound here, not by uvicorn, so a port already taken is a one-line UsageError
        # before anything says the cloud is up (uvicorn logged it after "eventsvm is up"). Several
        # API processes on one port: each binds its own socket with SO_REUSEPORT and the kernel
        # spreads new connections across them (docs/decisions.md, "API workers").
        self.sockets = [listening or listening_socket(bind, port, shared=shared_port)]

        config = uvicorn.Config(
            app, host=bind, port=port, log_level="warning", access_log=False, lifespan="off",
            http=BoundedHeadProtocol,
        )
        self.server = uvicorn.Server(config)

    def run(self) -> None:
        """Serve until SIGTERM / SIGINT (uvicorn's own handlers), then release what it holds."""
        try:
            self.server.run(sockets=self.sockets)
        finally:
            self.monitoring.close()
            self.context.consoles.close()


def listening_socket(bind: str, port: int, shared: bool = False) -> socket.socket:
    """A socket bound to bind:port for uvicorn to serve on; with `shared`, one that other processes
    may bind as well (SO_REUSEPORT), listening at once. UsageError when the address is taken or
    cannot be had. An unshared one listens only once uvicorn serves it: until then a client is
    refused, as before, rather than left waiting while the cloud starts."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((bind, port))
        if shared:
            sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {bind}:{port}: {exc.strerror}") from None
    return sock


def serving_app(readmodel: ReadModel, data_dir: Path, public_url: str, *, stuck_after_s: float = 300.0,
                lag_interval_s: float = 5.0, enable_instance_password: bool = True,
                backlog: BacklogLimits | None = None, peers: bool = False,
                image_size_cap: int = IMAGE_SIZE_CAP) -> tuple[FastAPI, ApiContext, Monitoring]:
    """The API with the monitoring routes beside it, sharing one read model and one token check;
    uploaded image data is kept under `data_dir`."""
    from eventsvm.api.app import create_app
    from eventsvm.api.auth import valid_claims
    from eventsvm.api.backlog import BuildBacklog
    from eventsvm.api.context import ApiContext
    from eventsvm.api.image_store import ImageStore
    from eventsvm.identity.policy_rules import PolicyEnforcers
    from eventsvm.monitoring.router import make_monitoring

    key_dir = data_dir / "fernet-keys"
    ensure_keys(key_dir)
    context = ApiContext(
        readmodel=readmodel,
        tokens=TokenService(key_dir),
        public_url=public_url,
        ledger=LedgerView(readmodel.log, readmodel.codec),
        enable_instance_password=enable_instance_password,
        backlog=BuildBacklog(backlog),
        # the operator's overrides, one file per service as they write them for nova and the rest
        policy=PolicyEnforcers(policy_dir(data_dir)),
        peers=peers,
        image_store=ImageStore.under(data_dir, image_size_cap),
    )
    app = create_app(context)
    monitoring = make_monitoring(readmodel, stuck_after_s=stuck_after_s, lag_interval_s=lag_interval_s,
                                 claims_of=functools.partial(valid_claims, context.tokens, readmodel))
    app.include_router(monitoring.router)
    return app, context, monitoring


def openstack_command() -> str:
    """The openstack client to suggest: the one installed beside eventsvm (`make run` puts it in
    the project's venv), else whatever `openstack` is on the PATH."""
    beside = Path(sys.executable).parent / "openstack"
    return str(beside) if beside.exists() else "openstack"


def announce_up(args: argparse.Namespace, data_dir: Path, config: LogConfig, notice: str | None) -> None:
    """What `eventsvm up` prints once the cloud runs: where, on what, and the first command."""
    engine = config.url if config.engine == "kafka" else f"embedded log {config.url[len('sqlite://') :]}"
    clouds = (data_dir / "clouds.yaml").resolve()
    how = (f"{args.api_workers} API process(es) and a process per service"
           if args.processes or args.api_workers > 1 else f"one process, C allocator: {c_allocator()}")
    print(
        f"eventsvm is up: API on http://{args.bind}:{args.port} ({engine}, {args.hosts} compute host(s), "
        f"{how})",
        flush=True,
    )
    print(f"clouds.yaml: {clouds}", flush=True)
    if notice:
        print(notice, flush=True)
    print(f"next: OS_CLIENT_CONFIG_FILE={clouds} {openstack_command()} --os-cloud eventsvm server list",
          flush=True)


def run_cloud(
    args: argparse.Namespace, data_dir: Path, config: LogConfig, passwords_env: tuple[str | None, str | None]
) -> int:
    """`eventsvm up`: in this process's threads, or with `--processes` (or more than one API
    worker) as supervised child processes (eventsvm.app.children)."""
    if args.hosts < 1:
        raise UsageError("--hosts must be at least 1")
    if args.api_workers < 1:
        raise UsageError("--api-workers must be at least 1")
    backlog = backlog_limits(args)
    size_cap = image_size_cap(args)
    apply_departed_horizon(args)
    auth_url = f"http://{args.bind}:{args.port}/identity/v3"
    # the port first: a taken one is refused before anything starts (or says it is up)
    listening = listening_socket(args.bind, args.port)
    if args.processes or args.api_workers > 1:
        listening.close()  # the API children bind it themselves, each with SO_REUSEPORT
        if args.hypervisor != "test":
            raise UsageError("--processes runs the test driver's hosts only; use --hypervisor test, or "
                             "`eventsvm run spawner --libvirt-uri ...` beside it")
        return run_children(
            args, data_dir, config,
            seed=lambda readmodel: seed_once(readmodel, data_dir, auth_url, passwords_env),
            announce=functools.partial(announce_up, args, data_dir, config))
    heap.install()  # a long-running process: full collections skip its long-lived state
    options = ClusterOptions(
        data_dir=data_dir,
        log=config,
        hosts=args.hosts,
        capacity=parse_capacity(args.host_capacity),
        broken_hosts={name: "host marked broken by --break-host" for name in args.break_host},
        shutdown_timeout_s=args.shutdown_timeout,
        soft_reboot_timeout_s=args.soft_reboot_timeout,
        allow_resize_to_same_host=args.allow_resize_to_same_host,
    )
    if args.hypervisor == "qemu":
        options = qemu_cluster_options(options)
    cluster = Cluster(options)
    readmodel = cluster.start_readmodel(deleted_retention_ms(args))
    notice = seed_once(
        readmodel, data_dir, auth_url, passwords_env, options.image_location, options.image_properties
    )
    cluster.start_services()
    server = ApiServer(readmodel, data_dir, args.bind, args.port, args.enable_instance_password, backlog,
                       listening=listening, image_size_cap=size_cap)
    server.monitoring.monitor.extra_collectors.append(cluster.supervisor)
    announce_up(args, data_dir, config, notice)
    try:
        server.run()  # returns on SIGTERM / SIGINT (uvicorn's own handlers)
    finally:
        cluster.stop()
    return 0


def _compute_host(args: argparse.Namespace, data_dir: Path, name: str) -> ComputeHost:
    """The compute host `name` a `run spawner` serves, on the hypervisor its flags name."""
    capacity = parse_capacity(args.host_capacity)
    state_dir = data_dir / "hosts" / name
    if args.libvirt_uri and not is_test_driver(args.libvirt_uri):
        host = qemu_compute_host(
            name,
            -1,
            capacity,
            args.libvirt_uri,
            state_dir,
            ensure_guest_image(),
            domain_type=args.domain_type,
            boot_line=None if args.boot_timeout == 0 else BOOT_LINE,
            boot_timeout_s=args.boot_timeout or 60.0,
        )
    elif args.libvirt_uri:
        host = ComputeHost(
            name=name,
            slot=-1,
            capacity=capacity,
            hypervisor=Hypervisor(args.libvirt_uri),
            state_dir=state_dir,
        )
    else:
        host = simulated_host(data_dir, name, -1, capacity, broken=args.broken)
    host.shutdown_timeout_s, host.soft_reboot_timeout_s = args.shutdown_timeout, args.soft_reboot_timeout
    return host


def run_service(args: argparse.Namespace, data_dir: Path, config: LogConfig) -> int:
    """`eventsvm run SERVICE`: one service, until SIGTERM; the step in hand is committed first."""
    die_with_parent()  # a child of `up --processes` ends with it, however it ends
    heap.install()  # a long-running process: full collections skip its long-lived state
    apply_departed_horizon(args)
    per_host = args.service != "api" and SERVICES[args.service].per_host
    hosts: list[str] = args.host or []
    if per_host and not hosts:
        raise UsageError(f"run {args.service} needs --host NAME")
    if len(hosts) > 1 and args.libvirt_uri:
        raise UsageError("several --host are simulated hosts (the test driver); run a spawner per real host")
    if len(set(hosts)) != len(hosts):
        raise UsageError("a --host is named twice")
    writer = API if args.service == "api" else spawner_writer(hosts[0]) if per_host else args.service
    codec = pool_codec(data_dir, hosts) if per_host else writer_codec(data_dir, writer)
    log_ = open_log(config)
    stop = threading.Event()
    if args.service == "api":
        backlog = backlog_limits(args)
        size_cap = image_size_cap(args)
        readmodel = ReadModel(log_, codec)
        readmodel.models.instances.deleted_retention_ms = deleted_retention_ms(args)
        readmodel.start(seals=seal_store(data_dir, config))
        try:
            server = ApiServer(readmodel, data_dir, args.bind, args.port, args.enable_instance_password,
                               backlog, shared_port=args.shared_port, image_size_cap=size_cap)
            if args.supervisor_state:
                server.monitoring.monitor.extra_collectors.append(StateFileCollector(args.supervisor_state))
            server.run()
        finally:
            readmodel.close()
            log_.close()
        return 0
    runner: ServiceRunner[Any]
    if per_host:
        computes = [_compute_host(args, data_dir, name) for name in hosts]
        register_hosts(log_, [(host, codec) for host in computes],
                       "test" if computes[0].hypervisor.domain_type == "test" else "QEMU")
        pools = spawner_pools({host.name: host.slot for host in computes}, log_.partitions)
        if len(pools) > 1:
            raise UsageError(f"the hosts {', '.join(hosts)} read different partitions (their slots); one "
                             "process serves only hosts that share them")
        [(pool, _names)] = pools.items()
        runner = pool_runner(
            log_,
            codec,
            pool,
            computes,
            member_name=args.member or pool,
            snapshots=snapshot_store(data_dir, config),
        )
    else:
        settings = PipelineSettings(allow_resize_to_same_host=args.allow_resize_to_same_host,
                                    policy_dir=policy_dir(data_dir))
        service, deps = pipeline_service(args.service, settings)
        runner = ServiceRunner(
            log_,
            service,
            codec,
            member_name=args.member or f"{args.service}.{default_member_name()}",
            deps=deps,
            snapshots=snapshot_store(data_dir, config),
        )
    on_sigterm(stop.set)
    runner.start()
    print(f"eventsvm {args.service} running on {config.url}", flush=True)
    try:
        runner.run(stop)
    finally:
        log_.close()
    return 0
