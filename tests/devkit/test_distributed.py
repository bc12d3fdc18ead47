"""The parts of `make test-distributed` that decide pass or fail, checked without starting Airflow: the batch is
filed as planned, the standing assignments are recognised, and a stopped process group is told from a living one
(zombies included, which is what a container without an init leaves behind)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from elevation.devkit.airflow_local import living_group_members, worker_hostname
from elevation.devkit.distributed import BATCH, assignments, file_batch, standing, statuses
from elevation.devkit.world import World


def test_a_fresh_world_holds_exactly_its_standing_assignments(world: World):
    assert assignments(world.emulator) == standing(world.emulator, world.accounts)
    assert len(standing(world.emulator, world.accounts)) == 4


def test_a_grant_the_system_leaves_behind_would_be_seen(world: World):
    sso = world.emulator.client("sso-admin")
    sso.create_account_assignment(
        InstanceArn=world.instance_arn, TargetId=world.accounts["sandbox-1"], TargetType="AWS_ACCOUNT",
        PermissionSetArn=world.permission_sets["PowerUserAccess"], PrincipalType="USER",
        PrincipalId=world.users["erin"])
    extra = assignments(world.emulator) - standing(world.emulator, world.accounts)
    assert extra == {(world.accounts["sandbox-1"], "PowerUserAccess", "USER", world.users["erin"])}


def test_the_batch_is_filed_with_its_decisions_and_covers_every_final_state(world: World, queue_url: str):
    filed = file_batch(queue_url, world.accounts)
    assert [planned for _, planned in sorted(filed.items())] == list(BATCH)
    assert set(statuses(queue_url).values()) == {"pending"}
    assert {planned.final for planned in BATCH} == {"ended", "rejected", "cancelled"}
    assert any(planned.decision is None and planned.final == "ended" for planned in BATCH)  # auto-approved
    overlapping = [p for p in BATCH if (p.requester, p.account, p.permission_set) == ("hanako", "sandbox-1",
                                                                                       "PowerUserAccess")]
    assert len(overlapping) == 2 and len({p.minutes for p in overlapping}) == 2


def test_a_worker_names_itself_in_the_hostname(monkeypatch):  # noqa: ANN001
    monkeypatch.setenv("ELEVATION_WORKER_NAME", "worker-2")
    assert worker_hostname().startswith("worker-2@")


def test_a_zombie_is_not_a_living_member_of_its_group():
    # A leader in its own session that forks a grandchild and exits; the grandchild sleeps. Then the grandchild is
    # killed: the group may hold a zombie for a moment (or for good, where nothing reaps), never a living member.
    code = "import os, time\nif os.fork() == 0:\n    time.sleep(60)\n"
    leader = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    leader.wait(10)
    deadline = time.monotonic() + 10
    while not living_group_members(leader.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    members = living_group_members(leader.pid)
    assert len(members) == 1 and members[0] != leader.pid
    os.killpg(leader.pid, 9)
    deadline = time.monotonic() + 10
    while living_group_members(leader.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert living_group_members(leader.pid) == []
