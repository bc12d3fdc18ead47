"""The nightly jobs: extract the sessions' CloudTrail events into Parquet, then audit each session.

Glue between the queue database (who had which session, when) and the domain code of `elevation.extract` and
`elevation.audit`: it turns rows into `SessionIdentity` / `SessionFacts`, builds the configured event source from
Airflow connections, and records each session's audit result: provisional until the session's window has closed
by the real clock (plus CloudTrail's delivery margin) and within the audited night, then final, once.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from elevation.audit.publish import publish_reports, published_uri
from elevation.aws import airflow_session
from elevation.cloudtrail.sessions import SessionIdentity
from elevation.extract.night import ExtractSummary
from elevation.runtime import Runtime
from elevation.store import queue
from elevation.store.tables import audits, findings_sent, requests, sessions

log = logging.getLogger(__name__)


def night_to_process(as_of: datetime, timezone: str, override: str | None = None) -> date:
    """The night a run works on: the given one, else the local calendar day before the run's logical time."""
    if override:
        try:
            return date.fromisoformat(override)
        except ValueError as error:
            raise ValueError(f"night {override!r} is not a date (YYYY-MM-DD)") from error
    from zoneinfo import ZoneInfo

    return as_of.astimezone(ZoneInfo(timezone)).date() - timedelta(days=1)


def _session_rows(conn: sa.Connection) -> list[sa.RowMapping]:
    query = (
        sa.select(sessions, requests.c.requester, requests.c.approver, requests.c.decided_by,
                  requests.c.justification, requests.c.ticket, requests.c.start_at, requests.c.end_at,
                  requests.c.ended_at, requests.c.status, requests.c.revoke_requested_at,
                  requests.c.revoke_requested_by)
        .join(requests, requests.c.id == sessions.c.request_id)
        .where(sessions.c.granted_at.is_not(None))
        .order_by(sessions.c.request_id)
    )
    return list(conn.execute(query).mappings())


def identity_of(row: sa.RowMapping, open_until: datetime | None = None) -> SessionIdentity:
    """Who the session is in CloudTrail: each user of the grant (a group's members at grant time).

    A session whose access is not confirmed removed yet (a revoke still failing) is treated as lasting at least
    until `open_until`: its riskiest hours are exactly the ones after its planned end."""
    users = tuple(json.loads(row["group_members"])) if row["group_members"] else (row["principal_name"],)
    ended = row["assignment_removed_at"] or row["ended_at"]
    planned_end = row["end_at"]
    if ended is None and open_until is not None and row["status"] in ("active", "ending"):
        planned_end = max(planned_end, open_until)
    return SessionIdentity(
        session_id=str(row["request_id"]),
        account_id=row["account_id"],
        permission_set_name=row["permission_set_name"],
        user_names=users or (row["principal_name"],),
        granted_at=row["granted_at"],
        ended_at=ended,
        planned_end=planned_end,
        permission_set_session_duration=timedelta(seconds=row["permission_set_session_seconds"]),
    )


def audit_is_final(window_end: datetime, night_end: datetime, now: datetime, delivery_margin: timedelta) -> bool:
    """Whether a session's audit of a night can be final: no event of the session can still turn up.

    Its window must close within the night (later events belong to later nights' partitions) and before the real
    time `now` by more than the delivery margin (CloudTrail delivers late): a night audited before it is over, or
    a window that closed minutes ago, is still provisional."""
    return window_end <= night_end and window_end + delivery_margin < now


def session_identities(runtime: Runtime, open_until: datetime | None = None) -> list[SessionIdentity]:
    with runtime.engine.connect() as conn:
        return [identity_of(row, open_until) for row in _session_rows(conn)]


# --- extract ------------------------------------------------------------------------------------------------


def lake_client(runtime: Runtime) -> Any:
    from elevation.cloudtrail.lake import LakeClient

    settings = runtime.config.extract
    session, endpoint, region = airflow_session(settings.lake_conn_id)
    assert settings.lake_event_data_store_arn is not None  # check_source() ran
    return LakeClient(session, settings.lake_event_data_store_arn, region_name=region, endpoint_url=endpoint,
                      poll_interval=settings.poll_interval.total_seconds(),
                      max_wait=settings.max_wait.total_seconds(), sleep=runtime.sleep)


def plan_lake_statements(runtime: Runtime, night: date) -> list[str]:
    """The Lake statements the night needs (empty for the S3 source): the DAG starts them and waits deferred."""
    from elevation.extract.night import plan_lake_queries
    from elevation.extract.nights import night_window

    settings = runtime.config.extract
    settings.check_source()
    if settings.source != "lake":
        return []
    start, end = night_window(night, settings.timezone)
    assert settings.lake_event_data_store_arn is not None
    return plan_lake_queries(session_identities(runtime, end), start, end, settings.lake_event_data_store_arn,
                             delivery_margin=settings.delivery_margin)


def run_extract(
    runtime: Runtime, night: date, ready_queries: dict[str, tuple[str, int]] | None = None
) -> ExtractSummary:
    """Extract one night into the configured location; returns the ExtractSummary."""
    from elevation.extract.night import extract_night
    from elevation.extract.nights import night_window

    settings = runtime.config.extract
    settings.check_source()
    start, end = night_window(night, settings.timezone)
    if settings.source == "lake":
        from elevation.cloudtrail.lake import LakeSource

        source: Any = LakeSource(lake_client(runtime), ready_queries=ready_queries)
    else:
        from elevation.cloudtrail.s3_trail import S3TrailSource

        session, endpoint, region = airflow_session(settings.s3_conn_id)
        client = session.client("s3", endpoint_url=endpoint, region_name=region)
        assert settings.s3_bucket is not None
        source = S3TrailSource(client, settings.s3_bucket, prefix=settings.s3_prefix, org_id=settings.s3_org_id,
                               regions=settings.regions, extra_accounts=settings.extra_accounts)
    filesystem, base = _output(settings.output_location, settings.output_conn_id)
    identities = session_identities(runtime, end)
    summary = extract_night(identities, source, start, end, base, timezone=settings.timezone,
                            delivery_margin=settings.delivery_margin, filesystem=filesystem, now=runtime.now(),
                            late_lookback=settings.late_delivery_lookback)
    if settings.source == "lake":
        summary.late_events = _requery_lake(runtime, night, filesystem, base)
    for warning in summary.warnings:
        log.warning("skipped: %s", warning)
    with runtime.engine.begin() as conn:
        queue.record_event(conn, at=runtime.now(), kind="extract", actor=runtime.actor,
                           detail={"night": night.isoformat(), "events": summary.events_written,
                                   "sessions": summary.sessions, "bytes_scanned": summary.bytes_scanned,
                                   "warnings": len(summary.warnings), "late_events": summary.late_events})
    return summary


def _requery_lake(runtime: Runtime, night: date, filesystem: Any, base: str) -> dict[str, dict[str, int]]:
    """CloudTrail Lake has no delivery time to compare: the nights within the lookback are queried again (their
    partitions only ever grow, see carried_over); {night: {session: events gained}} for those that gained."""
    from elevation.cloudtrail.lake import LakeSource
    from elevation.extract.manifest import read_manifest, write_manifest
    from elevation.extract.night import extract_night
    from elevation.extract.nights import night_window

    settings = runtime.config.extract
    gained: dict[str, dict[str, int]] = {}
    for back in range(1, settings.late_delivery_lookback.days + 1):
        earlier = night - timedelta(days=back)
        before = read_manifest(filesystem, base, earlier)
        if before is None:
            continue
        start, end = night_window(earlier, settings.timezone)
        again = extract_night(session_identities(runtime, end), LakeSource(lake_client(runtime)), start, end, base,
                              timezone=settings.timezone, delivery_margin=settings.delivery_margin,
                              filesystem=filesystem, now=runtime.now())
        more = {key: count - before.events_per_session.get(key, 0)
                for key, count in again.events_per_session.items() if count > before.events_per_session.get(key, 0)}
        if more:
            after = read_manifest(filesystem, base, earlier)
            assert after is not None  # extract_night just wrote it
            for key, count in more.items():
                after.late_events[key] = after.late_events.get(key, 0) + count
            after.rewrites = before.rewrites + 1
            write_manifest(filesystem, base, earlier, after)
            gained[earlier.isoformat()] = more
    return gained


def _output(location: str, conn_id: str) -> tuple[Any, str]:
    """(filesystem, base path) of the extract's output: an s3:// location through the connection `conn_id`
    (`extract.output_conn_id`)."""
    from elevation.extract.location import resolve_location

    if location.startswith("s3://"):
        session, endpoint, region = airflow_session(conn_id)
        return resolve_location(location, session=session, endpoint_url=endpoint, region_name=region)
    return resolve_location(location)


# --- audit --------------------------------------------------------------------------------------------------


@dataclass
class AuditSummary:
    night: str
    index: str | None = None
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)  # session id -> counts, state, report
    findings: int = 0
    findings_written: int = 0  # lines of this night's findings file (final sessions' findings, once each)
    unsupported_rules: list[str] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)  # the night's data problems (DataProblem)


class MissingCloudTrailData(RuntimeError):
    """Sessions were audited against days of their accounts with no CloudTrail data at all, after the delivery
    margin: the reports say so, and the run fails so that nobody takes the night for a clean one."""


#: Sessions are audited in batches of about this many events (their count in the nights' manifests): the night is
#: never held in memory at once, whatever its size; overlapping sessions of one assignment share a batch.
AUDIT_BATCH_EVENTS = 200_000


class _Partitions:
    """The nights' event files, read a row group at a time: each row group's sessions are noted once per run (the
    session_id column alone, as a dictionary: cheap), and a batch reads only the row groups holding its sessions.
    So a batch costs its own events plus one row group in memory, whatever the night's size (a night's events are
    in time order: sessions that overlap share row groups)."""

    def __init__(self, filesystem: Any, base: str) -> None:
        self.filesystem, self.base = filesystem, base
        self._groups: dict[date, list[frozenset[str]]] = {}

    def _file(self, night: date) -> Any:
        import pyarrow.parquet as pq
        from pyarrow import fs as pafs

        from elevation.audit.engine import DICTIONARY_COLUMNS
        from elevation.extract.writer import FINAL_NAME, partition_dir

        path = f"{partition_dir(self.base, night)}/{FINAL_NAME}"
        if self.filesystem.get_file_info(path).type != pafs.FileType.File:
            return None
        return pq.ParquetFile(self.filesystem.open_input_file(path), read_dictionary=DICTIONARY_COLUMNS)

    def _sessions_by_group(self, night: date, file: Any) -> list[frozenset[str]]:
        if night not in self._groups:
            self._groups[night] = [
                frozenset(str(value) for value in file.read_row_group(index, columns=["session_id"])
                          .column("session_id").unique().to_pylist())
                for index in range(file.num_row_groups)
            ]
        return self._groups[night]

    def events_of(self, sessions: dict[str, list[date]]) -> Any:
        """The events of these sessions (id -> the nights their windows touch), sorted by session and time, with
        the repetitive columns as Arrow dictionaries (what the rules engine reads fastest)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from elevation.audit.engine import DICTIONARY_COLUMNS
        from elevation.cloudtrail.schema import EVENT_SCHEMA

        schema = pa.schema([pa.field(f.name, pa.dictionary(pa.int32(), f.type)) if f.name in DICTIONARY_COLUMNS
                            else f for f in EVENT_SCHEMA])
        wanted = set(sessions)
        pieces = []
        for night in sorted({night for nights in sessions.values() for night in nights}):
            file = self._file(night)
            if file is None:
                continue
            with file:
                for index, held in enumerate(self._sessions_by_group(night, file)):
                    if held & wanted:
                        group = file.read_row_group(index)
                        group = group.filter(pc.is_in(group.column("session_id").cast(pa.string()),
                                                      value_set=pa.array(sorted(wanted), pa.string())))
                        pieces.append(group.cast(schema))
        if not pieces:
            return schema.empty_table()
        table = pa.concat_tables(pieces).unify_dictionaries()
        keys = pa.table({"session": table.column("session_id").cast(pa.string()), "time": table.column("eventTime")})
        return table.take(pc.sort_indices(keys, sort_keys=[("session", "ascending"), ("time", "ascending")]))


def _per_session(events: Any) -> dict[str, Any]:
    """session id -> its slice of a table sorted by session (zero-copy slices, one pass)."""
    ids = events.column("session_id").to_pylist()
    slices, start = {}, 0
    for index in range(1, len(ids) + 1):
        if index == len(ids) or ids[index] != ids[start]:
            slices[str(ids[start])] = events.slice(start, index - start)
            start = index
    return slices


def _batches(identities: Sequence[SessionIdentity], sizes: dict[str, int], groups: dict[str, str],
             budget: int = AUDIT_BATCH_EVENTS) -> list[list[SessionIdentity]]:
    """Sessions in batches of at most `budget` events (a bigger session alone), sessions of one group together."""
    by_group: dict[str, list[SessionIdentity]] = {}
    for identity in identities:
        by_group.setdefault(groups.get(identity.session_id, identity.session_id), []).append(identity)
    batches: list[list[SessionIdentity]] = []
    current: list[SessionIdentity] = []
    held = 0
    for members in by_group.values():
        size = sum(sizes.get(member.session_id, 1) for member in members)
        if current and held + size > budget:
            batches.append(current)
            current, held = [], 0
        current.extend(members)
        held += size
    if current:
        batches.append(current)
    return batches


def _end_details(conn: sa.Connection, request_ids: Sequence[int]) -> dict[int, str]:
    """The comment of each session's applied early end (revoke), for the report's "ended early by ... because"."""
    from elevation.store.tables import actions

    query = (sa.select(actions.c.request_id, actions.c.comment)
             .where(actions.c.action == "revoke", actions.c.outcome == "applied")
             .order_by(actions.c.id))
    return {row.request_id: row.comment for row in _in_chunks(conn, query, actions.c.request_id, request_ids)
            if row.comment}


def run_audit(runtime: Runtime, night: date) -> AuditSummary:
    """Audit every session whose window overlaps the night: its report, the night's index and findings file.

    Sessions are read and judged in batches (bounded memory). Each report shows the data problems of its account's
    days (from the nights' manifests); a final report is re-rendered only when its events changed, and then says
    how many arrived late. Findings go to the night's findings file once, when their session is final. When a
    session's account had no CloudTrail data for a day of its window and the delivery margin has passed, the run
    writes everything and then fails (:class:`MissingCloudTrailData`)."""
    from elevation.access.reconcile_report import drift_overview
    from elevation.audit import load_rules
    from elevation.audit.classify import facts_from_table
    from elevation.audit.facts import SessionNotes
    from elevation.audit.findings_file import FindingsFile, finding_line
    from elevation.audit.overlap import actual_removals, shared_events
    from elevation.audit.report import render_index, render_session_report, safe_name, session_summary
    from elevation.audit.suppressions import split_suppressed
    from elevation.extract.manifest import DataProblem, problems_touching, read_manifest
    from elevation.extract.nights import night_window, sessions_for_night

    extract, audit = runtime.config.extract, runtime.config.audit
    start, end = night_window(night, extract.timezone)
    now = runtime.now()  # the real clock: the logical time says nothing about which events have arrived
    with runtime.engine.connect() as conn:
        rows = {str(row["request_id"]): row for row in _session_rows(conn)}
    removals = actual_removals(rows.values())
    tonight = sessions_for_night([identity_of(row, end) for row in rows.values()], start, end)
    tonight_ids = [int(identity.session_id) for identity in tonight]
    with runtime.engine.connect() as conn:  # only tonight's sessions: the history grows every night
        ended_because = _end_details(conn, tonight_ids)
        previous = {str(row.request_id): row for row in _in_chunks(
            conn, sa.select(audits), audits.c.request_id, tonight_ids)}
    # The organization's accounts: who is inside (a policy granting an outside account is worse) and their names.
    organization = runtime.organization_accounts()
    rules = load_rules(audit.rule_folders, include_pack=audit.include_pack, disabled=audit.disabled_rules,
                       organization_accounts=frozenset(organization) or None)
    summary = AuditSummary(night=night.isoformat(),
                           unsupported_rules=[f"{rule.path}: {rule.reason}" for rule in rules.unsupported])
    filesystem, base = _output(extract.output_location, extract.output_conn_id)
    # The manifests of every night the sessions' windows touch: their problems and event counts.
    nights_touched = sorted({day for identity in tonight for day in _nights_of(identity, end, extract.timezone)})
    manifests = {day: read_manifest(filesystem, base, day) for day in nights_touched}
    all_problems = [problem for manifest in manifests.values() if manifest for problem in manifest.problems]
    unextracted = []
    for day in sorted(day for day, manifest in manifests.items() if manifest is None):
        for account in sorted({identity.account_id for identity in tonight
                               if day in _nights_of(identity, end, extract.timezone)}):
            unextracted.append(DataProblem(
                "missing", f"night {day} has not been extracted (no manifest under {extract.output_location}): "
                f"no CloudTrail data of account {account} was read for it; run elevation_extract for that night",
                account, None))
    all_problems += unextracted
    tonight_problems = [*(manifests[night].problems if manifests.get(night) else ()), *unextracted]
    sizes: dict[str, int] = {}
    for manifest in manifests.values():
        for session_id, count in (manifest.events_per_session if manifest else {}).items():
            sizes[session_id] = sizes.get(session_id, 0) + count
    publish_to = audit.reports_location if audit.reports_location.startswith("s3://") else None
    staging = tempfile.TemporaryDirectory(prefix="elevation-reports-") if publish_to else None
    reports = Path(staging.name) if staging else Path(audit.reports_location)
    night_dir, sessions_dir = reports / night.isoformat(), reports / "sessions"
    base_url = audit.base_url.rstrip("/") if audit.base_url else None
    entries = []
    names = {identity.account_id: organization[identity.account_id] for identity in tonight
             if identity.account_id in organization}
    groups = {identity.session_id: "|".join((identity.account_id, identity.permission_set_name,
                                             *sorted(identity.user_names))) for identity in tonight}
    partitions = _Partitions(filesystem, base)
    with FindingsFile(night_dir, night.isoformat()) as findings_file:  # streamed, replaced when complete
        for batch in _batches(tonight, sizes, groups):
            events = partitions.events_of({identity.session_id: _nights_of(identity, end, extract.timezone)
                                           for identity in batch})
            slices = _per_session(events)
            shared = shared_events(events)
            by_session: dict[str | None, list[Any]] = {}
            for finding in rules.evaluate_table(events):  # one pass over the batch, then split per session
                by_session.setdefault(finding.session_id, []).append(finding)
            for identity in batch:
                facts = _session_facts(runtime, rows[identity.session_id], identity, removals, names, ended_because, end, now)
                table = slices.get(identity.session_id, events.slice(0, 0))
                event_facts = facts_from_table(table)
                findings, suppressed = split_suppressed(by_session.get(identity.session_id, []), audit.suppressions,
                                                        now.date())
                before = previous.get(identity.session_id)
                was_final = before is not None and before.state == "final"
                late = table.num_rows - before.final_events if was_final and before.final_events is not None else 0
                days = [day.isoformat() for day in _utc_days(identity, end)]
                notes = SessionNotes(
                    problems=problems_touching(all_problems, identity.account_id, days, identity.session_id),
                    shared_events=shared.get(identity.session_id, {}),
                    suppressed=tuple(suppressed),
                    late_events=max(0, late),
                    first_final_at=before.finalized_at if was_final else None,
                )
                name = f"{safe_name(identity.session_id)}.html"
                link = f"{base_url}/sessions/{name}" if base_url else f"../sessions/{name}"
                where = f"{publish_to.rstrip('/')}/sessions/{name}" if publish_to else str(sessions_dir / name)
                entry = session_summary(facts, table, findings, link, notes=notes, event_facts=event_facts)
                unchanged = was_final and not facts.provisional and late == 0 and (sessions_dir / name).exists()
                if not unchanged:  # a final report changes only when new events arrived, and then says so
                    render_session_report(facts, table, findings, sessions_dir, night=night.isoformat(), notes=notes,
                                          event_facts=event_facts,
                                          rules=_rule_metadata(rules, findings, suppressed),
                                          base_url=f"{base_url}/sessions" if base_url else None)
                    _record_audit(runtime, identity.session_id, night, facts.provisional, entry, where, table.num_rows)
                entries.append(entry)
                summary.findings += len(findings)
                if not facts.provisional:
                    already_written = _written_elsewhere(runtime, identity.session_id, night)
                    mine = [finding for finding in findings if finding.key not in already_written]
                    for finding in mine:
                        findings_file.write(finding_line(finding, facts, rules.rule(finding.rule_id), report_url=link,
                                                         shared_with=notes.shared_events.get(finding.event_id, ())))
                    _record_written(runtime, night, mine)
                summary.sessions[identity.session_id] = {
                    "state": "provisional" if facts.provisional else "final", "events": entry.counts.events,
                    "findings": dict(entry.findings_by_severity), "worst": entry.worst, "report": where,
                    "suppressed": len(suppressed), "late_events": notes.late_events,
                    "missing_data": [problem.message for problem in notes.missing_data],
                }
            del events, slices, by_session
    summary.findings_written = findings_file.lines
    summary.problems = [asdict(problem) for problem in tonight_problems]
    summary.index = str(render_index(entries, night_dir, night.isoformat(), findings_file=findings_file.path.name,
                                     drift=drift_overview(runtime), problems=tonight_problems))
    if publish_to and staging:
        with staging:
            publish_reports(reports, publish_to, audit.reports_conn_id)
            summary.index = published_uri(publish_to, reports, night_dir / "index.html")
    blind = sorted({problem.message for identity in tonight for problem in problems_touching(
        all_problems, identity.account_id, [day.isoformat() for day in _utc_days(identity, end)],
        identity.session_id) if problem.is_error and _day_closed(problem.day, now, extract.delivery_margin)})
    if blind:
        raise MissingCloudTrailData(
            f"night {night}: {len(blind)} day(s) of audited accounts have no CloudTrail data; the reports say so. "
            + "; ".join(blind))
    return summary


def _session_facts(runtime: Runtime, row: sa.RowMapping, identity: SessionIdentity,
                   removals: dict[str, tuple[datetime | None, str | None]], names: dict[str, str],
                   ended_because: dict[int, str], night_end: datetime, now: datetime) -> Any:
    """What the session's report and findings lines say about it, from its queue rows."""
    from elevation.audit.facts import SessionFacts

    extract, audit = runtime.config.extract, runtime.config.audit
    removed_at, kept = removals[identity.session_id]
    window_end = identity.audit_window[1]
    return SessionFacts(
        session_id=identity.session_id,
        requester=row["requester"],
        principal=f"{row['principal_type'].lower()} {row['principal_name']}",
        account_id=row["account_id"],
        account_name=names.get(row["account_id"]),
        permission_set=row["permission_set_name"],
        approver=row["decided_by"],
        justification=row["justification"],
        ticket=row["ticket"],
        granted_at=identity.granted_at,
        ended_at=row["ended_at"] or identity.ended_at,
        window_end=window_end,
        provisional=row["status"] in ("active", "ending")
        or not audit_is_final(window_end, night_end, now, extract.delivery_margin),
        requested_start=row["start_at"],
        requested_end=row["end_at"],
        ended_by=row["revoke_requested_by"] if row["revoke_requested_at"] else None,
        end_reason=ended_because.get(int(identity.session_id)),
        assignment_removed_at=removed_at,
        assignment_kept=kept,
        ticket_url=ticket_link(audit.ticket_url_template, row["ticket"]),
    )


def ticket_link(template: str | None, ticket: str | None) -> str | None:
    """The ticket as a link: `audit.ticket_url_template` with `{ticket}` (URL-quoted); only http(s) links."""
    from urllib.parse import quote

    from elevation.audit.report import safe_url

    if not template or not ticket:
        return None
    return safe_url(template.replace("{ticket}", quote(ticket.strip(), safe="")))


def _utc_days(identity: SessionIdentity, night_end: datetime) -> list[date]:
    """The UTC days (trail folders) of a session's audit window, up to the end of the audited night."""
    first, last = identity.audit_window
    last = min(last, night_end - timedelta(microseconds=1))
    days, day = [], first.astimezone(UTC).date()
    while day <= last.astimezone(UTC).date():
        days.append(day)
        day += timedelta(days=1)
    return days


def _nights_of(identity: SessionIdentity, night_end: datetime, timezone: str) -> list[date]:
    """The nights (local days) of a session's audit window, up to the end of the audited night."""
    from elevation.extract.nights import night_of

    first, last = identity.audit_window
    last = min(last, night_end - timedelta(microseconds=1))
    nights, night = [], night_of(first, timezone)
    while night <= night_of(last, timezone):
        nights.append(night)
        night += timedelta(days=1)
    return nights


def _day_closed(day: str | None, now: datetime, margin: timedelta) -> bool:
    """Whether a UTC day's deliveries are all in: its end plus the delivery margin has passed."""
    if day is None:
        return True
    end = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
    return end + margin < now


def _rule_metadata(rules: Any, findings: Sequence[Any], suppressed: Sequence[Any]) -> dict[str, Any]:
    wanted = {finding.rule_id for finding in findings} | {finding.rule_id for finding, _ in suppressed}
    return {rule_id: rule for rule_id in wanted if (rule := rules.rule(rule_id)) is not None}


def _in_chunks(conn: sa.Connection, query: Any, column: Any, values: Sequence[Any], size: int = 500) -> list[Any]:
    """`query` restricted to `column IN values`, a chunk at a time (databases cap the parameters of a query)."""
    found = []
    for offset in range(0, len(values), size):
        found += list(conn.execute(query.where(column.in_(list(values[offset:offset + size])))))
    return found


def _written_elsewhere(runtime: Runtime, session_id: str, night: date) -> set[str]:
    """Keys of this session's findings already in another night's findings file (never written twice)."""
    with runtime.engine.connect() as conn:
        query = sa.select(findings_sent.c.key).where(findings_sent.c.request_id == int(session_id),
                                                    findings_sent.c.night != night.isoformat())
        return {row.key for row in conn.execute(query)}


def _record_written(runtime: Runtime, night: date, findings: Sequence[Any]) -> None:
    """Remember which findings this night's file holds, so no later night writes them again."""
    if not findings:
        return
    at = runtime.now()
    with runtime.engine.begin() as conn:
        known = {row.key for row in conn.execute(
            sa.select(findings_sent.c.key).where(findings_sent.c.key.in_([f.key for f in findings])))}
        fresh = [{"key": f.key, "request_id": int(f.session_id), "night": night.isoformat(), "rule_id": f.rule_id,
                  "event_id": f.event_id, "severity": f.severity, "written_at": at}
                 for f in {f.key: f for f in findings}.values() if f.key not in known]
        if fresh:
            conn.execute(sa.insert(findings_sent), fresh)


def _record_audit(runtime: Runtime, session_id: str, night: date, provisional: bool, entry: Any, report: str,
                  events: int) -> None:
    """Keep each session's latest audit; the first final result gets `finalized_at` (announced once, later) and
    the events it counted (`final_events`: later arrivals are late deliveries, which the report then names)."""
    at = runtime.now()
    values = {
        "night": night.isoformat(),
        "state": "provisional" if provisional else "final",
        "events": entry.counts.events,
        "writes": entry.counts.writes,
        "findings": json.dumps(dict(entry.findings_by_severity), sort_keys=True),
        "flags": entry.flags,
        "worst": entry.worst,
        "report": report,
        "audited_at": at,
    }
    request_id = int(session_id)
    with runtime.engine.begin() as conn:
        existing = conn.execute(sa.select(audits).where(audits.c.request_id == request_id)).mappings().first()
        if existing is None:
            conn.execute(sa.insert(audits).values(request_id=request_id, finalized_at=None if provisional else at,
                                                  final_events=None if provisional else events, **values))
        elif existing["state"] == "final" and provisional:
            return  # a final result is never downgraded by a re-run of an older night
        else:
            finalized = existing["finalized_at"] or (None if provisional else at)
            final_events = existing["final_events"] if existing["finalized_at"] else (
                None if provisional else events)
            conn.execute(sa.update(audits).where(audits.c.request_id == request_id)
                         .values(finalized_at=finalized, final_events=final_events, **values))
