"""The command-line options every `eventsvm` command shares, and the one error they raise.

Kept apart from the parser (eventsvm/app/cli.py) so the command modules (cloud, audit, usage)
can use them without importing the CLI that imports them.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from eventsvm.config import IMAGE_SIZE_CAP, LogConfig, default_data_dir, log_config_from_flags
from eventsvm.log.private_files import private_directory
from eventsvm.state.backlog import DEFAULT_IN_ALL, DEFAULT_PER_PROJECT, UNBOUNDED, BacklogLimits
from eventsvm.state.compact import FORGET_AFTER_MS, forget_departed_after
from eventsvm.state.instances import DELETED_RETENTION_MS
from eventsvm.virt.compute_host import HostCapacity

EXIT_CONFIG = 2


class UsageError(Exception):
    """A flag value that cannot work; printed as one line."""


def add_power_options(parser: argparse.ArgumentParser) -> None:
    """How long a spawner waits for a guest to shut itself down (stop, soft reboot)."""
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=60.0,
        help="seconds a stopping guest has to shut down before it is powered off (nova's shutdown_timeout)",
    )
    parser.add_argument(
        "--soft-reboot-timeout",
        type=float,
        default=120.0,
        help="seconds a soft reboot waits for the guest before rebooting hard (wait_soft_reboot_seconds)",
    )
    parser.add_argument(
        "--forget-departed-after-minutes",
        type=float,
        default=FORGET_AFTER_MS / 60_000,
        metavar="M",
        help="minutes (of log time) each service remembers a deleted instance, to know a late or "
        "repeated input of it; shorter bounds the services' memory under heavy churn, but an input "
        "read later than this after the deletion (a service down that long) is taken as new "
        f"(default {FORGET_AFTER_MS // 60_000})",
    )
    parser.add_argument(
        "--allow-resize-to-same-host",
        action="store_true",
        help="let the scheduler keep a resized server on its host (nova's allow_resize_to_same_host, "
        "off by default as there: a one-host cloud cannot resize without it)",
    )


def add_api_options(parser: argparse.ArgumentParser) -> None:
    """What the API answers that nova or glance makes a setting of."""
    parser.add_argument(
        "--image-size-cap",
        type=int,
        default=IMAGE_SIZE_CAP,
        metavar="BYTES",
        help="the most bytes an image upload may store; past it the upload gets 413 (glance's "
        f"image_size_cap, default {IMAGE_SIZE_CAP})",
    )
    parser.add_argument(
        "--no-instance-password",
        dest="enable_instance_password",
        action="store_false",
        help="answer a server create without adminPass (nova's [api] enable_instance_password = false)",
    )
    parser.add_argument(
        "--build-backlog-per-project",
        type=int,
        default=DEFAULT_PER_PROJECT,
        metavar="N",
        help=f"servers one project may have building; a create past it gets 429 with Retry-After "
        f"(default {DEFAULT_PER_PROJECT}, {UNBOUNDED}: no bound)",
    )
    parser.add_argument(
        "--deleted-retention-hours",
        type=float,
        default=DELETED_RETENTION_MS / 3_600_000,
        metavar="H",
        help="hours (of log time) a deleted server stays listed (deleted=true, changes-since), its "
        "actions and its name in usage reports, as nova's rows until archive_deleted_rows; its "
        f"history stays in the log (default {DELETED_RETENTION_MS // 3_600_000}, {UNBOUNDED}: for good)",
    )
    parser.add_argument(
        "--build-backlog",
        type=int,
        default=DEFAULT_IN_ALL,
        metavar="N",
        help=f"servers the whole cloud may have building; a create past it gets 503 with Retry-After "
        f"(default {DEFAULT_IN_ALL}, {UNBOUNDED}: no bound)",
    )


def image_size_cap(args: argparse.Namespace) -> int:
    """--image-size-cap, at least 1."""
    if args.image_size_cap < 1:
        raise UsageError("--image-size-cap must be at least 1")
    return int(args.image_size_cap)


def apply_departed_horizon(args: argparse.Namespace) -> None:
    """--forget-departed-after-minutes, for every service this process runs."""
    minutes = args.forget_departed_after_minutes
    if minutes < 0:
        raise UsageError("--forget-departed-after-minutes must be at least 0")
    forget_departed_after(int(minutes * 60_000))


def deleted_retention_ms(args: argparse.Namespace) -> int | None:
    """--deleted-retention-hours in ms; None keeps deleted servers in the read model for good."""
    hours = args.deleted_retention_hours
    if hours < 0 and hours != UNBOUNDED:
        raise UsageError(f"--deleted-retention-hours must be at least 0, or {UNBOUNDED} to keep them")
    return None if hours == UNBOUNDED else int(hours * 3_600_000)


def backlog_limits(args: argparse.Namespace) -> BacklogLimits:
    """The backlog bounds chosen by add_api_options' flags: each at least 1, or -1 for none."""
    for flag, value in (("--build-backlog-per-project", args.build_backlog_per_project),
                        ("--build-backlog", args.build_backlog)):
        if value < 1 and value != UNBOUNDED:
            raise UsageError(f"{flag} must be at least 1, or {UNBOUNDED} for no bound")
    return BacklogLimits(per_project=args.build_backlog_per_project, in_all=args.build_backlog)


def add_log_options(parser: argparse.ArgumentParser) -> None:
    """The options every log-reading or log-writing command shares."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="directory of the embedded engine's log and the cloud's files (default ./data)",
    )
    parser.add_argument(
        "--kafka",
        metavar="HOST:PORT",
        default=None,
        help="use the Kafka broker(s) at HOST:PORT instead of the embedded engine",
    )
    parser.add_argument(
        "--log", metavar="URL", default=None, help="log URL: kafka://host:port or sqlite:///path/log.db"
    )
    parser.add_argument(
        "--namespace", default="", help="prefix of every topic name (several clouds, one broker)"
    )
    parser.add_argument("--partitions", type=int, default=4, help="partitions of each new topic (default 4)")


def log_config(args: argparse.Namespace, keeps_files: bool = False) -> tuple[Path, LogConfig]:
    """The data dir and log chosen by the shared options. The data dir is made (or tightened to)
    the owner's alone when the embedded log lives there or the command `keeps_files` in it (keys,
    clouds.yaml, snapshots); a command that only reads a broker leaves it alone."""
    # absolute from here on: libvirt refuses relative paths (console logs, disks) in domain XML
    data_dir: Path = (args.data_dir or default_data_dir()).absolute()
    if args.partitions < 1:
        raise UsageError("--partitions must be at least 1")
    config = log_config_from_flags(data_dir, args.kafka, args.log, args.partitions, args.namespace)
    if config.engine == "sqlite" or keeps_files:
        try:
            private_directory(data_dir)  # the log's directory: the owner's alone
        except OSError as exc:
            raise UsageError(f"cannot create data directory {data_dir}: {exc.strerror}") from exc
    return data_dir, config


def parse_capacity(text: str) -> HostCapacity:
    """`vcpus=64,ram=262144,disk=2048` → a host's capacity (RAM in MB, disk in GB); empty → default."""
    names = {"vcpus": "vcpus", "ram": "ram_mb", "ram_mb": "ram_mb", "disk": "disk_gb", "disk_gb": "disk_gb"}
    fields: dict[str, int] = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        if key.strip() not in names or not value.strip().isdigit() or int(value) < 1:
            raise UsageError(f"--host-capacity: cannot read {part!r}; use vcpus=N,ram=MB,disk=GB")
        fields[names[key.strip()]] = int(value)
    return HostCapacity(**fields)


def on_sigterm(stop: Callable[[], None]) -> None:
    """Let SIGTERM and SIGINT finish the step in hand and exit cleanly.

    The handler only writes a byte to a pipe; a thread reading it calls `stop`. Calling `stop`
    (an Event's set) in the handler itself deadlocks: the handler runs in the main thread between
    two bytecodes, possibly while that thread holds the Event's lock (in `wait`, or in a first
    handler's `set` when a second signal lands: a restarted child of `up --processes` gets two
    SIGTERMs, the supervisor's and PR_SET_PDEATHSIG's when the thread that started it ends)."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    def relay() -> None:
        os.read(read_end, 1)
        stop()

    def handler(_signum: int, _frame: FrameType | None) -> None:
        try:
            os.write(write_end, b"\0")
        except BlockingIOError:  # a full pipe already carries a stop
            pass

    threading.Thread(target=relay, name="stop-on-signal", daemon=True).start()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def wait_forever(stop: threading.Event) -> None:
    """Block the main thread until a signal sets `stop`."""
    while not stop.wait(0.5):
        pass
