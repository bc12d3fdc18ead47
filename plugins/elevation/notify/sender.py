"""Deliver the outbox through Slack: the provider's `SlackHook` (its `client` is a slack_sdk WebClient).

A DM goes to the person's Slack user, found with `users.lookupByEmail`; a channel message to `#name` or a channel
id. Slack's `ts` and channel are recorded on the row. What Slack answers decides what happens next:

- HTTP 429: the row (and the rest of this run's rows) waits until `Retry-After`; not counted as an attempt;
- HTTP 5xx, network errors, Slack's own `internal_error` / `fatal_error` / `service_unavailable` / auth errors:
  retried later with backoff (`retry_initial`, doubling, up to `retry_max`), attempts counted; after
  `max_attempts` the row is `failed`;
- the person is not in Slack (`users_not_found`): `skipped`, with a warning; the others are sent;
- any other refusal (`channel_not_found`, `not_in_channel`, `invalid_blocks`, ...): `failed` with Slack's error.

The sender never raises for Slack problems: an outage leaves rows pending. Each run ends with the heartbeat
`elevation_notify` (outcome `ok`, or `stuck` with the ids of messages pending longer than `stuck_after` or
failed in the last day, or `error` when Slack could not even be configured).

**Exactly once, even across a crash.** Just before `chat.postMessage` one UPDATE renews this sender's claim and
sets `sending_at` (its first attempt; kept on later ones), in its own transaction; when it matches nothing (this
run outlived its lease and another sender took the row over) the message is not posted. Every message carries
Slack message metadata naming its `dedup_key` and this installation's random id (`install.install_id`:
`{"event_type": "elevation_outbox", "event_payload": {"key": ..., "install": ...}}`), because keys repeat across
deployments. A row found pending with `sending_at` set may or may not have reached Slack (the worker died between
Slack's answer and recording it, the answer was lost, a 5xx came after the post), so before posting again the
sender reads the conversation from shortly before `sending_at` (`conversations.history` with
`include_all_metadata`; a DM's conversation is the bot's IM with the person, from `conversations.open`) and records
the message it finds instead of posting a second one. Only a message with both the key and the install id, posted
by our own bot (its `bot_id`, or `app_id`, as `auth.test` names them: asked once per run, when a look-up is
needed), is ours. When Slack cannot answer the look-up now (429, 5xx, a network error, `internal_error`...), the
row waits like any transient error and is looked for again; at its last attempt it is posted again instead. When
the look-up is refused (a scope missing, `not_in_channel`, `channel_not_found`, a `#name` channel nobody has posted
to yet, so its id is unknown, a token that is not a bot's), the message is posted again: **a duplicate is better
than a lost alert** (a revoke overdue or an audit with findings must arrive); a warning says so.

**Approval messages follow the decision.** A `request_pending` message is not posted when its request is no longer
pending (it is `skipped`, nothing to ask). A `request_pending_closed` row (the producer makes one per approval
message when the request is decided, wherever it was decided) replaces that message with the outcome through
`chat.update` once the message has been posted, so its buttons go; it waits while the message is still pending
and is skipped when the message was never posted. `chat.update` sets the same content however often it runs, so a
retried update cannot show anything twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from elevation.notify import messages as m
from elevation.notify.install import install_id
from elevation.notify.settings import NotifySettings
from elevation.runtime import Runtime
from elevation.store import outbox, queue
from elevation.store.tables import outbox as outbox_table

log = logging.getLogger(__name__)

JOB = "elevation_notify"
RETRYABLE_ERRORS = frozenset({
    "internal_error", "fatal_error", "service_unavailable", "request_timeout", "ratelimited",
    "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "team_access_not_granted",
})
NOT_FOUND_ERRORS = frozenset({"users_not_found", "user_not_found"})
DEFAULT_RETRY_AFTER = 30
#: How long a claim lasts; renewed before each message, so a slow run never sends a row another sender took over.
LEASE = timedelta(minutes=5)
#: Slack message metadata naming the outbox row a message delivers (found again with conversations.history).
METADATA_EVENT_TYPE = "elevation_outbox"
#: How far before `sending_at` the conversation is read (Slack's clock and ours may differ a little).
HISTORY_MARGIN = timedelta(minutes=5)
HISTORY_PAGE = 200
HISTORY_PAGES = 10  # then it is not looked for further: posted again (a duplicate rather than a loss)


@dataclass
class SendSummary:
    sent: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    retrying: list[int] = field(default_factory=list)
    rate_limited_until: str | None = None
    error: str | None = None


class _RateLimited(Exception):
    def __init__(self, seconds: float, message: str) -> None:
        super().__init__(message)
        self.seconds = seconds


class _Retry(Exception):
    pass


class _NotFound(Exception):
    pass


class _Refused(Exception):
    pass


class _Moot(Exception):
    """Nothing to deliver any more (a request decided before its approvers were asked, an approval message that was
    never posted): the row is `skipped` with this reason."""


class _Wait(Exception):
    """Not yet: the row waits `seconds` (not counted as an attempt)."""

    def __init__(self, seconds: float, message: str) -> None:
        super().__init__(message)
        self.seconds = seconds


class _TakenOver(Exception):
    """This sender no longer holds the row (its lease ran out and another sender took it, or finished it): it must
    not post it."""


@dataclass(frozen=True)
class _Bot:
    """Who our token posts as (`auth.test`): a message in a conversation is ours only if it shows these."""

    bot_id: str | None
    app_id: str | None


@dataclass
class _Run:
    """What one sender run learns once and uses for every message."""

    install: str  # this installation's id, carried in every message's metadata
    users: dict[str, str | None] = field(default_factory=dict)  # email -> Slack user id (None: not in Slack)
    bot: _Bot | None = None  # asked at the first look-up, not before (most runs look nothing up)


def message_metadata(dedup_key: str, install: str) -> dict[str, Any]:
    """What every posted message carries, so a later attempt can find it in the conversation and tell it from
    another deployment's message with the same key."""
    return {"event_type": METADATA_EVENT_TYPE, "event_payload": {"key": dedup_key, "install": install}}


def slack_client(settings: NotifySettings) -> Any:
    """The provider's hook's WebClient (the connection's `base_url` extra points it at a fake Slack in tests)."""
    from airflow.providers.slack.hooks.slack import SlackHook

    return SlackHook(slack_conn_id=settings.slack_conn_id).client


def run_sender(
    runtime: Runtime, *, client_factory: Callable[[NotifySettings], Any] = slack_client, limit: int = 200
) -> SendSummary:
    settings = runtime.config.notifications
    summary = SendSummary()
    now = runtime.now()
    claimed = outbox.claim_due(runtime.engine, worker=runtime.worker, now=now, lease=LEASE, limit=limit)
    if claimed:
        try:
            client = client_factory(settings)
        except Exception as error:  # no connection, no token: a configuration problem, shown on the heartbeat
            summary.error = f"cannot build the Slack client from connection {settings.slack_conn_id!r}: {error}"
            log.error("%s", summary.error)
            _release_all(runtime, claimed, now, summary.error)
            claimed = []
        run = _Run(install=install_id(runtime.engine, now=now))
        for index, row in enumerate(claimed):
            try:
                _deliver(runtime, client, row, run, summary)
            except _RateLimited as limited:
                until = runtime.now() + timedelta(seconds=limited.seconds)
                summary.rate_limited_until = until.isoformat()
                log.warning("Slack rate limit: %s; %d messages wait until %s", limited, len(claimed) - index, until)
                _postpone(runtime, claimed[index:], until, str(limited))
                break
    _heartbeat(runtime, settings, summary)
    return summary


def _deliver(runtime: Runtime, client: Any, row: queue.Row, run: _Run, summary: SendSummary) -> None:
    settings = runtime.config.notifications
    attempts = int(row["attempts"]) + 1
    body = outbox.payload(row)
    with runtime.engine.begin() as conn:
        held = outbox.hold(conn, row["id"], runtime.worker, now=runtime.now(), lease=LEASE)
    if not held:  # this run outlived its lease and another sender has the row now (or sent it)
        log.warning("message %s (%s) not sent by %s: another sender holds it now", row["id"], row["kind"],
                    runtime.worker)
        return
    try:
        if row["kind"] == m.REQUEST_PENDING_CLOSED:
            channel, ts = _update(runtime, client, row, body)
        else:
            channel, ts = _post(runtime, client, row, body, run, attempts)
    except _TakenOver:
        log.warning("message %s (%s) not sent by %s: another sender took it over (this run outlived its lease)",
                    row["id"], row["kind"], runtime.worker)
        return
    except _Moot as moot:
        with runtime.engine.begin() as conn:
            outbox.mark_skipped(conn, row["id"], runtime.worker, attempts=int(row["attempts"]), reason=str(moot))
        log.info("message %s (%s) skipped: %s", row["id"], row["kind"], moot)
        summary.skipped.append(row["id"])
        return
    except _Wait as wait:
        with runtime.engine.begin() as conn:
            outbox.reschedule(conn, row["id"], runtime.worker, at=runtime.now() + timedelta(seconds=wait.seconds),
                              attempts=int(row["attempts"]), reason=str(wait))
        summary.retrying.append(row["id"])
        return
    except _NotFound as missing:
        with runtime.engine.begin() as conn:
            outbox.mark_skipped(conn, row["id"], runtime.worker, attempts=attempts, reason=str(missing))
        log.warning("message %s (%s) skipped: %s", row["id"], row["kind"], missing)
        summary.skipped.append(row["id"])
        return
    except _Refused as refused:
        with runtime.engine.begin() as conn:
            outbox.mark_failed(conn, row["id"], runtime.worker, attempts=attempts, reason=str(refused))
        log.error("message %s (%s) to %s failed: %s", row["id"], row["kind"], row["recipient"], refused)
        summary.failed.append(row["id"])
        return
    except _Retry as problem:
        _retry_later(runtime, settings, row, attempts, str(problem), summary)
        return
    with runtime.engine.begin() as conn:
        recorded = outbox.mark_sent(conn, row["id"], runtime.worker, at=runtime.now(), channel=channel, ts=ts,
                                    attempts=attempts)
    if recorded:
        summary.sent.append(row["id"])
    else:  # the claim was lost after the post: the row is another sender's now, and it counts it
        log.warning("message %s (%s) was posted (%s %s) but another sender holds its row now", row["id"],
                    row["kind"], channel, ts)


def _post(runtime: Runtime, client: Any, row: queue.Row, body: dict[str, Any], run: _Run,
          attempt: int) -> tuple[str, str]:
    """Post the row's message once: (channel id, ts), of the new message or of the one an earlier attempt posted.

    Never `link_names` nor `parse="full"`: with them Slack would turn a bare `@channel` in someone's text into a
    mention (the builders make it inert anyway)."""
    channel = _destination(client, row["recipient"], run.users)
    if row["sending_at"] is not None:
        last = attempt >= runtime.config.notifications.max_attempts
        found = _posted_before(runtime, client, row, channel, run, last_attempt=last)
        if found is not None:
            log.info("message %s (%s) was already in Slack (%s %s): recorded, not posted again", row["id"],
                     row["kind"], *found)
            return found
    if row["kind"] == m.REQUEST_PENDING and row["request_id"] is not None:
        with runtime.engine.connect() as conn:
            request = queue.get_request(conn, int(row["request_id"]))
        if request is not None and request["status"] != "pending":
            raise _Moot(f"request {row['request_id']} is {request['status']} already: its approvers need not be "
                        "asked")
    _take_for_post(runtime, row)
    answer = _call(lambda: client.chat_postMessage(channel=channel, text=body.get("text") or "",
                                                   blocks=body.get("blocks") or None,
                                                   metadata=message_metadata(row["dedup_key"], run.install)))
    return str(answer.get("channel")), str(answer.get("ts"))


def _take_for_post(runtime: Runtime, row: queue.Row) -> None:
    """Renew this sender's claim and mark the attempt (`sending_at`, the first one kept), committed before the post
    so a later attempt looks before posting again. Raises `_TakenOver` when the row is no longer this sender's:
    the look-ups before the post may have outlasted the lease, and another sender may have the row (or sent it)."""
    now = runtime.now()
    with runtime.engine.begin() as conn:
        taken = conn.execute(
            sa.update(outbox_table)
            .where(outbox_table.c.id == row["id"], outbox_table.c.state == outbox.PENDING,
                   outbox_table.c.claimed_by == runtime.worker)
            .values(claimed_until=now + LEASE,
                    sending_at=sa.func.coalesce(outbox_table.c.sending_at,
                                                sa.literal(now, outbox_table.c.sending_at.type)))
        ).rowcount
    if taken != 1:
        raise _TakenOver()


def _posted_before(runtime: Runtime, client: Any, row: queue.Row, destination: str, run: _Run, *,
                   last_attempt: bool) -> tuple[str, str] | None:
    """The message an earlier attempt posted, found by its metadata (our key and install id) from our own bot in
    the conversation; None when it is not there, or when the look-up is refused (then the caller posts: a duplicate
    is better than a lost alert). When Slack cannot answer now, `_Retry` (the row waits and looks again), or None
    at the last attempt (posted again rather than given up)."""
    try:
        conversation = _conversation(runtime, client, row["recipient"], destination)
        if conversation is None:
            raise _Refused(f"the id of channel {row['recipient']} is not known yet (give channels by id)")
        bot = _our_bot(client, run)
        oldest = f"{(row['sending_at'] - HISTORY_MARGIN).timestamp():.6f}"
        cursor: str | None = None
        for _ in range(HISTORY_PAGES):
            page = _call(lambda after=cursor: client.conversations_history(
                channel=conversation, oldest=oldest, limit=HISTORY_PAGE, include_all_metadata=True, cursor=after))
            for message in page.get("messages") or ():
                if _is_ours(message, row["dedup_key"], run.install, bot):
                    return conversation, str(message["ts"])
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not page.get("has_more") or not cursor:
                return None
        raise _Refused(f"more than {HISTORY_PAGES * HISTORY_PAGE} messages since the first attempt")
    except _RateLimited:
        raise  # waiting loses nothing
    except _Retry as problem:  # Slack could not answer now: that says nothing about the earlier attempt
        if not last_attempt:
            raise _Retry(f"cannot look for an earlier attempt yet: {problem}") from problem
        log.warning("message %s (%s) to %s: an earlier attempt may have reached Slack, but it still cannot be looked "
                    "for at the last attempt (%s); posting it again: a duplicate is better than a lost message",
                    row["id"], row["kind"], row["recipient"], problem)
        return None
    except (_Refused, _NotFound, KeyError, TypeError, ValueError) as problem:  # an odd answer too
        log.warning("message %s (%s) to %s: an earlier attempt may have reached Slack, but it cannot be looked for "
                    "(%s); posting it again: a duplicate is better than a lost message", row["id"], row["kind"],
                    row["recipient"], problem)
        return None


def _our_bot(client: Any, run: _Run) -> _Bot:
    """Who our token posts as, asked once per run (`auth.test`). A token that names no bot nor app (a user token)
    cannot tell its messages from another app's: refused, so the message is posted again."""
    if run.bot is None:
        answer = _call(client.auth_test)
        bot = _Bot(bot_id=answer.get("bot_id") or None, app_id=answer.get("app_id") or None)
        if bot.bot_id is None and bot.app_id is None:
            raise _Refused("auth.test names no bot_id nor app_id for this token: our messages cannot be told apart")
        run.bot = bot
    return run.bot


def _is_ours(message: dict[str, Any], dedup_key: str, install: str, bot: _Bot) -> bool:
    """A message an earlier attempt of this row posted: our key and installation in its metadata, and posted by our
    own bot (metadata alone anyone can write; keys repeat across deployments)."""
    metadata = message.get("metadata") or {}
    payload = metadata.get("event_payload") or {}
    if metadata.get("event_type") != METADATA_EVENT_TYPE or payload.get("key") != dedup_key:
        return False
    if payload.get("install") != install:
        return False
    return bool((bot.bot_id and message.get("bot_id") == bot.bot_id)
                or (bot.app_id and message.get("app_id") == bot.app_id))


def _conversation(runtime: Runtime, client: Any, recipient: str, destination: str) -> str | None:
    """The id of the conversation a message to `recipient` lands in: a person's IM with the bot
    (`conversations.open`, stable), a channel id as given, or a `#name`'s id as an earlier message recorded it."""
    if "@" in recipient:
        return str(_call(lambda: client.conversations_open(users=destination))["channel"]["id"])
    if not recipient.startswith("#"):
        return recipient
    with runtime.engine.connect() as conn:
        return conn.execute(
            sa.select(outbox_table.c.slack_channel)
            .where(outbox_table.c.recipient == recipient, outbox_table.c.state == outbox.SENT,
                   outbox_table.c.slack_channel.is_not(None))
            .order_by(outbox_table.c.id.desc()).limit(1)
        ).scalar()


def _update(runtime: Runtime, client: Any, row: queue.Row, body: dict[str, Any]) -> tuple[str, str]:
    """Replace a posted approval message with the request's outcome (its buttons go)."""
    with runtime.engine.connect() as conn:
        target = conn.execute(sa.select(outbox_table).where(outbox_table.c.id == body.get("target"))).mappings().first()
    if target is None:
        raise _Moot(f"message {body.get('target')} to update does not exist")
    if target["state"] == outbox.PENDING:
        due = max(runtime.now() + runtime.config.notifications.retry_initial, target["next_attempt_at"])
        raise _Wait((due - runtime.now()).total_seconds(), f"message {target['id']} is not posted yet")
    if target["state"] != outbox.SENT or not target["slack_channel"] or not target["slack_ts"]:
        raise _Moot(f"message {target['id']} was never posted ({target['state']}): nothing to update")
    answer = _call(lambda: client.chat_update(channel=target["slack_channel"], ts=target["slack_ts"],
                                              text=body.get("text") or "", blocks=body.get("blocks") or None))
    return str(answer.get("channel") or target["slack_channel"]), str(answer.get("ts") or target["slack_ts"])


def _destination(client: Any, recipient: str, users: dict[str, str | None]) -> str:
    """A channel as given; a person (an email) as their Slack user id, looked up once per run."""
    if "@" not in recipient:
        return recipient
    key = recipient.lower()
    if key not in users:
        try:
            users[key] = _call(lambda: client.users_lookupByEmail(email=recipient))["user"]["id"]
        except _NotFound:
            users[key] = None
    if users[key] is None:
        raise _NotFound(f"{recipient} is not a Slack user (users.lookupByEmail: users_not_found)")
    return str(users[key])


def _call(operation: Callable[[], Any]) -> Any:
    """Run one Web API call; turn what went wrong into what the sender does about it."""
    from slack_sdk.errors import SlackApiError, SlackClientError

    try:
        return operation()
    except SlackApiError as error:
        response = error.response
        status = getattr(response, "status_code", None) or 0
        code = _error_code(response)
        if status == 429 or code == "ratelimited":
            headers = getattr(response, "headers", None) or {}
            retry_after = _header(headers, "Retry-After")
            seconds = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
            raise _RateLimited(seconds if seconds is not None else DEFAULT_RETRY_AFTER,
                               f"HTTP 429, Retry-After {retry_after or '(none)'}") from error
        if status >= 500:
            raise _Retry(f"HTTP {status} from Slack") from error
        if code in NOT_FOUND_ERRORS:
            raise _NotFound(code) from error
        if code in RETRYABLE_ERRORS:
            raise _Retry(f"Slack error {code}") from error
        raise _Refused(f"Slack error {code or status}") from error
    except (SlackClientError, OSError) as error:  # network: refused, reset, timeouts (URLError is an OSError)
        raise _Retry(f"network error: {type(error).__name__}: {error}") from error


def _error_code(response: Any) -> str | None:
    try:
        data = response.data if hasattr(response, "data") else response
        return data.get("error") if isinstance(data, dict) else None
    except Exception:  # an HTML error page
        return None


def _header(headers: Any, name: str) -> str | None:
    for key, value in dict(headers).items():
        if key.lower() == name.lower():
            return str(value[0] if isinstance(value, list | tuple) else value)
    return None


def _retry_later(runtime: Runtime, settings: NotifySettings, row: queue.Row, attempts: int, reason: str,
                 summary: SendSummary) -> None:
    with runtime.engine.begin() as conn:
        if attempts >= settings.max_attempts:
            outbox.mark_failed(conn, row["id"], runtime.worker, attempts=attempts,
                               reason=f"gave up after {attempts} attempts: {reason}")
            summary.failed.append(row["id"])
            log.error("message %s (%s) failed after %d attempts: %s", row["id"], row["kind"], attempts, reason)
            return
        delay = min(settings.retry_initial * (2 ** (attempts - 1)), settings.retry_max)
        outbox.reschedule(conn, row["id"], runtime.worker, at=runtime.now() + delay, attempts=attempts,
                          reason=reason)
    summary.retrying.append(row["id"])
    log.warning("message %s (%s): %s; attempt %d, retrying in %s", row["id"], row["kind"], reason, attempts, delay)


def _postpone(runtime: Runtime, rows: list[queue.Row], until: datetime, reason: str) -> None:
    with runtime.engine.begin() as conn:
        for row in rows:
            outbox.reschedule(conn, row["id"], runtime.worker, at=max(until, row["next_attempt_at"]),
                              attempts=int(row["attempts"]), reason=reason)


def _release_all(runtime: Runtime, rows: list[queue.Row], now: datetime, reason: str) -> None:
    _postpone(runtime, rows, now + runtime.config.notifications.retry_initial, reason)


def _heartbeat(runtime: Runtime, settings: NotifySettings, summary: SendSummary) -> None:
    now = runtime.now()
    with runtime.engine.begin() as conn:
        backlog = outbox.backlog(conn, now=now, stuck_after=settings.stuck_after, since=now - timedelta(days=1))
        outcome = "error" if summary.error else "ok" if backlog.ok else "stuck"
        detail = {**backlog.detail(), "sent": len(summary.sent), "skipped": len(summary.skipped)}
        if summary.error:
            detail["error"] = summary.error[:500]
        queue.beat(conn, JOB, at=now, as_of=runtime.as_of, outcome=outcome, detail=detail)
    if outcome != "ok":
        log.warning("notifications %s: %s", outcome, detail)
