"""Every service of the cloud, named once: the CLI's choices, `eventsvm up`, the compose test and
the snapshot versions all read this table, so a new consumer is added here and nowhere else."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumers import authenticator, billing, resolver, scheduler, spawner
from eventsvm.identity.policy_rules import PolicyEnforcers
from eventsvm.runtime.service import Service


@dataclass(frozen=True)
class PipelineSettings:
    """What an operator tunes across the pipeline services. `policy_dir`: where the operator's
    `<service>-policy.yaml` overrides live (None: the services' defaults alone)."""

    max_attempts: int = 3
    allow_resize_to_same_host: bool = False
    policy_dir: Path | None = None


def policy_dir(data_dir: Path) -> Path:
    """The cloud's policy directory, read by the API and the authenticator alike."""
    return data_dir / "policy"


def _no_deps(_settings: PipelineSettings) -> object:
    return None


@dataclass(frozen=True)
class ServiceEntry:
    """One service: how to build it and its collaborators. A per-host service is built for one
    compute host (its name is the argument); its collaborator is that host."""

    name: str
    description: str
    service: Callable[[str], Service[Any]]
    deps: Callable[[PipelineSettings], object] = _no_deps
    per_host: bool = False
    # a per-host service serving several hosts from one reader: (its name, the hosts) -> service
    pooled: Callable[[str, Sequence[str]], Service[Any]] | None = None


SERVICES: dict[str, ServiceEntry] = {
    entry.name: entry
    for entry in (
        ServiceEntry("authenticator", "identity, policy and quota", lambda _h: authenticator.SERVICE,
                     lambda s: PolicyEnforcers(s.policy_dir)),
        ServiceEntry("scheduler", "filters, weighers and claims", lambda _h: scheduler.SERVICE,
                     lambda s: scheduler.SchedulerSettings(
                         max_attempts=s.max_attempts, allow_resize_to_same_host=s.allow_resize_to_same_host)),
        ServiceEntry("resolver", "image, port + IP + MAC, volumes", lambda _h: resolver.SERVICE),
        ServiceEntry("billing", "the usage ledger", lambda _h: billing.SERVICE),
        ServiceEntry("spawner", "libvirt guests on one compute host (or a pool of them)", spawner.service_for,
                     per_host=True, pooled=spawner.pool_service),
    )
}

# Services that run once for the whole cloud (any number of replicas share the work).
PIPELINE = tuple(name for name, entry in SERVICES.items() if not entry.per_host)
# Every process `eventsvm run` can start: the services and the API.
PROCESSES = (*SERVICES, "api")


def pipeline_service(name: str, settings: PipelineSettings | None = None) -> tuple[Service[Any], object]:
    """A pipeline service by name, with its collaborators."""
    entry = SERVICES.get(name)
    if entry is None or entry.per_host:
        raise ValueError(f"unknown pipeline service {name!r}")
    return entry.service(""), entry.deps(settings or PipelineSettings())


def host_service(name: str, host_name: str) -> Service[Any]:
    """A per-host service (the spawner) built for one compute host."""
    entry = SERVICES[name]
    if not entry.per_host:
        raise ValueError(f"{name!r} is not a per-host service")
    return entry.service(host_name)


def host_pool_service(name: str, pool: str, host_names: Sequence[str]) -> Service[Any]:
    """A per-host service serving the hosts `host_names` as the pool `pool` (one host: its own)."""
    entry = SERVICES[name]
    if entry.pooled is None:
        raise ValueError(f"{name!r} does not serve a pool of hosts")
    return entry.pooled(pool, host_names)
