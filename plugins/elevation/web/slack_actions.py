"""Slack's approve / reject buttons: the pure parts (signature and replay checks, reading the click, the replies).

Slack signs every request with the app's signing secret: `X-Slack-Signature: v0=<hex HMAC-SHA256 of
"v0:<X-Slack-Request-Timestamp>:<raw body>">`. A request is accepted only when that signature is right (checked by
`slack_sdk`'s SignatureVerifier) and its timestamp is within five minutes of our clock either way; a signature
already accepted in that window is a replay and refused too. The click itself is recorded by the caller, through
the same path as any decision (an `elevation_action` row, then intake), so every policy check applies.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from elevation.notify.messages import escape, section

#: How far a request's timestamp may be from our clock (Slack's own recommendation).
MAX_AGE_SECONDS = 5 * 60

#: The buttons' action ids (the Slack message the notifier posts uses these) and the decision each records.
ACTIONS = {"elevation_approve": "approve", "elevation_reject": "reject"}

COMMENT = "via Slack"


class Refused(Exception):
    """The request is not Slack's, or not one we act on; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class SignatureCheck:
    """Signature, age and replay checks of Slack requests. One per process; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._seen: dict[str, float] = {}  # accepted signatures -> their timestamp, while they are young enough
        self._lock = threading.Lock()

    def verify(self, signing_secret: str, body: bytes, headers: Mapping[str, str]) -> None:
        """Raise Refused(401) unless the body is signed with the secret, recent, and not seen before."""
        from slack_sdk.signature import Clock, SignatureVerifier

        timestamp = headers.get("x-slack-request-timestamp")
        signature = headers.get("x-slack-signature")
        if not timestamp or not signature:
            raise Refused(401, "missing Slack signature headers")
        try:
            sent = int(timestamp)
        except ValueError:
            raise Refused(401, "the Slack request timestamp is not a number") from None
        now = self._clock()
        if abs(now - sent) > MAX_AGE_SECONDS:
            raise Refused(401, "the Slack request timestamp is more than 5 minutes away from now (a replay?)")

        class _Now(Clock):
            def now(self) -> float:
                return now

        if not SignatureVerifier(signing_secret, clock=_Now()).is_valid(body, timestamp, signature):
            raise Refused(401, "the Slack signature does not match")
        with self._lock:
            for old, at in list(self._seen.items()):
                if abs(now - at) > MAX_AGE_SECONDS:
                    del self._seen[old]
            if signature in self._seen:
                raise Refused(401, "this Slack request was already received (a replay)")
            self._seen[signature] = sent


@dataclass(frozen=True)
class Click:
    """One button click of Slack's `block_actions` payload."""

    decision: str  # approve | reject
    request_id: int
    slack_user_id: str
    slack_user_name: str
    response_url: str | None
    channel_id: str | None
    message_ts: str | None
    message_blocks: tuple[dict[str, Any], ...] = ()  # the clicked message's blocks, as Slack sent them


def parse_click(body: bytes) -> Click:
    """The click in the form-encoded body (`payload=<JSON>`); Refused(400) for anything else."""
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True)
        payload = json.loads(form["payload"][0])
    except (UnicodeDecodeError, ValueError, KeyError, IndexError):
        raise Refused(400, "expected a form field 'payload' holding Slack's JSON") from None
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        raise Refused(400, "only block_actions payloads are handled")
    actions = payload.get("actions") or []
    action = actions[0] if isinstance(actions, list) and actions and isinstance(actions[0], dict) else {}
    decision = ACTIONS.get(str(action.get("action_id")))
    if decision is None:
        raise Refused(400, f"unknown action {action.get('action_id')!r}")
    value = str(action.get("value") or "")
    if not value.isdigit() or not 0 < int(value) < 2**63:
        raise Refused(400, f"the button's value {value!r} is not a request id")
    user = payload.get("user") if isinstance(payload.get("user"), dict) else {}
    if not user.get("id"):
        raise Refused(400, "the payload names no Slack user")
    container = payload.get("container") if isinstance(payload.get("container"), dict) else {}
    channel = payload.get("channel") if isinstance(payload.get("channel"), dict) else {}
    response_url = payload.get("response_url")  # signed by Slack with the rest of the body
    message = payload.get("message") if isinstance(payload.get("message"), dict) else {}
    blocks = message.get("blocks") if isinstance(message.get("blocks"), list) else []
    return Click(
        decision=decision,
        request_id=int(value),
        slack_user_id=str(user["id"]),
        slack_user_name=str(user.get("username") or user.get("name") or user["id"]),
        response_url=str(response_url) if response_url else None,
        channel_id=container.get("channel_id") or channel.get("id"),
        message_ts=container.get("message_ts"),
        message_blocks=tuple(block for block in blocks if isinstance(block, dict)),
    )


# --- replies ------------------------------------------------------------------------------------------------

PAST = {"approve": "approved", "reject": "rejected"}


def outcome_message(click: Click, actor: str, outcome: str | None, reason: str | None,
                     status: str | None) -> dict[str, Any]:
    """What replaces the message (applied) or is said to the clicker alone (refused, not applied yet).

    A refused click leaves the message and its buttons for the approvers who may decide; the refusal and why goes
    to the person who clicked."""
    if outcome == "applied":
        text = (f":white_check_mark: Request {click.request_id} {PAST[click.decision]} by {escape(actor)} "
                f"({COMMENT})." if click.decision == "approve" else
                f":no_entry: Request {click.request_id} {PAST[click.decision]} by {escape(actor)} ({COMMENT}).")
        if status:
            text += f" Status: {escape(status)}."
        kept = [block for block in click.message_blocks if block.get("type") != "actions"]  # the buttons go
        return {"replace_original": True, "text": text,
                "blocks": [*kept, section(text)]}
    if outcome == "refused":
        text = f"Your {click.decision} of request {click.request_id} was refused: {escape(reason or 'no reason given')}"
    else:
        text = (f"Your {click.decision} of request {click.request_id} is recorded; it is applied by the next "
                "intake run (the request is busy).")
    return ephemeral(text)


def unknown_person_message(click: Click, email: str | None) -> dict[str, Any]:
    who = f"your Slack account ({escape(email)})" if email else "your Slack account (no email visible to the app)"
    return ephemeral(f"Sorry, {who} is not one of the people of the elevation policy, so you cannot "
                     f"{click.decision} request {click.request_id} from Slack. Nothing was recorded.")


def failure_message(click: Click) -> dict[str, Any]:
    return ephemeral(f"Sorry, your {click.decision} of request {click.request_id} could not be handled; nothing "
                     "was recorded unless the request shows it. Please decide in Airflow (elevation_decide).")


def ephemeral(text: str) -> dict[str, Any]:
    return {"response_type": "ephemeral", "replace_original": False, "text": text}


