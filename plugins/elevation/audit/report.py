"""Per-session HTML reports, the nightly index, the session's downloads and the nightly findings file.

Reports are single self-contained HTML files: inline CSS, an inline SVG timeline, no script, no network resource
(a Content-Security-Policy says so to the browser too), so they open from disk, from S3 or from a mail attachment.
Everything that comes from an event, and most of what comes from a request (justification, ticket), is written
by whoever we are auditing: the templates are rendered with autoescape on and never mark anything safe.

Rendering is pure (view models built from facts, then Jinja2); storage goes through :func:`write_output`, the one
function that touches the output location.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from elevation.audit.classify import EventFacts, SessionFlag, facts_from_table, session_flags
from elevation.audit.credentials import MintedCredential, minted_credentials
from elevation.audit.engine import Finding
from elevation.audit.facts import DataProblem, SessionFacts, SessionNotes
from elevation.audit.rules import SEVERITIES, SEVERITY_RANK, CompiledRule
from elevation.cloudtrail.schema import EVENT_SCHEMA, record_to_row
from elevation.resources import data_path

__all__ = [
    "DataProblem",
    "DriftOverview",
    "IndexEntry",
    "SessionFacts",
    "SessionNotes",
    "render_index",
    "render_session_report",
    "session_summary",
    "write_findings_jsonl",
    "write_output",
]

SEVERITY_ORDER: tuple[str, ...] = tuple(reversed(SEVERITIES))  # critical first
#: Long request parameters are cut in the page (the full event is in the downloads).
MAX_PARAMETERS_CHARS = 6000
#: Findings of one rule shown in full per report; the rest are counted (all are in the downloads and the night's
#: findings file). A script that decrypts ten thousand times must not bury the one policy change.
SHOWN_PER_RULE = 25


# ---------------------------------------------------------------------------------------------------------------
# Storage


def write_output(output_dir: Path, name: str, data: bytes) -> Path:
    """Write one output file atomically (a provisional report is replaced, never half-written). The only place
    reports touch storage: an S3 sink replaces this function."""
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / name
    partial = output_dir / f".{name}.partial"
    partial.write_bytes(data)
    partial.replace(target)
    return target


def safe_name(session_id: str) -> str:
    """A file name for a session id (ids come from a database, but names must never escape the folder)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", session_id).strip("._")[:80]
    if cleaned == session_id and cleaned:
        return cleaned
    return f"{cleaned or 'session'}-{hashlib.sha256(session_id.encode()).hexdigest()[:10]}"


def _link(base_url: str | None, name: str) -> str:
    return f"{base_url.rstrip('/')}/{name}" if base_url else name


# ---------------------------------------------------------------------------------------------------------------
# Inputs


def as_events_table(table_or_records: pa.Table | Iterable[dict[str, Any]], session_id: str) -> pa.Table:
    """A table of EVENT_SCHEMA (dictionary columns decoded) from a table or from nested records."""
    if isinstance(table_or_records, pa.Table):
        columns = []
        for column in table_or_records.columns:
            columns.append(
                pc.cast(column, column.type.value_type) if pa.types.is_dictionary(column.type) else column
            )
        return pa.table(columns, names=table_or_records.column_names)
    rows = []
    for index, record in enumerate(table_or_records):
        if not record.get("eventID"):  # hand-made or redacted events: still shown, under a made-up id
            record = {**record, "eventID": f"no-event-id-{index}"}
        try:
            rows.append(record_to_row(record, session_id))
        except (KeyError, ValueError):  # no usable eventTime: cannot be placed in the session's timeline
            continue
    return pa.Table.from_pylist(rows, schema=EVENT_SCHEMA)


def readable_parameters(parameters: Any) -> str:
    """Request parameters as indented JSON, with JSON documents nested in strings (policies) unfolded."""

    def unfold(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: unfold(item) for key, item in value.items()}
        if isinstance(value, list):
            return [unfold(item) for item in value]
        if isinstance(value, str) and value[:1] in "{[" and len(value) > 1:
            try:
                return unfold(json.loads(value))
            except ValueError:
                return value
        return value

    if parameters is None:
        return ""
    text = json.dumps(unfold(parameters), indent=2, sort_keys=True, ensure_ascii=False, default=str)
    if len(text) > MAX_PARAMETERS_CHARS:
        text = (
            text[:MAX_PARAMETERS_CHARS]
            + f"\n… ({len(text) - MAX_PARAMETERS_CHARS} more characters in the download)"
        )
    return text


# ---------------------------------------------------------------------------------------------------------------
# Rules: what a finding card says about its rule


@dataclass(frozen=True)
class RuleInfo:
    """What a reader needs from a rule next to its findings."""

    rule_id: str
    description: str = ""
    attack_ids: tuple[str, ...] = ()
    falsepositives: tuple[str, ...] = ()
    next_step: str = ""


def rule_info(rule_id: str, rules: Mapping[str, CompiledRule] | None) -> RuleInfo:
    """The rule's description, ATT&CK technique ids, false positives and next step (empty when unknown)."""
    rule = rules.get(rule_id) if rules else None
    if rule is None:
        return RuleInfo(rule_id)
    return RuleInfo(
        rule_id=rule_id,
        description=(rule.description or "").strip(),
        attack_ids=rule.attack_ids,
        falsepositives=tuple(
            str(item) for item in rule.falsepositives if str(item).strip().lower() not in ("", "unknown")
        ),
        next_step=rule.next_step,
    )


# ---------------------------------------------------------------------------------------------------------------
# View models (pure)


@dataclass(frozen=True)
class Counts:
    events: int
    writes: int
    reads: int
    errors: int


@dataclass(frozen=True)
class Timeline:
    """Geometry of the activity picture: stacked bars per time bucket, finding marks, session boundaries."""

    width: int
    height: int
    bars: list[dict[str, Any]]
    marks: list[dict[str, Any]]
    lines: list[dict[str, Any]]
    labels: list[dict[str, Any]]


def _fmt(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


def _when_any(value: Any) -> str:
    """A datetime as UTC text; a date or text as is (a suppression's expiry may be either); None: a dash."""
    if isinstance(value, datetime):
        return _fmt(value)
    if isinstance(value, date):
        return value.isoformat()
    return "—" if value in (None, "") else str(value)


def duration_text(start: datetime | None, end: datetime | None) -> str | None:
    """A length as "2 h 05 min", "42 min", "3 d 4 h"; None when either end is unknown."""
    if start is None or end is None:
        return None
    minutes = max(0, int((end - start).total_seconds() // 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min" if minutes else "under a minute"


def safe_url(url: str | None) -> str | None:
    """`url` when it may become a link: http(s) with a host, no whitespace or control characters; else None (the
    text is then shown as text). A ticket URL is built from what a requester typed: `javascript:` stays text."""
    if not isinstance(url, str) or not url or any(ord(char) <= 32 or ord(char) == 127 for char in url):
        return None
    parts = urlsplit(url)
    return url if parts.scheme.lower() in ("http", "https") and parts.hostname else None


def problem_banner(problem: DataProblem) -> dict[str, str | None]:
    """The error banner of a data problem: for a day of an account without trail data, the sentence that says
    where to look; the problem's own message below it when it says more, and the file or query it is about."""
    message = problem.message or ""
    if problem.account_id and problem.day:
        headline = (
            f"No CloudTrail data found for account {problem.account_id} on day {problem.day}: "
            "check extract.s3_prefix / s3_org_id."
        )
        detail = None if message.lower().startswith("no cloudtrail data found") else message or None
    else:
        headline, detail = message or "CloudTrail data is missing.", None
    return {"headline": headline, "detail": detail, "locator": problem.locator}


def shorten(text: str | None, limit: int = 140) -> str | None:
    """Long free text cut for a table cell (the full text is in the report)."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + "…"


def build_timeline(
    events: Sequence[EventFacts],
    findings: Sequence[Finding],
    session: SessionFacts,
    buckets: int = 72,
    width: int = 720,
    height: int = 150,
) -> Timeline:
    """Bars of reads/writes/errors per bucket between the grant (or first event) and the window end (or last)."""
    times = [event.event_time for event in events]
    bounds = [
        moment
        for moment in (session.granted_at, session.ended_at, session.assignment_removed_at, session.window_end)
        if moment
    ]
    firsts = [*times, *([session.granted_at] if session.granted_at else [])]
    start = min(firsts) if firsts else (min(bounds) if bounds else datetime.now(UTC))
    end = max([*times, *bounds]) if times or bounds else start
    if end <= start:
        end = start + timedelta(minutes=1)
    span = (end - start).total_seconds()
    left, right, top, bottom = 8, width - 8, 14, height - 26
    plot = right - left

    def x_of(moment: datetime) -> float:
        return round(left + plot * (moment - start).total_seconds() / span, 1)

    counts = [Counter() for _ in range(buckets)]
    for event in events:
        index = min(buckets - 1, int(buckets * (event.event_time - start).total_seconds() / span))
        kind = "error" if event.failed else ("read" if event.read_only else "write")
        counts[index][kind] += 1
    peak = max((sum(counter.values()) for counter in counts), default=0) or 1
    bar_width = plot / buckets
    bars = []
    for index, counter in enumerate(counts):
        y = float(bottom)
        for kind in ("read", "write", "error"):
            if not counter[kind]:
                continue
            h = max(1.0, (bottom - top) * counter[kind] / peak)
            y -= h
            bars.append(
                {
                    "x": round(left + index * bar_width, 1),
                    "y": round(y, 1),
                    "w": round(max(1.0, bar_width - 1), 1),
                    "h": round(h, 1),
                    "kind": kind,
                    "title": f"{counter[kind]} {kind}s",
                }
            )
    # One mark per bucket and severity (a rule firing thousands of times is one mark, not thousands), worst drawn last.
    grouped: dict[tuple[int, str], list[Finding]] = {}
    for finding in findings:
        index = min(buckets - 1, max(0, int(buckets * (finding.event_time - start).total_seconds() / span)))
        grouped.setdefault((index, finding.severity), []).append(finding)
    marks = []
    for (index, severity), found in sorted(grouped.items(), key=lambda item: SEVERITY_RANK.get(item[0][1], 0)):
        first = found[0]
        title = f"{severity}: {first.title} ({first.event_name} at {_fmt(first.event_time)})"
        if len(found) > 1:
            title = f"{len(found)} {severity} findings from {_fmt(first.event_time)}, first: {title}"
        x = x_of(first.event_time) if len(found) == 1 else round(left + (index + 0.5) * bar_width, 1)
        marks.append({"x": x, "y": bottom + 4, "severity": severity, "title": title})
    boundaries = [(session.granted_at, "granted"), (session.ended_at, "ended")]
    if session.assignment_removed_at is not None and session.assignment_removed_at != session.ended_at:
        boundaries.append((session.assignment_removed_at, "removed"))
    boundaries.append((session.window_end, "window end"))
    lines: list[dict[str, Any]] = []
    for moment, label in boundaries:
        if moment is None or not start <= moment <= end:
            continue
        x = x_of(moment)
        # Boundaries minutes apart on a day-long axis: their labels go one row lower instead of on top of each other.
        row = lines[-1]["row"] + 1 if lines and x - lines[-1]["x"] < 60 and lines[-1]["row"] < 2 else 0
        lines.append({"x": x, "label": label, "anchor": "end" if x > width * 0.8 else "start", "row": row,
                      "y": 11 + 10 * row})  # fmt: skip
    labels = [
        {"x": left, "anchor": "start", "text": _fmt(start)},
        {"x": right, "anchor": "end", "text": _fmt(end)},
    ]
    return Timeline(width, height, bars, marks, lines, labels)


def _flags(session: SessionFacts, events: Sequence[EventFacts]) -> list[SessionFlag]:
    """The session flags: the credential tail counts from the assignment's actual removal (a kept assignment,
    or one not removed yet, has no tail)."""
    return session_flags(events, session.account_id, session.assignment_removed_at)


def _unsuppressed(findings: Sequence[Finding], notes: SessionNotes) -> list[Finding]:
    """The findings to show and count: a suppressed one is counted apart (and listed), never twice."""
    if not notes.suppressed:
        return list(findings)
    suppressed = {finding for finding, _ in notes.suppressed}
    return [finding for finding in findings if finding not in suppressed]


@dataclass(frozen=True)
class IndexEntry:
    """One line of the nightly index."""

    session: SessionFacts
    report_url: str
    counts: Counts
    findings_by_severity: dict[str, int]
    flags: int
    worst: str | None = None
    notes: SessionNotes = field(default_factory=SessionNotes)

    @property
    def suppressed(self) -> int:
        return len(self.notes.suppressed)

    @property
    def missing_data(self) -> bool:
        return bool(self.notes.missing_data)

    @property
    def ticket_link(self) -> str | None:
        return safe_url(self.session.ticket_url)

    @property
    def justification(self) -> str | None:
        return shorten(self.session.justification)

    @property
    def sort_key(self) -> tuple[Any, ...]:
        """Worst first: highest severity (a session whose data is missing cannot be called clean: it comes before
        the clean ones), then how many of each severity, then flags."""
        ranks = tuple(-self.findings_by_severity.get(severity, 0) for severity in SEVERITY_ORDER)
        worst = -SEVERITY_RANK[self.worst] if self.worst else (0.5 if self.missing_data else 1)
        return (worst, *ranks, -self.flags, self.session.session_id)


@dataclass(frozen=True)
class DriftOverview:
    """The reconcile line of the nightly index: an auditor reading the night wants to know what exists that the
    system did not grant (open drift items now) and where the latest reconcile report is."""

    open_items: int
    by_kind: dict[str, int]
    latest_report: str | None  # the link to latest.html; None: no reconcile report was written yet


def _counts(events: Sequence[EventFacts]) -> Counts:
    writes = sum(1 for event in events if not event.read_only)
    return Counts(
        events=len(events),
        writes=writes,
        reads=len(events) - writes,
        errors=sum(1 for e in events if e.failed),
    )


def _by_severity(findings: Sequence[Finding]) -> dict[str, int]:
    counter = Counter(finding.severity for finding in findings)
    return {severity: counter[severity] for severity in SEVERITY_ORDER if counter[severity]}


def _worst(findings: Sequence[Finding], flags: Sequence[SessionFlag]) -> str | None:
    severities = [finding.severity for finding in findings] + [flag.severity for flag in flags]
    return max(severities, key=lambda severity: SEVERITY_RANK.get(severity, 0)) if severities else None


def session_summary(
    session: SessionFacts,
    table_or_records: pa.Table | Iterable[dict[str, Any]],
    findings: Sequence[Finding],
    report_url: str,
    *,
    notes: SessionNotes = SessionNotes(),  # noqa: B008 (frozen: safe as a default)
    event_facts: Sequence[EventFacts] | None = None,
) -> IndexEntry:
    """The index line of a session (same counts, badges and flags as its report). `event_facts`: the events'
    facts when the caller has them already (the nightly audit makes them once for the line and the report)."""
    events = event_facts if event_facts is not None else facts_from_table(
        as_events_table(table_or_records, session.session_id))
    flags = _flags(session, events)
    shown = _unsuppressed(findings, notes)
    return IndexEntry(
        session, report_url, _counts(events), _by_severity(shown), len(flags), _worst(shown, flags), notes
    )


@dataclass(frozen=True)
class ServiceCounts:
    service: str
    events: int
    writes: int
    errors: int


def _by_service(events: Sequence[EventFacts]) -> list[ServiceCounts]:
    """Events, writes and errors per service (eventSource without .amazonaws.com), busiest first."""
    counters: dict[str, Counter[str]] = {}
    for event in events:
        counter = counters.setdefault(event.event_source.removesuffix(".amazonaws.com") or "—", Counter())
        counter["events"] += 1
        counter["writes"] += not event.read_only
        counter["errors"] += event.failed
    rows = [ServiceCounts(name, c["events"], c["writes"], c["errors"]) for name, c in counters.items()]
    return sorted(rows, key=lambda row: (-row.events, row.service))


@dataclass(frozen=True)
class AdhocScope:
    """What an ad-hoc report (`elevation audit-events --html`) audited."""

    files: tuple[str, ...]
    first_event: datetime | None
    last_event: datetime | None
    accounts: tuple[str, ...]

    @property
    def title(self) -> str:
        span = f"{_fmt(self.first_event)} to {_fmt(self.last_event)}" if self.first_event else "no events"
        where = ", ".join(self.accounts[:5]) + (f" and {len(self.accounts) - 5} more" if len(self.accounts) > 5 else "")
        files = f"{len(self.files)} file{'s' if len(self.files) != 1 else ''}"
        accounts = f"account{'s' if len(self.accounts) != 1 else ''} {where}" if self.accounts else "no account"
        return f"Ad-hoc audit of {files}: events from {span} in {accounts}"


@dataclass
class SessionView:
    """Everything the session template shows."""

    session: SessionFacts
    counts: Counts
    flags: list[SessionFlag]
    groups: list[dict[str, Any]]
    writes: list[dict[str, Any]]
    timeline: Timeline
    downloads: dict[str, str]
    generated_at: datetime
    worst: str | None = None
    night_link: str | None = None
    by_severity: dict[str, int] = field(default_factory=dict)
    suppressed: list[dict[str, Any]] = field(default_factory=list)
    suppressed_count: int = 0
    services: list[ServiceCounts] = field(default_factory=list)
    credentials: list[MintedCredential] = field(default_factory=list)
    missing: tuple[DataProblem, ...] = ()
    warnings: tuple[DataProblem, ...] = ()
    notes: SessionNotes = field(default_factory=SessionNotes)
    adhoc: AdhocScope | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        if self.adhoc is not None:
            return self.adhoc.title
        s = self.session
        return f"{s.requester or '—'} → {s.permission_set or '—'} on {s.account_name or s.account_id or '—'}"


def _session_link(base_url: str | None, session_id: str) -> str:
    return _link(base_url, f"{safe_name(session_id)}.html")


def _session_facts(session: SessionFacts, base_url: str | None) -> dict[str, Any]:
    """The derived facts of the facts panel: length, how it ended, what became of the assignment, the ticket."""
    end = session.ended_at
    kept_session = None
    removed = f"removed {_fmt(session.assignment_removed_at)}" if session.assignment_removed_at else None
    if session.assignment_kept:
        # At the session's end the assignment stayed (another session of it, a standing assignment): say so, and
        # when it was removed after all (by the session that kept it), or that it is still there.
        match = re.search(r"(?:session|request)\s+(\d+)", session.assignment_kept, re.I)
        if match:
            kept_session = {"id": match.group(1), "url": _session_link(base_url, match.group(1))}
        assignment = f"kept at the session's end: {session.assignment_kept}; " + (
            f"{removed} (by the session that kept it)" if removed else "still in place")
    elif removed:
        assignment = removed
    elif end is not None and not session.provisional:
        assignment = "not removed (no removal recorded)"
    else:
        assignment = "not removed yet"
    early = (
        session.requested_end is not None and end is not None and end < session.requested_end
    ) or bool(session.ended_by)
    return {
        "length": duration_text(session.granted_at, end),
        "ongoing": end is None,
        "early": early,
        "assignment": assignment,
        "kept_session": kept_session,
        "ticket_link": safe_url(session.ticket_url),
    }


def _suppressed_rows(notes: SessionNotes) -> list[dict[str, Any]]:
    """Suppressed findings by (rule, reason, expiry): what was hidden, why and until when."""
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for finding, suppression in notes.suppressed:
        reason = getattr(suppression, "reason", None)
        expires = getattr(suppression, "expires", None)
        expires = _when_any(expires) if expires is not None else "no expiry"
        key = (finding.rule_id, str(reason), expires)
        row = rows.setdefault(
            key,
            {"rule_id": finding.rule_id, "title": finding.title, "reason": reason, "expires": expires,
             "count": 0, "first": finding.event_time, "last": finding.event_time},
        )  # fmt: skip
        row["count"] += 1
        row["first"] = min(row["first"], finding.event_time)
        row["last"] = max(row["last"], finding.event_time)
    return sorted(rows.values(), key=lambda row: (row["first"], row["rule_id"]))


def _cards(
    findings: Sequence[Finding],
    rules: Mapping[str, CompiledRule] | None,
    shared: Callable[[Iterable[str]], list[dict[str, str]]],
) -> list[dict[str, Any]]:
    """The finding cards, worst severity first, in time order within one: a successful finding is one card (at
    most SHOWN_PER_RULE per rule, the rest counted); failed calls are attempts, one card per (rule, outcome)."""
    infos: dict[str, RuleInfo] = {}
    attempts: dict[tuple[str, str], list[Finding]] = {}
    groups: dict[str, dict[str, Any]] = {}
    shown: Counter[str] = Counter()

    def group_of(severity: str) -> dict[str, Any]:
        return groups.setdefault(severity, {"severity": severity, "count": 0, "items": [], "more": {}})

    for finding in sorted(findings, key=lambda found: (found.event_time, found.event_id)):
        severity = finding.severity
        group = group_of(severity)
        group["count"] += 1
        if finding.rule_id not in infos:
            infos[finding.rule_id] = rule_info(finding.rule_id, rules)
        if finding.failed:
            attempts.setdefault((finding.rule_id, finding.outcome), []).append(finding)
            continue
        shown[finding.rule_id] += 1
        if shown[finding.rule_id] > SHOWN_PER_RULE:
            more = group["more"].setdefault(finding.rule_id, {"title": finding.title, "count": 0})
            more["count"] += 1
            continue
        group["items"].append(
            {
                "kind": "finding",
                "severity": severity,
                "title": finding.title,
                "rule": infos[finding.rule_id],
                "finding": finding,
                "sort": (finding.event_time, finding.event_id),
                "time": _fmt(finding.event_time),
                "call": f"{finding.event_source.removesuffix('.amazonaws.com')}:{finding.event_name}",
                "principal": finding.principal_arn,
                "parameters": readable_parameters(finding.request_parameters),
                "shared": shared([finding.event_id]),
            }
        )
    for (rule_id, outcome), found in attempts.items():
        first, last = found[0], found[-1]
        severity = first.severity
        calls = Counter(f"{f.event_source.removesuffix('.amazonaws.com')}:{f.event_name}" for f in found)
        identities = Counter(f.principal_arn for f in found if f.principal_arn)
        group_of(severity)["items"].append(
            {
                "kind": "attempt",
                "severity": severity,
                "title": f"Attempted: {first.title} — {len(found)} call{'s' if len(found) != 1 else ''} {outcome}",
                "rule": infos[rule_id],
                "finding": first,
                "count": len(found),
                "outcome": outcome,
                "sort": (first.event_time, first.event_id),
                "time": _fmt(first.event_time),
                "first": _fmt(first.event_time),
                "last": _fmt(last.event_time),
                "calls": calls.most_common(),
                "principal": ", ".join(identity for identity, _ in identities.most_common(3))
                + (f" and {len(identities) - 3} more" if len(identities) > 3 else "")
                or None,
                "event_ids": [f.event_id for f in found[:20]],
                "more_events": max(0, len(found) - 20),
                "parameters": readable_parameters(first.request_parameters),
                "shared": shared(f.event_id for f in found),
            }
        )
    ordered = []
    for severity in SEVERITY_ORDER:
        group = groups.get(severity)
        if group is None:
            continue
        group["items"].sort(key=lambda item: item["sort"])
        group["more"] = list(group["more"].values())
        ordered.append(group)
    return ordered


def build_session_view(
    session: SessionFacts,
    events: Sequence[EventFacts],
    findings: Sequence[Finding],
    downloads: dict[str, str],
    generated_at: datetime,
    *,
    table: pa.Table | None = None,
    base_url: str | None = None,
    night_link: str | None = None,
    notes: SessionNotes = SessionNotes(),  # noqa: B008 (frozen: safe as a default)
    rules: Mapping[str, CompiledRule] | None = None,
    files: Sequence[str] | None = None,
) -> SessionView:
    """The view of one report. `table` (the session's events) feeds the credentials section; `files`: an ad-hoc
    report over these files (no session facts, no night)."""
    flags = _flags(session, events)
    shown = _unsuppressed(findings, notes)

    def shared(event_ids: Iterable[str]) -> list[dict[str, str]]:
        others: dict[str, None] = {}
        for event_id in event_ids:
            for other in notes.shared_events.get(event_id, ()):
                if other != session.session_id:
                    others[other] = None
        return [{"id": other, "url": _session_link(base_url, other)} for other in others]

    writes = [
        {"event": event, "shared": shared([event.event_id])} for event in events if not event.read_only
    ]
    adhoc = None
    if files is not None:
        accounts = sorted({event.recipient_account_id for event in events if event.recipient_account_id})
        adhoc = AdhocScope(
            files=tuple(files),
            first_event=events[0].event_time if events else None,
            last_event=events[-1].event_time if events else None,
            accounts=tuple(accounts),
        )
    return SessionView(
        session=session,
        counts=_counts(events),
        flags=flags,
        groups=_cards(shown, rules, shared),
        writes=writes,
        timeline=build_timeline(events, shown, session),
        downloads=downloads,
        generated_at=generated_at,
        worst=_worst(shown, flags),
        night_link=night_link,
        by_severity=_by_severity(shown),
        suppressed=_suppressed_rows(notes),
        suppressed_count=len(notes.suppressed),
        services=_by_service(events),
        credentials=minted_credentials(table) if table is not None else [],
        missing=notes.missing_data,
        warnings=tuple(problem for problem in notes.problems if not problem.is_error),
        notes=notes,
        adhoc=adhoc,
        facts=_session_facts(session, base_url),
    )


# ---------------------------------------------------------------------------------------------------------------
# Rendering


@functools.lru_cache(maxsize=1)
def template_environment() -> jinja2.Environment:
    """One environment per process: Jinja compiles each template once (a night renders hundreds of reports)."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_path("templates"))),
        autoescape=True,  # every template, whatever its extension: the data is attacker-controlled
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["when"] = _fmt
    environment.filters["dash"] = lambda value: "—" if value in (None, "") else value
    environment.filters["short_source"] = lambda value: (value or "").removesuffix(".amazonaws.com")
    environment.filters["safe_url"] = safe_url
    environment.filters["banner"] = problem_banner
    return environment


def _csv_safe(table: pa.Table) -> pa.Table:
    """Spreadsheets run cells starting with = + - @ as formulas: prefix them with ' in the CSV (the Parquet keeps
    the exact values)."""
    columns = []
    for column in table.columns:
        if pa.types.is_string(column.type):
            risky = pc.fill_null(pc.match_substring_regex(column, r"^[=+\-@\t\r]"), False)
            column = pc.if_else(risky, pc.binary_join_element_wise("'", column, ""), column)
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def write_downloads(table: pa.Table, output_dir: Path, stem: str) -> tuple[Path, Path]:
    """The session's events as CSV (for a spreadsheet) and Parquet (for a notebook or a SIEM)."""
    buffer = io.BytesIO()
    pacsv.write_csv(_csv_safe(table), buffer)
    csv_path = write_output(output_dir, f"{stem}.events.csv", buffer.getvalue())
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    parquet_path = write_output(output_dir, f"{stem}.events.parquet", buffer.getvalue())
    return csv_path, parquet_path


def night_index_link(base_url: str | None, night: str | None) -> str | None:
    """The link from a session report (in `sessions/`) to its night's index (`<night>/index.html`, a sibling
    folder): `../<night>/index.html`, or under the parent of `base_url` (the sessions folder's URL)."""
    if not night:
        return None
    name = f"{safe_name(night)}/index.html"
    if base_url:
        parent = base_url.rstrip("/").rsplit("/", 1)[0] if "/" in base_url.rstrip("/") else ""
        return f"{parent}/{name}" if parent else f"../{name}"
    return f"../{name}"


def render_session_report(
    session: SessionFacts,
    table_or_records: pa.Table | Iterable[dict[str, Any]],
    findings: Sequence[Finding],
    output_dir: Path,
    base_url: str | None = None,
    generated_at: datetime | None = None,
    *,
    night: str | None = None,
    notes: SessionNotes = SessionNotes(),  # noqa: B008 (frozen: safe as a default)
    rules: Mapping[str, CompiledRule] | None = None,
    files: Sequence[str] | None = None,
    event_facts: Sequence[EventFacts] | None = None,
) -> Path:
    """Write `<session>.html` plus its CSV and Parquet downloads into `output_dir`; return the HTML path.

    `base_url`: the URL of `output_dir` (the `sessions/` folder); links to the downloads and to other sessions'
    reports are `base_url/<file>` (relative file names when empty). `night`: the night whose index links here
    (the report links back to `<night>/index.html` beside `sessions/`); None: no night (ad-hoc). `notes`: data
    problems, shared events, suppressed findings, late events. `rules`: rule id -> rule, for the cards' text.
    `files`: an ad-hoc report over these input files (`elevation audit-events --html`)."""
    output_dir = Path(output_dir)
    stem = safe_name(session.session_id)
    table = as_events_table(table_or_records, session.session_id)
    csv_path, parquet_path = write_downloads(table, output_dir, stem)
    view = build_session_view(
        session,
        event_facts if event_facts is not None else facts_from_table(table),
        findings,
        {"csv": _link(base_url, csv_path.name), "parquet": _link(base_url, parquet_path.name)},
        generated_at or datetime.now(UTC),
        table=table,
        base_url=base_url,
        night_link=night_index_link(base_url, night),
        notes=notes,
        rules=rules,
        files=files,
    )
    html = template_environment().get_template("session_report.html.j2").render(view=view, severities=SEVERITY_ORDER)
    return write_output(output_dir, f"{stem}.html", html.encode("utf-8"))


def render_index(
    entries: Sequence[IndexEntry],
    output_dir: Path,
    night: str,
    generated_at: datetime | None = None,
    findings_file: str | None = None,
    drift: DriftOverview | None = None,
    *,
    problems: Sequence[DataProblem] = (),
) -> Path:
    """Write `index.html` listing the night's sessions, worst first (entries from :func:`session_summary`), the
    night's data problems (missing trail data as errors, skipped files as warnings) and, when given, the open
    drift items and the link to the latest reconcile report."""
    ordered = sorted(entries, key=lambda entry: entry.sort_key)
    totals = Counter()
    for entry in ordered:
        totals.update(entry.findings_by_severity)
    html = (
        template_environment()
        .get_template("index.html.j2")
        .render(
            entries=ordered,
            night=night,
            totals={severity: totals[severity] for severity in SEVERITY_ORDER},
            suppressed=sum(entry.suppressed for entry in ordered),
            severities=SEVERITY_ORDER,
            generated_at=generated_at or datetime.now(UTC),
            findings_file=findings_file,
            drift=drift,
            missing=[problem for problem in problems if problem.is_error],
            warnings=[problem for problem in problems if not problem.is_error],
        )
    )
    return write_output(Path(output_dir), "index.html", html.encode("utf-8"))


def write_findings_jsonl(findings: Iterable[Finding], output_dir: Path, night: str) -> Path:
    """The night's findings, one JSON object per line, for a SIEM to pick up next to the reports."""
    lines = (json.dumps(finding.to_dict(), ensure_ascii=False, sort_keys=True) for finding in findings)
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    return write_output(Path(output_dir), f"findings-{safe_name(night)}.jsonl", data)
