"""Approving in the Airflow UI: what the approvers are asked, and how their answer goes through the decision path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from airflow.sdk.exceptions import AirflowFailException

from elevation.access.approval import (
    APPROVE,
    MAX_APPROVAL_RUNS,
    REJECT,
    DecisionRefused,
    UnexpectedAnswer,
    airflow_user_ids,
    apply_answer,
    approval_attempt,
    approvals_to_start,
    assignees,
    close_stale_approvals,
    not_pending,
    parse_run_id,
    pending_request_ids,
    question_for,
    request_id_of,
    requests_to_ask,
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


def test_run_ids_are_one_per_request_and_attempt():
    assert run_id_for(42) == "approval__42" == run_id_for(42, 1)
    assert run_id_for(42, 2) == "approval__42__2"
    assert request_id_of("approval__42") == 42 and request_id_of("approval__42__3") == 42
    assert parse_run_id("approval__42") == (42, 1) and parse_run_id("approval__42__3") == (42, 3)
    for other in ("manual__2026", "approval__x", "approval__42__x", "approval__42__1", "approval__42__", "approval__"):
        assert request_id_of(other) is None, other  # attempt 1 has one run id only: approval__42
    with pytest.raises(ValueError):
        run_id_for(42, 0)


def test_which_pending_requests_need_an_approval_run():
    """(runs it had, of those failed) -> the attempt to start: the first, the next after failures only, and none
    while one waits or after one ended without an error."""
    assert approval_attempt(0, 0) == 1  # none yet
    assert approval_attempt(1, 0) is None  # waiting, or answered / timed out / nobody to ask: no failure
    assert approval_attempt(1, 1) == 2  # its answer was lost (apply failed after its retries): ask again
    assert approval_attempt(2, 1) is None  # the second is waiting
    assert approval_attempt(2, 2) == 3
    assert approval_attempt(MAX_APPROVAL_RUNS, MAX_APPROVAL_RUNS) is None  # bounded: the admins were alerted
    assert approval_attempt(3, 3, max_runs=3) is None and approval_attempt(2, 2, max_runs=3) == 3
    runs = {1: (1, 0), 2: (1, 1), 4: (2, 2), 5: (MAX_APPROVAL_RUNS, MAX_APPROVAL_RUNS)}
    assert approvals_to_start([1, 2, 3, 4, 5], runs) == [(2, 2), (3, 1), (4, 3)]
    # Two dispatchers that saw the same thing want the same runs: the same run ids, so the second start is a no-op.
    assert approvals_to_start([1, 2, 3, 4, 5], runs) == approvals_to_start([1, 2, 3, 4, 5], dict(runs))


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


def test_a_repeated_answer_is_refused_quietly(pending, request_row):
    """`apply` is retried (a database error): its answer may already be recorded, or even applied, by the try
    before. The repeat is an action refused as not pending, and the run succeeds; nothing changes."""
    runtime, request_id = pending
    first = apply_answer(runtime, request_id, answered("bob", comment="go"))
    again = apply_answer(runtime, request_id, answered("bob", comment="go"))
    assert first.applied and not again.applied and again.status == "approved"
    assert "already decided by bob" in again.message
    row = request_row(request_id)
    assert row["status"] == "approved" and row["decided_by"] == "bob"
    with runtime.engine.connect() as conn:
        actions = conn.execute(queue.actions.select().order_by(queue.actions.c.id)).mappings().all()
    assert [(a["actor"], a["outcome"]) for a in actions] == [("bob", "applied"), ("bob", "refused")]
    assert actions[1]["outcome_reason"] == "cannot approve a request that is approved"


def test_an_answer_recorded_by_a_try_that_then_failed_is_applied_once(pending, request_row):
    """The first try inserted its action and failed before intake ran: the retry's intake applies that one, and
    refuses the retry's own, quietly."""
    runtime, request_id = pending
    with runtime.engine.begin() as conn:
        queue.insert_action(conn, request_id, "approve", "bob", "go")
    outcome = apply_answer(runtime, request_id, answered("bob", comment="go"))
    assert not outcome.applied and outcome.status == "approved" and "already decided by bob" in outcome.message
    assert request_row(request_id)["decided_by"] == "bob"


def test_a_refused_or_unreadable_answer_fails_without_retrying(pending):
    """A refusal is final: retrying would record it again. It fails the task at once (AirflowFailException), and
    the dispatcher asks again while the request is pending."""
    runtime, request_id = pending
    with pytest.raises(AirflowFailException):
        apply_answer(runtime, request_id, answered("alice"))
    with pytest.raises(UnexpectedAnswer):
        apply_answer(runtime, request_id, answered("bob", option="Maybe"))
    assert issubclass(DecisionRefused, AirflowFailException) and issubclass(UnexpectedAnswer, AirflowFailException)


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


def test_a_waiting_later_attempt_is_closed_like_the_first(pending):
    runtime, request_id = pending

    class FakeApi:
        def __init__(self) -> None:
            self.answers: list[tuple] = []

        def waiting_approvals(self) -> list[dict]:
            return [{"task_instance": {"dag_run_id": run_id, "task_id": "ask", "map_index": -1,
                                       "state": "awaiting_input"}}
                    for run_id in (run_id_for(request_id, 2), run_id_for(777, 2), run_id_for(777, 3))]

        def answer(self, run_id: str, *args: object) -> int:
            self.answers.append((run_id, *args))
            return 200 if run_id.endswith("__2") else 409  # the third was answered meanwhile

    api = FakeApi()
    assert close_stale_approvals(runtime, api) == [(777, "missing")]  # request_id is pending: its run waits on
    assert [answer[0] for answer in api.answers] == ["approval__777__2", "approval__777__3"]


class FakeTaskInstance:
    """The dispatcher's view of Airflow's runs (`ti.get_dr_count`, answered by the API server in a real run)."""

    def __init__(self, states: dict[str, str]) -> None:
        self.states = states
        self.asked = 0

    def get_dr_count(self, dag_id: str, logical_dates: object = None, run_ids: list[str] | None = None,
                     states: list[str] | None = None) -> int:
        assert dag_id == "elevation_approval"
        self.asked += 1
        return sum(1 for run_id in run_ids or [] if run_id in self.states
                   and (states is None or self.states[run_id] in states))


@pytest.fixture
def dispatch(monkeypatch, pending):  # noqa: ANN001, ANN201
    import elevation.runtime

    runtime, _ = pending
    monkeypatch.setattr(elevation.runtime, "runtime_for_run", lambda context, job: runtime)

    def _dispatch(states: dict[str, str]) -> list[str]:
        return [start["trigger_run_id"] for start in requests_to_ask({"ti": FakeTaskInstance(states)})]

    return _dispatch


def test_the_dispatcher_asks_again_when_the_approval_of_a_pending_request_failed(dispatch, pending, request_row):
    runtime, rid = pending
    assert dispatch({}) == [f"approval__{rid}"]
    assert dispatch({f"approval__{rid}": "running"}) == []
    assert dispatch({f"approval__{rid}": "success"}) == []  # answered, or timed out: nothing lost
    # The answer was lost (apply failed after its retries) while the request is still pending: a new run asks again.
    assert dispatch({f"approval__{rid}": "failed"}) == [f"approval__{rid}__2"]
    assert dispatch({f"approval__{rid}": "failed", f"approval__{rid}__2": "queued"}) == []
    assert dispatch({f"approval__{rid}": "failed", f"approval__{rid}__2": "failed"}) == [f"approval__{rid}__3"]
    # A failed run deleted by hand leaves a gap: the next free run id is used, never one that exists.
    assert dispatch({f"approval__{rid}__2": "failed"}) == [f"approval__{rid}__3"]
    every = {run_id_for(rid, n): "failed" for n in range(1, MAX_APPROVAL_RUNS + 1)}
    assert dispatch(every) == []  # bounded
    assert request_row(rid)["status"] == "pending"  # the dispatcher only starts runs

    # Decided elsewhere: a failed approval of a request no longer pending is not restarted.
    with runtime.engine.begin() as conn:
        queue.insert_action(conn, rid, "reject", "carol")
    run_intake(runtime)
    assert dispatch({f"approval__{rid}": "failed"}) == []


def test_two_dispatchers_at_once_start_the_same_run(dispatch, pending):
    """Both see the failed run and ask for the same next run id: TriggerDagRunOperator (skip_when_already_exists)
    makes the second start a no-op, so the approvers get one approval."""
    _, rid = pending
    seen = {f"approval__{rid}": "failed"}
    assert dispatch(dict(seen)) == dispatch(dict(seen)) == [f"approval__{rid}__2"]


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


# --- Airflow user ids: FAB's are numbers, not the user names --------------------------------------------------------


class FabLikeUser:
    """What FAB's user answers Airflow's HITL check with: `get_id()` is str(ab_user.id), `get_name()` the username."""

    def __init__(self, user_id: int, username: str) -> None:
        self.user_id, self.username = user_id, username

    def get_id(self) -> str:
        return str(self.user_id)

    def get_name(self) -> str:
        return self.username


def _may_respond(user: FabLikeUser, assigned: list[dict]) -> bool:
    """Airflow 3.3's check (BaseAuthManager.is_authorized_hitl_task, which FAB does not override)."""
    from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager

    return BaseAuthManager.is_authorized_hitl_task(None, assigned_users={a["id"] for a in assigned}, user=user)


def test_assigned_users_are_airflow_user_ids_mapped_from_the_logins():
    assert assignees(["bob", "carol"], {}) == [{"id": "bob", "name": "bob"}, {"id": "carol", "name": "carol"}]
    mapped = assignees(["bob", "carol"], {"bob": "3"})
    assert mapped == [{"id": "3", "name": "bob"}, {"id": "carol", "name": "carol"}]
    assert _may_respond(FabLikeUser(3, "bob"), mapped)
    assert not _may_respond(FabLikeUser(4, "carol"), mapped)  # unmapped: FAB's id 4 is not "carol"
    assert not _may_respond(FabLikeUser(3, "bob"), assignees(["bob"], {}))  # why the mapping is needed with FAB


def test_the_user_ids_variable_is_read_and_checked(monkeypatch):
    monkeypatch.delenv("AIRFLOW_VAR_ELEVATION_AIRFLOW_USER_IDS", raising=False)
    assert airflow_user_ids() == {}
    monkeypatch.setenv("AIRFLOW_VAR_ELEVATION_AIRFLOW_USER_IDS", '{"bob": 3, "carol": "4"}')
    assert airflow_user_ids() == {"bob": "3", "carol": "4"}
    for bad in ('["bob"]', '{"bob": true}', '{"bob": ""}', '{"bob": {"id": 3}}'):
        monkeypatch.setenv("AIRFLOW_VAR_ELEVATION_AIRFLOW_USER_IDS", bad)
        with pytest.raises(ValueError, match="elevation_airflow_user_ids"):
            airflow_user_ids()


def test_with_fab_the_approvers_are_assigned_by_id_and_their_answer_is_theirs(operator, pending, monkeypatch,
                                                                              request_row):
    from airflow.sdk.exceptions import TaskAwaitingInput

    runtime, request_id = pending
    monkeypatch.setenv("AIRFLOW_VAR_ELEVATION_AIRFLOW_USER_IDS", '{"bob": 3, "carol": 4, "elevation-system": 9}')
    written: dict = {}
    monkeypatch.setattr("airflow.providers.standard.operators.hitl.upsert_hitl_detail",
                        lambda **kwargs: written.update(kwargs))
    with pytest.raises(TaskAwaitingInput):
        operator.execute(_context(runtime, request_id))
    assert [(u["id"], u["name"]) for u in written["assigned_users"]] == [
        ("3", "bob"), ("4", "carol"), ("9", "elevation-system")]
    assert _may_respond(FabLikeUser(3, "bob"), written["assigned_users"])
    assert not _may_respond(FabLikeUser(5, "erin"), written["assigned_users"])
    # Airflow records the respondent as {id: "3", name: "bob"}: the decision is bob's.
    answer = {**answered("bob"), "responded_by_user": {"id": "3", "name": "bob"}}
    assert apply_answer(runtime, request_id, answer).applied
    assert request_row(request_id)["decided_by"] == "bob"
