"""`eventsvm usage`: export what each project used in a period, as CSV or JSON, for billing teams.

Reads the billing ledger (`eventsvm.billing.usage`, written by the billing service) or, with
`--recompute`, recomputes it from the instance topics, which is how an auditor checks the ledger.
Rows name each project by id and by name.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from eventsvm.app.options import UsageError, add_log_options, log_config
from eventsvm.app.writers import trusting_codec
from eventsvm.events.model import Event, EventType, Topic, now_ms
from eventsvm.log.factory import open_log
from eventsvm.projections.billing import (
    EXPORT_COLUMNS,
    iso_time,
    ledger_from_instance_events,
    ledger_from_log,
    read_log,
    usage_rows,
)
from eventsvm.state.identity import IdentityState


def parse_moment(text: str, flag: str) -> int:
    """Epoch ms of `2026-11-01`, `2026-11-01T12:00`, `...Z` or `...+01:00`; naive times are UTC."""

    value = text.strip().replace(" ", "T")
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{flag}: cannot read {text!r}; use an ISO 8601 date or time, "
                         "e.g. 2026-11-01") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def month_start(ms: int) -> int:
    """The first instant of the UTC month `ms` falls in (the default start of a billing period)."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return int(moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)


def add_commands(subparsers: Any) -> None:
    """Add `usage` to the `eventsvm` command line (`subparsers` from add_subparsers)."""

    usage = subparsers.add_parser("usage",
                                  help="export usage per project (vCPU-, RAM- and disk-hours) as CSV/JSON")
    add_log_options(usage)
    usage.add_argument("--start", default=None,
                       help="start of the period, ISO 8601, UTC unless a zone is given "
                            "(default: the first of this month)")
    usage.add_argument("--end", default=None, help="end of the period (default: now)")
    usage.add_argument("--format", choices=("csv", "json"), default="csv", help="output format (default csv)")
    usage.add_argument("--project", default=None, help="only this project (id or name)")
    usage.add_argument("--by", choices=tuple(EXPORT_COLUMNS), default="instance",
                       help="one row per instance (default), per project and flavor, or per project")
    usage.add_argument("--recompute", action="store_true",
                       help="recompute from the instance events instead of reading the billing ledger")
    usage.add_argument("--output", "-o", default=None, help="write to this file instead of stdout")
    usage.set_defaults(func=cmd_usage)


def cmd_usage(args: argparse.Namespace) -> int:
    """Read the log, compute the rows, write them."""

    now = now_ms()
    end = parse_moment(args.end, "--end") if args.end else now
    start = parse_moment(args.start, "--start") if args.start else month_start(end)
    if not start < end:
        raise UsageError("--start must be before --end")
    data_dir, config = log_config(args)
    codec = trusting_codec(data_dir)  # a forged usage event counts for nothing
    log_ = open_log(config)
    try:
        ledger = ledger_from_instance_events(log_, codec) if args.recompute else ledger_from_log(log_, codec)
        identity = IdentityState()
        instance_names: dict[str, str] = {}

        def fold_names(event: Event) -> None:
            if event.type == EventType.INSTANCE_REQUESTED:
                instance_names[event.aggregate_id] = event.body["name"]
            else:
                identity.apply(event)

        read_log(log_, codec, (Topic.IDENTITY, Topic.REQUESTED), fold_names)
    finally:
        log_.close()
    project_names = {p.id: p.name for p in identity.projects.values()}
    project_id = None
    if args.project:
        project_id = args.project if args.project in project_names else next(
            (pid for pid, name in project_names.items() if name == args.project), None)
        if project_id is None:
            raise UsageError(f"--project: no project has the id or name {args.project!r}")
    rows = usage_rows(ledger, start, end, by=args.by, project_id=project_id, now=now,
                      project_names=project_names, instance_names=instance_names)
    out: TextIO = open(args.output, "w", newline="") if args.output else sys.stdout  # noqa: SIM115
    try:
        if args.format == "json":
            document = {"start": iso_time(start), "end": iso_time(end), "generated_at": iso_time(now),
                        "source": "instance events" if args.recompute else "billing ledger", "by": args.by,
                        "rows": rows}
            json.dump(document, out, indent=2)
            out.write("\n")
        else:
            writer = csv.DictWriter(out, fieldnames=list(EXPORT_COLUMNS[args.by]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    finally:
        if out is not sys.stdout:
            out.close()
    return 0
