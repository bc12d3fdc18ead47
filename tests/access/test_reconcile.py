"""Reconcile on the emulator: each drift kind found, reported or fixed; what is never touched; the safety limit;
grants and revocations in flight; groups; throttling; call counts; bad configuration."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from conftest import minutes
from elevation.access.grants import run_grants
from elevation.access.intake import run_intake
from elevation.access.reconcile import ScopeError, run_reconcile
from elevation.access.revocations import run_revocations
from elevation.config import ConfigError, load_config
from elevation.store import drift as drift_store
from elevation.store import queue


@pytest.fixture
def reconcile_config(world, configure):
    """Configure reconcile over the whole demo organization (by OU), in the given mode and with overrides."""

    def _configure(**settings):  # noqa: ANN003, ANN202
        section = {"ous": [world.ous["Production"], world.ous["Staging"], world.ous["Sandbox"]],
                   "permission_sets": ["AdministratorAccess", "PowerUserAccess", "ReadOnlyAccess"],
                   "grace_period": "0s", **settings}
        return configure(sections={"reconcile": section})

    _configure()
    return _configure


@pytest.fixture
def console(world):
    """Identity Center changed by hand, behind the system's back."""
    sso = world.emulator.client("sso-admin")

    class Console:
        def _assignment(self, principal: str, permission_set: str, account: str, kind: str) -> dict:
            principal_id = world.users[principal] if kind == "USER" else world.groups[principal]
            return {"InstanceArn": world.instance_arn, "TargetId": world.accounts[account],
                    "TargetType": "AWS_ACCOUNT", "PermissionSetArn": world.permission_sets[permission_set],
                    "PrincipalType": kind, "PrincipalId": principal_id}

        def assign(self, principal: str, permission_set: str, account: str, kind: str = "USER") -> None:
            sso.create_account_assignment(**self._assignment(principal, permission_set, account, kind))

        def remove(self, principal: str, permission_set: str, account: str, kind: str = "USER") -> None:
            sso.delete_account_assignment(**self._assignment(principal, permission_set, account, kind))

    return Console()


def found(summary) -> list[tuple[str, str, int | None]]:  # noqa: ANN001
    return [(item.kind.value, summary.names.principals[item.assignment.principal], item.request_id)
            for item in summary.drift]


def session_at(make_runtime, when, file_request, **values):  # noqa: ANN001, ANN003, ANN201
    request_id = file_request(start_at=when, **values)
    runtime = make_runtime(as_of=when)
    run_intake(runtime)
    run_grants(runtime)
    return request_id


@pytest.fixture
def later(make_runtime):  # noqa: ANN001, ANN201
    """A runtime 35 minutes from now (logical and real clock): what a reconcile run then sees."""

    def _later(**values):  # noqa: ANN003, ANN202
        shift = timedelta(minutes=35)
        return make_runtime(as_of=datetime.now(UTC) + shift, clock=lambda: datetime.now(UTC) + shift, **values)

    return _later


def drifted_world(world, console, make_runtime, file_request):  # noqa: ANN001, ANN201
    """One of each kind, as seen 35 minutes from now: a console grant to erin (unexpected), dave's ended session
    whose revoke was lost (lingering), dave's active session elsewhere whose assignment someone deleted (missing)."""
    now = datetime.now(UTC)
    console.assign("erin", "AdministratorAccess", "sandbox-1")
    lingering = session_at(make_runtime, now, file_request, requester="dave", account_id="media-prod",
                           permission_set="AdministratorAccess", duration_minutes=30)
    run_revocations(make_runtime(as_of=now + minutes(31)))
    console.assign("dave", "AdministratorAccess", "media-prod")  # the revoke is "lost": the access is back
    missing = session_at(make_runtime, now, file_request, requester="dave", account_id="ec-prod",
                         permission_set="AdministratorAccess", duration_minutes=60)
    console.remove("dave", "AdministratorAccess", "ec-prod")
    return lingering, missing


def test_report_mode_records_each_kind_and_touches_nothing(
    world, engine, console, reconcile_config, make_runtime, file_request
, later):
    lingering, missing = drifted_world(world, console, make_runtime, file_request)
    world.emulator.calls.clear()
    summary = run_reconcile(later())
    assert sorted(found(summary)) == [("lingering", "dave", lingering), ("missing", "dave", missing),
                                      ("unexpected", "erin", None)]
    assert not {"DeleteAccountAssignment", "CreateAccountAssignment"} & set(world.emulator.calls.counts())
    assert world.has_assignment("erin", "sandbox-1", "AdministratorAccess")
    with engine.connect() as conn:
        rows = drift_store.open_items(conn)
        flagged = [e for e in conn.execute(queue.events.select()).mappings() if e["kind"] == "assignment_missing"]
    assert sorted(row["kind"] for row in rows) == ["lingering", "missing", "unexpected"]
    assert [event["request_id"] for event in flagged] == [missing]  # the session is flagged


def test_a_drift_open_for_many_runs_is_one_row_until_it_is_gone(
    world, engine, console, reconcile_config, make_runtime
, later):
    console.assign("erin", "AdministratorAccess", "sandbox-1")
    run_reconcile(later())
    run_reconcile(later())
    with engine.connect() as conn:
        (row,) = drift_store.open_items(conn)
    assert row["kind"] == "unexpected" and row["principal_name"] == "erin"
    assert row["last_seen_at"] > row["first_seen_at"]
    console.remove("erin", "AdministratorAccess", "sandbox-1")
    run_reconcile(later())
    with engine.connect() as conn:
        assert drift_store.open_items(conn) == []
        resolved = conn.execute(sa.select(drift_store.drift_table)).mappings().one()
    assert resolved["resolved_at"] is not None and resolved["resolution"].startswith("no longer observed")


def test_enforce_removes_unexpected_and_lingering_confirmed_and_only_reports_missing(
    world, engine, console, reconcile_config, make_runtime, file_request
, later):
    lingering, missing = drifted_world(world, console, make_runtime, file_request)
    reconcile_config(mode="enforce")
    summary = run_reconcile(later())
    assert sorted(item.kind.value for item in summary.removed) == ["lingering", "unexpected"]
    assert not world.has_assignment("erin", "sandbox-1", "AdministratorAccess")
    assert not world.has_assignment("dave", "media-prod", "AdministratorAccess")
    assert not world.has_assignment("dave", "ec-prod", "AdministratorAccess")  # missing stays missing by default
    assert world.emulator.calls.count("DescribeAccountAssignmentDeletionStatus") >= 2  # each removal confirmed
    with engine.connect() as conn:
        open_kinds = [row["kind"] for row in drift_store.open_items(conn)]
        events = [e for e in conn.execute(queue.events.select()).mappings() if e["kind"] == "reconcile"]
    assert open_kinds == ["missing"]
    assert len(events) == 2 and all(event["reason_code"] == "reconcile" for event in events)
    assert {event["request_id"] for event in events} == {lingering, None}


def test_enforce_recreates_missing_assignments_only_when_switched_on(
    world, console, reconcile_config, make_runtime, file_request
, later):
    session_at(make_runtime, datetime.now(UTC), file_request, requester="dave", account_id="ec-prod",
               permission_set="AdministratorAccess", duration_minutes=60)
    console.remove("dave", "AdministratorAccess", "ec-prod")
    reconcile_config(mode="enforce", recreate_missing=True)
    summary = run_reconcile(later())
    assert [item.kind.value for item in summary.recreated] == ["missing"]
    assert world.has_assignment("dave", "ec-prod", "AdministratorAccess")


def test_standing_protected_and_out_of_scope_assignments_are_never_drift_in_either_mode(
    world, console, reconcile_config, make_runtime
, later):
    console.assign("bob", "AdministratorAccess", "media-prod")  # bob is the protected break-glass user
    console.assign("erin", "AdministratorAccess", "sandbox-1")  # outside the scope below
    for mode in ("report", "enforce"):
        reconcile_config(mode=mode, ous=[world.ous["Production"], world.ous["Staging"]],
                         protected={"users": ["bob"]})
        world.emulator.calls.clear()
        summary = run_reconcile(later())
        assert summary.drift == [] and summary.removed == []
        listed_accounts = {call for call in world.emulator.calls.operations()}
        assert "DeleteAccountAssignment" not in listed_accounts
    assert world.has_assignment("bob", "media-prod", "AdministratorAccess")
    assert world.has_assignment("erin", "sandbox-1", "AdministratorAccess")
    assert world.has_assignment("alice", "media-stg", "ReadOnlyAccess")  # standing
    assert ("GROUP", world.groups["platform"]) in world.assignments("media-prod", "ReadOnlyAccess")


def test_the_safety_limit_removes_nothing_and_says_what_it_would_have_removed(
    world, engine, console, reconcile_config, make_runtime
, later):
    from elevation.access.reconcile import ReconcileRefused
    from elevation.jobs import reconcile as reconcile_job

    console.assign("erin", "AdministratorAccess", "sandbox-1")
    console.assign("hanako", "PowerUserAccess", "sandbox-1")
    reconcile_config(mode="enforce", max_removals=1)
    summary = run_reconcile(later())
    assert summary.removed == [] and "more than reconcile.max_removals (1)" in summary.refused
    assert "user erin / AdministratorAccess" in summary.refused and "user hanako / PowerUserAccess" in summary.refused
    assert world.has_assignment("erin", "sandbox-1", "AdministratorAccess")
    assert world.has_assignment("hanako", "sandbox-1", "PowerUserAccess")
    with engine.connect() as conn:
        assert len(drift_store.open_items(conn)) == 2  # the items stay recorded
    with pytest.raises(ReconcileRefused, match="nothing was removed"):
        reconcile_job({}, later())


def test_a_grant_in_flight_and_a_session_ending_are_not_drift(
    world, configure, console, reconcile_config, make_runtime, file_request
, later):
    now = datetime.now(UTC)
    ending = session_at(make_runtime, now, file_request, requester="dave", account_id="media-prod",
                        permission_set="AdministratorAccess", duration_minutes=30)
    world.emulator.identity_center.fail_next_deletions(times=1)
    run_revocations(make_runtime(as_of=now + minutes(31)))  # the revoke failed once: ending, still assigned
    file_request(requester="erin", account_id="media-stg", permission_set="PowerUserAccess", status="approved",
                 approver="bob", start_at=now)
    run_intake(later())
    world.emulator.identity_center.hold_creations(polls=None)
    granting = threading.Thread(target=lambda: run_grants(make_runtime()))
    granting.start()
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=20)
        while world.emulator.calls.count("CreateAccountAssignment") == 0 and datetime.now(UTC) < deadline:
            threading.Event().wait(0.05)
        summary = run_reconcile(later())  # interleaved: the creation is in flight right now
        assert summary.drift == [], summary.drift
    finally:
        world.emulator.identity_center.hold_creations(polls=0)
        world.emulator.identity_center.release_creations()
        granting.join(timeout=60)
    assert run_reconcile(later()).drift == []
    with make_runtime().engine.connect() as conn:
        assert queue.get_request(conn, ending)["status"] == "ending"


def test_groups_are_reconciled_like_users(world, console, reconcile_config, make_runtime, later):
    console.assign("developers", "AdministratorAccess", "media-stg", kind="GROUP")
    reconcile_config(mode="enforce")
    summary = run_reconcile(later())
    assert found(summary) == [("unexpected", "developers", None)]
    assert ("GROUP", world.groups["developers"]) not in world.assignments("media-stg", "AdministratorAccess")


def test_throttling_on_the_list_calls_is_retried_and_the_result_is_the_same(
    world, console, reconcile_config, make_runtime
):
    console.assign("erin", "AdministratorAccess", "sandbox-1")
    faults = world.emulator.faults
    faults.inject("ListAccountAssignments", "ThrottlingException", message="Rate exceeded", times=3)
    faults.inject("ListAccountsForProvisionedPermissionSet", "ThrottlingException", message="Rate exceeded", times=2)
    runtime = make_runtime()
    runtime.identity_center.retry = runtime.identity_center.retry.__class__(attempts=6, base_delay=0.01)
    summary = run_reconcile(runtime)
    assert found(summary) == [("unexpected", "erin", None)]
    assert summary.calls["ListAccountAssignments"] == summary.pairs_listed + 3


def test_list_calls_grow_with_the_provisioned_pairs_not_accounts_times_permission_sets(
    world, reconcile_config, make_runtime
, later):
    summary = run_reconcile(later())
    accounts, permission_sets = summary.accounts, summary.permission_sets
    provisioning = summary.calls["ListAccountsForProvisionedPermissionSet"] + summary.calls[
        "ListPermissionSetsProvisionedToAccount"]
    assert provisioning == min(accounts, permission_sets)
    assert summary.calls["ListAccountAssignments"] == summary.pairs_listed < accounts * permission_sets


def test_bad_scope_configuration_fails_naming_the_file_the_field_and_the_problem(
    world, reconcile_config, make_runtime, tmp_path
, later):
    reconcile_config(ous=["ou-abcd-12345678"])
    with pytest.raises(ScopeError, match=r"elevation.yaml: reconcile.ous.0: ou-abcd-12345678 is not in the organization"):
        run_reconcile(later())
    reconcile_config(permission_sets=["PowerUserAccess", "GodMode"])
    with pytest.raises(ScopeError, match=r"reconcile.permission_sets.1: permission set 'GodMode' does not exist"):
        run_reconcile(later())
    for bad, problem in ((dict(max_removals=-1), "reconcile.max_removals: Input should be greater than or equal to 0"),
                         (dict(ous=["engineering"]), "reconcile.ous: Value error, not an OU id"),
                         (dict(mode="fix"), "reconcile.mode: Input should be 'report' or 'enforce'")):
        path = reconcile_config(**bad)
        with pytest.raises(ConfigError, match=problem):
            load_config(path)
