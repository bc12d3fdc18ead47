"""What each Slack message says: a one-line `text` (the notification preview on a phone) and Block Kit blocks.

Pure: built from plain values, no I/O, so each kind is tested directly. Everything that comes from people or
events (requester, justification, ticket, reasons, names of accounts and rules) goes through :func:`escape`, so a
justification can never mention `<!channel>`, `<!here>`, `<@U...>` or make a link: Slack only reads `<...>` as a
control sequence, and `&lt;` / `&gt;` are shown as the characters. A bare `@channel`, `@here` or `@everyone` is
only a mention when a message is posted with `link_names` or `parse=full` (the sender never uses either); as a
second guard, :func:`escape` puts an invisible word joiner after the `@`, so no parser of Slack's can match it.
Every mrkdwn text object is `verbatim`: Slack then does no automatic parsing of its own (auto-linked URLs and
channel names, "certain mentions"), yet still reads the markup and the control sequences the builders write
themselves (`<https://...|Open the report>`): Block Kit's text object reference says so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

# --- the kinds ----------------------------------------------------------------------------------------------

REQUEST_PENDING = "request_pending"  # to each approver the policy names for the account
REQUEST_APPROVED = "request_approved"  # to the requester (who, why)
REQUEST_REJECTED = "request_rejected"
REQUEST_EXPIRED = "request_expired"
REQUEST_CANCELLED = "request_cancelled"
SESSION_ACTIVE = "session_active"  # to the requester
SESSION_ENDING_SOON = "session_ending_soon"
SESSION_ENDED = "session_ended"
SESSION_REVOKED = "session_revoked"  # ended early (who, why)
GRANT_FAILED = "grant_failed"  # to the requester and the admin channel
REVOKE_FAILED = "revoke_failed"
REVOKE_OVERDUE = "revoke_overdue"
AUDIT_RESULT = "audit_result"  # to the requester and the approver (auto-approved: the security channel)
NIGHTLY_DIGEST = "nightly_digest"  # to the security channel
APPROVERS_MISSING = "approvers_missing"  # to the admin channel: a pending request nobody can be told about
#: Not a new message: replaces a posted `request_pending` message (chat.update) once the request is decided.
REQUEST_PENDING_CLOSED = "request_pending_closed"

KINDS: tuple[str, ...] = (
    REQUEST_PENDING, REQUEST_APPROVED, REQUEST_REJECTED, REQUEST_EXPIRED, REQUEST_CANCELLED, SESSION_ACTIVE,
    SESSION_ENDING_SOON, SESSION_ENDED, SESSION_REVOKED, GRANT_FAILED, REVOKE_FAILED, REVOKE_OVERDUE, AUDIT_RESULT,
    NIGHTLY_DIGEST, APPROVERS_MISSING, REQUEST_PENDING_CLOSED,
)

APPROVE_ACTION_ID = "elevation_approve"
REJECT_ACTION_ID = "elevation_reject"

#: Slack allows 3000 characters in a section's text; long free text is cut well before (on a phone, too).
MAX_FREE_TEXT = 1200
SEVERITY_ORDER = ("critical", "high", "medium", "low", "informational")
SEVERITY_MARK = {"critical": ":red_circle:", "high": ":large_orange_circle:", "medium": ":large_yellow_circle:",
                 "low": ":white_circle:", "informational": ":white_circle:"}


_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
#: A bare broadcast word (`@channel`, `@here`, `@everyone`, and `@group`, Slack's old synonym of `@channel`) wherever
#: it is not glued to a letter or digit: after punctuation too (`_@channel_` is italic @channel, `x.@here`,
#: `-@everyone`, `+@here`), so no formatting around it can make a mention of it. An email address keeps its `@` after
#: a letter or digit (`ops@here.example` stays as it is, copyable), and `@hereford` is not a broadcast.
_BROADCAST = re.compile(r"(?<![A-Za-z0-9])@(?=(?:channel|here|everyone|group)(?![A-Za-z0-9]))", re.IGNORECASE)
WORD_JOINER = "\u2060"  # invisible, keeps `@` and the word together on screen, and no longer one token


def escape(value: object, limit: int | None = None) -> str:
    """Text from people or events, made inert for Slack mrkdwn: `&`, `<`, `>` become `&amp;`, `&lt;`, `&gt;`, and a
    bare `@channel` / `@here` / `@everyone` gets a word joiner after its `@` (shown the same, never a mention).
    With `limit`, the escaped text is at most that long (cut with `…`, never inside an entity)."""
    text = _BROADCAST.sub("@" + WORD_JOINER, "" if value is None else str(value))
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if limit is None or len(escaped) <= limit:
        return escaped
    pieces, size = [], 0
    for char in text:
        piece = _ENTITIES.get(char, char)
        if size + len(piece) > limit - 1:
            break
        pieces.append(piece)
        size += len(piece)
    return "".join(pieces) + "…"


@dataclass(frozen=True)
class Message:
    kind: str
    text: str
    blocks: list[dict[str, Any]]

    def payload(self) -> dict[str, Any]:
        return {"text": self.text, "blocks": self.blocks}


@dataclass(frozen=True)
class RequestView:
    """What messages say about a request (from its row, the account's name from Organizations when known)."""

    id: int
    requester: str
    account_id: str
    permission_set: str
    duration_minutes: int
    account_name: str | None = None
    principal_group: str | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    justification: str | None = None
    ticket: str | None = None
    decided_by: str | None = None
    auto_approval_rule: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any], account_name: str | None = None) -> RequestView:
        def when(value: Any) -> datetime | None:
            return value if isinstance(value, datetime) else None

        return cls(
            id=int(row["id"]), requester=str(row["requester"]), account_id=str(row["account_id"]),
            permission_set=str(row["permission_set"]), duration_minutes=int(row["duration_minutes"] or 0),
            account_name=account_name, principal_group=row.get("principal_group"), start_at=when(row.get("start_at")),
            end_at=when(row.get("end_at")), justification=row.get("justification"), ticket=row.get("ticket"),
            decided_by=row.get("decided_by"), auto_approval_rule=row.get("auto_approval_rule"),
        )

    @property
    def account(self) -> str:
        """`name (id)`, escaped."""
        if self.account_name:
            return f"{escape(self.account_name)} ({escape(self.account_id)})"
        return escape(self.account_id)

    @property
    def title(self) -> str:
        return f"{escape(self.permission_set)} on {self.account}"

    def window(self) -> str:
        start = self.start_at
        end = self.end_at or (start + timedelta(minutes=self.duration_minutes) if start else None)
        length = _length(timedelta(minutes=self.duration_minutes))
        if start is None:
            return f"{length}, from when it is granted"
        return f"{_time(start)} → {_time(end) if end else '?'} ({length})"


def _time(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _length(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    if hours and minutes:
        return f"{hours}h{minutes:02d}m"
    return f"{hours}h" if hours else f"{minutes}m"


def mrkdwn(text: str) -> dict[str, Any]:
    """A mrkdwn text object Slack takes as written: `verbatim`, so it parses no mention or link on its own (with
    `verbatim` false, its default, it auto-links URLs and channel names and parses certain mentions); the markup
    and the `<...>` sequences the builders write themselves still work."""
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": mrkdwn(text)}


def _fields(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return {"type": "section", "fields": [mrkdwn(f"*{label}*\n{value}") for label, value in pairs]}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [mrkdwn(text)]}


def _request_fields(view: RequestView) -> dict[str, Any]:
    pairs = [("Requester", escape(view.requester)), ("Account", view.account),
             ("Permission set", escape(view.permission_set)), ("Window", view.window())]
    if view.principal_group:
        pairs.append(("For group", escape(view.principal_group)))
    if view.ticket:
        pairs.append(("Ticket", escape(view.ticket, 200)))
    return _fields(pairs)


def _request_id(view: RequestView) -> dict[str, Any]:
    return _context(f"Request {view.id}")


# --- requests -----------------------------------------------------------------------------------------------


def request_pending(view: RequestView) -> Message:
    """To an approver: everything needed to decide from a phone, and the two buttons."""
    text = f"{escape(view.requester)} asks for {view.title} ({_length(timedelta(minutes=view.duration_minutes))})"
    blocks = [
        section(f":key: *Access request {view.id} needs your decision*\n{text}"),
        _request_fields(view),
        section(f"*Justification*\n{escape(view.justification or '(none given)', MAX_FREE_TEXT)}"),
        {
            "type": "actions",
            "block_id": f"elevation_decision_{view.id}",
            "elements": [
                {"type": "button", "action_id": APPROVE_ACTION_ID, "value": str(view.id), "style": "primary",
                 "text": {"type": "plain_text", "text": "Approve"}},
                {"type": "button", "action_id": REJECT_ACTION_ID, "value": str(view.id), "style": "danger",
                 "text": {"type": "plain_text", "text": "Reject"}},
            ],
        },
        _context(f"Request {view.id} · or decide with `elevation approve {view.id}` / `elevation reject {view.id}`"),
    ]
    return Message(REQUEST_PENDING, f"Access request {view.id}: {text}", blocks)


_DECISIONS = {
    REQUEST_APPROVED: (":white_check_mark:", "approved"),
    REQUEST_REJECTED: (":no_entry:", "rejected"),
    REQUEST_EXPIRED: (":hourglass:", "expired"),
    REQUEST_CANCELLED: (":heavy_multiplication_x:", "cancelled"),
}


def request_decided(kind: str, view: RequestView, *, by: str | None, reason: str | None) -> Message:
    """To the requester: approved / rejected / expired / cancelled, with who and why."""
    mark, word = _DECISIONS[kind]
    who = _who(by)
    headline = f"Your request for {view.title} was {word}{f' by {who}' if who else ''}"
    blocks = [section(f"{mark} *{headline}*")]
    if reason:
        blocks.append(section(f"*Why*\n{escape(reason, MAX_FREE_TEXT)}"))
    if kind == REQUEST_APPROVED:
        blocks.append(_fields([("Window", view.window())]))
    blocks.append(_request_id(view))
    return Message(kind, f"{headline}.", blocks)


_OUTCOMES = {
    REQUEST_APPROVED: (":white_check_mark:", "Approved"),
    REQUEST_REJECTED: (":no_entry:", "Rejected"),
    REQUEST_EXPIRED: (":hourglass:", "Expired"),
    REQUEST_CANCELLED: (":heavy_multiplication_x:", "Cancelled"),
}


def request_pending_closed(kind: str, view: RequestView, *, by: str | None, reason: str | None) -> Message:
    """What an approver's `request_pending` message becomes once the request is decided, wherever it was decided:
    the same facts, the outcome, and no buttons left to press."""
    mark, word = _OUTCOMES[kind]
    who = _who(by)
    outcome = f"{word}{f' by {who}' if who else ''}"
    text = f"Access request {view.id} was {word.lower()}{f' by {who}' if who else ''}"
    asked = f"{escape(view.requester)} asked for {view.title} ({_length(timedelta(minutes=view.duration_minutes))})"
    blocks = [
        section(f":key: *Access request {view.id}*\n{asked}"),
        _request_fields(view),
        section(f"*Justification*\n{escape(view.justification or '(none given)', MAX_FREE_TEXT)}"),
        section(f"{mark} *{outcome}*" + (f"\n{escape(reason, MAX_FREE_TEXT)}" if reason else "")),
        _context(f"Request {view.id} · decided, nothing left to do here"),
    ]
    return Message(REQUEST_PENDING_CLOSED, text, blocks)


def _who(actor: str | None) -> str:
    """A person, or what acted for the system (`policy:<rule>` for auto-approval, a DAG run, the clock)."""
    if not actor:
        return ""
    if actor.startswith("policy:"):
        return f"policy rule {escape(actor.removeprefix('policy:'))}"
    if actor.startswith("dag:"):
        return "the system"
    return escape(actor)


# --- sessions -----------------------------------------------------------------------------------------------


def session_active(view: RequestView) -> Message:
    until = f" until {_time(view.end_at)}" if view.end_at else ""
    headline = f"Your access is active: {view.title}{until}"
    blocks = [
        section(f":unlock: *{headline}*"),
        section("Sign in through the AWS access portal; the assignment is removed when the window ends."),
        _request_id(view),
    ]
    return Message(SESSION_ACTIVE, headline, blocks)


def session_ending_soon(view: RequestView, left: timedelta) -> Message:
    end = f" (at {_time(view.end_at)})" if view.end_at else ""
    headline = f"Your access to {view.title} ends in {_length(left)}{end}"
    blocks = [section(f":alarm_clock: *{headline}*"),
              section("Save your work; file a new request if you need more time."), _request_id(view)]
    return Message(SESSION_ENDING_SOON, headline, blocks)


def session_over(view: RequestView, *, revoked: bool, by: str | None, reason: str | None) -> Message:
    if revoked:
        who = _who(by)
        headline = f"Your access to {view.title} was revoked early{f' by {who}' if who else ''}"
        kind, mark = SESSION_REVOKED, ":lock:"
    else:
        headline = f"Your access to {view.title} has ended"
        kind, mark = SESSION_ENDED, ":lock:"
    blocks = [section(f"{mark} *{headline}*")]
    if reason:
        blocks.append(section(f"*{'Why' if revoked else 'Detail'}*\n{escape(reason, MAX_FREE_TEXT)}"))
    blocks.append(_context(f"Request {view.id} · the session's audit report follows after the nightly audit"))
    return Message(kind, f"{headline}.", blocks)


_TROUBLE = {
    GRANT_FAILED: (":x:", "could not be granted", "AWS did not confirm the assignment. Nothing was given."),
    REVOKE_FAILED: (":warning:", "could not be removed yet",
                    "The revocation keeps being retried every minute."),
    REVOKE_OVERDUE: (":rotating_light:", "outlives its window",
                     "The assignment should be gone and is not (or not confirmed): an operator must look now."),
}


def trouble(kind: str, view: RequestView, *, reason: str | None, for_admins: bool) -> Message:
    """Grant failed, revoke failed, revoke overdue: to the requester and (with the request's facts) the admins."""
    mark, what, explain = _TROUBLE[kind]
    if for_admins:
        headline = f"Request {view.id}: {view.title} for {escape(view.requester)} {what}"
    else:
        headline = f"Your access to {view.title} {what}"
    blocks = [section(f"{mark} *{headline}*"), section(explain)]
    if reason:
        blocks.append(section(f"*Error*\n{escape(reason, MAX_FREE_TEXT)}"))
    if for_admins:
        blocks.append(_request_fields(view))
    blocks.append(_request_id(view))
    return Message(kind, headline, blocks)


def approvers_missing(view: RequestView, why: str) -> Message:
    headline = f"Request {view.id} ({view.title} for {escape(view.requester)}) is pending and no approver can be told"
    blocks = [section(f":warning: *{headline}*"), section(escape(why, MAX_FREE_TEXT)), _request_fields(view)]
    return Message(APPROVERS_MISSING, headline, blocks)


# --- the audit ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FindingItem:
    severity: str
    rule: str
    detail: str | None = None


@dataclass(frozen=True)
class AuditView:
    findings: Mapping[str, int]  # severity -> count
    top: Sequence[FindingItem] = ()  # the worst few
    link: str | None = None  # the report (an http(s) URL becomes a link; anything else is shown as text)
    events: int = 0
    night: str | None = None


def _report(link: str | None) -> str:
    if not link:
        return "No report link (set `notifications.audit_base_url` or `audit.base_url`)."
    if link.startswith(("https://", "http://")) and not any(c in link for c in "<>|"):
        return f"<{link}|Open the report>"
    return f"Report: `{escape(link)}`"


def _severity_line(findings: Mapping[str, int]) -> str:
    return ", ".join(f"{findings[s]} {s}" for s in SEVERITY_ORDER if findings.get(s))


def audit_result(view: RequestView, audit: AuditView, *, to_requester: bool) -> Message:
    """A session's final audit: no findings, or findings by severity with the top three and a link."""
    total = sum(audit.findings.values())
    subject = f"your session {view.title}" if to_requester else f"{escape(view.requester)}'s session {view.title}"
    if not total:
        headline = f"Audit of {subject}: no findings"
        blocks = [section(f":white_check_mark: *{headline}*"),
                  section(f"{audit.events} CloudTrail events were checked. {_report(audit.link)}")]
        return Message(AUDIT_RESULT, headline, [*blocks, _request_id(view)])
    worst = next(s for s in SEVERITY_ORDER if audit.findings.get(s))
    headline = f"Audit of {subject}: {total} finding{'s' if total != 1 else ''} ({_severity_line(audit.findings)})"
    lines = [f"{SEVERITY_MARK.get(item.severity, '')} *{escape(item.severity)}* {escape(item.rule, 200)}"
             + (f" — {escape(item.detail, 200)}" if item.detail else "") for item in list(audit.top)[:3]]
    blocks = [section(f"{SEVERITY_MARK.get(worst, '')} *{headline}*")]
    if lines:
        blocks.append(section("*Top findings*\n" + "\n".join(lines)))
    blocks.append(section(_report(audit.link)))
    blocks.append(_request_id(view))
    return Message(AUDIT_RESULT, headline, blocks)


@dataclass(frozen=True)
class DigestSession:
    request_id: int
    requester: str
    title: str  # `permission set on account`, raw (escaped here)
    worst: str | None
    findings: Mapping[str, int]
    link: str | None = None


@dataclass(frozen=True)
class DigestFinding:
    """One rule's findings in one session (the digest names the worst few)."""

    severity: str
    title: str  # the rule's title, raw (escaped here)
    request_id: int
    requester: str
    count: int = 1


@dataclass(frozen=True)
class DigestDrift:
    open_items: int = 0
    by_kind: Mapping[str, int] = field(default_factory=dict)
    latest_report: str | None = None


def nightly_digest(night: str, sessions: Sequence[DigestSession], drift: DigestDrift | None,
                   findings: Sequence[DigestFinding] = ()) -> Message:
    """To the security channel after the night's audit: sessions audited, the worst ones, the worst findings (what
    happened, not only how bad: rule, severity, session, how many), open drift."""
    with_findings = [s for s in sessions if sum(s.findings.values())]
    totals: dict[str, int] = {}
    for session in sessions:
        for severity, count in session.findings.items():
            totals[severity] = totals.get(severity, 0) + count
    headline = (f"Nightly audit {escape(night)}: {len(sessions)} session{'s' if len(sessions) != 1 else ''} audited, "
                f"{len(with_findings)} with findings")
    blocks = [section(f":shield: *{headline}*")]
    if totals:
        blocks.append(section(f"*Findings*: {_severity_line(totals)}"))
    rank = {s: i for i, s in enumerate(SEVERITY_ORDER)}
    worst = sorted(with_findings, key=lambda s: (rank.get(s.worst or "", 99), -sum(s.findings.values())))[:5]
    if worst:
        lines = []
        for s in worst:
            title = f"{escape(s.requester)} · {escape(s.title, 200)}"
            link = f" · {_report(s.link)}" if s.link else ""
            lines.append(f"{SEVERITY_MARK.get(s.worst or '', '')} request {s.request_id}: {title} "
                         f"({_severity_line(s.findings)}){link}")
        blocks.append(section("*Worst sessions*\n" + "\n".join(lines)))
    if findings:
        lines = [f"{SEVERITY_MARK.get(f.severity, '')} *{escape(f.severity)}* {escape(f.title, 200)}"
                 f"{f' ×{f.count}' if f.count > 1 else ''} · request {f.request_id} ({escape(f.requester)})"
                 for f in findings]
        blocks.append(section("*Worst findings*\n" + "\n".join(lines)))
    if drift is not None:
        if drift.open_items:
            kinds = ", ".join(f"{count} {escape(kind)}" for kind, count in sorted(drift.by_kind.items()))
            text = f"*Drift*: {drift.open_items} open item{'s' if drift.open_items != 1 else ''} ({kinds})"
            if drift.latest_report:
                text += f" · {_report(drift.latest_report)}"
        else:
            text = "*Drift*: none open"
        blocks.append(section(text))
    return Message(NIGHTLY_DIGEST, headline, blocks)
