"""Tamper evidence: walk every topic, check who wrote each event, and every aggregate's hash chain;
name each forgery, gap, reordering or alteration.

Each instance event carries `prev_hash`, the SHA-256 of the stored bytes of its cause when the cause
belongs to the same instance (docs/decisions.md, "Hash chain"). An event's bytes are therefore
vouched for by every event that chains to it. The newest event of an instance has no successor, so
a chain alone cannot vouch for it: an auditor saves the chain heads (`anchor`) somewhere the log's
writers cannot reach, and a later verification against that anchor covers them too.

Every event of every topic is also checked against the writers' key ring when the codec has one
(eventsvm.events.signing): unsigned, signed by an unknown key, a signature that does not match, or
a writer that may not write that event is a forgery, which no fold applies either.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from eventsvm.events.codec import Codec, CodecError, Forged
from eventsvm.events.model import Topic
from eventsvm.log.port import BEGINNING, EventLog
from eventsvm.projections.replay import Drain
from eventsvm.projections.seal import Sealing, require_ring

# what a finding is about
GAP = "gap"  # a cause or a sequence number missing from the log
REORDER = "reorder"  # sequence not above its cause's, or stored before its cause in the same topic
ALTERED = "altered"  # stored bytes that no longer hash to what the chain recorded, or do not decode
DUPLICATE = "duplicate"  # one event id stored twice
FORGED = "forged"  # not signed by a writer's key, or by a writer that may not write it

# A fold's dead letter has an id derived from the record it is about, so that the same letter,
# written again by another replica or after a restart, is one letter (runtime/fold_letters.py):
# a copy there is expected, not a replay.
_REWRITTEN_ON_PURPOSE = frozenset({str(Topic.DEAD_LETTER)})


@dataclass(frozen=True)
class Finding:
    """One problem, with where it is."""

    kind: str
    topic: str
    partition: int
    offset: int
    instance: str
    event_id: str | None
    detail: str

    def where(self) -> str:
        """topic:partition:offset, the form `replay --until` also takes."""
        return f"{self.topic}:{self.partition}:{self.offset}"


class _Stored(NamedTuple):
    topic: str
    partition: int
    offset: int
    instance: str
    event_id: str
    sequence: int
    causation_id: str | None
    prev_hash: str | None
    digest: str


@dataclass
class AuditReport:
    """The outcome of one verification."""

    findings: list[Finding] = field(default_factory=list)
    events: int = 0
    instances: int = 0
    links: int = 0
    anchored: int = 0
    seconds: float = 0.0
    heads: dict[str, str] = field(default_factory=dict)
    # False when the log counted records it did not return (a GAP finding says so)
    complete: bool = True

    @property
    def clean(self) -> bool:
        """True when nothing was found."""
        return not self.findings

    def summary(self) -> str:
        """One line: what was checked and what was found."""
        kinds: dict[str, int] = {}
        for finding in self.findings:
            kinds[finding.kind] = kinds.get(finding.kind, 0) + 1
        found = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "no problems"
        anchored = f", {self.anchored} anchored heads" if self.anchored else ""
        return (f"{self.events} events of {self.instances} aggregates, {self.links} hash links"
                f"{anchored} checked in {self.seconds:.2f}s: {found}")


def _loc(s: _Stored) -> str:
    return f"{s.topic}:{s.partition}:{s.offset}"


def verify(log: EventLog, codec: Codec, anchor: dict[str, str] | None = None,
           topics: Iterable[str] | None = None, stall_s: float = 5.0,
           sealing: Sealing | None = None) -> AuditReport:
    """Check the writer of every event and every link of every chain in `topics` (every topic by
    default), and the chain heads saved in `anchor` (event id → hash) if given. Every record read
    goes into `sealing` (which should hold no old seal: an auditor verifies every signature), for
    a verified seal of what was read."""
    started = time.perf_counter()
    if sealing is not None:
        require_ring(codec)
    report = AuditReport()
    names = [str(t) for t in (topics or Topic)]
    existing = set(log.list_topics())
    by_id: dict[str, _Stored] = {}
    broken: dict[str, list[str]] = {}  # instance → where its undecodable records are
    reader = log.reader([t for t in names if t in existing], BEGINNING)
    drain = Drain(reader, 5000, stall_s)
    try:
        for records in drain:
            for record in records:
                report.events += 1
                instance = (record.key or b"").decode("utf-8", "replace")
                if sealing is not None:
                    sealing.vouched(record)
                try:
                    event = codec.decode(record.value)
                except CodecError as exc:
                    if sealing is not None:
                        sealing.refuse(record)
                    where = f"{record.topic}:{record.partition}:{record.offset}"
                    broken.setdefault(instance, []).append(where)
                    kind, detail = (FORGED, f"not applied by any fold: {exc}") if isinstance(exc, Forged) \
                        else (ALTERED, f"stored bytes no longer decode: {exc}")
                    report.findings.append(Finding(kind, record.topic, record.partition, record.offset,
                                                   instance, None, detail))
                    continue
                stored = _Stored(record.topic, record.partition, record.offset, event.aggregate_id,
                                 event.event_id, event.sequence, event.causation_id, event.prev_hash,
                                 hashlib.sha256(record.value).hexdigest())
                first = by_id.get(event.event_id)
                if first is not None:
                    if record.topic not in _REWRITTEN_ON_PURPOSE:
                        report.findings.append(
                            _finding(DUPLICATE, stored, f"id also stored at {_loc(first)}"))
                    continue
                by_id[event.event_id] = stored
    finally:
        reader.close()
    report.complete = drain.complete
    if not drain.complete:
        report.findings.append(Finding(GAP, "", -1, -1, "", None, f"the log counts records it did not return "
                                       f"within {stall_s:g}s: a record removed from the store, or an engine "
                                       "that stopped answering; what was read is checked below"))
    report.findings.extend(_check_links(by_id, broken, report))
    report.findings.extend(_check_sequences(by_id.values()))
    if anchor:
        report.findings.extend(_check_anchor(by_id, anchor, report))
    report.instances = len({s.instance for s in by_id.values()} | broken.keys())
    report.seconds = time.perf_counter() - started
    return report


def _finding(kind: str, s: _Stored, detail: str) -> Finding:
    return Finding(kind, s.topic, s.partition, s.offset, s.instance, s.event_id, detail)


def _check_links(by_id: dict[str, _Stored], broken: dict[str, list[str]],
                 report: AuditReport) -> list[Finding]:
    findings: list[Finding] = []
    has_successor: set[str] = set()
    for s in by_id.values():
        if s.causation_id is None:
            if s.sequence != 1:
                findings.append(_finding(GAP, s, f"sequence {s.sequence} but it answers no event"))
            continue
        cause = by_id.get(s.causation_id)
        if cause is None:
            hint = f"; undecodable or forged records of this aggregate at {', '.join(broken[s.instance])}" \
                if s.instance in broken else ""
            findings.append(_finding(GAP, s, f"its cause {s.causation_id} is not in the log{hint}"))
            continue
        if cause.instance != s.instance:
            continue  # a cross-instance cause carries no hash link
        has_successor.add(cause.event_id)
        report.links += 1
        if s.prev_hash != cause.digest:
            recorded = s.prev_hash[:16] + "…" if s.prev_hash else "no hash"
            findings.append(_finding(ALTERED, cause,
                                     f"stored bytes hash to {cause.digest[:16]}…, but {_loc(s)} (event "
                                     f"{s.event_id}) recorded {recorded}: one of the two was altered"))
        if s.sequence <= cause.sequence:
            findings.append(_finding(REORDER, s, f"sequence {s.sequence} is not above its cause's "
                                                 f"{cause.sequence} ({_loc(cause)})"))
        if (s.topic, s.partition) == (cause.topic, cause.partition) and s.offset < cause.offset:
            findings.append(_finding(REORDER, s, f"stored before its cause at offset {cause.offset}"))
    report.heads = {s.event_id: s.digest for s in by_id.values() if s.event_id not in has_successor}
    return findings


def _check_sequences(stored: Iterable[_Stored]) -> list[Finding]:
    chains: dict[str, list[_Stored]] = {}
    for s in stored:
        chains.setdefault(s.instance, []).append(s)
    findings: list[Finding] = []
    for chain in chains.values():
        chain.sort(key=lambda s: s.sequence)
        expected = 1
        for s in chain:
            if s.sequence > expected:
                missing = f"{expected}" if s.sequence == expected + 1 else f"{expected}-{s.sequence - 1}"
                findings.append(_finding(GAP, s, f"sequence {missing} of instance {s.instance} is missing "
                                                 f"before this event (sequence {s.sequence})"))
            expected = max(expected, s.sequence + 1)
    return findings


def _check_anchor(by_id: dict[str, _Stored], anchor: dict[str, str], report: AuditReport) -> list[Finding]:
    findings: list[Finding] = []
    for event_id, digest in anchor.items():
        report.anchored += 1
        s = by_id.get(event_id)
        if s is None:
            findings.append(Finding(GAP, "", -1, -1, "", event_id, "an anchored chain head is missing"))
        elif s.digest != digest:
            findings.append(_finding(ALTERED, s, f"stored bytes hash to {s.digest[:16]}…, the anchor "
                                                 f"recorded {digest[:16]}…"))
    return findings


def save_anchor(report: AuditReport, path: Path) -> None:
    """Write the chain heads of a verification (event id → hash) as JSON."""
    path.write_text(json.dumps(report.heads, indent=0, sort_keys=True))


def load_anchor(path: Path) -> dict[str, str]:
    """Chain heads saved by `save_anchor`; ValueError when the file is not one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read anchor {path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{path} is not an anchor (a JSON object of event id → hash)")
    return data
