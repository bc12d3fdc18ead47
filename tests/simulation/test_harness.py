"""The harness itself: a plain day passes, each planted breakage is reported, kills happen where asked, and a seed
always draws the same day. (A harness that reports nothing proves nothing unless it can see a real breakage.)"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from elevation.devkit.emulator import AwsEmulator
from elevation.store import queue

from . import invariants
from .databases import Databases
from .driver import Simulation
from .plan import Crash, FileRequest, Plan, Run, Step, draw_plan


@pytest.fixture
def sim(emulator: AwsEmulator, databases: Databases) -> Iterator[Simulation]:
    """A started simulation with an empty plan: tests play their own steps and plant their own breakage."""
    simulation = Simulation(emulator, Plan(seed=0, hours=1, steps=[]), databases.fresh(0))
    simulation.start()
    yield simulation
    simulation.stop()


def break_glass(minute: float = 1) -> Step:
    """dave, on call: AdministratorAccess in media-prod for 30 minutes, auto-approved."""
    return Step(0, minute, FileRequest("r1", "dave", "media-prod", "AdministratorAccess", 30, None, note="test"))


def run(index: int, minute: float, job: str, crash: Crash | None = None) -> Step:
    return Step(index, minute, Run(job, crash=crash))


def found(sim: Simulation, invariant: str) -> list[invariants.Violation]:
    return [v for v in sim.violations.values() if v.invariant == invariant]


def sso_call(sim: Simulation, operation: str, user: str, permission_set: str, account: str) -> None:
    """What an administrator does in the console: outside the system, unknown to the simulation."""
    sso = sim.emulator.client("sso-admin")
    getattr(sso, operation)(
        InstanceArn=sim.world.instance_arn,
        TargetId=sim.world.accounts[account],
        TargetType="AWS_ACCOUNT",
        PermissionSetArn=sim.world.permission_sets[permission_set],
        PrincipalType="USER",
        PrincipalId=sim.world.users[user],
    )


def test_a_plain_grant_and_its_end_break_no_invariant(sim: Simulation) -> None:
    for step in (break_glass(), run(1, 2, "intake"), run(2, 3, "grants"), run(3, 40, "revocations")):
        sim.play(step)
    sim.settle()
    assert not sim.violations, [v.message for v in sim.violations.values()]
    statuses = {row["status"] for row in sim.snapshot().requests.values()}
    assert statuses == {"ended"}


def test_an_assignment_nothing_tracks_is_reported(sim: Simulation) -> None:
    sso_call(sim, "create_account_assignment", "erin", "PowerUserAccess", "media-stg")
    sim.check(invariants.AFTER_EVERY_STEP)
    untracked = found(sim, "no_untracked_access")
    assert len(untracked) == 1 and "USER erin / PowerUserAccess / media-stg" in untracked[0].message


def test_deleting_a_standing_assignment_is_reported(sim: Simulation) -> None:
    sso_call(sim, "delete_account_assignment", "dave", "PowerUserAccess", "ec-prod")
    sim.check(invariants.AFTER_EVERY_STEP)
    assert [v.signature for v in found(sim, "access_others_need_is_never_removed")] == [
        "the system deleted a standing assignment"
    ]


def test_an_action_carried_by_two_transitions_is_reported(sim: Simulation) -> None:
    sim.play(break_glass())
    request_id = sim.labels["r1"]
    with sim.reader.begin() as conn:
        action_id = queue.insert_action(conn, request_id, "cancel", "dave")
        for _ in range(2):
            queue.record_event(conn, at=sim.clock.now(), kind="transition", actor="dave", request_id=request_id,
                               from_status="pending", to_status="pending", detail={"action_id": action_id})
    sim.check(invariants.AFTER_EVERY_STEP)
    assert any(v.signature == "action applied twice" for v in found(sim, "actions_applied_once_as_recorded"))


def test_a_status_changed_behind_the_event_log_is_reported(sim: Simulation) -> None:
    sim.play(break_glass())
    with sim.reader.begin() as conn:
        conn.execute(sa.text("UPDATE elevation_request SET status = 'active'"))
    sim.check(invariants.AFTER_EVERY_STEP)
    chain = found(sim, "event_log_accounts_for_every_transition")
    assert chain and "the events lead to pending, but the row is active" in chain[0].message


def test_a_kill_after_the_creation_leaves_the_dead_workers_claim(sim: Simulation) -> None:
    sim.play(break_glass())
    sim.play(run(1, 2, "intake"))
    sim.play(run(2, 3, "grants", Crash("aws", 1, "CreateAccountAssignment")))
    entry = sim.entries[-1].text
    assert "killed after its 1st CreateAccountAssignment call (CreateAccountAssignment)" in entry
    row = sim.snapshot().requests[sim.labels["r1"]]
    assert row["status"] == "approved" and row["claimed_by"] == "grants/worker-2"
    assert row["claimed_until"] > sim.clock.now() - timedelta(seconds=1)


def test_a_kill_before_a_write_stops_the_run_there(sim: Simulation) -> None:
    sim.play(break_glass())
    sim.play(run(1, 2, "intake", Crash("db-write", 1, "elevation_request")))
    assert "killed before its 1st write to elevation_request" in sim.entries[-1].text
    assert sim.snapshot().requests[sim.labels["r1"]]["validated_at"] is None  # the write never happened


def test_a_seed_always_draws_the_same_day() -> None:
    first, again, other = draw_plan(7, 40, 6), draw_plan(7, 40, 6), draw_plan(8, 40, 6)
    assert [s.describe() for s in first.steps] == [s.describe() for s in again.steps]
    assert [s.describe() for s in first.steps] != [s.describe() for s in other.steps]
