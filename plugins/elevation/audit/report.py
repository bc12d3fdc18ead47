"""Per-session HTML reports, the nightly index, the session's downloads and the nightly findings file.

Reports are single self-contained HTML files: inline CSS, an inline SVG timeline, no script, no network resource
(a Content-Security-Policy says so to the browser too), so they open from disk, from S3 or from a mail attachment.
Everything that comes from an event, and most of what comes from a request (justification, ticket), is written
by whoever we are auditing: the templates are rendered with autoescape on and never mark anything safe.

Rendering is pure (view models built from facts, then Jinja2); storage goes through :func:`write_output`, the one
function that touches the output location.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from elevation.audit.classify import EventFacts, SessionFlag, facts_from_table, session_flags
from elevation.audit.engine import Finding
from elevation.audit.facts import SessionFacts
from elevation.audit.rules import SEVERITIES, SEVERITY_RANK
from elevation.cloudtrail.schema import EVENT_SCHEMA, record_to_row
from elevation.resources import data_path

__all__ = [
    "DriftOverview",
    "IndexEntry",
    "SessionFacts",
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
    bounds = [moment for moment in (session.granted_at, session.ended_at, session.window_end) if moment]
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
    lines = [
        {"x": x_of(moment), "label": label, "anchor": "end" if x_of(moment) > width * 0.8 else "start"}
        for moment, label in (
            (session.granted_at, "granted"),
            (session.ended_at, "removed"),
            (session.window_end, "window end"),
        )
        if moment is not None and start <= moment <= end
    ]
    labels = [
        {"x": left, "anchor": "start", "text": _fmt(start)},
        {"x": right, "anchor": "end", "text": _fmt(end)},
    ]
    return Timeline(width, height, bars, marks, lines, labels)


@dataclass(frozen=True)
class IndexEntry:
    """One line of the nightly index."""

    session: SessionFacts
    report_url: str
    counts: Counts
    findings_by_severity: dict[str, int]
    flags: int
    worst: str | None = None

    @property
    def sort_key(self) -> tuple[Any, ...]:
        """Worst first: highest severity, then how many of each severity, then flags."""
        ranks = tuple(-self.findings_by_severity.get(severity, 0) for severity in SEVERITY_ORDER)
        worst = -SEVERITY_RANK[self.worst] if self.worst else 1
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
) -> IndexEntry:
    """The index line of a session (same counts and flags as its report)."""
    events = facts_from_table(as_events_table(table_or_records, session.session_id))
    flags = session_flags(events, session.account_id, session.ended_at)
    return IndexEntry(
        session, report_url, _counts(events), _by_severity(findings), len(flags), _worst(findings, flags)
    )


@dataclass
class SessionView:
    """Everything the session template shows."""

    session: SessionFacts
    counts: Counts
    flags: list[SessionFlag]
    groups: list[dict[str, Any]]
    writes: list[EventFacts]
    timeline: Timeline
    downloads: dict[str, str]
    generated_at: datetime
    worst: str | None = None


def build_session_view(
    session: SessionFacts,
    events: Sequence[EventFacts],
    findings: Sequence[Finding],
    downloads: dict[str, str],
    generated_at: datetime,
) -> SessionView:
    flags = session_flags(events, session.account_id, session.ended_at)
    groups = []
    for severity in SEVERITY_ORDER:
        items, shown, count = [], Counter[str](), 0
        more: dict[str, dict[str, Any]] = {}  # rule id -> title and how many findings are not shown
        for finding in findings:
            if finding.severity != severity:
                continue
            count += 1
            shown[finding.rule_id] += 1
            if shown[finding.rule_id] > SHOWN_PER_RULE:
                more.setdefault(finding.rule_id, {"title": finding.title, "count": 0})["count"] += 1
                continue
            items.append(
                {
                    "finding": finding,
                    "time": _fmt(finding.event_time),
                    "call": f"{finding.event_source.removesuffix('.amazonaws.com')}:{finding.event_name}",
                    "parameters": readable_parameters(finding.request_parameters),
                }
            )
        if items:
            groups.append({"severity": severity, "count": count, "items": items, "more": list(more.values())})
    return SessionView(
        session=session,
        counts=_counts(events),
        flags=flags,
        groups=groups,
        writes=[event for event in events if not event.read_only],
        timeline=build_timeline(events, findings, session),
        downloads=downloads,
        generated_at=generated_at,
        worst=_worst(findings, flags),
    )


# ---------------------------------------------------------------------------------------------------------------
# Rendering


def _environment() -> jinja2.Environment:
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


def render_session_report(
    session: SessionFacts,
    table_or_records: pa.Table | Iterable[dict[str, Any]],
    findings: Sequence[Finding],
    output_dir: Path,
    base_url: str | None = None,
    generated_at: datetime | None = None,
) -> Path:
    """Write `<session>.html` plus its CSV and Parquet downloads into `output_dir`; return the HTML path.
    Links to the downloads are `base_url/<file>` (relative file names when base_url is empty)."""
    output_dir = Path(output_dir)
    stem = safe_name(session.session_id)
    table = as_events_table(table_or_records, session.session_id)
    csv_path, parquet_path = write_downloads(table, output_dir, stem)
    view = build_session_view(
        session,
        facts_from_table(table),
        findings,
        {"csv": _link(base_url, csv_path.name), "parquet": _link(base_url, parquet_path.name)},
        generated_at or datetime.now(UTC),
    )
    html = _environment().get_template("session_report.html.j2").render(view=view, severities=SEVERITY_ORDER)
    return write_output(output_dir, f"{stem}.html", html.encode("utf-8"))


def render_index(
    entries: Sequence[IndexEntry],
    output_dir: Path,
    night: str,
    generated_at: datetime | None = None,
    findings_file: str | None = None,
    drift: DriftOverview | None = None,
) -> Path:
    """Write `index.html` listing the night's sessions, worst first (entries from :func:`session_summary`), and,
    when given, the open drift items and the link to the latest reconcile report."""
    ordered = sorted(entries, key=lambda entry: entry.sort_key)
    totals = Counter()
    for entry in ordered:
        totals.update(entry.findings_by_severity)
    html = (
        _environment()
        .get_template("index.html.j2")
        .render(
            entries=ordered,
            night=night,
            totals={severity: totals[severity] for severity in SEVERITY_ORDER},
            severities=SEVERITY_ORDER,
            generated_at=generated_at or datetime.now(UTC),
            findings_file=findings_file,
            drift=drift,
        )
    )
    return write_output(Path(output_dir), "index.html", html.encode("utf-8"))


def write_findings_jsonl(findings: Iterable[Finding], output_dir: Path, night: str) -> Path:
    """The night's findings, one JSON object per line, for a SIEM to pick up next to the reports."""
    lines = (json.dumps(finding.to_dict(), ensure_ascii=False, sort_keys=True) for finding in findings)
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    return write_output(Path(output_dir), f"findings-{safe_name(night)}.jsonl", data)
