"""The night's extract end to end: both sources into Parquet, each (session, eventID) exactly once."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from elevation.cloudtrail.lake import LakeClient, LakeSource
from elevation.cloudtrail.s3_trail import S3TrailSource
from elevation.cloudtrail.schema import EVENT_SCHEMA
from elevation.devkit.cloudtrail_lake import CloudTrailLakeDouble
from elevation.devkit.trail_events import MIDNIGHT, Scenario
from elevation.extract import extract_night, night_window

ORG = "o-abcdefghij"
NIGHTS = ("2024-07-31", "2024-08-01")


def s3_source(emulator: Any, bucket: str) -> S3TrailSource:
    # No extra accounts configured: the account of the chained role is followed from the AssumeRole event.
    return S3TrailSource(emulator.client("s3"), bucket, org_id=ORG)


def lake_source(lake: CloudTrailLakeDouble) -> LakeSource:
    client = LakeClient(
        lake.session(), lake.event_data_store_arn, endpoint_url=lake.endpoint_url, poll_interval=0.01
    )
    return LakeSource(client)


def run_nights(scenario: Scenario, make_source: Any, output: Path) -> dict[str, Any]:
    summaries = {}
    for night in NIGHTS:
        start, end = night_window(date.fromisoformat(night))
        summaries[night] = extract_night(scenario.sessions, make_source(), start, end, output)
    return summaries


def read_pairs(output: Path) -> dict[tuple[str, str], str]:
    rows = duckdb.sql(
        f"SELECT session_id, eventID, CAST(date AS VARCHAR) AS night FROM read_parquet('{output}/*/*.parquet', hive_partitioning = true)"  # noqa: S608 (a test's tmp path)
    ).fetchall()
    counts = Counter((session, event) for session, event, _ in rows)
    duplicates = [key for key, count in counts.items() if count > 1]
    assert duplicates == [], f"duplicated (session, eventID): {duplicates}"
    return {(session, event): night for session, event, night in rows}


@pytest.mark.parametrize("source_kind", ["s3", "lake"])
def test_both_sources_give_each_session_event_exactly_once_in_the_night_of_its_time(
    source_kind: str, scenario: Scenario, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if source_kind == "s3":
        emulator, bucket = request.getfixturevalue("emulator"), request.getfixturevalue("trail_bucket")
        make_source = lambda: s3_source(emulator, bucket)  # noqa: E731
    else:
        lake = request.getfixturevalue("lake")
        make_source = lambda: lake_source(lake)  # noqa: E731
    summaries = run_nights(scenario, make_source, tmp_path)
    assert read_pairs(tmp_path) == scenario.expected, "midnight span, tail, overlaps, chained credentials"
    for night in NIGHTS:
        assert sum(summaries[night].events_per_session.values()) == len(scenario.expected_for(night))
    # Schema as declared, readable by pyarrow as a Hive-partitioned dataset.
    dataset = ds.dataset(tmp_path, format="parquet", partitioning="hive")
    assert dataset.schema.remove(dataset.schema.get_field_index("date")) == EVENT_SCHEMA
    for file in tmp_path.glob("date=*/*.parquet"):
        assert pq.read_schema(file) == EVENT_SCHEMA
    # The chained credentials and the minted key are reported on the night of their event.
    first, second = summaries[NIGHTS[0]], summaries[NIGHTS[1]]
    assert [c.access_key_id for c in first.derived_credentials] == ["ASIAALICEDEPLOY00001"]
    assert first.derived_credentials[0].event_id in {"alice-assume", "alice-assume-shared"}
    assert second.derived_credentials == []
    assert [m.event_id for m in second.minted_credentials] == ["carol-access-key"]
    assert second.minted_credentials[0].detail == "AKIABACKDOOR00000001"
    if source_kind == "lake":
        assert first.bytes_scanned > 0 and len(first.queries) >= 1
    else:
        assert second.duplicates_dropped >= 1, "the event CloudTrail delivered twice is written once"


def test_a_retried_night_replaces_its_partition(
    emulator: Any, trail_bucket: str, scenario: Scenario, tmp_path: Path
) -> None:
    start, end = night_window(date(2024, 8, 1))
    first = extract_night(scenario.sessions, s3_source(emulator, trail_bucket), start, end, tmp_path)
    again = extract_night(scenario.sessions, s3_source(emulator, trail_bucket), start, end, tmp_path)
    assert first.events_written == again.events_written == len(scenario.expected_for("2024-08-01"))
    assert sorted(p.name for p in (tmp_path / "date=2024-08-01").iterdir()) == ["_manifest.json", "events.parquet"]
    read_pairs(tmp_path)
    # A rerun with fewer sessions (one was deleted) leaves none of the old events behind.
    fewer = extract_night(scenario.sessions[:1], s3_source(emulator, trail_bucket), start, end, tmp_path)
    assert set(read_pairs(tmp_path)) == {k for k in scenario.expected_for("2024-08-01") if k[0] == "101"}
    assert fewer.events_per_session.keys() == {"101"}


def test_a_night_without_sessions_writes_an_empty_partition(
    tmp_path: Path, lake: CloudTrailLakeDouble
) -> None:
    start, end = night_window(date(2024, 9, 1))
    summary = extract_night([], lake_source(lake), start, end, tmp_path)
    assert summary.events_written == 0 and summary.queries == []
    assert pq.read_table(tmp_path / "date=2024-09-01" / "events.parquet").num_rows == 0


def test_a_failing_source_leaves_the_previous_partition_untouched(
    scenario: Scenario, tmp_path: Path, lake: CloudTrailLakeDouble
) -> None:
    start, end = night_window(date(2024, 8, 1))
    extract_night(scenario.sessions, lake_source(lake), start, end, tmp_path)
    before = (tmp_path / "date=2024-08-01" / "events.parquet").read_bytes()
    lake.next_query(outcome="FAILED", message="Query failed: internal error")
    from elevation.cloudtrail.lake import LakeQueryError

    with pytest.raises(LakeQueryError, match="internal error"):
        extract_night(scenario.sessions, lake_source(lake), start, end, tmp_path)
    assert (tmp_path / "date=2024-08-01" / "events.parquet").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "date=2024-08-01").iterdir()) == ["_manifest.json", "events.parquet"]


def test_a_tokyo_night_owns_the_events_of_its_local_day(
    scenario: Scenario, tmp_path: Path, lake: CloudTrailLakeDouble
) -> None:
    start, end = night_window(date(2024, 8, 1), "Asia/Tokyo")
    assert (start, end) == (MIDNIGHT - timedelta(hours=9), MIDNIGHT + timedelta(hours=15))
    summary = extract_night(scenario.sessions, lake_source(lake), start, end, tmp_path, timezone="Asia/Tokyo")
    owned = {k for k, _ in scenario.expected.items() if start <= _event_time(scenario, k[1]) < end}
    assert set(read_pairs(tmp_path)) == owned
    assert summary.night == date(2024, 8, 1)


def _event_time(scenario: Scenario, event_id: str) -> Any:
    from elevation.cloudtrail.schema import parse_event_time

    return next(parse_event_time(r["eventTime"]) for r in scenario.records if r["eventID"] == event_id)


def test_the_deferrable_path_reuses_the_queries_the_dag_started(
    scenario: Scenario, tmp_path: Path, lake: CloudTrailLakeDouble
) -> None:
    """The DAG starts the planned statements and waits in the trigger; extract_night then scans nothing again."""
    from elevation.extract import plan_lake_queries

    start, end = night_window(date(2024, 7, 31))
    source = lake_source(lake)
    ready = {}
    for statement in plan_lake_queries(scenario.sessions, start, end, lake.event_data_store_arn):
        query_id = source.client.start_query(statement)
        ready[statement] = (query_id, source.client.wait(query_id).bytes_scanned)
    started = len(lake.queries)
    summary = extract_night(
        scenario.sessions, LakeSource(source.client, ready_queries=ready), start, end, tmp_path
    )
    assert set(read_pairs(tmp_path)) == scenario.expected_for("2024-07-31")
    assert summary.queries[: len(ready)] == [query_id for query_id, _ in ready.values()]
    new_queries = [q.statement for q in list(lake.queries.values())[started:]]
    assert all("accesskeyid IN" in q for q in new_queries), "only the credentials follow-up is new"
    assert summary.bytes_scanned >= sum(scanned for _, scanned in ready.values()) > 0
