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
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from elevation.cloudtrail.sessions import SessionIdentity
from elevation.extract.night import ExtractSummary
from elevation.runtime import Runtime
from elevation.store import queue
from elevation.store.tables import audits, requests, sessions

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
                  requests.c.justification, requests.c.ticket, requests.c.end_at, requests.c.ended_at,
                  requests.c.status)
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


def _aws_session(conn_id: str) -> tuple[Any, str | None, str | None]:
    """(boto3 session, endpoint_url, region) of an Airflow AWS connection."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    hook = AwsBaseHook(aws_conn_id=conn_id)
    return hook.get_session(), hook.conn_config.endpoint_url, hook.conn_config.region_name


def lake_client(runtime: Runtime) -> Any:
    from elevation.cloudtrail.lake import LakeClient

    settings = runtime.config.extract
    session, endpoint, region = _aws_session(settings.lake_conn_id)
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

        session, endpoint, region = _aws_session(settings.s3_conn_id)
        client = session.client("s3", endpoint_url=endpoint, region_name=region)
        assert settings.s3_bucket is not None
        source = S3TrailSource(client, settings.s3_bucket, prefix=settings.s3_prefix, org_id=settings.s3_org_id,
                               regions=settings.regions, extra_accounts=settings.extra_accounts)
    output, filesystem = _output(settings.output_location)
    summary = extract_night(session_identities(runtime, end), source, start, end, output, timezone=settings.timezone,
                            delivery_margin=settings.delivery_margin, filesystem=filesystem)
    for warning in summary.warnings:
        log.warning("skipped: %s", warning)
    with runtime.engine.begin() as conn:
        queue.record_event(conn, at=runtime.now(), kind="extract", actor=runtime.actor,
                           detail={"night": night.isoformat(), "events": summary.events_written,
                                   "sessions": summary.sessions, "bytes_scanned": summary.bytes_scanned,
                                   "warnings": len(summary.warnings)})
    return summary


def _output(location: str) -> tuple[Any, Any]:
    """(output, filesystem) for extract_night: S3 locations use the AWS connection of the trail bucket."""
    if location.startswith("s3://"):
        from elevation.extract.location import resolve_location

        session, endpoint, region = _aws_session("aws_default")
        return resolve_location(location, session=session, endpoint_url=endpoint, region_name=region)[::-1]
    return location, None


# --- audit --------------------------------------------------------------------------------------------------


@dataclass
class AuditSummary:
    night: str
    index: str | None = None
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)  # session id -> counts, state, report
    findings: int = 0
    unsupported_rules: list[str] = field(default_factory=list)


def _events_of(location: str, session_ids: Sequence[str]) -> Any:
    """All extracted events of these sessions, across every night's partition (a session can span nights)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    from elevation.cloudtrail.schema import EVENT_SCHEMA

    root = Path(location)
    if not root.exists() or not session_ids:
        return pa.Table.from_pylist([], schema=EVENT_SCHEMA)
    dataset = ds.dataset(str(root), format="parquet", partitioning="hive", schema=EVENT_SCHEMA.append(
        pa.field("date", pa.string())))
    table = dataset.to_table(filter=ds.field("session_id").isin(list(session_ids)))
    return table.drop_columns(["date"]).sort_by([("eventTime", "ascending")])


def run_audit(runtime: Runtime, night: date) -> AuditSummary:
    """Audit every session whose window overlaps the night; write its report, the night's index and findings."""
    import pyarrow.compute as pc

    from elevation.access.reconcile_report import drift_overview
    from elevation.audit import load_rules
    from elevation.audit.facts import SessionFacts
    from elevation.audit.report import (
        render_index,
        render_session_report,
        session_summary,
        write_findings_jsonl,
    )
    from elevation.extract.nights import night_window, sessions_for_night

    extract, audit = runtime.config.extract, runtime.config.audit
    start, end = night_window(night, extract.timezone)
    now = runtime.now()  # the real clock: the logical time says nothing about which events have arrived
    with runtime.engine.connect() as conn:
        rows = {str(row["request_id"]): row for row in _session_rows(conn)}
    tonight = sessions_for_night([identity_of(row, end) for row in rows.values()], start, end)
    rules = load_rules(audit.rule_folders, include_pack=audit.include_pack, disabled=audit.disabled_rules)
    summary = AuditSummary(night=night.isoformat(),
                           unsupported_rules=[f"{rule.path}: {rule.reason}" for rule in rules.unsupported])
    events = _events_of(extract.output_location, [identity.session_id for identity in tonight])
    publish_to = audit.reports_location if audit.reports_location.startswith("s3://") else None
    staging = tempfile.TemporaryDirectory(prefix="elevation-reports-") if publish_to else None
    reports = Path(staging.name) if staging else Path(audit.reports_location)
    night_dir, sessions_dir = reports / night.isoformat(), reports / "sessions"
    base = audit.base_url.rstrip("/") if audit.base_url else None
    entries, all_findings = [], []
    names = _account_names(runtime, {identity.account_id for identity in tonight})
    by_session: dict[str | None, list[Any]] = {}
    for finding in rules.evaluate_table(events):  # one pass over the whole night, then split per session
        by_session.setdefault(finding.session_id, []).append(finding)
    for identity in tonight:
        row = rows[identity.session_id]
        window_end = identity.audit_window[1]
        facts = SessionFacts(
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
            ended_at=identity.ended_at,
            window_end=window_end,
            provisional=row["status"] in ("active", "ending")
            or not audit_is_final(window_end, end, now, extract.delivery_margin),
        )
        table = events.filter(pc.equal(events["session_id"], identity.session_id))
        findings = by_session.get(identity.session_id, [])
        all_findings.extend(findings)
        path = render_session_report(facts, table, findings, sessions_dir,
                                     base_url=f"{base}/sessions" if base else None)
        link = f"{base}/sessions/{path.name}" if base else f"../sessions/{path.name}"
        entry = session_summary(facts, table, findings, link)
        entries.append(entry)
        where = f"{publish_to.rstrip('/')}/sessions/{path.name}" if publish_to else str(path)
        _record_audit(runtime, identity.session_id, night, facts.provisional, entry, where)
        summary.sessions[identity.session_id] = {
            "state": "provisional" if facts.provisional else "final", "events": entry.counts.events,
            "findings": dict(entry.findings_by_severity), "worst": entry.worst, "report": where,
        }
    findings_file = write_findings_jsonl(all_findings, night_dir, night.isoformat())
    summary.index = str(render_index(entries, night_dir, night.isoformat(), findings_file=findings_file.name,
                                     drift=drift_overview(runtime)))
    summary.findings = len(all_findings)
    if publish_to and staging:
        with staging:
            summary.index = _publish(reports, publish_to, audit.reports_conn_id, night_dir)
    return summary


def _publish(folder: Path, location: str, conn_id: str, night_dir: Path) -> str:
    """Upload the rendered reports to S3, keeping the layout (so relative links keep working); the index's URI."""
    from urllib.parse import urlparse

    session, endpoint, region = _aws_session(conn_id)
    s3 = session.client("s3", endpoint_url=endpoint, region_name=region)
    target = urlparse(location)
    prefix = target.path.strip("/")
    content_types = {".html": "text/html; charset=utf-8", ".csv": "text/csv; charset=utf-8",
                     ".jsonl": "application/x-ndjson", ".json": "application/json",
                     ".parquet": "application/vnd.apache.parquet"}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            key = "/".join(filter(None, (prefix, path.relative_to(folder).as_posix())))
            s3.put_object(Bucket=target.netloc, Key=key, Body=path.read_bytes(),
                          ContentType=content_types.get(path.suffix, "application/octet-stream"))
    return f"{location.rstrip('/')}/{night_dir.relative_to(folder).as_posix()}/index.html"


def _account_names(runtime: Runtime, accounts: set[str]) -> dict[str, str]:
    """Account names for the reports, from Organizations; a report without them is still a report."""
    from botocore.exceptions import BotoCoreError, ClientError

    names = {}
    for account in sorted(accounts):
        try:
            answer = runtime.identity_center.clients.organizations.describe_account(AccountId=account)
            names[account] = answer["Account"]["Name"]
        except (ClientError, BotoCoreError, KeyError) as error:
            log.info("no name for account %s: %s", account, error)
    return names


def _record_audit(runtime: Runtime, session_id: str, night: date, provisional: bool, entry: Any, report: str) -> None:
    """Keep each session's latest audit; the first final result gets `finalized_at` (announced once, later)."""
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
                                                  **values))
        elif existing["state"] == "final" and provisional:
            return  # a final result is never downgraded by a re-run of an older night
        else:
            finalized = existing["finalized_at"] or (None if provisional else at)
            conn.execute(sa.update(audits).where(audits.c.request_id == request_id)
                         .values(finalized_at=finalized, **values))
