"""The `eventsvm` command: `up` runs everything in one process, `run SERVICE` runs one service.

Every command that touches the log takes the same `--data-dir` / `--kafka` / `--log` options, so
`eventsvm replay --data-dir D` reads what `eventsvm up --data-dir D` wrote. Bad configuration
ends with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from eventsvm.app import audit_cli, usage_cli
from eventsvm.app.children import ALLOCATORS, allocator_environment
from eventsvm.app.cloud import run_cloud, run_service, seed_log
from eventsvm.app.options import (
    EXIT_CONFIG,
    UsageError,
    add_api_options,
    add_log_options,
    add_power_options,
    log_config,
)
from eventsvm.app.registry import PROCESSES
from eventsvm.app.writers import key_dir
from eventsvm.config import ConfigError, default_data_dir, env_passwords
from eventsvm.events.signing import SigningError
from eventsvm.events.signing import rotate as rotate_signing_key
from eventsvm.identity.keys import ensure_keys, key_indexes, rotate
from eventsvm.log.port import LogError


# -- commands ---------------------------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    """Everything in one process: the API, every pipeline service, a spawner per host."""
    if args.whole_command and not (args.processes or args.api_workers > 1):
        preload = allocator_environment(args.allocator, os.environ)
        if preload:  # a process picks its allocator when it starts: start this one again on it
            os.execve(sys.executable, sys.orig_argv, {**os.environ, **preload})
    data_dir, config = log_config(args, keeps_files=True)
    return run_cloud(args, data_dir, config, env_passwords())


def cmd_run(args: argparse.Namespace) -> int:
    """One service as its own process."""
    data_dir, config = log_config(args, keeps_files=True)
    return run_service(args, data_dir, config)


def cmd_seed(args: argparse.Namespace) -> int:
    """Seed a new cloud's log (devstack's defaults) and write clouds.yaml; nothing if seeded."""
    data_dir, config = log_config(args, keeps_files=True)
    print(seed_log(data_dir, config, args.auth_url, env_passwords()), flush=True)
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    """keystone-manage fernet_rotate: promote the staged key, stage a new one, prune the oldest."""
    key_dir = (args.data_dir or default_data_dir()) / "fernet-keys"
    if args.max_active_keys < 2:
        raise UsageError("--max-active-keys must be at least 2 (a primary and a staged key)")
    ensure_keys(key_dir)
    primary = rotate(key_dir, max_active_keys=args.max_active_keys)
    print(
        f"rotated {key_dir}: primary key {primary}, active keys {key_indexes(key_dir)}; tokens issued with "
        "the pruned keys no longer validate",
        flush=True,
    )
    return 0


def cmd_keys_rotate_signing(args: argparse.Namespace) -> int:
    """A new Ed25519 key for one writer; its older public keys stay trusted for what they signed."""
    data_dir = (args.data_dir or default_data_dir()).absolute()
    try:
        index = rotate_signing_key(key_dir(data_dir), args.writer)
    except SigningError as exc:
        raise UsageError(str(exc)) from None
    print(f"{args.writer} now signs with key {index} in {key_dir(data_dir)} once restarted; what its "
          "older keys signed still verifies", flush=True)
    return 0


def env_flag(name: str) -> bool:
    """A boolean setting from the environment: 1, true, yes or on."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def env_int(name: str, default: int) -> int:
    """An integer setting from the environment; a value that is no integer is a usage error."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{name} must be an integer, not {value!r}") from None


def env_choice(name: str, choices: Sequence[str], default: str) -> str:
    """One of `choices` from the environment; any other value is a usage error (argparse checks
    only what is given on the command line against its choices, not a default)."""
    value = os.environ.get(name, "").strip() or default
    if value not in choices:
        raise UsageError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(prog="eventsvm", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the API and every service in one process")
    add_log_options(up)
    up.add_argument("--hosts", type=int, default=1, help="simulated compute hosts (default 1)")
    up.add_argument(
        "--host-capacity",
        default="",
        metavar="vcpus=N,ram=MB,disk=GB",
        help="capacity of each simulated host (default vcpus=64,ram=262144,disk=2048)",
    )
    up.add_argument("--port", type=int, default=8080, help="API port (default 8080)")
    up.add_argument("--bind", default="127.0.0.1", help="API address (default 127.0.0.1)")
    up.add_argument(
        "--hypervisor",
        choices=("test", "qemu"),
        default="test",
        help="libvirt's test driver (default) or real QEMU guests",
    )
    up.add_argument(
        "--break-host",
        action="append",
        default=[],
        metavar="NAME",
        help="make every spawn on this host fail (drills, and tests of rescheduling)",
    )
    up.add_argument(
        "--processes",
        action="store_true",
        default=env_flag("EVENTSVM_PROCESSES"),
        help="run the API and every service as supervised child processes (the ones `eventsvm run` "
        "starts) instead of threads of this one (env EVENTSVM_PROCESSES=1)",
    )
    up.add_argument(
        "--api-workers",
        type=int,
        default=env_int("EVENTSVM_API_WORKERS", 1),
        metavar="N",
        help="API processes sharing the port (SO_REUSEPORT); above 1 implies --processes "
        "(default 1, env EVENTSVM_API_WORKERS)",
    )
    up.add_argument(
        "--allocator",
        choices=ALLOCATORS,
        default=env_choice("EVENTSVM_ALLOCATOR", ALLOCATORS, "auto"),
        help="the C allocator of the cloud's processes: jemalloc (preloaded; under churn its memory "
        "stays level where glibc's creeps, docs/decisions.md), system (glibc's malloc), or auto: "
        "jemalloc when libjemalloc.so.2 is installed (default; env EVENTSVM_ALLOCATOR). Without "
        "--processes, up starts itself again with it preloaded",
    )
    add_power_options(up)
    add_api_options(up)
    up.set_defaults(func=cmd_up)

    seed = sub.add_parser("seed", help="seed a new cloud's log and write clouds.yaml (for split deployments)")
    add_log_options(seed)
    seed.add_argument(
        "--auth-url",
        default="http://127.0.0.1:8080/identity/v3",
        help="the identity URL clients will use, written into clouds.yaml",
    )
    seed.set_defaults(func=cmd_seed)

    keys = sub.add_parser("keys", help="the Fernet keys that sign and encrypt tokens")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    rotate_parser = keys_sub.add_parser(
        "rotate", help="rotate the keys (running APIs pick them up by themselves)"
    )
    rotate_parser.add_argument("--data-dir", type=Path, default=None, help="the cloud's data directory")
    rotate_parser.add_argument(
        "--max-active-keys",
        type=int,
        default=3,
        help="keys kept, staged and primary included (default 3, keystone's)",
    )
    rotate_parser.set_defaults(func=cmd_keys_rotate)
    signing = keys_sub.add_parser(
        "rotate-signing", help="give one writer (api, scheduler, spawner-HOST ...) a new event signing key")
    signing.add_argument("writer", help="the writer: api, seed, authenticator, scheduler, resolver, billing, "
                                        "spawner-HOST")
    signing.add_argument("--data-dir", type=Path, default=None, help="the cloud's data directory")
    signing.set_defaults(func=cmd_keys_rotate_signing)

    run = sub.add_parser("run", help="run one service as its own process")
    run.add_argument(
        "service", choices=PROCESSES
    )
    add_log_options(run)
    run.add_argument("--host", action="append", default=None,
                     help="the compute host a spawner serves; repeated, one process serves several "
                          "simulated hosts whose work shares partitions (as `up` pools them)")
    run.add_argument("--host-capacity", default="", metavar="vcpus=N,ram=MB,disk=GB")
    run.add_argument("--libvirt-uri", default=None, help="hypervisor of a spawner (default: test driver)")
    run.add_argument(
        "--domain-type",
        choices=("qemu", "kvm"),
        default=None,
        help="with a QEMU --libvirt-uri: TCG (qemu) or hardware virtualisation (kvm)",
    )
    run.add_argument(
        "--boot-timeout",
        type=float,
        default=60.0,
        help="seconds a guest has to print its boot line; 0 = ACTIVE once the domain runs",
    )
    add_power_options(run)
    run.add_argument("--member", default=None,
                     help="stable member name (a restart then fences its old self; a second live process "
                          "under the same name refuses to start)")
    run.add_argument("--port", type=int, default=8080, help="API port, for `run api`")
    run.add_argument("--bind", default="127.0.0.1")
    run.add_argument(
        "--shared-port",
        action="store_true",
        help="`run api` beside other API processes on the same port (SO_REUSEPORT): each catches up "
        "with the log before a write or a token check, as the others write it",
    )
    run.add_argument("--supervisor-state", type=Path, default=None,
                     help="`run api`: export the services' state `up --processes` writes to this file")
    run.add_argument("--broken", default=None, metavar="REASON",
                     help="make every spawn on this spawner's host fail (drills, tests of rescheduling)")
    add_api_options(run)
    run.set_defaults(func=cmd_run)

    audit_cli.add_commands(sub)
    usage_cli.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `eventsvm` console script."""
    try:
        parser = build_parser()
    except UsageError as exc:  # a setting from the environment that cannot work
        print(f"eventsvm: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    args = parser.parse_args(argv)
    # this process is the command (not a call from Python), so `up` may start it again (--allocator)
    args.whole_command = argv is None
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result: int = args.func(args)
        return result
    except (ConfigError, UsageError, LogError) as exc:
        print(f"eventsvm: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
