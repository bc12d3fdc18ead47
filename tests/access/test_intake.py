"""Bad input: each bad row ends rejected with a readable reason on it; nothing else is held up."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from conftest import minutes
from elevation.access.intake import run_intake
from elevation.store import queue

HOSTILE_TEXT = "本番障害対応のため'); DROP TABLE elevation_request; -- <script>alert('x')</script> 🚨"

# (case id, row values that differ from a valid request, expected words in the reason)
BAD_ROWS = [
    ("malformed account id", {"account_id": "12345"}, "'12345' is not 12 digits"),
    ("account id with letters", {"account_id": "12345678901x"}, "is not 12 digits"),
    ("unknown permission set", {"permission_set": "SuperAdmin"}, "permission set 'SuperAdmin' does not exist"),
    ("unknown person", {"requester": "mallory"}, "requester 'mallory' is not a known person"),
    ("person without an Identity Center user", {"requester": "frank"}, "Identity Center user 'frank'"),
    ("unknown group", {"principal_group": "ghosts"}, "group 'ghosts' does not exist"),
    ("duration over the policy maximum", {"duration_minutes": 13 * 60}, "over the policy maximum"),
    ("duration over the eligible maximum", {"duration_minutes": 9 * 60}, "over the eligible maximum 8:00:00"),
    ("window already over", {"start_at": "past"}, "the requested window is already over"),
    ("requester not eligible", {"requester": "hanako", "account_id": "media-prod"}, "hanako is not eligible"),
    ("approver not named for the account", {"status": "approved", "approver": "erin"}, "erin is not an approver"),
    ("self-approval", {"requester": "bob", "account_id": "media-prod", "status": "approved", "approver": "bob"},
     "may not approve their own"),
    ("approved without an approver", {"status": "approved"}, "inserted as approved without an approver"),
    ("forbidden account", {"account_id": "123456789012"}, "account 123456789012 can never be requested"),
    ("missing justification", {"justification": "   "}, "a justification is required"),
    ("justification over the limit", {"justification": "x" * 5000}, "justification is 5000 characters long"),
    ("ticket over the limit", {"ticket": "T" * 201}, "ticket is 201 characters long; the limit is 200"),
]


@pytest.mark.parametrize(("values", "reason"), [case[1:] for case in BAD_ROWS], ids=[case[0] for case in BAD_ROWS])
def test_a_bad_row_ends_rejected_with_the_reason_on_the_row(values, reason, file_request, request_row, make_runtime):
    now = datetime.now(UTC)
    values = dict(values)
    if values.get("start_at") == "past":
        values["start_at"] = now - minutes(180)
    bad = file_request(**values)
    good = file_request(requester="erin", justification="rotate keys")  # Staging, needs bob's approval
    summary = run_intake(make_runtime(as_of=now))
    row = request_row(bad)
    assert row["status"] == "rejected", row
    assert row["reason_code"] == "invalid_request"
    assert reason in row["status_reason"]
    assert [rejected for rejected, _ in summary.rejected] == [bad]
    assert request_row(good)["status"] == "pending"


def test_the_management_account_is_forbidden_even_when_the_policy_does_not_name_it(
    world, configure, file_request, request_row, make_runtime
):
    configure(management_account_id=None)
    request_id = file_request(account_id=world.management_account_id)
    run_intake(make_runtime())
    row = request_row(request_id)
    assert row["status"] == "rejected"
    assert "is the organization's management account" in row["status_reason"]


def test_duplicate_client_request_ids_reject_the_later_row(file_request, request_row, make_runtime):
    first = file_request(client_request_id="JIRA-42")
    second = file_request(client_request_id="JIRA-42")
    run_intake(make_runtime())
    assert request_row(first)["status"] == "pending"
    row = request_row(second)
    assert row["status"] == "rejected"
    assert row["status_reason"] == f"duplicate client_request_id 'JIRA-42': already used by request {first}"


def test_free_text_in_any_language_with_sql_and_html_is_stored_verbatim(file_request, request_row, make_runtime):
    request_id = file_request(justification=HOSTILE_TEXT, ticket="<b>INC-1</b>")
    run_intake(make_runtime())
    row = request_row(request_id)
    assert row["status"] == "pending"
    assert row["justification"] == HOSTILE_TEXT and row["ticket"] == "<b>INC-1</b>"


def test_pending_requests_nobody_decides_expire(file_request, request_row, make_runtime):
    now = datetime.now(UTC)
    request_id = file_request(start_at=now + minutes(60 * 23), duration_minutes=180)
    run_intake(make_runtime(as_of=now))
    assert request_row(request_id)["status"] == "pending"
    run_intake(make_runtime(as_of=now + minutes(24 * 60 + 1)))
    row = request_row(request_id)
    assert (row["status"], row["reason_code"]) == ("expired", "not_decided_in_time")


def test_an_approval_by_someone_the_policy_does_not_name_is_refused_and_recorded(
    engine, file_request, request_row, make_runtime
):
    request_id = file_request()
    with engine.begin() as conn:
        action_id = queue.insert_action(conn, request_id, "approve", "carol")  # carol approves production only
    summary = run_intake(make_runtime())
    assert request_row(request_id)["status"] == "pending"
    with engine.connect() as conn:
        action = queue.get_action(conn, action_id)
    assert action["outcome"] == "refused"
    assert action["outcome_reason"] == f"carol is not an approver for account {request_row(request_id)['account_id']}"
    assert summary.actions_refused == [(action_id, action["outcome_reason"])]


def test_only_the_requester_can_cancel(engine, file_request, request_row, make_runtime):
    request_id = file_request()
    with engine.begin() as conn:
        refused = queue.insert_action(conn, request_id, "cancel", "bob")
        applied = queue.insert_action(conn, request_id, "cancel", "alice@example.com")  # email works as login
    run_intake(make_runtime())
    with engine.connect() as conn:
        assert queue.get_action(conn, refused)["outcome_reason"] == "only the requester can cancel a request"
        assert queue.get_action(conn, applied)["outcome"] == "applied"
    assert request_row(request_id)["status"] == "cancelled"


def test_all_bad_rows_at_once_do_not_hold_up_a_good_one_or_crash_the_dag(
    world, file_request, request_row, run_dag, run_grant_cycle
):
    now = datetime.now(UTC)
    bad = []
    for _, values, _ in BAD_ROWS:
        values = dict(values)
        if values.get("start_at") == "past":
            values["start_at"] = now - minutes(180)
        bad.append(file_request(**{"start_at": now, **values}))
    good = file_request(requester="dave", account_id="media-prod", permission_set="AdministratorAccess",
                        start_at=now, justification=HOSTILE_TEXT)
    assert run_grant_cycle(now) == "success"
    assert all(request_row(request_id)["status"] == "rejected" for request_id in bad)
    assert request_row(good)["status"] == "active"
    assert world.has_assignment("dave", "media-prod", "AdministratorAccess")


def test_a_cancel_waits_while_a_grant_holds_the_request_so_no_access_is_left_untracked(
    engine, file_request, request_row, make_runtime
):
    from datetime import timedelta

    request_id = file_request(requester="dave", account_id="media-prod", permission_set="AdministratorAccess")
    run_intake(make_runtime())
    assert request_row(request_id)["status"] == "approved"
    now = datetime.now(UTC)
    claimed = queue.claim(engine, statuses=[queue.Status.APPROVED], worker="grant-worker", now=now,
                          lease=timedelta(minutes=15))
    assert [row["id"] for row in claimed] == [request_id]
    with engine.begin() as conn:
        action_id = queue.insert_action(conn, request_id, "cancel", "dave")
    run_intake(make_runtime())
    with engine.connect() as conn:
        assert queue.get_action(conn, action_id)["processed_at"] is None  # left for the next run
    assert request_row(request_id)["status"] == "approved"
    with engine.begin() as conn:
        queue.release(conn, request_id, "grant-worker")
    run_intake(make_runtime())
    assert request_row(request_id)["status"] == "cancelled"


def test_an_approver_named_on_a_pending_row_approves_nothing(file_request, request_row, make_runtime):
    request_id = file_request(requester="dave", account_id="media-prod", permission_set="AdministratorAccess",
                              approver="bob")  # status pending: auto-approved by the on-call rule
    run_intake(make_runtime())
    row = request_row(request_id)
    assert (row["status"], row["decided_by"], row["approver"]) == ("approved", "policy:oncall-break-glass", None)


def test_an_unreadable_insert_time_rejects_the_row_without_stopping_intake(engine, world, request_row, make_runtime):
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO elevation_request (requester, account_id, permission_set, duration_minutes, "
                "justification, start_at, created_at) VALUES ('alice', :account, 'PowerUserAccess', 60, 'x', "
                ":start, 'yesterday-ish')"
            ),
            {"account": world.accounts["media-stg"], "start": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")},
        )
        request_id = conn.execute(sa.text("SELECT max(id) FROM elevation_request")).scalar_one()
    run_intake(make_runtime())
    row = request_row(request_id)
    assert row["status"] == "rejected" and "created_at 'yesterday-ish' is not a valid time" in row["status_reason"]


def test_a_well_formed_account_that_is_not_in_the_organization_is_rejected_not_deferred(
    file_request, request_row, make_runtime
):
    request_id = file_request(requester="dave", account_id="999988887777", permission_set="AdministratorAccess")
    run_intake(make_runtime())
    row = request_row(request_id)
    assert row["status"] == "rejected"
    assert row["status_reason"] == "account 999988887777 is not in the organization"


def test_an_approvers_comment_reaches_the_row_bounded_and_on_one_line(engine, file_request, request_row, make_runtime):
    request_id = file_request()
    comment = "ok\n\x1b[31m" + "x" * 5000
    with engine.begin() as conn:
        action_id = queue.insert_action(conn, request_id, "reject", "bob", comment)
    run_intake(make_runtime())
    reason = request_row(request_id)["status_reason"]
    assert reason.startswith("ok [31mxxx") and reason.endswith("…") and len(reason) == 500
    with engine.connect() as conn:
        assert queue.get_action(conn, action_id)["comment"] == comment  # the full text stays on the action


def test_client_request_ids_are_unique_per_writer_so_one_system_cannot_preclaim_anothers(
    engine, file_request, request_row, make_runtime
):
    ticketing = file_request(client_request_id="REQ-1", submitted_by="ticketing")
    chat = file_request(client_request_id="REQ-1", submitted_by="chatops")
    again = file_request(client_request_id="REQ-1", submitted_by="ticketing")
    run_intake(make_runtime())
    assert request_row(ticketing)["status"] == request_row(chat)["status"] == "pending"
    assert request_row(again)["status_reason"] == f"duplicate client_request_id 'REQ-1': already used by request {ticketing}"
