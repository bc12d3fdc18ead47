"""What each message says, as a phone shows it: pure builders, hostile text made inert."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from elevation.config import ElevationConfig
from elevation.notify import messages as m
from elevation.notify.settings import NotifySettings

#: What the assertions look for comes first: the ticket is cut at 200 characters.
HOSTILE = ("<!channel> <@U0123ABCD> & @channel @here @everyone _@channel_ x.@here -@everyone +@here *@channel* "
           "alice@example.com ops@here.example <!here> <https://evil.example|click me> <#C999|general> *deploy* "
           "@Channel! (@here)")
#: A broadcast word Slack would link with `link_names` or `parse=full` (or any parser of its own): `@` not after a
#: letter or digit (`_@channel_` is italic @channel), the word not followed by one (`@hereford` is not a broadcast).
BARE_BROADCAST = re.compile(r"(?<![A-Za-z0-9])@(channel|here|everyone|group)(?![A-Za-z0-9])", re.IGNORECASE)
START = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def view(**overrides):
    values = {"id": 42, "requester": "alice", "account_id": "123456789012", "account_name": "media-prod",
              "permission_set": "AdministratorAccess", "duration_minutes": 90, "start_at": START,
              "end_at": START + timedelta(minutes=90), "justification": "deploy hotfix", "ticket": "OPS-7"}
    values.update(overrides)
    return m.RequestView(**values)


def everything(message: m.Message) -> str:
    return message.text + "\n" + json.dumps(message.blocks, ensure_ascii=False)


def assert_inert(message: m.Message) -> None:
    """No control sequence but the ones the builder itself made (links to reports are https only)."""
    text = message.text + "\n" + "\n".join(_texts(message.blocks))
    for sequence in re.findall(r"<[^>]*>", text):
        assert sequence.startswith("<https://reports.example/"), (sequence, text)
    assert "&lt;!channel&gt;" in text and "&lt;@U0123ABCD&gt;" in text and "&amp;" in text
    assert not BARE_BROADCAST.search(text), text
    joined = m.WORD_JOINER
    assert f"@{joined}channel @{joined}here @{joined}everyone" in text  # still reads the same
    for inert in (f"_@{joined}channel_", f"x.@{joined}here", f"-@{joined}everyone", f"+@{joined}here",
                  f"*@{joined}channel*"):
        assert inert in text, (inert, text)
    assert "alice@example.com" in text and "ops@here.example" in text  # addresses stay as they are, copyable


def _texts(value):
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "text" and isinstance(item, str):
                yield item
            else:
                yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)


def test_a_pending_request_gives_an_approver_everything_to_decide_and_two_buttons():
    message = m.request_pending(view())
    assert message.kind == m.REQUEST_PENDING
    assert message.text == "Access request 42: alice asks for AdministratorAccess on media-prod (123456789012) (1h30m)"
    text = everything(message)
    for part in ("alice", "media-prod (123456789012)", "AdministratorAccess", "2026-11-29 10:00 UTC → "
                 "2026-11-29 11:30 UTC (1h30m)", "deploy hotfix", "OPS-7"):
        assert part in text
    actions = next(block for block in message.blocks if block["type"] == "actions")
    assert [(b["action_id"], b["value"], b["text"]["text"]) for b in actions["elements"]] == [
        ("elevation_approve", "42", "Approve"), ("elevation_reject", "42", "Reject")]


@pytest.mark.parametrize("field", ["justification", "ticket", "requester", "permission_set", "account_name"])
def test_hostile_text_in_a_request_cannot_mention_anyone_or_make_a_link(field):
    message = m.request_pending(view(**{field: HOSTILE}))
    assert_inert(message)


def test_hostile_reasons_and_actors_are_inert_in_every_kind():
    hostile = view(justification=HOSTILE, requester=HOSTILE)
    built = [
        m.request_decided(m.REQUEST_REJECTED, hostile, by=HOSTILE, reason=HOSTILE),
        m.request_pending_closed(m.REQUEST_REJECTED, hostile, by=HOSTILE, reason=HOSTILE),
        m.session_over(hostile, revoked=True, by=HOSTILE, reason=HOSTILE),
        m.trouble(m.REVOKE_FAILED, hostile, reason=HOSTILE, for_admins=True),
        m.approvers_missing(hostile, HOSTILE),
        m.audit_result(hostile, m.AuditView({"high": 1}, [m.FindingItem("high", HOSTILE, HOSTILE)],
                                            link="https://reports.example/sessions/42.html"), to_requester=False),
        m.nightly_digest("2026-11-28", [m.DigestSession(42, HOSTILE, HOSTILE, "high", {"high": 1},
                                                        "https://reports.example/sessions/42.html")],
                         m.DigestDrift(1, {HOSTILE: 1}), [m.DigestFinding("high", HOSTILE, 42, HOSTILE, 2)]),
    ]
    for message in built:
        assert_inert(message)


def test_the_sender_never_asks_slack_to_link_names_so_bare_broadcasts_stay_text(engine, slack):
    """Slack links a bare `@channel` only when a message is posted with `link_names` or `parse=full`: the sender
    uses neither (checked on what reached the fake Slack), and the text carries no bare broadcast word anyway."""
    from elevation.notify.sender import run_sender
    from elevation.runtime import Runtime
    from elevation.store import outbox

    hostile = view(justification=HOSTILE, requester=HOSTILE)
    built = [m.request_pending(hostile), m.request_decided(m.REQUEST_REJECTED, hostile, by=HOSTILE, reason=HOSTILE),
             m.approvers_missing(hostile, HOSTILE), m.audit_result(hostile, m.AuditView({}), to_requester=True)]
    now = datetime.now(UTC)
    with engine.begin() as conn:
        outbox.enqueue(conn, [outbox.Entry(f"k{i}", message.kind, "#security", message.payload(), 42)
                              for i, message in enumerate(built)], now=now)
    config = ElevationConfig(notifications=NotifySettings(enabled=True))
    runtime = Runtime(config=config, engine=engine, identity_center_factory=lambda r: None, as_of=now,
                      actor="test", clock=lambda: now, worker="w")
    assert len(run_sender(runtime).sent) == len(built)
    posts = [args for method, args in slack.calls if method == "chat.postMessage"]
    assert len(posts) == len(built)
    for args in posts:
        assert "link_names" not in args and args.get("parse") in (None, "none"), args
        assert not BARE_BROADCAST.search(json.dumps(args, ensure_ascii=False)), args
        blocks = args["blocks"] if isinstance(args["blocks"], list) else json.loads(args["blocks"])
        assert all(text.get("verbatim") is True for text in _mrkdwn_objects(blocks))
    assert all(not BARE_BROADCAST.search(message.text) for message in slack.messages)


def test_a_bare_broadcast_is_made_inert_but_an_email_address_is_left_alone():
    assert m.escape("ping @here, @Everyone and (@channel)") == (
        f"ping @{m.WORD_JOINER}here, @{m.WORD_JOINER}Everyone and (@{m.WORD_JOINER}channel)")
    assert m.escape("ops@here.example & @hereford") == "ops@here.example &amp; @hereford"
    joined = m.WORD_JOINER
    assert m.escape("_@channel_ x.@here -@everyone +@here ~@group~ @here_") == (
        f"_@{joined}channel_ x.@{joined}here -@{joined}everyone +@{joined}here ~@{joined}group~ @{joined}here_")
    for address in ("alice@example.com", "ops@here.example", "team@channel.example", "first.last@everyone.example"):
        assert m.escape(address) == address
    cut = m.escape("@channel " * 50, limit=40)
    assert len(cut) <= 40 and cut.endswith("…") and not BARE_BROADCAST.search(cut)


def _mrkdwn_objects(value):
    if isinstance(value, dict):
        if value.get("type") == "mrkdwn":
            yield value
        for item in value.values():
            yield from _mrkdwn_objects(item)
    elif isinstance(value, list):
        for item in value:
            yield from _mrkdwn_objects(item)


def _one_of_each_kind(hostile: m.RequestView) -> list[m.Message]:
    link = "https://reports.example/sessions/42.html"
    built = [
        m.request_pending(hostile),
        *(m.request_decided(kind, hostile, by=HOSTILE, reason=HOSTILE) for kind in (
            m.REQUEST_APPROVED, m.REQUEST_REJECTED, m.REQUEST_EXPIRED, m.REQUEST_CANCELLED)),
        m.request_pending_closed(m.REQUEST_APPROVED, hostile, by=HOSTILE, reason=HOSTILE),
        m.session_active(hostile),
        m.session_ending_soon(hostile, timedelta(minutes=10)),
        m.session_over(hostile, revoked=False, by=None, reason=HOSTILE),
        m.session_over(hostile, revoked=True, by=HOSTILE, reason=HOSTILE),
        *(m.trouble(kind, hostile, reason=HOSTILE, for_admins=admins)
          for kind in (m.GRANT_FAILED, m.REVOKE_FAILED, m.REVOKE_OVERDUE) for admins in (False, True)),
        m.approvers_missing(hostile, HOSTILE),
        m.audit_result(hostile, m.AuditView({}, link=link), to_requester=False),
        m.audit_result(hostile, m.AuditView({"high": 1}, [m.FindingItem("high", HOSTILE, HOSTILE)], link=link),
                       to_requester=False),
        m.nightly_digest("2026-11-28", [m.DigestSession(42, HOSTILE, HOSTILE, "high", {"high": 1}, link)],
                         m.DigestDrift(1, {HOSTILE: 1}, link), [m.DigestFinding("high", HOSTILE, 42, HOSTILE, 2)]),
    ]
    assert {message.kind for message in built} == set(m.KINDS)
    return built


def test_every_mrkdwn_text_of_every_kind_is_verbatim_and_our_own_links_are_still_links():
    """With `verbatim` false (Slack's default) a mrkdwn text object auto-links URLs and channel names and parses
    some mentions; verbatim, Slack still reads the control sequences we write ourselves (`<url|label>`)."""
    for message in _one_of_each_kind(view(justification=HOSTILE, requester=HOSTILE)):
        texts = list(_mrkdwn_objects(message.blocks))
        assert texts, message.kind
        assert all(text.get("verbatim") is True for text in texts), (message.kind, texts)
        if message.kind not in (m.SESSION_ACTIVE, m.SESSION_ENDING_SOON):  # the only kinds without free text
            assert_inert(message)
    digest = _one_of_each_kind(view())[-1]
    assert "<https://reports.example/sessions/42.html|Open the report>" in everything(digest)


def test_a_report_link_that_is_not_plain_https_is_shown_as_text():
    audit = m.AuditView({}, link="https://x.example/a|<!channel>")
    message = m.audit_result(view(), audit, to_requester=True)
    assert "<https://x.example" not in everything(message) and "&lt;!channel&gt;" in everything(message)


def test_long_free_text_is_cut_before_escaping():
    message = m.request_pending(view(justification="&" * 5000))
    justification = next(b["text"]["text"] for b in message.blocks if b.get("text", {}).get("text", "")
                         .startswith("*Justification*"))
    assert justification.endswith("&amp;…") and len(justification) < 3000


def test_decisions_say_who_and_why():
    approved = m.request_decided(m.REQUEST_APPROVED, view(), by="bob", reason="looks right")
    assert approved.text == "Your request for AdministratorAccess on media-prod (123456789012) was approved by bob."
    assert "looks right" in everything(approved) and "1h30m" in everything(approved)
    auto = m.request_decided(m.REQUEST_APPROVED, view(), by="policy:oncall-break-glass", reason=None)
    assert "approved by policy rule oncall-break-glass" in auto.text
    expired = m.request_decided(m.REQUEST_EXPIRED, view(), by="dag:elevation_intake/run", reason="not decided in 24h")
    assert expired.text.endswith("was expired by the system.") and "not decided in 24h" in everything(expired)
    cancelled = m.request_decided(m.REQUEST_CANCELLED, view(), by="alice", reason=None)
    assert cancelled.kind == m.REQUEST_CANCELLED and "cancelled by alice" in cancelled.text


def test_session_messages():
    assert m.session_active(view()).text == (
        "Your access is active: AdministratorAccess on media-prod (123456789012) until 2026-11-29 11:30 UTC")
    soon = m.session_ending_soon(view(), timedelta(minutes=10))
    assert soon.text.startswith("Your access to AdministratorAccess on media-prod (123456789012) ends in 10m")
    ended = m.session_over(view(), revoked=False, by=None, reason=None)
    assert ended.kind == m.SESSION_ENDED and ended.text.endswith("has ended.")
    revoked = m.session_over(view(), revoked=True, by="carol", reason="incident closed")
    assert revoked.kind == m.SESSION_REVOKED and "revoked early by carol" in revoked.text
    assert "incident closed" in everything(revoked)


def test_trouble_reaches_requester_and_admins_with_the_error():
    for kind in (m.GRANT_FAILED, m.REVOKE_FAILED, m.REVOKE_OVERDUE):
        mine = m.trouble(kind, view(), reason="AccessDenied", for_admins=False)
        theirs = m.trouble(kind, view(), reason="AccessDenied", for_admins=True)
        assert mine.kind == theirs.kind == kind
        assert mine.text.startswith("Your access") and theirs.text.startswith("Request 42:")
        assert "AccessDenied" in everything(mine) and "alice" in theirs.text


def test_audit_results_no_findings_or_the_top_three_by_severity_with_a_link():
    clean = m.audit_result(view(), m.AuditView({}, link="https://reports.example/sessions/42.html", events=12),
                           to_requester=True)
    assert clean.text == "Audit of your session AdministratorAccess on media-prod (123456789012): no findings"
    assert "<https://reports.example/sessions/42.html|Open the report>" in everything(clean)
    top = [m.FindingItem("critical", "CloudTrail logging stopped"), m.FindingItem("high", "IAM user created"),
           m.FindingItem("high", "Access key created"), m.FindingItem("medium", "never shown")]
    found = m.audit_result(view(), m.AuditView({"critical": 1, "high": 2, "medium": 1}, top,
                                               link="https://reports.example/sessions/42.html"), to_requester=False)
    assert found.text == ("Audit of alice's session AdministratorAccess on media-prod (123456789012): 4 findings "
                          "(1 critical, 2 high, 1 medium)")
    text = everything(found)
    assert "CloudTrail logging stopped" in text and "Access key created" in text and "never shown" not in text


def test_the_digest_names_the_worst_sessions_and_open_drift():
    sessions = [m.DigestSession(1, "alice", "ReadOnlyAccess on sandbox-1", None, {}),
                m.DigestSession(2, "dave", "AdministratorAccess on media-prod", "critical", {"critical": 1, "low": 2},
                                "https://reports.example/sessions/2.html"),
                m.DigestSession(3, "erin", "PowerUserAccess on media-stg", "medium", {"medium": 1})]
    digest = m.nightly_digest("2026-11-28", sessions, m.DigestDrift(2, {"unexpected": 1, "missing": 1}))
    assert digest.text == "Nightly audit 2026-11-28: 3 sessions audited, 2 with findings"
    text = everything(digest)
    assert text.index("request 2") < text.index("request 3") and "request 1:" not in text
    assert "2 open items (1 missing, 1 unexpected)" in text
    assert "none open" in everything(m.nightly_digest("2026-11-28", [], m.DigestDrift()))
    assert "Worst findings" not in text  # none given, none shown


def test_the_digest_names_the_worst_findings_with_rule_severity_session_and_count():
    sessions = [m.DigestSession(2, "dave", "AdministratorAccess on media-prod", "critical", {"critical": 1, "high": 3})]
    findings = [m.DigestFinding("critical", "CloudTrail logging stopped or trail deleted", 2, "dave"),
                m.DigestFinding("high", "IAM access key created", 2, "dave", 3)]
    digest = m.nightly_digest("2026-11-28", sessions, None, findings)
    [section] = [b["text"]["text"] for b in digest.blocks if b.get("text", {}).get("text", "").startswith(
        "*Worst findings*")]
    assert section.splitlines() == [
        "*Worst findings*",
        ":red_circle: *critical* CloudTrail logging stopped or trail deleted · request 2 (dave)",
        ":large_orange_circle: *high* IAM access key created ×3 · request 2 (dave)",
    ]


def test_a_decided_request_replaces_the_approvers_message_without_buttons():
    for kind, by, expected in ((m.REQUEST_APPROVED, "bob", "Access request 42 was approved by bob"),
                               (m.REQUEST_EXPIRED, "dag:elevation_intake/x", "Access request 42 was expired by the system"),
                               (m.REQUEST_CANCELLED, "alice", "Access request 42 was cancelled by alice")):
        closed = m.request_pending_closed(kind, view(), by=by, reason="not decided in 24h")
        assert closed.kind == m.REQUEST_PENDING_CLOSED and closed.text == expected
        assert not [block for block in closed.blocks if block["type"] == "actions"]
        text = everything(closed)
        assert "deploy hotfix" in text and "OPS-7" in text and "not decided in 24h" in text
        assert "needs your decision" not in text


def test_settings_default_off_and_the_section_may_be_omitted():
    settings = ElevationConfig().notifications
    assert settings == NotifySettings() and not settings.enabled
    assert settings.slack_conn_id == "slack_api_default" and settings.ending_soon == timedelta(minutes=10)
    assert NotifySettings(ending_soon="5m").ending_soon == timedelta(minutes=5)
    with pytest.raises(ValueError):
        NotifySettings(security_channel="carol@example.com")
    with pytest.raises(ValueError):
        NotifySettings(unknown=1)
