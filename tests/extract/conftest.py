"""Shared, built-once fixtures: the real CloudTrail samples, an organization's night, its trail bucket, Lake."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from elevation.cloudtrail.records import iter_records_from_path
from elevation.devkit.cloudtrail_lake import CloudTrailLakeDouble
from elevation.devkit.trail_events import Scenario, upload_trail

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "cloudtrail"
TRAIL_BUCKET = "org-cloudtrail-logs"
ORG_ID = "o-abcdefghij"


@pytest.fixture(scope="session")
def real_records() -> list[dict[str, Any]]:
    """Every record of the shared samples (Stratus Red Team detonations and Panther rule tests)."""
    return list(iter_records_from_path(DATA, on_skip=lambda path, reason: None))


@pytest.fixture(scope="session")
def scenario(real_records: list[dict[str, Any]]) -> Scenario:
    return Scenario(real_records, background=1200)


@pytest.fixture
def trail_bucket(emulator: Any, scenario: Scenario) -> str:
    """The scenario's trail files in the emulator's S3 (re-uploaded if another test reset the emulator)."""
    s3 = emulator.client("s3")
    try:
        s3.head_object(Bucket=TRAIL_BUCKET, Key="_populated")
    except Exception:
        upload_trail(s3, TRAIL_BUCKET, scenario.records, org_id=ORG_ID, file_period=timedelta(minutes=30))
        s3.put_object(Bucket=TRAIL_BUCKET, Key="_populated", Body=b"")
    return TRAIL_BUCKET


@pytest.fixture(scope="session")
def lake(scenario: Scenario) -> Iterator[CloudTrailLakeDouble]:
    with CloudTrailLakeDouble(scenario.records, page_size=7) as double:
        yield double
