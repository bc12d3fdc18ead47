"""The viewer's path rules and the reading of Slack's payload, without a server."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from elevation.web.audit_viewer import NotAllowed, clean_path, response_headers
from elevation.web.slack_actions import Refused, SignatureCheck, parse_click


@pytest.mark.parametrize("raw, expected", [
    ("", ""), ("2026-11-28/index.html", "2026-11-28/index.html"), ("sessions//5.html", "sessions/5.html"),
    ("./sessions/5.html", "sessions/5.html"), ("2026-11-28/", "2026-11-28"),
])
def test_plain_relative_paths_are_kept(raw: str, expected: str) -> None:
    assert clean_path(raw) == expected


@pytest.mark.parametrize("raw", [
    "..", "../x", "sessions/../../x", "/etc/passwd", "C:/x", "sessions\\..\\x", "a\x00b", "a\nb", ".git/config",
    "sessions/.hidden.html",
])
def test_paths_that_could_leave_the_folder_are_refused(raw: str) -> None:
    with pytest.raises(NotAllowed):
        clean_path(raw)


def test_html_is_shown_with_its_policy_and_everything_else_downloaded() -> None:
    page = response_headers("sessions/5.html")
    assert page["Content-Type"] == "text/html; charset=utf-8" and "Content-Disposition" not in page
    assert page["X-Content-Type-Options"] == "nosniff" and "default-src 'none'" in page["Content-Security-Policy"]
    parquet = response_headers("sessions/5.events.parquet")
    assert parquet["Content-Type"] == "application/vnd.apache.parquet"
    assert parquet["Content-Disposition"] == 'attachment; filename="5.events.parquet"'


def body(**payload: object) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


def test_a_click_is_read_from_the_payload() -> None:
    click = parse_click(body(type="block_actions", user={"id": "U1", "username": "bob"}, response_url="https://x/y",
                             container={"channel_id": "C1", "message_ts": "1.2"},
                             actions=[{"action_id": "elevation_reject", "value": "42"}]))
    assert (click.decision, click.request_id, click.slack_user_id, click.channel_id, click.message_ts) == \
        ("reject", 42, "U1", "C1", "1.2")


@pytest.mark.parametrize("raw", [
    b"", b"payload=not-json", body(type="view_submission"),
    body(type="block_actions", user={"id": "U1"}, actions=[{"action_id": "something_else", "value": "1"}]),
    body(type="block_actions", user={"id": "U1"}, actions=[{"action_id": "elevation_approve", "value": "1 OR 1=1"}]),
    body(type="block_actions", user={"id": "U1"}, actions=[{"action_id": "elevation_approve", "value": "-1"}]),
    body(type="block_actions", actions=[{"action_id": "elevation_approve", "value": "1"}]),
    body(type="block_actions", user={"id": "U1"}, actions=[]),
])
def test_anything_else_is_a_bad_request(raw: bytes) -> None:
    with pytest.raises(Refused) as refused:
        parse_click(raw)
    assert refused.value.status == 400


def test_the_replay_memory_forgets_what_is_too_old_to_be_accepted_anyway() -> None:
    from slack_sdk.signature import SignatureVerifier

    now = [1_800_000_000.0]
    check = SignatureCheck(clock=lambda: now[0])
    raw = body(type="block_actions")
    headers = {"x-slack-request-timestamp": str(int(now[0])),
               "x-slack-signature": SignatureVerifier("s3cret").generate_signature(timestamp=str(int(now[0])), body=raw)}
    check.verify("s3cret", raw, headers)
    with pytest.raises(Refused, match="already received"):
        check.verify("s3cret", raw, headers)
    now[0] += 301
    with pytest.raises(Refused, match="more than 5 minutes"):
        check.verify("s3cret", raw, headers)
    check.verify("s3cret", raw, {**headers, "x-slack-request-timestamp": str(int(now[0])),
                                 "x-slack-signature": SignatureVerifier("s3cret").generate_signature(
                                     timestamp=str(int(now[0])), body=raw)})
    assert len(check._seen) == 1  # the first one was forgotten


def test_loading_the_plugin_builds_no_app() -> None:
    """Airflow imports the plugin module in every process that loads plugins: it must stay cheap."""
    import subprocess
    import sys

    from conftest import REPO

    code = ("import sys; import elevation_plugin; "
            "assert not [m for m in sys.modules if m.startswith(('elevation.web', 'fastapi', 'slack_sdk'))], "
            "sorted(m for m in sys.modules if m.startswith(('elevation.web', 'fastapi', 'slack_sdk')))")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO / "plugins", capture_output=True, text=True)


def test_replies_to_the_clicker_escape_what_they_quote_for_mrkdwn() -> None:
    """A refusal quotes intake's reason (which may quote the request) and the Slack profile's email: Slack reads
    an ephemeral reply's text as mrkdwn, so neither may mention <!channel> or make a link."""
    from elevation.web.slack_actions import Click, outcome_message, unknown_person_message

    click = Click("approve", 7, "U1", "bob", None, "C1", "1.2")
    refused = outcome_message(click, "bob", "refused", "ticket <!channel> <https://evil.example|SSO login>", None)
    assert "<!channel>" not in refused["text"] and "<https://evil" not in refused["text"]
    assert "&lt;!channel&gt;" in refused["text"]
    applied = outcome_message(click, "b<ob>", "applied", None, "approved")
    assert "<ob>" not in applied["text"]
    bare = outcome_message(click, "bob", "refused", "see @here and -@channel", None)
    assert "@here" not in bare["text"] and "@channel" not in bare["text"], "bare broadcasts made inert"
    outcome = outcome_message(click, "bob", "applied", None, "approved")
    added = [block for block in outcome.get("blocks", []) if block.get("type") == "section"][-1:]
    assert all(block["text"].get("verbatim") is True for block in added), "Slack parses no mention on its own"
    unknown = unknown_person_message(click, "x<!here>@example.com")
    assert "<!here>" not in unknown["text"]
