"""A night's extract never passes off missing data as a clean night: it says what is missing, and where.

An organization trail read without its organization id (or under a wrong prefix) lists nothing. Before, that wrote
0 events and warned nothing, and every session's report said "no rule matched". Now each (account, UTC day) of a
session's window with no trail object at all is a `missing` problem in the summary and in the night's manifest,
which the audit shows on the index and on the reports and fails on.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from pyarrow import fs as pafs

from elevation.cloudtrail.s3_trail import S3TrailSource
from elevation.devkit.trail_events import Scenario
from elevation.extract import extract_night, night_window
from elevation.extract.manifest import read_manifest

ORG = "o-abcdefghij"
NIGHT = date(2024, 8, 1)


def _extract(emulator: Any, bucket: str, scenario: Scenario, output: Path, **source: Any) -> Any:
    start, end = night_window(NIGHT)
    return extract_night(scenario.sessions, S3TrailSource(emulator.client("s3"), bucket, **source), start, end,
                         output)


def test_the_right_layout_reports_no_missing_data(
    emulator: Any, trail_bucket: str, scenario: Scenario, tmp_path: Path
) -> None:
    summary = _extract(emulator, trail_bucket, scenario, tmp_path, org_id=ORG)
    assert summary.events_written > 0
    assert [problem for problem in summary.problems if problem.is_error] == []
    manifest = read_manifest(pafs.LocalFileSystem(), str(tmp_path), NIGHT)
    assert manifest is not None and manifest.events_per_session == summary.events_per_session


def test_an_organization_trail_read_without_its_org_id_is_missing_data_not_a_clean_night(
    emulator: Any, trail_bucket: str, scenario: Scenario, tmp_path: Path
) -> None:
    summary = _extract(emulator, trail_bucket, scenario, tmp_path)  # no org_id: AWSLogs/ACCOUNT/... is empty
    assert summary.events_written == 0
    missing = [problem for problem in summary.problems if problem.is_error]
    sessions_accounts = {s.account_id for s in scenario.sessions if s.overlaps(*night_window(NIGHT))}
    assert {problem.account_id for problem in missing} == sessions_accounts
    assert all(problem.day and problem.day.startswith("2024-08-0") for problem in missing)
    assert "check extract.s3_prefix / s3_org_id" in missing[0].message
    assert missing[0].message.startswith(f"no CloudTrail data found for account {missing[0].account_id} on day ")
    manifest = read_manifest(pafs.LocalFileSystem(), str(tmp_path), NIGHT)
    assert manifest is not None and [p.message for p in manifest.problems if p.is_error] == [
        p.message for p in missing]


def test_a_wrong_prefix_and_a_wrong_org_id_are_missing_data_too(
    emulator: Any, trail_bucket: str, scenario: Scenario, tmp_path: Path
) -> None:
    for source in ({"org_id": ORG, "prefix": "cloudtrail"}, {"org_id": "o-wrongorg123"}):
        summary = _extract(emulator, trail_bucket, scenario, tmp_path, **source)
        assert any(problem.is_error for problem in summary.problems), source
