"""The nightly audit as a security team reads it: nothing lost in silence, nothing counted twice.

Sessions are lived through the real lifecycle (intake, grants, revocations) on the emulator with a simulated
clock; their CloudTrail activity is written to the trail bucket; extract and audit run as the DAG tasks do.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from elevation.access.grants import run_grants
from elevation.access.intake import run_intake
from elevation.access.revocations import run_revocations
from elevation.devkit.activity import write_activity
from elevation.devkit.trail_events import make_event, sso_identity, upload_trail
from elevation.devkit.world import TRAIL_BUCKET, nightly_sections
from elevation.nightly import MissingCloudTrailData, run_audit, run_extract, session_identities


def live(make_runtime: Any, moments: list[datetime]) -> None:
    for moment in moments:
        runtime = make_runtime(as_of=moment, clock=lambda moment=moment: moment)
        run_intake(runtime)
        run_grants(runtime)
        run_revocations(runtime)


def findings_lines(folder: Path, night: date) -> list[dict[str, Any]]:
    path = folder / "reports" / night.isoformat() / f"findings-{night.isoformat()}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def day() -> date:
    return (datetime.now(UTC) - timedelta(days=3)).date()


def at(day: date, hour: float) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC) + timedelta(hours=hour)


def test_a_wrong_trail_layout_is_reported_on_the_index_and_the_report_and_fails_the_run(
    world, configure, tmp_path, file_request, make_runtime, day
):
    sections = nightly_sections(tmp_path)
    sections["extract"]["s3_org_id"] = "o-wrongorg123"  # the bucket holds an account trail: AWSLogs/ACCOUNT/...
    configure(sections)
    request = file_request(requester="dave", account_id="media-prod", permission_set="AdministratorAccess",
                           start_at=at(day, 10), duration_minutes=60)
    live(make_runtime, [at(day, 10), at(day, 11.1)])
    now = datetime.now(UTC)
    runtime = make_runtime(as_of=now, clock=lambda: now)
    write_activity(world.emulator.client("s3"), TRAIL_BUCKET, session_identities(runtime))

    summary = run_extract(runtime, day)
    assert summary.events_written == 0
    account = world.accounts["media-prod"]
    expected = f"no CloudTrail data found for account {account} on day {day.isoformat()}"
    assert [problem.message for problem in summary.problems if problem.is_error][0].startswith(expected)
    with pytest.raises(MissingCloudTrailData, match=expected):
        run_audit(runtime, day)
    index = (tmp_path / "reports" / day.isoformat() / "index.html").read_text(encoding="utf-8")
    report = (tmp_path / "reports" / "sessions" / f"{request}.html").read_text(encoding="utf-8")
    for page in (index, report):
        assert expected.lower() in page.lower() and "check extract.s3_prefix / s3_org_id" in page
    assert "No rule matched any event of this session" not in report


def test_a_night_audited_before_its_extract_ran_is_not_a_clean_night(
    world, configure, tmp_path, file_request, make_runtime, day
):
    configure(nightly_sections(tmp_path))
    file_request(requester="dave", account_id="media-prod", permission_set="AdministratorAccess",
                 start_at=at(day, 10), duration_minutes=60)
    live(make_runtime, [at(day, 10), at(day, 11.1)])
    now = datetime.now(UTC)
    with pytest.raises(MissingCloudTrailData, match="not been extracted"):
        run_audit(make_runtime(as_of=now, clock=lambda: now), day)


def test_each_finding_reaches_the_findings_file_once_when_final_with_its_sessions_context(
    world, configure, tmp_path, file_request, make_runtime, day
):
    configure(nightly_sections(tmp_path))
    # Over midnight: provisional on the first night, final on the second.
    request = file_request(requester="alice", account_id="media-stg", permission_set="PowerUserAccess",
                           start_at=at(day, 22.5), duration_minutes=120, status="approved", approver="bob",
                           ticket="OPS-7")
    live(make_runtime, [at(day, 22.5), at(day, 24.6)])
    now = datetime.now(UTC)
    runtime = make_runtime(as_of=now, clock=lambda: now)
    write_activity(world.emulator.client("s3"), TRAIL_BUCKET, session_identities(runtime), seed=4)  # dangerous
    nights = (day, day + timedelta(days=1))
    written = []
    for night in (*nights, nights[1]):  # the second night twice: a retried run
        run_extract(runtime, night)
        summary = run_audit(runtime, night)
        written.append(findings_lines(tmp_path, night))
        assert summary.sessions[str(request)]["state"] == ("provisional" if night == day else "final")
    assert written[0] == []  # provisional: not yet
    assert written[1] and written[2] == written[1]
    keys = [line["key"] for line in written[1]]
    assert len(keys) == len(set(keys))
    line = written[1][0]
    assert (line["state"], line["session_id"], line["requester"], line["ticket"]) == (
        "final", str(request), "alice", "OPS-7")
    assert line["account_id"] == world.accounts["media-stg"] and line["permission_set"] == "PowerUserAccess"
    assert all(isinstance(item["attack"], list) for item in written[1])
    # A third night that still lists the session (its window is closed) writes nothing again.
    third = nights[1] + timedelta(days=1)
    run_extract(runtime, third)
    run_audit(runtime, third)
    assert findings_lines(tmp_path, third) == []


def test_a_session_whose_assignment_was_kept_for_an_overlapping_one_gets_no_false_tail_and_shares_events(
    world, configure, tmp_path, file_request, make_runtime, day
):
    configure(nightly_sections(tmp_path))
    first = file_request(requester="alice", account_id="media-stg", permission_set="PowerUserAccess",
                         start_at=at(day, 9), duration_minutes=60, status="approved", approver="bob")
    second = file_request(requester="alice", account_id="media-stg", permission_set="PowerUserAccess",
                          start_at=at(day, 9.5), duration_minutes=120, status="approved", approver="bob")
    live(make_runtime, [at(day, 9), at(day, 9.5), at(day, 10.05), at(day, 11.6)])
    now = datetime.now(UTC)
    runtime = make_runtime(as_of=now, clock=lambda: now)
    account = world.accounts["media-stg"]
    identity = sso_identity(account, "PowerUserAccess", "alice")
    # Alice works at 09:45 (both sessions) and at 10:30 (the first has ended; its assignment is kept for the second).
    records = [make_event(identity, "PutObject", "s3.amazonaws.com", at(day, hour), recipient_account=account,
                          event_id=f"work-{hour}", request={"bucketName": "media"}) for hour in (9.75, 10.5)]
    upload_trail(world.emulator.client("s3"), TRAIL_BUCKET, records)
    run_extract(runtime, day)
    summary = run_audit(runtime, day)
    assert summary.sessions[str(first)]["state"] == "final"
    report = (tmp_path / "reports" / "sessions" / f"{first}.html").read_text(encoding="utf-8")
    assert "after the assignment was removed" not in report  # 10:30 is the second session's normal work
    assert f"{second}" in report and "shared with" in report.lower()
    assert "kept" in report.lower()


def test_the_audit_judges_shares_against_the_organizations_own_accounts(
    world, configure, tmp_path, file_request, make_runtime, day
):
    configure(nightly_sections(tmp_path))
    request = file_request(requester="dave", account_id="media-prod", permission_set="AdministratorAccess",
                           start_at=at(day, 10), duration_minutes=60)
    live(make_runtime, [at(day, 10), at(day, 11.1)])
    now = datetime.now(UTC)
    runtime = make_runtime(as_of=now, clock=lambda: now)
    account, sibling = world.accounts["media-prod"], world.accounts["media-stg"]
    identity = sso_identity(account, "AdministratorAccess", "dave")

    def share(event_id: str, with_account: str) -> dict[str, Any]:
        return make_event(identity, "ModifySnapshotAttribute", "ec2.amazonaws.com", at(day, 10.5),
                          recipient_account=account, event_id=event_id,
                          request={"snapshotId": "snap-0a1b2c3d4e5f60718", "attributeType": "CREATE_VOLUME_PERMISSION",
                                   "createVolumePermission": {"add": {"items": [{"userId": with_account}]}}})

    upload_trail(world.emulator.client("s3"), TRAIL_BUCKET, [share("inside", sibling), share("outside", "999988887777")])
    run_extract(runtime, day)
    run_audit(runtime, day)
    lines = {(line["eventID"], line["rule_id"]): line for line in findings_lines(tmp_path, day)}
    assert lines[("outside", "elevation-exposure-outside-organization")]["severity"] == "high"
    assert lines[("inside", "elevation-exposure-inside-organization")]["severity"] == "low"
    assert all(line["session_id"] == str(request) for line in lines.values())
