"""Turn what happened into outbox rows. Reads only: the grant and revoke paths never wait on it (nor on Slack).

Sources, each enqueued idempotently (the outbox's `dedup_key`):

- `elevation_event` rows after the durable cursor `events` (table `elevation_notify_cursor`): `validated` (a
  request now pending: to each approver the policy names for the account; inserted approved: to the requester),
  `transition` (approved / rejected / expired / cancelled / active / failed / ended / revoked) and
  `revoke_failed` (once per request); the cursor moves in the same transaction as the enqueue. A decision on a
  pending request (however it was made: a Slack click, the Airflow UI, the command line, expiry, a cancel) also
  enqueues a `request_pending_closed` update for each approval message, so no approver keeps live buttons;
- the revocations heartbeat's `overdue` list (`revoke_overdue`, once per request);
- active sessions within `ending_soon` of their end (`session_ending_soon`, once per request);
- `elevation_audit` rows final and not yet announced: the result to the requester and the approver (the security
  channel when policy approved it), and `announced_at` set in the same transaction;
- a digest per audited night, `digest_after` after the night's last audit row, to the security channel: sessions
  audited, the worst sessions, the worst findings (rule title, severity, session, how many) and open drift items.

The first run after notifications are enabled starts `first_run_lookback` back: older events and audits are not
announced (audits are marked announced).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from elevation.access.policy import approvers_for
from elevation.lifecycle import Status
from elevation.notify import messages as m
from elevation.notify.rule_titles import rule_titles
from elevation.runtime import Runtime
from elevation.store import outbox, queue
from elevation.store.tables import audits, events, findings_sent, heartbeats, requests
from elevation.store.tables import outbox as outbox_table

log = logging.getLogger(__name__)

EVENTS_CURSOR = "events"
EVENT_KINDS = ("transition", "validated", "revoke_failed")
BATCH = 500
#: How long an id missing below a committed one may still be committed by its writer (see _from_events).
GAP_GRACE = timedelta(minutes=10)
SEVERITY_RANK = {severity: rank for rank, severity in enumerate(m.SEVERITY_ORDER)}
REVOCATIONS_JOB = "elevation_revocations"
DIGEST_FINDINGS = 5  # the worst findings a digest names


@dataclass
class ProduceSummary:
    events: int = 0
    enqueued: int = 0
    audits: int = 0
    digests: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class _Context:
    """What one run looks up once: account names and OUs (Organizations), people's addresses."""

    def __init__(self, runtime: Runtime, summary: ProduceSummary) -> None:
        self.runtime = runtime
        self.settings = runtime.config.notifications
        self.summary = summary
        self._names: dict[str, str] | None = None
        self._ous: dict[str, list[str]] = {}

    def account_name(self, account_id: str) -> str | None:
        if self._names is None:
            try:
                self._names = self.runtime.identity_center.organization_accounts()
            except Exception as error:  # a message without the name is still a message
                self._warn(f"could not list the organization's accounts: {error}")
                self._names = {}
        return self._names.get(account_id)

    def account_ous(self, account_id: str) -> list[str] | None:
        if account_id not in self._ous:
            try:
                self._ous[account_id] = list(self.runtime.identity_center.account_ous(account_id))
            except Exception as error:
                self._warn(f"could not look up the OUs of account {account_id}: {error}")
                return None
        return self._ous[account_id]

    def view(self, row: Any) -> m.RequestView:
        return m.RequestView.from_row(row, self.account_name(str(row["account_id"])))

    def address(self, who: str | None) -> tuple[str | None, str | None]:
        """(where a DM goes: the person's email, or None; why not)."""
        if not who:
            return None, "nobody to tell"
        person = self.runtime.policy.person(who)
        if person is not None and person.email:
            return person.email, None
        if "@" in who:
            return who, None
        return None, f"{who} has no email in policy.people"

    def _warn(self, message: str) -> None:
        log.warning("%s", message)
        self.summary.warnings.append(message)


def _entry(key: str, message: m.Message, recipient: str | None, request_id: int | None,
           why_not: str | None = None) -> outbox.Entry:
    if recipient is None:  # recorded as skipped, so the gap is visible
        return outbox.Entry(key, message.kind, f"(none: {why_not})", message.payload(), request_id,
                            state=outbox.SKIPPED, last_error=why_not)
    return outbox.Entry(key, message.kind, recipient, message.payload(), request_id)


def _to_person(prefix: str, message: m.Message, who: str | None, request_id: int, ctx: _Context) -> outbox.Entry:
    address, why_not = ctx.address(who)
    return _entry(f"{prefix}:{address or who}", message, address, request_id, why_not)


def produce(runtime: Runtime) -> ProduceSummary:
    summary = ProduceSummary()
    settings = runtime.config.notifications
    if not settings.enabled:
        return summary
    ctx = _Context(runtime, summary)
    now = runtime.now()
    with runtime.engine.begin() as conn:
        position = outbox.cursor(conn, EVENTS_CURSOR)
        first_run = position is None
        if first_run:
            before = now - settings.first_run_lookback
            position = conn.execute(sa.select(sa.func.max(events.c.id)).where(events.c.at < before)).scalar() or 0
            outbox.set_cursor(conn, EVENTS_CURSOR, position, at=now)
    _from_events(runtime, ctx, position, summary)
    _overdue(runtime, ctx, summary)
    _ending_soon(runtime, ctx, summary)
    _audits(runtime, ctx, summary, first_run)
    _digests(runtime, ctx, summary, first_run)
    log.info("notifications produced: %d events read, %d messages enqueued, %d audits announced, digests %s",
             summary.events, summary.enqueued, summary.audits, summary.digests or "none")
    return summary


# --- events ---------------------------------------------------------------------------------------------------


def _from_events(runtime: Runtime, ctx: _Context, position: int, summary: ProduceSummary) -> None:
    """Every event after the cursor; the cursor moves only over ids that can no longer appear.

    Event ids come from one sequence but their transactions commit in any order (on PostgreSQL a writer holding id
    N may commit after N+1 was read). So an id missing below one already seen is a gap that may still fill: the
    cursor stays before it until the event after it is `GAP_GRACE` old (the gap's writer then rolled back). Events
    after an open gap are enqueued now and read again later: their dedup keys make that harmless."""
    scan, safe, blocked = position, position, False
    while True:
        with runtime.engine.connect() as conn:
            batch = list(conn.execute(
                sa.select(events.c.id, events.c.at).where(events.c.id > scan).order_by(events.c.id).limit(BATCH)
            ).mappings())
            wanted = {int(event["id"]) for event in batch}
            relevant = list(conn.execute(
                sa.select(events).where(events.c.id.in_(wanted), events.c.kind.in_(EVENT_KINDS))
                .order_by(events.c.id)
            ).mappings()) if wanted else []
        if not batch:
            return
        settled = runtime.now() - GAP_GRACE
        for event in batch:
            event_id = int(event["id"])
            if blocked:
                break
            if event_id == safe + 1 or (isinstance(event["at"], datetime) and event["at"] <= settled):
                safe = event_id
            else:  # an id below this one may still be committed
                blocked = True
        entries: list[outbox.Entry] = []
        for event in relevant:
            try:
                entries.extend(_for_event(runtime, ctx, event))
            except Exception as error:  # one odd event must not stop every notification after it
                ctx._warn(f"event {event['id']} ({event['kind']}) not announced: {type(error).__name__}: {error}")
        scan = int(batch[-1]["id"])
        with runtime.engine.begin() as conn:
            summary.enqueued += outbox.enqueue(conn, entries, now=runtime.now())
            if safe > position:
                outbox.set_cursor(conn, EVENTS_CURSOR, safe, at=runtime.now())
                position = safe
        summary.events += len(relevant)


def _detail(event: Any) -> dict[str, Any]:
    try:
        value = json.loads(event["detail"]) if event["detail"] else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _for_event(runtime: Runtime, ctx: _Context, event: Any) -> list[outbox.Entry]:
    if event["request_id"] is None:
        return []
    with runtime.engine.connect() as conn:
        row = queue.get_request(conn, int(event["request_id"]))
    if row is None:
        return []
    request_id = int(row["id"])
    key = f"{event['kind']}:{event['id']}"
    detail = _detail(event)
    kind, to_status = event["kind"], event["to_status"]
    if kind == "validated":
        if detail.get("approved_by"):  # inserted approved by an outside system, now validated
            message = m.request_decided(m.REQUEST_APPROVED, ctx.view(row), by=detail["approved_by"], reason=None)
            return [_to_person(key, message, row["requester"], request_id, ctx)]
        if row["status"] != Status.PENDING:  # decided before we got here: the approvers need not be asked
            return []
        return _pending(runtime, ctx, key, row)
    if kind == "revoke_failed":
        return _trouble(ctx, f"revoke_failed:{request_id}", m.REVOKE_FAILED, row, detail.get("reason"))
    by, reason = event["actor"], detail.get("reason")
    decided = {Status.APPROVED: m.REQUEST_APPROVED, Status.REJECTED: m.REQUEST_REJECTED,
               Status.EXPIRED: m.REQUEST_EXPIRED, Status.CANCELLED: m.REQUEST_CANCELLED}
    if to_status in decided:
        if event["reason_code"] == "auto_approved":
            by = row["decided_by"]
        elif event["reason_code"] == "invalid_request" or to_status == Status.EXPIRED:
            by = None  # nobody's act: the validation or the clock
        outcome = decided[Status(to_status)]
        message = m.request_decided(outcome, ctx.view(row), by=by, reason=reason)
        entries = [_to_person(key, message, row["requester"], request_id, ctx)]
        if event["from_status"] == Status.PENDING:
            entries += _close_pending(runtime, ctx, row, outcome, by, reason)
        return entries
    if to_status == Status.ACTIVE:
        return [_to_person(key, m.session_active(ctx.view(row)), row["requester"], request_id, ctx)]
    if to_status == Status.FAILED:
        return _trouble(ctx, key, m.GRANT_FAILED, row, reason)
    if to_status in (Status.ENDED, Status.REVOKED):
        revoked = to_status == Status.REVOKED
        who, why = (_revocation_request(runtime, request_id) if revoked else (None, None))
        message = m.session_over(ctx.view(row), revoked=revoked, by=who, reason=why)
        return [_to_person(key, message, row["requester"], request_id, ctx)]
    return []


def _revocation_request(runtime: Runtime, request_id: int) -> tuple[str | None, str | None]:
    """Who asked for the early end, and why (the transition to ending that a revoke action made)."""
    with runtime.engine.connect() as conn:
        event = conn.execute(
            sa.select(events).where(events.c.request_id == request_id, events.c.kind == "transition",
                                    events.c.reason_code == "revocation_requested")
            .order_by(events.c.id.desc()).limit(1)
        ).mappings().first()
    if event is None:
        return None, None
    return event["actor"], _detail(event).get("reason")


def _pending(runtime: Runtime, ctx: _Context, key: str, row: Any) -> list[outbox.Entry]:
    view = ctx.view(row)
    ous = ctx.account_ous(str(row["account_id"]))
    people = approvers_for(runtime.policy, row["requester"], str(row["account_id"]), ous or [])
    entries = []
    for person in people:
        address, why_not = ctx.address(person.login)
        entries.append(_entry(f"{key}:{address or person.login}", m.request_pending(view), address, int(row["id"]),
                              why_not))
    if not any(entry.state == outbox.PENDING for entry in entries) and ctx.settings.admin_channel:
        why = ("the account's OUs could not be looked up and no approver is named for the account itself"
               if ous is None else "the policy names no approver (with an email) for this account")
        entries.append(_entry(f"{key}:{ctx.settings.admin_channel}", m.approvers_missing(view, why),
                              ctx.settings.admin_channel, int(row["id"])))
    return entries


def close_key(target_id: int) -> str:
    """The dedup key of the update that closes approval message `target_id` (one per message, ever)."""
    return f"closed:{target_id}"


def _close_pending(runtime: Runtime, ctx: _Context, row: Any, outcome: str, by: str | None,
                   reason: str | None) -> list[outbox.Entry]:
    """An update per approval message of the request (posted, or not yet: the sender waits for it), so every
    approver sees the outcome in place of the buttons."""
    with runtime.engine.connect() as conn:
        asked = outbox.rows(conn, outbox_table.c.kind == m.REQUEST_PENDING,
                            outbox_table.c.request_id == int(row["id"]),
                            outbox_table.c.state.in_((outbox.PENDING, outbox.SENT)))
    if not asked:
        return []
    message = m.request_pending_closed(outcome, ctx.view(row), by=by, reason=reason)
    return [outbox.Entry(close_key(int(target["id"])), m.REQUEST_PENDING_CLOSED, target["recipient"],
                         {**message.payload(), "target": int(target["id"])}, int(row["id"])) for target in asked]


def closed_by_click(engine: sa.Engine, request_id: int, channel: str | None, ts: str | None, text: str, *,
                    at: datetime) -> int:
    """The approval message a Slack click already replaced with its outcome (web/apps.py): its update is recorded
    as done, so the notifier leaves that message as the click left it (the other approvers' are still closed).
    Returns how many messages it recorded."""
    if not channel or not ts:
        return 0
    with engine.begin() as conn:
        clicked = outbox.rows(conn, outbox_table.c.kind == m.REQUEST_PENDING, outbox_table.c.request_id == request_id,
                              outbox_table.c.slack_channel == channel, outbox_table.c.slack_ts == ts)
        keys = [close_key(int(target["id"])) for target in clicked]
        outbox.enqueue(conn, [outbox.Entry(close_key(int(target["id"])), m.REQUEST_PENDING_CLOSED,
                                           target["recipient"], {"text": text, "target": int(target["id"]),
                                                                 "closed_by": "slack click"}, request_id,
                                           state=outbox.SENT) for target in clicked], now=at)
        if keys:  # also when the notifier enqueued it first, unless a sender is updating it right now
            conn.execute(sa.update(outbox_table).where(
                outbox_table.c.dedup_key.in_(keys),
                sa.or_(sa.and_(outbox_table.c.state == outbox.SENT, outbox_table.c.slack_ts.is_(None)),
                       sa.and_(outbox_table.c.state == outbox.PENDING,
                               sa.or_(outbox_table.c.claimed_until.is_(None), outbox_table.c.claimed_until < at))),
            ).values(state=outbox.SENT, sent_at=at, slack_channel=channel, slack_ts=ts, claimed_by=None,
                     claimed_until=None, last_error=None))
    return len(keys)


def _trouble(ctx: _Context, key: str, kind: str, row: Any, reason: str | None) -> list[outbox.Entry]:
    view, request_id = ctx.view(row), int(row["id"])
    entries = [_to_person(key, m.trouble(kind, view, reason=reason, for_admins=False), row["requester"],
                          request_id, ctx)]
    admin = ctx.settings.admin_channel
    if admin:
        entries.append(_entry(f"{key}:{admin}", m.trouble(kind, view, reason=reason, for_admins=True), admin,
                              request_id))
    return entries


# --- overdue revokes, ending soon -----------------------------------------------------------------------------


def _overdue(runtime: Runtime, ctx: _Context, summary: ProduceSummary) -> None:
    with runtime.engine.connect() as conn:
        beat = conn.execute(sa.select(heartbeats).where(heartbeats.c.job == REVOCATIONS_JOB)).mappings().first()
    if beat is None or beat["outcome"] != "overdue" or not beat["detail"]:
        return
    try:
        overdue = [int(item) for item in json.loads(beat["detail"]).get("overdue") or ()]
    except (ValueError, TypeError, AttributeError):
        return
    entries = []
    for request_id in overdue:
        with runtime.engine.connect() as conn:
            row = queue.get_request(conn, request_id)
        if row is not None:
            reason = f"{row['status_reason'] or 'not removed'} (checked {beat['last_run_at']:%Y-%m-%d %H:%M} UTC)"
            entries.extend(_trouble(ctx, f"overdue:{request_id}", m.REVOKE_OVERDUE, row, reason))
    _enqueue(runtime, entries, summary)


def _ending_soon(runtime: Runtime, ctx: _Context, summary: ProduceSummary) -> None:
    now, window = runtime.now(), ctx.settings.ending_soon
    with runtime.engine.connect() as conn:
        active = queue.requests_in(conn, [Status.ACTIVE])
    entries = []
    for row in active:
        end, granted = row["end_at"], row["granted_at"]
        if not isinstance(end, datetime) or not (now < end <= now + window):
            continue
        if isinstance(granted, datetime) and end - granted <= window:
            continue  # a session shorter than the warning: the activation message said when it ends
        left = timedelta(minutes=max(1, round((end - now).total_seconds() / 60)))
        message = m.session_ending_soon(ctx.view(row), left)
        entries.append(_to_person(f"ending:{row['id']}", message, row["requester"], int(row["id"]), ctx))
    _enqueue(runtime, entries, summary)


def _enqueue(runtime: Runtime, entries: list[outbox.Entry], summary: ProduceSummary) -> None:
    if entries:
        with runtime.engine.begin() as conn:
            summary.enqueued += outbox.enqueue(conn, entries, now=runtime.now())


# --- the audit --------------------------------------------------------------------------------------------------


def report_link(runtime: Runtime, request_id: int, stored: str | None) -> str | None:
    """The session report's address: `<audit_base_url>/sessions/<id>.html` (falling back to `audit.base_url`),
    else where the audit wrote it."""
    base = runtime.config.notifications.audit_base_url or runtime.config.audit.base_url
    if base:
        return f"{base.rstrip('/')}/sessions/{request_id}.html"
    return stored


def _audit_view(runtime: Runtime, conn: sa.Connection, audit: Any) -> m.AuditView:
    try:
        counts = {str(k): int(v) for k, v in json.loads(audit["findings"] or "{}").items() if int(v)}
    except (ValueError, TypeError, AttributeError):
        counts = {}
    found = list(conn.execute(sa.select(findings_sent.c.rule_id, findings_sent.c.severity)
                              .where(findings_sent.c.request_id == audit["request_id"])).mappings())
    found.sort(key=lambda f: (SEVERITY_RANK.get(f["severity"], 99), f["rule_id"]))
    worst: list[tuple[str, str]] = []
    for finding in found:
        if finding["rule_id"] not in {rule_id for _, rule_id in worst}:
            worst.append((finding["severity"], finding["rule_id"]))
    worst = worst[:3]
    titles = rule_titles(runtime.config.audit, [rule_id for _, rule_id in worst]) if worst else {}
    top = [m.FindingItem(severity, _rule_title(rule_id, titles)) for severity, rule_id in worst]
    return m.AuditView(counts, top, report_link(runtime, int(audit["request_id"]), audit["report"]),
                       int(audit["events"] or 0), audit["night"])


def _rule_title(rule_id: str, titles: dict[str, str]) -> str:
    """The rule's title (Sigma rule ids are UUIDs nobody reads); else the id, made readable."""
    return titles.get(rule_id) or rule_id.replace("_", " ")


def _audits(runtime: Runtime, ctx: _Context, summary: ProduceSummary, first_run: bool) -> None:
    with runtime.engine.connect() as conn:
        waiting = list(conn.execute(
            sa.select(audits).where(audits.c.finalized_at.is_not(None), audits.c.announced_at.is_(None))
            .order_by(audits.c.request_id)
        ).mappings())
    cutoff = runtime.now() - ctx.settings.first_run_lookback
    for audit in waiting:
        request_id = int(audit["request_id"])
        # Built first (looking up names may write the AWS call log), enqueued with `announced_at` in one transaction.
        entries: list[outbox.Entry] = []
        with runtime.engine.connect() as conn:
            row = queue.get_request(conn, request_id)
            result = _audit_view(runtime, conn, audit)
        if row is not None and not (first_run and audit["finalized_at"] < cutoff):
            entries = _audit_entries(ctx, row, result)
        with runtime.engine.begin() as conn:
            announced = conn.execute(
                sa.update(audits).where(audits.c.request_id == request_id, audits.c.announced_at.is_(None))
                .values(announced_at=runtime.now())
            ).rowcount
            if announced:  # another producer announced it meanwhile: nothing to add
                summary.enqueued += outbox.enqueue(conn, entries, now=runtime.now())
                summary.audits += 1 if entries else 0


def _audit_entries(ctx: _Context, row: Any, result: m.AuditView) -> list[outbox.Entry]:
    """The requester, and the approver (the security channel when no person approved)."""
    request_id, policy = int(row["id"]), ctx.runtime.policy
    view, key = ctx.view(row), f"audit:{row['id']}"
    entries = [_to_person(key, m.audit_result(view, result, to_requester=True), row["requester"], request_id, ctx)]
    theirs = m.audit_result(view, result, to_requester=False)
    approver = row["decided_by"]
    if row["auto_approval_rule"] or not approver or approver.startswith(("policy:", "dag:")):
        channel = ctx.settings.security_channel
        if channel:
            entries.append(_entry(f"{key}:{channel}", theirs, channel, request_id))
    elif policy.person(approver) is None or policy.person(approver) != policy.person(row["requester"]):
        entries.append(_to_person(key, theirs, approver, request_id, ctx))
    return entries


# --- the nightly digest -----------------------------------------------------------------------------------------


def _digests(runtime: Runtime, ctx: _Context, summary: ProduceSummary, first_run: bool,
             drift: Callable[[Runtime], m.DigestDrift | None] | None = None) -> None:
    channel = ctx.settings.security_channel
    if not channel:
        return
    now = runtime.now()
    since = now - (ctx.settings.first_run_lookback if first_run else timedelta(days=3))
    with runtime.engine.connect() as conn:
        nights = list(conn.execute(
            sa.select(audits.c.night, sa.func.max(audits.c.audited_at).label("last"))
            .group_by(audits.c.night).order_by(audits.c.night)
        ).mappings())
        done = set(conn.execute(sa.select(outbox_table.c.dedup_key)
                                .where(outbox_table.c.dedup_key.like("digest:%"))).scalars())
    for night in nights:
        last = night["last"]
        key = f"digest:{night['night']}"
        if key in done or not isinstance(last, datetime) or last < since or last > now - ctx.settings.digest_after:
            continue
        message = _digest(runtime, ctx, night["night"], drift or _drift)
        with runtime.engine.begin() as conn:
            summary.enqueued += outbox.enqueue(conn, [_entry(key, message, channel, None)], now=now)
        summary.digests.append(night["night"])


def _digest(runtime: Runtime, ctx: _Context, night: str,
            drift: Callable[[Runtime], m.DigestDrift | None]) -> m.Message:
    with runtime.engine.connect() as conn:
        rows = list(conn.execute(
            sa.select(audits, requests.c.requester, requests.c.permission_set, requests.c.account_id)
            .join(requests, requests.c.id == audits.c.request_id).where(audits.c.night == night)
            .order_by(audits.c.request_id)
        ).mappings())
    sessions = []
    for row in rows:
        try:
            counts = {str(k): int(v) for k, v in json.loads(row["findings"] or "{}").items() if int(v)}
        except (ValueError, TypeError, AttributeError):
            counts = {}
        account = ctx.account_name(str(row["account_id"])) or str(row["account_id"])
        sessions.append(m.DigestSession(int(row["request_id"]), row["requester"],
                                        f"{row['permission_set']} on {account}", row["worst"] if counts else None,
                                        counts, report_link(runtime, int(row["request_id"]), row["report"])))
    requesters = {int(row["request_id"]): str(row["requester"]) for row in rows}
    return m.nightly_digest(night, sessions, drift(runtime), _worst_findings(runtime, requesters))


def _worst_findings(runtime: Runtime, requesters: dict[int, str]) -> list[m.DigestFinding]:
    """The night's worst findings: per session and rule, how many, most severe first (then the most frequent).
    From `elevation_finding`, which holds every finding of a session whose audit is final."""
    if not requesters:
        return []
    count = sa.func.count().label("count")
    with runtime.engine.connect() as conn:
        grouped = list(conn.execute(
            sa.select(findings_sent.c.request_id, findings_sent.c.rule_id, findings_sent.c.severity, count)
            .where(findings_sent.c.request_id.in_(list(requesters)))
            .group_by(findings_sent.c.request_id, findings_sent.c.rule_id, findings_sent.c.severity)
        ).mappings())
    grouped.sort(key=lambda f: (SEVERITY_RANK.get(f["severity"], 99), -int(f["count"]), int(f["request_id"]),
                                f["rule_id"]))
    worst = grouped[:DIGEST_FINDINGS]
    titles = rule_titles(runtime.config.audit, {f["rule_id"] for f in worst}) if worst else {}
    return [m.DigestFinding(f["severity"], _rule_title(f["rule_id"], titles), int(f["request_id"]),
                            requesters[int(f["request_id"])], int(f["count"])) for f in worst]


def _drift(runtime: Runtime) -> m.DigestDrift | None:
    """Open drift items, from the reconcile report's overview (with its link) or the table itself."""
    try:
        from elevation.access.reconcile_report import drift_overview

        overview = drift_overview(runtime)
        return m.DigestDrift(overview.open_items, dict(overview.by_kind), overview.latest_report)
    except Exception as error:
        log.warning("drift overview unavailable (%s); counting open drift items from the table", error)
    try:
        from elevation.store import drift as drift_store

        with runtime.engine.connect() as conn:
            items = drift_store.open_items(conn)
        kinds: dict[str, int] = {}
        for item in items:
            kinds[item["kind"]] = kinds.get(item["kind"], 0) + 1
        return m.DigestDrift(len(items), kinds)
    except Exception as error:
        log.warning("drift items unavailable: %s", error)
        return None
