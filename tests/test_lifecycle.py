"""The state machine: every allowed transition works, every other is refused, from every entry path."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from elevation import cli
from elevation.lifecycle import ACTIONS, TERMINAL, TRANSITIONS, Status, TransitionRefused, check_transition
from elevation.store import queue
from elevation.store.database import create_engine_for_url
from elevation.store.migrations import upgrade

ALL_PAIRS = list(itertools.product(Status, Status))


@pytest.fixture(scope="module")
def machine_engine(tmp_path_factory):
    engine = create_engine_for_url(f"sqlite:///{tmp_path_factory.mktemp('machine')}/queue.db")
    upgrade(engine)
    return engine


def _row_in(engine, status: Status) -> int:
    """A request sitting in `status` (inserted pending, then put there directly for the test)."""
    with engine.begin() as conn:
        request_id = queue.insert_request(conn, requester="alice", account_id="111122223333",
                                          permission_set="PowerUserAccess", duration_minutes=60)
        conn.execute(queue.requests.update().where(queue.requests.c.id == request_id).values(status=status.value))
    return request_id


@pytest.mark.parametrize(("source", "target"), list(TRANSITIONS), ids=lambda s: str(s))
def test_every_allowed_transition_is_applied_and_logged(machine_engine, source, target):
    request_id = _row_in(machine_engine, source)
    reason_code = sorted(TRANSITIONS[(source, target)])[0]
    now = datetime.now(UTC)
    with machine_engine.begin() as conn:
        queue.transition(conn, request_id, expected=source, target=target, reason_code=reason_code,
                         actor="test", at=now)
        row = queue.get_request(conn, request_id)
        event = conn.execute(queue.events.select().where(queue.events.c.request_id == request_id)).mappings().one()
    assert (row["status"], row["reason_code"]) == (target.value, reason_code)
    assert (event["from_status"], event["to_status"], event["actor"], event["at"]) == (
        source.value, target.value, "test", now)


@pytest.mark.parametrize(("source", "target"), [pair for pair in ALL_PAIRS if pair not in TRANSITIONS],
                         ids=lambda s: str(s))
def test_every_other_transition_is_refused_and_changes_nothing(machine_engine, source, target):
    request_id = _row_in(machine_engine, source)
    with machine_engine.begin() as conn, pytest.raises(TransitionRefused):
        queue.transition(conn, request_id, expected=source, target=target, reason_code="anything",
                         actor="test", at=datetime.now(UTC))
    with machine_engine.connect() as conn:
        assert queue.get_request(conn, request_id)["status"] == source.value


def test_a_transition_needs_a_reason_code_from_the_table():
    with pytest.raises(TransitionRefused, match="needs one of the reasons"):
        check_transition(Status.PENDING, Status.APPROVED, "because")


def test_terminal_states_have_no_way_out_and_each_has_a_reason_code():
    assert not [pair for pair in TRANSITIONS if pair[0] in TERMINAL]
    for state in TERMINAL:
        assert any(target == state and reasons for (_, target), reasons in TRANSITIONS.items())


def test_a_stale_writer_cannot_move_a_request_someone_else_moved(machine_engine):
    request_id = _row_in(machine_engine, Status.PENDING)
    now = datetime.now(UTC)
    with machine_engine.begin() as conn:
        queue.transition(conn, request_id, expected=Status.PENDING, target=Status.CANCELLED,
                         reason_code="cancelled_by_requester", actor="alice", at=now)
    with machine_engine.begin() as conn, pytest.raises(queue.StaleRequest):
        queue.transition(conn, request_id, expected=Status.PENDING, target=Status.APPROVED,
                         reason_code="approved_by_approver", actor="bob", at=now)


def test_bookkeeping_updates_cannot_change_the_status(machine_engine):
    request_id = _row_in(machine_engine, Status.PENDING)
    with machine_engine.begin() as conn, pytest.raises(ValueError, match="transition"):
        queue.update_request(conn, request_id, status="active")


def test_outside_writers_can_only_insert_pending_or_approved_rows(machine_engine):
    import sqlalchemy as sa

    for status in Status:
        insert = sa.text("INSERT INTO elevation_request (requester, account_id, permission_set, duration_minutes, "
                         "status) VALUES ('x', '111122223333', 'p', 60, :status)")
        if status in (Status.PENDING, Status.APPROVED):
            with machine_engine.begin() as conn:
                conn.execute(insert, {"status": status.value})
        else:
            refused = pytest.raises(sa.exc.IntegrityError, match="insert with status pending or approved")
            with refused, machine_engine.begin() as conn:
                conn.execute(insert, {"status": status.value})


# --- every entry path goes through the same code -----------------------------------------------------------


@pytest.mark.parametrize("path", ["table", "cli", "form"])
@pytest.mark.parametrize(("start", "action"), [(s, a) for a, by in ACTIONS.items() for s in Status if s not in by])
def test_actions_from_a_state_that_does_not_allow_them_are_refused_on_every_path(
    path, start, action, engine, file_request, request_row, make_runtime, queue_url, monkeypatch
):
    from elevation.access.intake import run_intake

    request_id = file_request()
    if start != Status.PENDING:
        with engine.begin() as conn:
            conn.execute(queue.requests.update().where(queue.requests.c.id == request_id)
                         .values(status=start.value, validated_at=datetime.now(UTC)))
    actor = "alice"
    if path == "table":
        with engine.begin() as conn:
            queue.insert_action(conn, request_id, action, actor)
    elif path == "cli":
        assert cli.main(["--database-url", queue_url, action, str(request_id), "--as", actor]) == 0
    if path == "form":
        from elevation.jobs import ActionRefused, decide

        with pytest.raises(ActionRefused, match=f"{action} of request {request_id} by {actor} refused: cannot"):
            decide({"request_id": request_id, "action": action, "actor": actor},
                   {"dag_run": None, "logical_date": datetime.now(UTC)})
    else:
        run_intake(make_runtime())
    with engine.connect() as conn:
        recorded = conn.execute(queue.actions.select()).mappings().one()
    assert recorded["outcome"] == "refused"
    reason = recorded["outcome_reason"]
    hint = "; end it early with revoke" if (start, action) == (Status.ACTIVE, "cancel") else ""
    assert reason == f"cannot {action} a request that is {start.value}{hint}"
    assert request_row(request_id)["status"] == start.value


def test_the_readme_shows_exactly_the_transition_table_the_code_enforces():
    from pathlib import Path

    from elevation.lifecycle import transition_table_markdown

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert transition_table_markdown() in readme


def test_the_forms_file_and_decide_through_the_real_dags(world, engine, request_row, run_dag, dagbag):
    now = datetime.now(UTC)
    form = dagbag.get_dag("elevation_request")
    run = form.test(logical_date=now, run_conf={
        "requester": "erin", "account_id": world.accounts["media-prod"], "permission_set": "PowerUserAccess",
        "duration_minutes": 90, "justification": "リリース作業 <release>", "ticket": "CHG-7",
    })
    assert run.state == "success"
    with engine.connect() as conn:
        request_id = conn.execute(queue.requests.select()).mappings().one()["id"]
    assert request_row(request_id)["status"] == "pending"

    decide = dagbag.get_dag("elevation_decide")
    refused = decide.test(logical_date=now, run_conf={"request_id": request_id, "action": "approve", "actor": "erin"})
    assert refused.state == "failed"  # a refused decision is a failed run, not a green one with an info line
    assert request_row(request_id)["status"] == "pending"  # erin cannot approve her own request
    approved = decide.test(logical_date=now, run_conf={"request_id": request_id, "action": "approve", "actor": "carol"})
    assert approved.state == "success"
    row = request_row(request_id)
    assert (row["status"], row["decided_by"], row["justification"]) == ("approved", "carol", "リリース作業 <release>")


@pytest.mark.parametrize("field", ["actor", "requester"])
def test_the_forms_act_as_the_logged_in_user_never_in_someone_elses_name(field):
    from types import SimpleNamespace

    from elevation.jobs import acting_user

    logged_in = {"dag_run": SimpleNamespace(triggering_user_name="carol")}
    assert acting_user({field: None}, logged_in, field) == "carol"
    assert acting_user({field: "carol"}, logged_in, field) == "carol"
    with pytest.raises(PermissionError, match=f"{field}='dave', but the run was triggered by 'carol'"):
        acting_user({field: "dave"}, logged_in, field)
    no_user = {"dag_run": SimpleNamespace(triggering_user_name="dag_test")}
    assert acting_user({field: "bob"}, no_user, field) == "bob"
    with pytest.raises(ValueError, match=f"no {field}"):
        acting_user({field: None}, {"dag_run": None}, field)


def test_deciding_on_a_request_that_does_not_exist_fails_saying_so(engine, make_runtime, world):
    from elevation.jobs import ActionRefused, decide

    with pytest.raises(ActionRefused, match="there is no request 4242"):
        decide({"request_id": 4242, "action": "approve", "actor": "bob"},
               {"dag_run": None, "logical_date": datetime.now(UTC)})
