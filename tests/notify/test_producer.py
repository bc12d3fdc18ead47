"""From what happened to the right people, once: requests lived through the real lifecycle on the emulator, the
notify job (produce, then send through the provider's SlackHook) run after each step against the fake Slack."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from elevation import jobs
from elevation.access.grants import run_grants
from elevation.access.intake import run_intake
from elevation.access.policy import Policy, approvers_for
from elevation.access.revocations import run_revocations
from elevation.store import outbox, queue
from elevation.store.tables import audits, findings_sent, heartbeats, notify_cursors
from elevation.store.tables import events as events_table
from elevation.store.tables import outbox as outbox_table

NOTIFICATIONS = {"enabled": True, "security_channel": "#security", "admin_channel": "#elevation-admin",
                 "audit_base_url": "https://reports.example/"}


def step(make_runtime, moment, *, lifecycle=True):
    runtime = make_runtime(as_of=moment, clock=lambda: moment)
    if lifecycle:
        run_intake(runtime)
        run_grants(runtime)
        run_revocations(runtime)
    return jobs.notify({}, runtime=runtime)


def texts(slack, who):
    return [m.text for m in slack.messages_to(who)]


def outbox_rows(engine):
    with engine.connect() as conn:
        return outbox.rows(conn)


def test_a_request_lived_through_tells_the_approver_then_the_requester_each_thing_once(
    world, configure, file_request, make_runtime, engine, slack
):
    configure({"notifications": NOTIFICATIONS})
    t0 = datetime.now(UTC).replace(second=0, microsecond=0)
    request = file_request(requester="alice", account_id="media-stg", permission_set="PowerUserAccess",
                           start_at=t0, duration_minutes=60, justification="deploy <!channel> hotfix", ticket="OPS-1")
    step(make_runtime, t0)
    [pending] = slack.messages_to("bob@example.com")  # Staging's approver; alice is not one
    assert pending.text.startswith(f"Access request {request}: alice asks for PowerUserAccess on media-stg (")
    body = json.dumps(pending.blocks)
    assert "deploy &lt;!channel&gt; hotfix" in body and "<!channel>" not in body and "OPS-1" in body
    buttons = next(block for block in pending.blocks if block["type"] == "actions")["elements"]
    assert [(b["action_id"], b["value"]) for b in buttons] == [("elevation_approve", str(request)),
                                                               ("elevation_reject", str(request))]
    assert slack.messages_to("alice@example.com") == [] and slack.messages_to("carol@example.com") == []

    with engine.begin() as conn:
        queue.insert_action(conn, request, "approve", "bob", "go ahead")
    step(make_runtime, t0 + timedelta(minutes=1))
    assert texts(slack, "alice@example.com")[0].endswith("was approved by bob.")
    assert texts(slack, "alice@example.com")[1].startswith("Your access is active: PowerUserAccess on media-stg")

    step(make_runtime, t0 + timedelta(minutes=30))  # nothing new
    step(make_runtime, t0 + timedelta(minutes=52))
    assert texts(slack, "alice@example.com")[2].startswith("Your access to PowerUserAccess on media-stg")
    assert " ends in 8m " in texts(slack, "alice@example.com")[2]
    step(make_runtime, t0 + timedelta(minutes=55))  # told once
    step(make_runtime, t0 + timedelta(minutes=61))
    step(make_runtime, t0 + timedelta(minutes=62))

    alice = texts(slack, "alice@example.com")
    assert len(alice) == 4 and alice[3].endswith("has ended.")
    [asked] = slack.messages_to("bob@example.com")
    assert asked.updated and asked.text == f"Access request {request} was approved by bob"  # the buttons went
    assert not [block for block in asked.blocks if block["type"] == "actions"]
    assert len(slack.messages) == 5
    rows = outbox_rows(engine)
    assert {row["state"] for row in rows} == {"sent"} and len(rows) == 6
    assert [row["kind"] for row in rows] == ["request_pending", "request_approved", "request_pending_closed",
                                             "session_active", "session_ending_soon", "session_ended"]
    assert all(row["slack_ts"] and row["request_id"] == request for row in rows)
    assert (rows[2]["slack_channel"], rows[2]["slack_ts"]) == (rows[0]["slack_channel"], rows[0]["slack_ts"])


def test_revoked_early_says_who_and_why_and_rejections_reach_the_requester(
    world, configure, file_request, make_runtime, engine, slack
):
    configure({"notifications": NOTIFICATIONS})
    t0 = datetime.now(UTC).replace(second=0, microsecond=0)
    first = file_request(requester="alice", account_id="media-stg", start_at=t0, duration_minutes=60)
    second = file_request(requester="erin", account_id="media-stg", start_at=t0, duration_minutes=60)
    step(make_runtime, t0)
    with engine.begin() as conn:
        queue.insert_action(conn, first, "approve", "bob")
        queue.insert_action(conn, second, "reject", "bob", "use <!here> ReadOnly instead")
    step(make_runtime, t0 + timedelta(minutes=1))
    with engine.begin() as conn:
        queue.insert_action(conn, first, "revoke", "bob", "incident closed")
    step(make_runtime, t0 + timedelta(minutes=5))
    step(make_runtime, t0 + timedelta(minutes=6))
    alice = texts(slack, "alice@example.com")
    assert alice[-1].startswith("Your access to PowerUserAccess on media-stg") and "revoked early by bob" in alice[-1]
    assert "incident closed" in json.dumps(slack.messages_to("alice@example.com")[-1].blocks)
    [rejected] = slack.messages_to("erin@example.com")
    assert rejected.text.endswith("was rejected by bob.")
    assert "use &lt;!here&gt; ReadOnly instead" in json.dumps(rejected.blocks)
    assert len(slack.messages_to("bob@example.com")) == 2  # the two pending requests


def test_failures_and_overdue_revokes_reach_the_requester_and_the_admins_once(
    world, configure, file_request, make_runtime, engine, slack
):
    configure({"notifications": NOTIFICATIONS})
    now = datetime.now(UTC)
    request = file_request(requester="alice", account_id="media-stg", start_at=now, duration_minutes=60)
    step(make_runtime, now, lifecycle=False)  # the cursor starts
    with engine.begin() as conn:
        for attempt in (1, 2, 3):  # a revoke failing every minute is told once
            queue.record_event(conn, at=now, kind="revoke_failed", actor="dag:x", request_id=request,
                               detail={"attempt": attempt, "reason": "AccessDeniedException <@U1>"})
        queue.beat(conn, "elevation_revocations", at=now, as_of=now, outcome="overdue",
                   detail={"overdue": [request], "failing": []})
    step(make_runtime, now + timedelta(minutes=1), lifecycle=False)
    step(make_runtime, now + timedelta(minutes=2), lifecycle=False)
    mine = slack.messages_to("alice@example.com")
    admins = slack.messages_to("#elevation-admin")
    assert [m.text.split(" outlives")[0].split(" could not")[0] for m in mine] == [
        f"Your access to PowerUserAccess on media-stg ({world.accounts['media-stg']})"] * 2
    assert len(admins) == 2 and all(m.text.startswith(f"Request {request}:") for m in admins)
    assert "AccessDeniedException &lt;@U1&gt;" in json.dumps(admins[0].blocks)
    assert {row["kind"] for row in outbox_rows(engine)} >= {"revoke_failed", "revoke_overdue"}


def test_audit_results_go_to_requester_and_approver_or_the_security_channel_then_the_digest(
    world, configure, file_request, make_runtime, engine, slack
):
    configure({"notifications": NOTIFICATIONS})
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    approved = file_request(requester="alice", account_id="media-stg", start_at=t0, duration_minutes=30)
    automatic = file_request(requester="dave", account_id="media-prod", permission_set="AdministratorAccess",
                             start_at=t0, duration_minutes=30)
    step(make_runtime, t0)
    with engine.begin() as conn:
        queue.insert_action(conn, approved, "approve", "bob")
    step(make_runtime, t0 + timedelta(minutes=1))
    step(make_runtime, t0 + timedelta(minutes=40))
    slack.messages.clear()

    night = t0.date().isoformat()
    audited = t0 + timedelta(minutes=50)
    with engine.begin() as conn:
        for request_id, found, worst in ((approved, {}, None), (automatic, {"critical": 1, "high": 2}, "critical")):
            conn.execute(sa.insert(audits).values(
                request_id=request_id, night=night, state="final", events=25, writes=3, findings=json.dumps(found),
                flags=0, worst=worst, report=f"/reports/sessions/{request_id}.html", audited_at=audited,
                finalized_at=audited))
        for key, rule, severity in (("k1", "cloudtrail_logging_stopped", "critical"),
                                    ("k2", "iam_create_user", "high"), ("k3", "iam_create_access_key", "high")):
            conn.execute(sa.insert(findings_sent).values(key=key, request_id=automatic, night=night, rule_id=rule,
                                                         event_id=key, severity=severity, written_at=audited))
    step(make_runtime, t0 + timedelta(minutes=51), lifecycle=False)
    step(make_runtime, t0 + timedelta(minutes=52), lifecycle=False)  # announced once
    [clean] = slack.messages_to("alice@example.com")
    assert clean.text.startswith("Audit of your session PowerUserAccess on media-stg") and "no findings" in clean.text
    assert f"<https://reports.example/sessions/{approved}.html|Open the report>" in json.dumps(clean.blocks)
    [for_bob] = slack.messages_to("bob@example.com")
    assert for_bob.text.startswith("Audit of alice's session")
    [dave] = slack.messages_to("dave@example.com")
    assert dave.text.endswith("3 findings (1 critical, 2 high)")
    assert "cloudtrail logging stopped" in json.dumps(dave.blocks)
    security = slack.messages_to("#security")
    assert [m.text for m in security] == [dave.text.replace("your session", "dave's session")]
    with engine.connect() as conn:
        assert all(conn.execute(sa.select(audits.c.announced_at)).scalars())

    step(make_runtime, audited + timedelta(minutes=16), lifecycle=False)
    step(make_runtime, audited + timedelta(minutes=17), lifecycle=False)
    digests = [m for m in slack.messages_to("#security") if m.text.startswith("Nightly audit")]
    assert [m.text for m in digests] == [f"Nightly audit {night}: 2 sessions audited, 1 with findings"]
    assert f"request {automatic}: dave" in json.dumps(digests[0].blocks)
    assert "*Drift*: none open" in json.dumps(digests[0].blocks)


def test_notifications_are_off_until_enabled(world, configure, file_request, make_runtime, engine, slack):
    configure()
    file_request(requester="alice", account_id="media-stg")
    assert step(make_runtime, datetime.now(UTC)) == {"enabled": False}
    assert outbox_rows(engine) == [] and slack.messages == []
    with engine.connect() as conn:
        assert conn.execute(sa.select(notify_cursors)).first() is None
        assert conn.execute(sa.select(heartbeats).where(heartbeats.c.job == "elevation_notify")).first() is None


def test_the_first_run_after_enabling_does_not_announce_old_history(
    world, configure, file_request, make_runtime, engine, slack
):
    configure({"notifications": NOTIFICATIONS})
    old = datetime.now(UTC) - timedelta(hours=3)
    file_request(requester="alice", account_id="media-stg", start_at=old + timedelta(hours=1))
    runtime = make_runtime(as_of=old, clock=lambda: old)
    run_intake(runtime)  # validated three hours ago: pending, nobody told
    step(make_runtime, datetime.now(UTC), lifecycle=False)
    assert slack.messages == []
    fresh = file_request(requester="erin", account_id="media-stg")
    step(make_runtime, datetime.now(UTC))
    assert [m.text.split(":")[0] for m in slack.messages_to("bob@example.com")] == [f"Access request {fresh}"]


def test_approvers_are_the_policys_for_the_account_never_the_requester_unless_self_approval_is_allowed():
    people = [{"login": name, "email": f"{name}@example.com", "identity_center_user": name}
              for name in ("alice", "bob", "carol", "dave")]
    rules = [{"ous": ["ou-prod-11111111"], "approvers": ["bob", "carol"]},
             {"accounts": ["111122223333"], "approvers": ["carol", "dave"]}]
    policy = Policy(people=people, approvers=rules)
    logins = lambda found: [person.login for person in found]  # noqa: E731
    assert logins(approvers_for(policy, "alice", "111122223333", ["ou-prod-11111111"])) == ["bob", "carol", "dave"]
    assert logins(approvers_for(policy, "bob", "111122223333", ["ou-prod-11111111"])) == ["carol", "dave"]
    assert logins(approvers_for(policy, "alice", "999999999999", ["ou-other-2222"])) == []
    selfish = Policy(people=people, approvers=rules, allow_self_approval=True)
    assert logins(approvers_for(selfish, "BOB@example.com", "111122223333", [])) == ["carol", "dave"]
    assert logins(approvers_for(selfish, "bob", "444455556666", ["ou-prod-11111111"])) == ["bob", "carol"]


def test_a_grant_aws_did_not_confirm_reaches_the_requester_and_the_admins(
    world, configure, file_request, make_runtime, engine, slack
):
    from elevation.lifecycle import Status

    configure({"notifications": NOTIFICATIONS})
    now = datetime.now(UTC)
    request = file_request(requester="alice", account_id="media-stg", start_at=now, duration_minutes=60)
    runtime = make_runtime(as_of=now, clock=lambda: now)
    run_intake(runtime)
    with engine.begin() as conn:
        queue.insert_action(conn, request, "approve", "bob")
    run_intake(runtime)
    with engine.begin() as conn:  # as the grant does when AWS reports the creation FAILED
        queue.transition(conn, request, expected=Status.APPROVED, target=Status.FAILED,
                         reason_code="grant_not_confirmed", actor="dag:elevation_grants/x", at=now,
                         reason="CreateAccountAssignment FAILED: <!channel> quota")
    step(make_runtime, now, lifecycle=False)
    alice = texts(slack, "alice@example.com")
    assert alice[0].endswith("was approved by bob.") and alice[1].endswith("could not be granted")
    [admins] = slack.messages_to("#elevation-admin")
    assert admins.text.startswith(f"Request {request}: PowerUserAccess on media-stg")
    assert "&lt;!channel&gt; quota" in json.dumps(admins.blocks)


def test_the_dag_runs_the_job(world, configure, file_request, run_dag, slack):
    configure({"notifications": NOTIFICATIONS})
    request = file_request(requester="alice", account_id="media-stg")
    now = datetime.now(UTC)
    assert run_dag("elevation_intake", now).state == "success"
    assert run_dag("elevation_notify", now).state == "success"
    [pending] = slack.messages_to("bob@example.com")
    assert pending.text.startswith(f"Access request {request}:")


# --- the events cursor and events committed out of id order ----------------------------------------------------


def _cursor_runtime(engine, moment):
    from elevation.config import ElevationConfig
    from elevation.notify.settings import NotifySettings
    from elevation.runtime import Runtime

    config = ElevationConfig(notifications=NotifySettings(enabled=True))
    return Runtime(config=config, engine=engine, identity_center_factory=lambda runtime: None, as_of=moment,
                   actor="test", clock=lambda: moment, worker="producer")


def _failed_revoke(conn, request_id, moment, event_id=None):
    values = {"id": event_id} if event_id is not None else {}
    conn.execute(sa.insert(events_table).values(
        at=moment, kind="revoke_failed", actor="test", request_id=request_id,
        detail=json.dumps({"reason": f"revoke of {request_id} failed"}), **values))


def _two_requests(engine, moment):
    with engine.begin() as conn:
        ids = [queue.insert_request(conn, requester=f"user{i}@example.com", account_id="111111111111",
                                    permission_set="AdminAccess", duration_minutes=60, justification="x",
                                    start_at=moment) for i in (1, 2)]
        outbox.set_cursor(conn, "events", 0, at=moment)  # not a first run
    return ids


def _announced(engine, request_id):
    with engine.connect() as conn:
        return [row["dedup_key"] for row in outbox.rows(conn, outbox_table.c.request_id == request_id)]


def test_an_event_committed_after_a_later_one_is_still_announced(engine):
    """A writer that took a lower event id commits after a higher id was read: the cursor must not skip it."""
    from elevation.notify.producer import produce

    moment = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
    first, second = _two_requests(engine, moment)
    with engine.begin() as conn:  # id 2 is visible; id 1 is still in its writer's open transaction
        _failed_revoke(conn, second, moment, event_id=2)
    produce(_cursor_runtime(engine, moment))
    assert _announced(engine, second) == [f"revoke_failed:{second}:user2@example.com"]
    with engine.begin() as conn:  # the slow writer commits id 1 a second later
        _failed_revoke(conn, first, moment, event_id=1)
    produce(_cursor_runtime(engine, moment + timedelta(seconds=1)))
    assert _announced(engine, first) == [f"revoke_failed:{first}:user1@example.com"]
    assert len(_announced(engine, second)) == 1  # and the other is not enqueued twice


@pytest.mark.postgres
def test_an_event_committed_after_a_later_one_is_still_announced_on_postgresql(postgres_url):
    """The same with two real concurrent transactions on PostgreSQL (ids from one sequence, committed out of order)."""
    from elevation.notify.producer import produce
    from elevation.store.database import create_engine_for_url
    from elevation.store.migrations import upgrade

    engine = create_engine_for_url(postgres_url)
    upgrade(engine)
    moment = datetime.now(UTC)
    first, second = _two_requests(engine, moment)
    slow = engine.connect()
    transaction = slow.begin()
    _failed_revoke(slow, first, moment)  # takes the lower id, not committed yet
    with engine.begin() as conn:
        _failed_revoke(conn, second, moment)  # the higher id, committed
    produce(_cursor_runtime(engine, moment))
    assert len(_announced(engine, second)) == 1
    transaction.commit()
    slow.close()
    produce(_cursor_runtime(engine, moment + timedelta(seconds=5)))
    assert _announced(engine, first) == [f"revoke_failed:{first}:user1@example.com"]
    assert len(_announced(engine, second)) == 1


def test_a_gap_left_by_a_rolled_back_writer_is_passed_once_it_is_old(engine):
    """An id nobody will ever commit holds the cursor back only for a while; what follows is announced once."""
    from elevation.notify.producer import GAP_GRACE, produce

    moment = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
    first, second = _two_requests(engine, moment)
    with engine.begin() as conn:
        _failed_revoke(conn, second, moment, event_id=2)  # id 1 was rolled back
    produce(_cursor_runtime(engine, moment))
    with engine.connect() as conn:
        assert outbox.cursor(conn, "events") == 0
    produce(_cursor_runtime(engine, moment + GAP_GRACE + timedelta(seconds=1)))
    with engine.connect() as conn:
        assert outbox.cursor(conn, "events") == 2
    assert len(_announced(engine, second)) == 1


# --- what a phone shows ---------------------------------------------------------------------------------------------


def blocks_of(message):
    """(type, text) of each block: what a phone shows, in order."""
    shown = []
    for block in message.blocks:
        if block["type"] == "section" and "text" in block:
            shown.append(("section", block["text"]["text"]))
        elif block["type"] == "section":
            shown.append(("fields", [field["text"] for field in block["fields"]]))
        elif block["type"] == "context":
            shown.append(("context", block["elements"][0]["text"]))
        else:
            shown.append((block["type"], None))
    return shown


def closed(slack, who):
    """The approval message someone got, after the request was decided: updated in place, no buttons."""
    [message] = slack.messages_to(who)
    assert message.updated and [kind for kind, _ in blocks_of(message)].count("actions") == 0
    return message


def test_an_expired_request_tells_the_requester_and_closes_every_approvers_message(
    world, configure, file_request, make_runtime, engine, slack
):
    configure({"notifications": NOTIFICATIONS})
    t0 = datetime.now(UTC).replace(second=0, microsecond=0)
    request = file_request(requester="erin", account_id="media-prod", start_at=t0, duration_minutes=60,
                           justification="rotate keys")
    step(make_runtime, t0)
    for approver in ("bob@example.com", "carol@example.com"):  # Production: both are asked
        [asked] = slack.messages_to(approver)
        assert [kind for kind, _ in blocks_of(asked)] == ["section", "fields", "section", "actions", "context"]
    step(make_runtime, t0 + timedelta(minutes=61))  # nobody decided before the window passed
    account = f"media-prod ({world.accounts['media-prod']})"
    [expired] = slack.messages_to("erin@example.com")
    assert expired.text == f"Your request for PowerUserAccess on {account} was expired."
    assert blocks_of(expired) == [
        ("section", f":hourglass: *Your request for PowerUserAccess on {account} was expired*"),
        ("section", "*Why*\nthe requested window passed before anyone decided"),
        ("context", f"Request {request}"),
    ]
    for approver in ("bob@example.com", "carol@example.com"):
        message = closed(slack, approver)
        assert message.text == f"Access request {request} was expired"
        shown = blocks_of(message)
        assert shown[0] == ("section", f":key: *Access request {request}*\nerin asked for PowerUserAccess on "
                                       f"{account} (1h)")
        assert shown[2] == ("section", "*Justification*\nrotate keys")
        assert shown[3] == ("section", ":hourglass: *Expired*\nthe requested window passed before anyone decided")
    step(make_runtime, t0 + timedelta(minutes=62))  # once
    assert len(slack.messages) == 3
    assert sum(1 for method, _ in slack.calls if method == "chat.update") == 2


def test_a_cancelled_request_tells_the_requester_and_closes_the_approvers_message(
    world, configure, file_request, make_runtime, engine, slack
):
    configure({"notifications": NOTIFICATIONS})
    t0 = datetime.now(UTC).replace(second=0, microsecond=0)
    request = file_request(requester="alice", account_id="media-stg", start_at=t0 + timedelta(hours=1))
    step(make_runtime, t0)
    with engine.begin() as conn:
        queue.insert_action(conn, request, "cancel", "alice", "fixed <!here> without it")
    step(make_runtime, t0 + timedelta(minutes=1))
    account = f"media-stg ({world.accounts['media-stg']})"
    [cancelled] = slack.messages_to("alice@example.com")
    assert cancelled.text == f"Your request for PowerUserAccess on {account} was cancelled by alice."
    assert blocks_of(cancelled) == [
        ("section", f":heavy_multiplication_x: *Your request for PowerUserAccess on {account} was cancelled by "
                    "alice*"),
        ("section", "*Why*\nfixed &lt;!here&gt; without it"),
        ("context", f"Request {request}"),
    ]
    message = closed(slack, "bob@example.com")
    assert message.text == f"Access request {request} was cancelled by alice"
    assert blocks_of(message)[3] == ("section", ":heavy_multiplication_x: *Cancelled by alice*\n"
                                                "fixed &lt;!here&gt; without it")


def test_a_pending_request_no_approver_can_be_told_about_alerts_the_admins(
    world, configure, file_request, make_runtime, engine, slack
):
    configure({"notifications": NOTIFICATIONS},
              approvers=[{"ous": [world.ous["Production"]], "approvers": ["bob", "carol"]}])  # none for Staging
    t0 = datetime.now(UTC).replace(second=0, microsecond=0)
    request = file_request(requester="alice", account_id="media-stg", start_at=t0, ticket="OPS-9",
                           justification="deploy @channel hotfix")
    step(make_runtime, t0)
    account = f"media-stg ({world.accounts['media-stg']})"
    [alert] = slack.messages_to("#elevation-admin")
    headline = (f"Request {request} (PowerUserAccess on {account} for alice) is pending and no approver can be "
                "told")
    assert alert.text == headline
    shown = blocks_of(alert)
    assert shown[:2] == [("section", f":warning: *{headline}*"),
                         ("section", "the policy names no approver (with an email) for this account")]
    assert shown[2][0] == "fields" and shown[2][1][:3] == ["*Requester*\nalice", f"*Account*\n{account}",
                                                          "*Permission set*\nPowerUserAccess"]
    assert "*Ticket*\nOPS-9" in shown[2][1]
    assert [m for m in slack.messages if m.channel != slack.channels["elevation-admin"]] == []  # nobody else
    assert [row["kind"] for row in outbox_rows(engine)] == ["approvers_missing"]


def test_session_messages_and_overdue_revokes_carry_their_blocks(
    world, configure, file_request, make_runtime, engine, slack
):
    configure({"notifications": NOTIFICATIONS})
    t0 = datetime.now(UTC).replace(second=0, microsecond=0)
    request = file_request(requester="alice", account_id="media-stg", start_at=t0, duration_minutes=30)
    step(make_runtime, t0)
    with engine.begin() as conn:
        queue.insert_action(conn, request, "approve", "bob")
    step(make_runtime, t0 + timedelta(minutes=1))
    step(make_runtime, t0 + timedelta(minutes=22))
    step(make_runtime, t0 + timedelta(minutes=31))
    step(make_runtime, t0 + timedelta(minutes=32))
    account = f"media-stg ({world.accounts['media-stg']})"
    approved, active, soon, ended = slack.messages_to("alice@example.com")
    end = f"{t0 + timedelta(minutes=30):%Y-%m-%d %H:%M} UTC"
    assert blocks_of(active) == [
        ("section", f":unlock: *Your access is active: PowerUserAccess on {account} until {end}*"),
        ("section", "Sign in through the AWS access portal; the assignment is removed when the window ends."),
        ("context", f"Request {request}"),
    ]
    assert blocks_of(soon) == [
        ("section", f":alarm_clock: *Your access to PowerUserAccess on {account} ends in 8m (at {end})*"),
        ("section", "Save your work; file a new request if you need more time."),
        ("context", f"Request {request}"),
    ]
    assert blocks_of(ended) == [
        ("section", f":lock: *Your access to PowerUserAccess on {account} has ended*"),
        ("context", f"Request {request} · the session's audit report follows after the nightly audit"),
    ]

    with engine.begin() as conn:  # the revocations heartbeat finds it overdue (as if the removal had not held)
        queue.beat(conn, "elevation_revocations", at=t0 + timedelta(minutes=45), as_of=t0, outcome="overdue",
                   detail={"overdue": [request], "failing": []})
    step(make_runtime, t0 + timedelta(minutes=46), lifecycle=False)
    overdue = slack.messages_to("alice@example.com")[-1]
    checked = f"{t0 + timedelta(minutes=45):%Y-%m-%d %H:%M} UTC"
    assert overdue.text == f"Your access to PowerUserAccess on {account} outlives its window"
    shown = blocks_of(overdue)
    assert shown[0] == ("section", f":rotating_light: *Your access to PowerUserAccess on {account} outlives its "
                                   "window*")
    assert shown[1] == ("section", "The assignment should be gone and is not (or not confirmed): an operator must "
                                   "look now.")
    assert shown[2][0] == "section" and shown[2][1].startswith("*Error*\n") and f"(checked {checked})" in shown[2][1]
    assert shown[3] == ("context", f"Request {request}")
    [admins] = [m for m in slack.messages_to("#elevation-admin") if "outlives" in m.text]
    assert admins.text == f"Request {request}: PowerUserAccess on {account} for alice outlives its window"
    assert [kind for kind, _ in blocks_of(admins)] == ["section", "section", "section", "fields", "context"]


# --- the digest: worst findings and open drift -------------------------------------------------------------------


LOGGING_STOPPED = "299ba572-a3c4-5461-9a93-f4262d717718"  # the pack's "CloudTrail logging stopped or trail deleted"


def test_the_digest_names_the_worst_findings_by_rule_title_and_the_open_drift_items(
    world, configure, file_request, make_runtime, engine, slack
):
    from elevation.store.tables import drift

    configure({"notifications": NOTIFICATIONS})
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    first = file_request(requester="alice", account_id="media-stg", start_at=t0, duration_minutes=30)
    second = file_request(requester="erin", account_id="media-prod", start_at=t0, duration_minutes=30)
    step(make_runtime, t0, lifecycle=False)
    night, audited = t0.date().isoformat(), t0 + timedelta(minutes=50)
    found = {first: [("f1", "iam_create_access_key", "high"), ("f2", "iam_create_access_key", "high"),
                     ("f3", "iam_create_access_key", "high"), ("f4", "s3_bucket_listing", "low")],
             second: [("f5", LOGGING_STOPPED, "critical"), ("f6", "elevation-exposure-public", "critical"),
                      ("f7", "ec2_instance_started", "medium")]}
    with engine.begin() as conn:
        for request_id, rows in found.items():
            counts: dict[str, int] = {}
            for _, _, severity in rows:
                counts[severity] = counts.get(severity, 0) + 1
            conn.execute(sa.insert(audits).values(
                request_id=request_id, night=night, state="final", events=40, writes=5, findings=json.dumps(counts),
                flags=0, worst=min(counts, key=["critical", "high", "medium", "low"].index),
                report=f"/r/{request_id}.html", audited_at=audited, finalized_at=audited))
            for key, rule, severity in rows:
                conn.execute(sa.insert(findings_sent).values(key=key, request_id=request_id, night=night,
                                                             rule_id=rule, event_id=key, severity=severity,
                                                             written_at=audited))
        for kind, principal in (("unexpected", "mallory"), ("unexpected", "trudy"), ("lingering", "alice")):
            conn.execute(sa.insert(drift).values(
                kind=kind, principal_type="USER", principal_id=f"id-{principal}", principal_name=principal,
                permission_set_arn="arn:aws:sso:::permissionSet/ssoins-1/ps-1", permission_set_name="AdministratorAccess",
                account_id=world.accounts["media-prod"], first_seen_at=t0, last_seen_at=t0))
        conn.execute(sa.insert(drift).values(  # resolved: not open
            kind="missing", principal_type="USER", principal_id="id-x", permission_set_arn="arn:x",
            account_id=world.accounts["media-prod"], first_seen_at=t0, last_seen_at=t0, resolved_at=t0))
    step(make_runtime, audited + timedelta(minutes=16), lifecycle=False)
    [digest] = [m for m in slack.messages_to("#security") if m.text.startswith("Nightly audit")]
    assert digest.text == f"Nightly audit {night}: 2 sessions audited, 2 with findings"
    sections = {text.split("\n")[0].split(":")[0]: text for kind, text in blocks_of(digest) if kind == "section"}
    assert sections["*Worst findings*"].splitlines() == [
        "*Worst findings*",
        f":red_circle: *critical* CloudTrail logging stopped or trail deleted · request {second} (erin)",
        f":red_circle: *critical* Access granted to everyone (public resource policy, share or trust) · request "
        f"{second} (erin)",
        f":large_orange_circle: *high* iam create access key ×3 · request {first} (alice)",
        f":large_yellow_circle: *medium* ec2 instance started · request {second} (erin)",
        f":white_circle: *low* s3 bucket listing · request {first} (alice)",
    ]
    assert sections["*Drift*"] == "*Drift*: 3 open items (1 lingering, 2 unexpected)"
    erins = [m for m in slack.messages_to("erin@example.com") if m.text.startswith("Audit of")]
    assert "CloudTrail logging stopped or trail deleted" in json.dumps(erins[0].blocks)  # titles, not rule ids
    assert LOGGING_STOPPED not in json.dumps([m.blocks for m in slack.messages])


def test_a_request_decided_while_slack_was_down_never_shows_approvers_live_buttons(
    world, configure, file_request, make_runtime, engine, slack
):
    configure({"notifications": NOTIFICATIONS})
    t0 = datetime.now(UTC).replace(second=0, microsecond=0)
    request = file_request(requester="erin", account_id="media-prod", start_at=t0)
    slack.fail_next(2, status=500, method="chat.postMessage")  # bob's and carol's approval messages fail
    step(make_runtime, t0)
    assert slack.messages == []
    with engine.begin() as conn:
        queue.insert_action(conn, request, "approve", "bob", "from the command line")
    step(make_runtime, t0 + timedelta(minutes=1))
    assert slack.messages_to("bob@example.com") == slack.messages_to("carol@example.com") == []
    assert [m.text.split(" on ")[0] for m in slack.messages_to("erin@example.com")] == [
        "Your request for PowerUserAccess", "Your access is active: PowerUserAccess"]
    rows = {(row["kind"], row["recipient"]): row for row in outbox_rows(engine)}
    for approver in ("bob@example.com", "carol@example.com"):
        asked, update = rows[("request_pending", approver)], rows[("request_pending_closed", approver)]
        assert asked["state"] == "skipped" and "need not be asked" in asked["last_error"]
        assert update["state"] == "skipped" and "never posted" in update["last_error"]
    # the first attempts had gone out with a mark: Slack was asked whether they got there before giving up on them
    assert len([method for method, _ in slack.calls if method == "conversations.history"]) == 2
    assert [method for method, _ in slack.calls if method == "chat.update"] == []
