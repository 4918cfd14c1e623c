"""The auditor's commands: `eventsvm replay`, `eventsvm history SERVER`, `eventsvm audit verify`.

Each opens the log named by the shared log options, reads it without joining any group (so it
never disturbs a running cloud) and writes nothing to it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from eventsvm.app.cluster import seal_store
from eventsvm.app.options import UsageError, add_log_options, log_config
from eventsvm.app.writers import trusting_codec
from eventsvm.config import LogConfig
from eventsvm.events.codec import Codec
from eventsvm.log.factory import open_log
from eventsvm.log.port import EventLog
from eventsvm.projections.audit import load_anchor, save_anchor, verify
from eventsvm.projections.history import (
    UnknownServer,
    find_instance,
    instance_actions,
    instance_stages,
    timeline_lines,
)
from eventsvm.projections.readmodel import Models
from eventsvm.projections.replay import (
    ReplayHelper,
    ReplayReport,
    Until,
    parse_until,
    replay,
    replay_document,
)
from eventsvm.projections.seal import Seal, SealBroken, Sealing, SealStore, UntrustedSeal
from eventsvm.state.printable import escaped

EXIT_FOUND = 1  # `audit verify` found a problem

UNTIL_HELP = """\
the moment to rebuild: an ISO 8601 time (2024-11-26T12:00:00Z, or with an offset such as
+01:00; without one it is UTC), @MS (milliseconds since the epoch), or TOPIC:PARTITION:OFFSET,
the moment that record was stored (e.g. eventsvm.instance.spawned:0:41). A replay folds every
record stored at or before that moment (log time, millisecond resolution)."""


@contextmanager
def _opened(config: LogConfig) -> Iterator[EventLog]:
    log = open_log(config)
    try:
        yield log
    finally:
        log.close()


def _seals(args: argparse.Namespace, data_dir: Path, config: LogConfig) -> SealStore | None:
    """The data dir's verified seal of the chosen log, unless --no-seal."""
    return None if args.no_seal else seal_store(data_dir, config)


def _helper(args: argparse.Namespace, data_dir: Path, config: LogConfig) -> ReplayHelper | None:
    """A second process for a large replay (the machine's other core), unless --one-process."""
    if args.one_process:
        return None
    return ReplayHelper(partial(open_log, config), partial(trusting_codec, data_dir), HELPER_MIN_RECORDS)


# the least a helper's half must hold to start one (ReplayHelper.min_records)
HELPER_MIN_RECORDS = ReplayHelper.min_records


def _sealed_replay(log: EventLog, codec: Codec, until: Until | None, seals: SealStore | None,
                   helper: ReplayHelper | None = None) -> tuple[Models, ReplayReport, bool]:
    """A replay under the seal if there is a trusted one, sealing what it verified when it read
    the whole log; on a broken seal, a replay verifying every signature. The flag: seal broken."""
    try:
        old = seals.load(log) if seals is not None else None
    except UntrustedSeal as exc:
        print(f"seal ignored, every signature verified: {exc}", file=sys.stderr)
        old = None
    sealing = Sealing(old) if seals is not None else None
    try:
        models, report = replay(log, codec, until, sealing=sealing, helper=helper)
    except SealBroken as exc:
        # what the sealed replay folded is dropped with it: nothing of it is printed
        print(f"SEAL BROKEN: {exc}", file=sys.stderr)
        print("replaying again with every signature verified; the seal is kept as evidence until "
              "`eventsvm audit verify` seals the log as it now is", file=sys.stderr)
        models, report = replay(log, codec, until, helper=helper)
        return models, report, True
    if seals is not None and sealing is not None and until is None and report.complete:
        _save(seals, sealing)
    return models, report, False


def _save(seals: SealStore, sealing: Sealing) -> Seal | None:
    """Write the seal; a data dir this user cannot write is said, not fatal (it only costs time)."""
    try:
        return seals.save(sealing)
    except OSError as exc:
        print(f"could not write the verified seal {seals.path}: {exc}", file=sys.stderr)
        return None


def cmd_replay(args: argparse.Namespace) -> int:
    """Rebuild every read model from the log and report what was read (or print it as JSON)."""

    data_dir, config = log_config(args)
    with _opened(config) as log:
        try:
            until = parse_until(args.until, log) if args.until else None
        except ValueError as exc:
            raise UsageError(f"--until: {exc}") from None
        seals, helper = _seals(args, data_dir, config), _helper(args, data_dir, config)
        models, report, broken = _sealed_replay(log, trusting_codec(data_dir), until, seals, helper)
    exit_code = EXIT_FOUND if broken else 0
    if args.json:
        json.dump(replay_document(models, report), sys.stdout, indent=2, sort_keys=False)
        print()
        return exit_code
    print(f"replayed up to {until.describe() if until else 'the end of the log'}")
    skipped = f"; {report.undecodable} undecodable records skipped" if report.undecodable else ""
    if report.unfoldable:
        skipped += f"; {report.unfoldable} records the fold cannot apply skipped"
    print(f"{report.events:,} events folded in {report.seconds:.2f}s "
          f"({report.events_per_second:,.0f} events/s){skipped}")
    if report.helped:
        print(f"{report.helped:,} of {report.records_read:,} records read and folded by a second process "
              "(half of the instance partitions)")
    if report.sealed:
        rest = "; the others verified one by one" if report.sealed < report.records_read else ""
        print(f"{report.sealed:,} of {report.records_read:,} records under a verified seal (their signatures "
              f"verified before, their bytes unchanged since){rest}")
    print("events per topic:")
    for topic, count in report.events_by_topic.items():
        print(f"  {topic:<42} {count:>10,}")
    print("instances per status:")
    for status, count in report.instances_by_status.items():
        print(f"  {status:<42} {count:>10,}")
    print(f"hosts: {len(models.hosts)}, dead letters: {len(models.dead_letters)}")
    return exit_code


def cmd_history(args: argparse.Namespace) -> int:
    """Print one instance's timeline (or its os-instance-actions as JSON)."""

    codec = Codec()
    with _opened(log_config(args)[1]) as log:
        try:
            instance_id = find_instance(log, codec, args.server)
        except UnknownServer as exc:
            raise UsageError(str(exc)) from None
        stages = instance_stages(log, codec, instance_id)
    if args.json:
        document = {"instance_id": instance_id, "instanceActions": instance_actions(stages, instance_id)}
        json.dump(document, sys.stdout, indent=2)
        print()
    else:
        # names, reasons and keys come from the log, which older or forged events may have filled
        # with escape sequences: the terminal gets them escaped, never raw
        for line in timeline_lines(stages):
            print(escaped(line))
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Verify every instance chain; exit 1 and name each problem, or 0 with a summary."""

    try:
        anchor = load_anchor(args.anchor) if args.anchor else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    data_dir, config = log_config(args)
    seals = _seals(args, data_dir, config)
    sealing = Sealing() if seals is not None else None
    with _opened(config) as log:
        report = verify(log, trusting_codec(data_dir), anchor, sealing=sealing)
    for f in report.findings:
        instance = f" instance {f.instance}" if f.instance else ""
        event = f" event {f.event_id}" if f.event_id else ""
        print(escaped(f"{f.kind.upper():<9} {f.where()}{instance}{event}: {f.detail}"))
    print(report.summary())
    if args.save_anchor:
        save_anchor(report, args.save_anchor)
        print(f"saved {len(report.heads)} chain heads to {args.save_anchor}: keep it where the log's "
              "writers cannot change it, and verify later with --anchor")
    seal = _save(seals, sealing) if seals is not None and sealing is not None and report.complete else None
    if seal is not None:
        print(f"sealed {seal.records():,} records in {len(seal.partitions)} partitions: a replay reads them "
              "without verifying their signatures again, as long as their bytes are unchanged")
    return 0 if report.clean else EXIT_FOUND


def add_commands(subparsers: Any) -> None:
    """Add `replay`, `history` and `audit verify` to the `eventsvm` command line."""

    replay = subparsers.add_parser(
        "replay", help="rebuild every read model from the log, now or as it was at a moment",
        description="Fold the whole log from its beginning into fresh read models and report what was "
                    "read: events per topic, instances per status, time taken.")
    add_log_options(replay)
    replay.add_argument("--until", metavar="TIME|TOPIC:PARTITION:OFFSET", help=UNTIL_HELP)
    replay.add_argument("--json", action="store_true",
                        help="print the rebuilt state: every instance with its id, name, status, vm_state, "
                             "host, addresses and project")
    replay.add_argument("--no-seal", action="store_true",
                        help="verify every signature, ignoring the data dir's verified seal, and write none")
    replay.add_argument("--one-process", action="store_true",
                        help="fold everything in this process; by default a log of more than "
                             f"{2 * HELPER_MIN_RECORDS:,} instance records is folded by two, each reading "
                             "half of the instance partitions")
    replay.set_defaults(func=cmd_replay)

    history = subparsers.add_parser(
        "history", help="one server's whole timeline from the log",
        description="Every stage of one server: when, who asked, which host, time between stages, failures "
                    "and reschedules, and where each event is stored.")
    add_log_options(history)
    history.add_argument("server", help="server id, or a name exactly one server has")
    history.add_argument("--json", action="store_true", help="print it as Nova's os-instance-actions")
    history.set_defaults(func=cmd_history)

    audit = subparsers.add_parser("audit", help="tamper evidence: verify the hash chains of the log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify", help="walk every instance chain; exit 1 naming each gap, reordering or altered event",
        description="Check every link of every instance's hash chain: each gap (a missing cause or "
                    "sequence), reordering, and altered event (bytes that do not hash to what the next "
                    "event recorded, or no longer decode), with topic:partition:offset. Exit 0 when clean.")
    add_log_options(verify)
    verify.add_argument("--save-anchor", type=Path, metavar="FILE",
                        help="write the chain heads (the newest event of each chain, which no later event "
                             "vouches for) to FILE")
    verify.add_argument("--anchor", type=Path, metavar="FILE",
                        help="also check the chain heads saved earlier with --save-anchor")
    verify.add_argument("--no-seal", action="store_true",
                        help="write no verified seal of the signatures checked (by default one is written to "
                             "the data dir, for replays to skip verifying them again)")
    verify.set_defaults(func=cmd_audit_verify)
