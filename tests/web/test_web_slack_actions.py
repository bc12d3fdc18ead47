"""Slack's approve / reject buttons over real HTTP: the plugin's endpoint mounted as the API server mounts it, the
fake Slack Web API for `users.info` and `chat.update`, a local receiver standing in for the `response_url`, and
the real intake against the AWS emulator. Only a correctly signed, fresh, first-seen click of a person of the
policy is recorded; intake applies it with every check of any decision."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import sqlalchemy as sa
from slack_sdk.signature import SignatureVerifier

from elevation.devkit.slack_fake import SlackFake
from elevation.notify.messages import RequestView, request_pending
from elevation.store import queue
from elevation.store.tables import actions

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # a test value; real ones live in the connection only


class ResponseUrl:
    """Records what is posted to the click's `response_url` (Slack's side of it)."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.posts.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/actions/T0FAKE/1/abc"


@pytest.fixture
def slack(configure, monkeypatch: pytest.MonkeyPatch) -> Iterator[SlackFake]:  # noqa: ANN001
    with SlackFake() as fake:
        monkeypatch.setenv("AIRFLOW_CONN_SLACK_API_DEFAULT", fake.airflow_connection_json())
        monkeypatch.setenv("AIRFLOW_CONN_ELEVATION_SLACK_SIGNING",
                           json.dumps({"conn_type": "generic", "password": SIGNING_SECRET}))
        yield fake


@pytest.fixture
def response_url() -> Iterator[ResponseUrl]:
    receiver = ResponseUrl()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture
def posted(slack: SlackFake, engine) -> Callable[[int], tuple[str, str]]:  # noqa: ANN001
    """The approval message for a request, as the notifier would post it: (channel id, ts)."""
    from slack_sdk import WebClient

    channel = slack.add_channel("approvals")

    def _post(request_id: int) -> tuple[str, str]:
        client = WebClient(token=slack.token, base_url=slack.base_url)
        with engine.connect() as conn:
            row = queue.get_request(conn, request_id)
        message = request_pending(RequestView.from_row(row))  # the notifier's own message, with its buttons
        answer = client.chat_postMessage(channel=channel, text=message.text, blocks=message.blocks)
        return channel, answer["ts"]

    return _post


def click_body(request_id: int, slack_user: str, action_id: str, where: tuple[str, str], response_url: str,
               blocks: list[dict[str, Any]] | None = None) -> bytes:
    payload = {
        "type": "block_actions",
        "user": {"id": slack_user, "username": "someone", "team_id": "T0FAKE"},
        "api_app_id": "A0FAKE",
        "container": {"type": "message", "channel_id": where[0], "message_ts": where[1]},
        "channel": {"id": where[0], "name": "approvals"},
        "response_url": response_url,
        "message": {"type": "message", "ts": where[1], "text": "Access request", "blocks": blocks or []},
        "actions": [{"type": "button", "action_id": action_id, "value": str(request_id),
                     "block_id": "decide", "action_ts": f"{time.time():.6f}"}],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def signed(body: bytes, at: float | None = None, secret: str = SIGNING_SECRET) -> dict[str, str]:
    timestamp = str(int(at if at is not None else time.time()))
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body),
    }


def action_rows(engine) -> list[dict[str, Any]]:  # noqa: ANN001
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(sa.select(actions).order_by(actions.c.id)).mappings()]


def wait_for(what: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting for the background task")


def post(server: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    started = time.monotonic()
    answer = httpx.post(f"{server}/elevation/slack/actions", content=body, headers=headers, timeout=10)
    assert time.monotonic() - started < 3, "Slack must be answered within 3 seconds"
    return answer


def test_a_signed_click_is_recorded_applied_by_intake_and_the_message_updated(
    slack, response_url, posted, plugin_server, file_request, request_row, engine
):  # noqa: ANN001
    request = file_request(requester="alice", account_id="media-stg")  # Staging: bob approves
    where = posted(request)
    bob = slack.add_user("bob@example.com", "Bob Berg")
    [original] = [m for m in slack.messages if m.ts == where[1]]
    body = click_body(request, bob, "elevation_approve", where, response_url.url, original.blocks)

    headers = signed(body)
    assert post(plugin_server, body, headers).status_code == 200
    wait_for(lambda: request_row(request)["status"] != "pending")
    assert request_row(request)["status"] == "approved" and request_row(request)["decided_by"] == "bob"
    [action] = action_rows(engine)
    assert (action["action"], action["actor"], action["comment"], action["outcome"]) == \
        ("approve", "bob", "via Slack", "applied")
    message = wait_for(lambda: [m for m in slack.messages if m.ts == where[1] and m.updated])[0]
    assert "approved by bob" in message.text and "button" not in json.dumps(message.blocks)  # buttons gone
    assert message.blocks[0] == original.blocks[0] and "deploy hotfix" in json.dumps(message.blocks)  # the request
    assert "approved by bob (via Slack)" in message.blocks[-1]["text"]["text"]
    assert [args.get("user") for method, args in slack.calls if method == "users.info"] == [bob]

    # The same request again, word for word, within the five minutes (a replay): refused, nothing recorded.
    assert post(plugin_server, body, headers).status_code == 401
    time.sleep(0.5)
    assert len(action_rows(engine)) == 1


def test_bad_signatures_stale_timestamps_and_old_bodies_are_refused_and_record_nothing(
    slack, response_url, posted, plugin_server, file_request, request_row, engine
):  # noqa: ANN001
    request = file_request(requester="alice", account_id="media-stg")
    where = posted(request)
    bob = slack.add_user("bob@example.com")
    body = click_body(request, bob, "elevation_approve", where, response_url.url)
    now = time.time()
    stale = signed(body, at=now - 6 * 60)  # correctly signed, six minutes ago
    refused = {
        "wrong secret": signed(body, secret="not-the-signing-secret"),
        "tampered body": signed(body.replace(b"elevation_approve", b"elevation_reject")),
        "no signature": {"Content-Type": "application/x-www-form-urlencoded"},
        "stale timestamp": stale,
        "from the future": signed(body, at=now + 6 * 60),
        # an old body with its old signature, sent again with a fresh timestamp
        "old signature, fresh timestamp": {**stale, "X-Slack-Request-Timestamp": str(int(now))},
        "not a number": {**signed(body), "X-Slack-Request-Timestamp": "soon"},
    }
    for name, headers in refused.items():
        answer = post(plugin_server, body, headers)
        assert answer.status_code == 401, (name, answer.status_code, answer.text)
    time.sleep(0.5)
    assert action_rows(engine) == [] and request_row(request)["status"] == "pending"
    assert response_url.posts == [] and not [m for m in slack.messages if m.updated]
    assert not [method for method, _ in slack.calls if method == "users.info"]  # refused before anything else


def test_a_slack_user_who_is_not_a_person_of_the_policy_is_told_so_and_nothing_is_recorded(
    slack, response_url, posted, plugin_server, file_request, request_row, engine
):  # noqa: ANN001
    request = file_request(requester="alice", account_id="media-stg")
    where = posted(request)
    stranger = slack.add_user("mallory@elsewhere.example", "Mallory")
    body = click_body(request, stranger, "elevation_approve", where, response_url.url)

    assert post(plugin_server, body, signed(body)).status_code == 200
    [reply] = wait_for(lambda: response_url.posts)
    assert reply["response_type"] == "ephemeral" and reply["replace_original"] is False
    assert "mallory@elsewhere.example" in reply["text"] and "Nothing was recorded" in reply["text"]
    assert action_rows(engine) == [] and request_row(request)["status"] == "pending"
    assert not [m for m in slack.messages if m.updated]  # the buttons stay for the approvers


def test_the_requester_approving_their_own_request_is_refused_by_intake_with_the_reason(
    slack, response_url, posted, plugin_server, file_request, request_row, engine
):  # noqa: ANN001
    # bob may ask for PowerUserAccess in Production, and approves for Production himself
    request = file_request(requester="bob", account_id="media-prod", permission_set="PowerUserAccess")
    where = posted(request)
    bob = slack.add_user("bob@example.com")
    body = click_body(request, bob, "elevation_approve", where, response_url.url)

    assert post(plugin_server, body, signed(body)).status_code == 200
    [reply] = wait_for(lambda: response_url.posts)
    [action] = action_rows(engine)
    assert (action["actor"], action["outcome"]) == ("bob", "refused")
    assert reply["response_type"] == "ephemeral" and "was refused" in reply["text"]
    assert action["outcome_reason"] in reply["text"]
    assert request_row(request)["status"] == "pending"
    assert not [m for m in slack.messages if m.updated]


def test_an_approver_of_another_account_is_refused_and_a_reject_is_applied(
    slack, response_url, posted, plugin_server, file_request, request_row, engine
):  # noqa: ANN001
    request = file_request(requester="alice", account_id="media-stg")
    where = posted(request)
    carol = slack.add_user("carol@example.com")  # approves Production only
    bob = slack.add_user("bob@example.com")
    body = click_body(request, carol, "elevation_approve", where, response_url.url)
    assert post(plugin_server, body, signed(body)).status_code == 200
    [reply] = wait_for(lambda: response_url.posts)
    assert "was refused" in reply["text"] and "not an approver" in reply["text"]

    body = click_body(request, bob, "elevation_reject", where, response_url.url)
    assert post(plugin_server, body, signed(body)).status_code == 200
    wait_for(lambda: request_row(request)["status"] == "rejected")
    message = wait_for(lambda: [m for m in slack.messages if m.ts == where[1] and m.updated])[0]
    assert "rejected by bob" in message.text
    assert [(row["actor"], row["action"], row["outcome"]) for row in action_rows(engine)] == \
        [("carol", "approve", "refused"), ("bob", "reject", "applied")]


def test_a_slack_user_of_another_workspace_with_an_approvers_email_is_refused_and_nothing_is_recorded(
    slack, response_url, posted, plugin_server, file_request, request_row, engine
):  # noqa: ANN001
    """A Slack Connect guest (or a user of another workspace of the app) whose own organisation gave them the email
    of an approver is not that approver: only users of the bot's own workspace act as people of the policy."""
    request = file_request(requester="alice", account_id="media-stg")  # Staging: bob approves
    where = posted(request)
    outsider = slack.add_user("bob@example.com", "Not Bob")
    slack._users[outsider]["team_id"] = "T0OTHER"  # their workspace, not ours (auth.test says T0FAKE)
    body = click_body(request, outsider, "elevation_approve", where, response_url.url)

    assert post(plugin_server, body, signed(body)).status_code == 200
    [reply] = wait_for(lambda: response_url.posts)
    assert reply["response_type"] == "ephemeral" and "Nothing was recorded" in reply["text"]
    assert action_rows(engine) == [] and request_row(request)["status"] == "pending"
    assert not [m for m in slack.messages if m.updated]


def test_a_click_closes_every_approvers_message_and_the_clicked_one_stays_as_the_click_left_it(
    slack, response_url, plugin_server, configure, file_request, make_runtime, request_row, engine
):  # noqa: ANN001
    """Asked in Slack, decided by one click: the clicker's message shows the outcome at once (the click handler),
    and the next notifier run replaces the other approver's message too, so nobody keeps live buttons."""
    from elevation import jobs
    from elevation.access.intake import run_intake
    from elevation.store import outbox

    configure({"notifications": {"enabled": True}})
    bob, _ = slack.add_user("bob@example.com", "Bob"), slack.add_user("carol@example.com", "Carol")
    slack.add_user("erin@example.com", "Erin")
    request = file_request(requester="erin", account_id="media-prod")  # Production: bob and carol approve
    runtime = make_runtime()
    run_intake(runtime)
    jobs.notify({}, runtime=runtime)
    [for_bob], [for_carol] = slack.messages_to("bob@example.com"), slack.messages_to("carol@example.com")

    body = click_body(request, bob, "elevation_approve", (for_bob.channel, for_bob.ts), response_url.url,
                      for_bob.blocks)
    assert post(plugin_server, body, signed(body)).status_code == 200
    clicked = wait_for(lambda: [m for m in slack.messages if m.ts == for_bob.ts and m.updated])[0]
    assert "approved by bob (via Slack)" in clicked.text

    def closed_rows() -> list[Any]:
        with engine.connect() as conn:
            return outbox.rows(conn, sa.text("kind = 'request_pending_closed'"))

    wait_for(lambda: closed_rows())  # the click handler recorded the clicked message as closed
    jobs.notify({}, runtime=make_runtime())
    carols = [m for m in slack.messages if m.ts == for_carol.ts][0]
    assert carols.updated and carols.text == f"Access request {request} was approved by bob"
    assert not [block for block in carols.blocks if block["type"] == "actions"]
    assert [m for m in slack.messages if m.ts == for_bob.ts][0] == clicked  # left as the click left it
    assert [args["ts"] for method, args in slack.calls if method == "chat.update"] == [for_bob.ts, for_carol.ts]
    rows = {row["recipient"]: row for row in closed_rows()}
    assert {email: row["state"] for email, row in rows.items()} == {"bob@example.com": "sent",
                                                                    "carol@example.com": "sent"}
    assert outbox.payload(rows["bob@example.com"])["closed_by"] == "slack click"
    jobs.notify({}, runtime=make_runtime())  # nothing more
    assert len([method for method, _ in slack.calls if method == "chat.update"]) == 2
