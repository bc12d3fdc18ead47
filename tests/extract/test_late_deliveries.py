"""Events delivered after their night was written are added to that night by a later run, exactly once.

CloudTrail files a log under its delivery time, so a late event of night 08-01 sits in a 08-02 folder, among the
files the 08-02 run reads anyway. The run keeps what it matches for earlier nights within the re-check lookback and
merges what those nights' partitions lack; re-running either night never duplicates nor drops it.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
from pyarrow import fs as pafs

from elevation.cloudtrail.s3_trail import S3TrailSource
from elevation.devkit.trail_events import (
    DEV,
    MIDNIGHT,
    Scenario,
    make_event,
    sso_identity,
    trail_key,
    upload_trail,
)
from elevation.extract import extract_night, night_window
from elevation.extract.manifest import read_manifest

ORG = "o-abcdefghij"
BUCKET = "late-trail"
FIRST, SECOND = date(2024, 8, 1), date(2024, 8, 2)


def pairs(output: Path) -> Counter[tuple[str, str, str]]:
    table = ds.dataset(output, format="parquet", partitioning="hive").to_table(
        columns=["session_id", "eventID", "date"])
    return Counter(zip(*(table.column(name).to_pylist() for name in ("date", "session_id", "eventID")), strict=True))


def run(emulator: Any, scenario: Scenario, night: date, output: Path, lookback: timedelta) -> Any:
    start, end = night_window(night)
    source = S3TrailSource(emulator.client("s3"), BUCKET, org_id=ORG)
    return extract_night(scenario.sessions, source, start, end, output, late_lookback=lookback)


def test_a_file_delivered_after_the_nights_run_is_added_to_its_night_once(
    emulator: Any, scenario: Scenario, tmp_path: Path
) -> None:
    s3 = emulator.client("s3")
    upload_trail(s3, BUCKET, scenario.records, org_id=ORG, file_period=timedelta(minutes=30))
    first = run(emulator, scenario, FIRST, tmp_path, timedelta(days=2))
    assert first.events_per_session["104"] > 0
    before = pairs(tmp_path)

    # Session 104 (dave, developer on DEV, 09:00-10:00 on 08-01): one of its calls reaches the trail 17 hours late.
    late = make_event(sso_identity(DEV, "developer", "dave@example.com"), "PutObject", "s3.amazonaws.com",
                      MIDNIGHT + timedelta(hours=9, minutes=30), recipient_account=DEV, event_id="late-put-1")
    key = trail_key("", ORG, DEV, "us-east-1", MIDNIGHT + timedelta(days=1, hours=3), salt="late")
    s3.put_object(Bucket=BUCKET, Key=key, Body=gzip.compress(json.dumps({"Records": [late]}).encode()))

    second = run(emulator, scenario, SECOND, tmp_path, timedelta(days=2))
    assert second.late_events == {"2024-08-01": {"104": 1}}
    after = pairs(tmp_path)
    assert after[("2024-08-01", "104", "late-put-1")] == 1
    assert after - before == Counter({("2024-08-01", "104", "late-put-1"): 1}) + Counter(
        {key: count for key, count in after.items() if key[0] == "2024-08-02"})
    manifest = read_manifest(pafs.LocalFileSystem(), str(tmp_path), FIRST)
    assert manifest is not None and manifest.late_events == {"104": 1} and manifest.rewrites == 1
    assert manifest.events_per_session["104"] == first.events_per_session["104"] + 1

    # Running the later night again finds nothing new; re-running the earlier night keeps the late event.
    again = run(emulator, scenario, SECOND, tmp_path, timedelta(days=2))
    assert again.late_events == {}
    rerun = run(emulator, scenario, FIRST, tmp_path, timedelta(days=2))
    assert rerun.events_per_session["104"] == first.events_per_session["104"] + 1
    assert pairs(tmp_path) == after
    kept = read_manifest(pafs.LocalFileSystem(), str(tmp_path), FIRST)
    assert kept is not None and kept.late_events == {"104": 1}


def test_without_a_lookback_late_events_are_not_looked_for(
    emulator: Any, scenario: Scenario, tmp_path: Path
) -> None:
    s3 = emulator.client("s3")
    upload_trail(s3, BUCKET, scenario.records, org_id=ORG, file_period=timedelta(minutes=30))
    run(emulator, scenario, FIRST, tmp_path, timedelta(0))
    late = make_event(sso_identity(DEV, "developer", "dave@example.com"), "PutObject", "s3.amazonaws.com",
                      MIDNIGHT + timedelta(hours=9, minutes=40), recipient_account=DEV, event_id="late-put-2")
    key = trail_key("", ORG, DEV, "us-east-1", MIDNIGHT + timedelta(days=1, hours=4), salt="late2")
    s3.put_object(Bucket=BUCKET, Key=key, Body=gzip.compress(json.dumps({"Records": [late]}).encode()))
    assert run(emulator, scenario, SECOND, tmp_path, timedelta(0)).late_events == {}
    assert ("2024-08-01", "104", "late-put-2") not in pairs(tmp_path)
