"""Approving in the Airflow UI: what the approvers are asked, and how their answer goes through the decision path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from elevation.access.approval import (
    APPROVE,
    REJECT,
    DecisionRefused,
    apply_answer,
    close_stale_approvals,
    not_pending,
    pending_request_ids,
    question_for,
    request_id_of,
    run_id_for,
)
from elevation.access.intake import run_intake
from elevation.store import queue


def answered(by: str, option: str = APPROVE, comment: str | None = None) -> dict:
    return {"chosen_options": [option], "params_input": {"comment": comment},
            "responded_by_user": {"id": by, "name": by}, "responded_at": "2026-11-29T00:00:00+00:00"}


@pytest.fixture
def pending(make_runtime, file_request):  # noqa: ANN001, ANN201
    """A validated pending request of erin's on ec-prod (Production: bob and carol approve)."""
    runtime = make_runtime()
    request_id = file_request(requester="erin", account_id="ec-prod", permission_set="PowerUserAccess",
                              justification="release 4.2 <b>now</b> *bold*", ticket="CHG-315")
    run_intake(runtime)
    return runtime, request_id


def test_run_ids_are_one_per_request():
    assert run_id_for(42) == "approval__42"
    assert request_id_of("approval__42") == 42
    assert request_id_of("manual__2026") is None and request_id_of("approval__x") is None


def test_the_question_names_the_accounts_approvers_and_the_details(pending, world):
    runtime, request_id = pending
    question = question_for(runtime, request_id)
    assert question.skip is None
    assert question.approvers == ("bob", "carol")
    assert world.accounts["ec-prod"] in question.subject and "erin" in question.subject
    for text in ("erin", "PowerUserAccess", "CHG-315", "60 minutes", "release 4.2"):
        assert text in question.body
    assert "<b>" not in question.body and "\\*bold\\*" in question.body  # the justification is not markup
    assert timedelta(minutes=59) < question.timeout <= timedelta(minutes=60)  # until its window ends, here


def test_the_requester_is_never_asked_unless_self_approval_is_allowed(make_runtime, file_request, configure):
    runtime = make_runtime()
    request_id = file_request(requester="bob", account_id="ec-prod", permission_set="PowerUserAccess")
    run_intake(runtime)
    assert question_for(runtime, request_id).approvers == ("carol",)
    configure(allow_self_approval=True)
    assert question_for(make_runtime(), request_id).approvers == ("bob", "carol")


def test_the_wait_ends_before_the_window_does(make_runtime, file_request):
    runtime = make_runtime()
    request_id = file_request(requester="erin", account_id="ec-prod", duration_minutes=30)
    run_intake(runtime)
    assert question_for(runtime, request_id).timeout <= timedelta(minutes=30)


def test_nobody_is_asked_about_a_request_that_is_not_pending(pending, request_row):
    runtime, request_id = pending
    with runtime.engine.begin() as conn:
        queue.insert_action(conn, request_id, "cancel", "erin")
    run_intake(runtime)
    question = question_for(runtime, request_id)
    assert question.skip and "cancelled" in question.skip and question.approvers == ()
    assert question_for(runtime, 9999).skip == "there is no request 9999"
    outcome = apply_answer(runtime, request_id, {"request_id": request_id, "skip": question.skip})
    assert not outcome.applied and outcome.status == "cancelled"


def test_an_approval_is_an_action_row_applied_by_intake(pending, request_row):
    runtime, request_id = pending
    outcome = apply_answer(runtime, request_id, answered("bob", comment="ok for the release"))
    assert outcome.applied and outcome.status == "approved"
    row = request_row(request_id)
    assert row["decided_by"] == "bob" and row["approver"] == "bob"
    with runtime.engine.connect() as conn:
        actions = conn.execute(queue.actions.select()).mappings().all()
    assert [(a["action"], a["actor"], a["outcome"], a["comment"]) for a in actions] == [
        ("approve", "bob", "applied", "ok for the release")]


def test_a_rejection_and_an_answer_by_email(pending, request_row):
    runtime, request_id = pending
    outcome = apply_answer(runtime, request_id, answered("carol@example.com", REJECT))
    assert outcome.applied and request_row(request_id)["status"] == "rejected"
    assert request_row(request_id)["decided_by"] == "carol"  # the Airflow user mapped to the policy person


def test_a_refused_answer_fails_with_intakes_reason(pending, request_row):
    runtime, request_id = pending
    with pytest.raises(DecisionRefused, match="not an approver for account"):
        apply_answer(runtime, request_id, answered("alice"))
    with pytest.raises(DecisionRefused, match="not a known person"):
        apply_answer(runtime, request_id, answered("mallory"))
    assert request_row(request_id)["status"] == "pending"


def test_the_requester_answering_is_refused(make_runtime, file_request, request_row):
    runtime = make_runtime()
    request_id = file_request(requester="bob", account_id="ec-prod", permission_set="PowerUserAccess")
    run_intake(runtime)
    with pytest.raises(DecisionRefused, match="may not approve their own request"):
        apply_answer(runtime, request_id, answered("bob"))
    assert request_row(request_id)["status"] == "pending"


def test_decided_elsewhere_meanwhile_changes_nothing(pending, request_row):
    runtime, request_id = pending
    with runtime.engine.begin() as conn:  # e.g. the command line, or Slack: carol rejects first
        queue.insert_action(conn, request_id, "reject", "carol", "no")
    run_intake(runtime)
    outcome = apply_answer(runtime, request_id, answered("bob"))
    assert not outcome.applied and outcome.status == "rejected" and "decided elsewhere" in outcome.message
    row = request_row(request_id)
    assert row["status"] == "rejected" and row["decided_by"] == "carol"


def test_a_timeout_or_a_system_answer_records_nothing(pending, request_row):
    runtime, request_id = pending
    assert not apply_answer(runtime, request_id, {"request_id": request_id, "timed_out": True}).applied
    closing = answered("elevation-system", REJECT)
    assert not apply_answer(runtime, request_id, closing, ("elevation-system",)).applied
    assert request_row(request_id)["status"] == "pending"
    with runtime.engine.connect() as conn:
        assert conn.execute(queue.actions.select()).first() is None


def test_pending_requests_and_stale_approvals(pending, make_runtime, file_request):
    runtime, request_id = pending
    unvalidated = file_request(requester="erin", account_id="ec-prod")
    assert pending_request_ids(runtime) == [request_id]
    assert not_pending(runtime, [request_id, unvalidated, 777]) == {777: "missing"}

    class FakeApi:
        def __init__(self) -> None:
            self.answers: list[tuple] = []

        def waiting_approvals(self) -> list[dict]:
            return [{"task_instance": {"dag_run_id": run_id_for(rid), "task_id": "ask", "map_index": -1,
                                       "state": "awaiting_input"}} for rid in (request_id, 777)]

        def answer(self, *args: object) -> int:
            self.answers.append(args)
            return 200

    api = FakeApi()
    assert close_stale_approvals(runtime, api) == [(777, "missing")]  # the pending one keeps waiting
    assert api.answers == [("approval__777", "ask", -1, REJECT, "closed: request 777 is missing (decided elsewhere)")]


def test_an_expired_request_is_not_asked_about(make_runtime, file_request):
    runtime = make_runtime()
    request_id = file_request(requester="erin", account_id="ec-prod", start_at=datetime.now(UTC) + timedelta(days=3))
    run_intake(runtime)
    later = make_runtime(clock=lambda: datetime.now(UTC) + timedelta(hours=25))
    assert "expires" in question_for(later, request_id).skip


# --- the operator: what it asks, and that a timeout decides nothing -----------------------------------------------


class _Run:
    run_id = "approval__1"
    triggering_user_name = None


def _context(runtime, request_id: int) -> dict:  # noqa: ANN001
    return {"params": {"request_id": request_id}, "dag_run": _Run(), "logical_date": runtime.as_of,
            "task_instance": type("TI", (), {"id": "ti-1"})()}


@pytest.fixture
def operator(monkeypatch, pending):  # noqa: ANN001, ANN201
    import elevation.runtime
    from elevation.access.approval import AskApprovers

    runtime, _ = pending
    monkeypatch.setattr(elevation.runtime, "runtime_for_run", lambda context, job: runtime)
    monkeypatch.setattr("elevation.access.approval.system_users", lambda: ("elevation-system",))
    return AskApprovers(task_id="ask")


def test_the_operator_parks_for_the_approvers_with_the_requests_deadline(operator, pending, monkeypatch):
    from airflow.sdk.exceptions import TaskAwaitingInput

    runtime, request_id = pending
    written: dict = {}
    monkeypatch.setattr("airflow.providers.standard.operators.hitl.upsert_hitl_detail",
                        lambda **kwargs: written.update(kwargs))
    assert operator.defaults is None  # nothing is chosen on timeout
    with pytest.raises(TaskAwaitingInput):
        operator.execute(_context(runtime, request_id))
    assert [user["id"] for user in written["assigned_users"]] == ["bob", "carol", "elevation-system"]
    assert written["options"] == [APPROVE, REJECT] and "CHG-315" in written["body"]
    assert timedelta(minutes=59) < operator.response_timeout <= timedelta(minutes=60)


def test_the_operator_asks_nobody_about_a_decided_request(operator, pending):
    runtime, request_id = pending
    with runtime.engine.begin() as conn:
        queue.insert_action(conn, request_id, "reject", "carol")
    run_intake(runtime)
    result = operator.execute(_context(runtime, request_id))
    assert result["status"] == "rejected" and "nobody is asked" in result["skip"]


def test_a_timeout_returns_without_an_answer(operator, pending, request_row):
    runtime, request_id = pending
    result = operator.execute_complete(_context(runtime, request_id),
                                       {"error": "The response timeout has passed", "error_type": "timeout"})
    assert result == {"request_id": request_id, "timed_out": True}
    assert not apply_answer(runtime, request_id, result).applied
    assert request_row(request_id)["status"] == "pending"


def test_an_answer_is_passed_on_with_its_responder(operator, pending):
    runtime, request_id = pending
    at = datetime.now(UTC)
    result = operator.execute_complete(_context(runtime, request_id), {
        "chosen_options": [APPROVE], "params_input": {"comment": "ok"}, "responded_at": at,
        "responded_by_user": {"id": "bob", "name": "bob"}, "timedout": False})
    assert result["chosen_options"] == [APPROVE] and result["responded_by_user"]["name"] == "bob"
    assert apply_answer(runtime, request_id, result).applied
