"""The nightly extract and audit through the real DAGs, on sessions the lifecycle actually granted."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta

import pyarrow.dataset as ds
import pytest
import sqlalchemy as sa

from elevation.access.grants import run_grants
from elevation.access.intake import run_intake
from elevation.access.revocations import run_revocations
from elevation.devkit.activity import HOSTILE_AGENT, write_activity
from elevation.devkit.world import TRAIL_BUCKET, nightly_sections
from elevation.nightly import night_to_process, session_identities
from elevation.store.tables import audits


@pytest.fixture
def simulated_day(world, configure, tmp_path, file_request, make_runtime):
    """The day before yesterday, lived through the lifecycle with a simulated clock, and its CloudTrail activity
    in S3 (two days back, so that the next night is over too by the real clock the DAGs audit with)."""
    configure(nightly_sections(tmp_path))
    day = (datetime.now(UTC) - timedelta(days=2)).date()
    at = lambda hour, minute=0: datetime.combine(day, time(0), tzinfo=UTC) + timedelta(hours=hour, minutes=minute)  # noqa: E731
    ids = {
        "break-glass": file_request(requester="dave", account_id="media-prod", permission_set="AdministratorAccess",
                                    start_at=at(10), duration_minutes=60),
        "group": file_request(requester="bob", account_id="ec-prod", permission_set="PowerUserAccess",
                              principal_group="platform", start_at=at(14), duration_minutes=60,
                              status="approved", approver="carol"),
        "over-midnight": file_request(requester="alice", account_id="media-stg", permission_set="PowerUserAccess",
                                      start_at=at(22, 30), duration_minutes=120, status="approved", approver="bob"),
    }
    for moment in (at(9, 59), at(10), at(11, 1), at(14), at(15, 1), at(22, 30), at(24, 31)):
        runtime = make_runtime(as_of=moment, clock=lambda moment=moment: moment)
        run_intake(runtime)
        run_grants(runtime)
        run_revocations(runtime)
    runtime = make_runtime(as_of=at(25), clock=lambda: at(25))
    sessions = session_identities(runtime)
    assert sorted(s.session_id for s in sessions) == sorted(str(i) for i in ids.values())
    counts = write_activity(world.emulator.client("s3"), TRAIL_BUCKET, sessions)
    return day, ids, counts, tmp_path, sessions


def test_a_night_is_extracted_to_parquet_and_audited_into_reports(simulated_day, run_dag, engine):
    day, ids, counts, folder, _ = simulated_day
    run = run_dag("elevation_extract", datetime.now(UTC), {"night": day.isoformat()})
    assert run.state == "success"
    table = ds.dataset(str(folder / "cloudtrail"), format="parquet", partitioning="hive").to_table()
    per_session = {sid: table.filter(ds.field("session_id") == sid).num_rows for sid in map(str, ids.values())}
    # Everything the sessions did that night is there, and none of the background noise.
    assert per_session[str(ids["break-glass"])] == counts[str(ids["break-glass"])]
    assert per_session[str(ids["group"])] == counts[str(ids["group"])]
    assert 0 < per_session[str(ids["over-midnight"])] < counts[str(ids["over-midnight"])]  # the rest is tomorrow's
    assert set(table.column("date").to_pylist()) == {day.isoformat()}

    assert run_dag("elevation_audit", datetime.now(UTC), {"night": day.isoformat()}).state == "success"
    reports = folder / "reports"
    index = (reports / day.isoformat() / "index.html").read_text(encoding="utf-8")
    for request_id in ids.values():
        assert f"sessions/{request_id}.html" in index
        page = (reports / "sessions" / f"{request_id}.html").read_text(encoding="utf-8")
        assert HOSTILE_AGENT not in page  # attacker-controlled text is escaped
    findings = [json.loads(line) for line in (reports / day.isoformat() / f"findings-{day.isoformat()}.jsonl").open()]
    assert {finding["session_id"] for finding in findings} >= {str(ids["break-glass"])}
    with engine.connect() as conn:
        states = {row["request_id"]: row["state"] for row in conn.execute(sa.select(audits)).mappings()}
    assert states == {ids["break-glass"]: "final", ids["group"]: "final", ids["over-midnight"]: "provisional"}

    # The next night closes the window that spanned midnight: its report becomes final, once.
    next_night = (day + timedelta(days=1)).isoformat()
    assert run_dag("elevation_extract", datetime.now(UTC), {"night": next_night}).state == "success"
    assert run_dag("elevation_audit", datetime.now(UTC), {"night": next_night}).state == "success"
    with engine.connect() as conn:
        row = conn.execute(sa.select(audits).where(audits.c.request_id == ids["over-midnight"])).mappings().one()
    assert (row["state"], row["night"]) == ("final", next_night) and row["finalized_at"] is not None
    everything = ds.dataset(str(folder / "cloudtrail"), format="parquet", partitioning="hive").to_table()
    over = everything.filter(ds.field("session_id") == str(ids["over-midnight"]))
    assert over.num_rows == counts[str(ids["over-midnight"])]
    assert len(set(over.column("eventID").to_pylist())) == over.num_rows  # each event exactly once


def test_the_night_defaults_to_the_local_day_before_the_run():
    run = datetime(2026, 11, 29, 0, 30, tzinfo=UTC)
    assert night_to_process(run, "UTC").isoformat() == "2026-11-28"
    assert night_to_process(run, "Asia/Tokyo").isoformat() == "2026-11-28"  # 09:30 on the 29th in Tokyo
    assert night_to_process(run, "UTC", "2026-11-01").isoformat() == "2026-11-01"
    with pytest.raises(ValueError, match="is not a date"):
        night_to_process(run, "UTC", "yesterday")



def test_on_cloudtrail_lake_the_dag_runs_one_query_and_waits_for_it_deferred(
    simulated_day, configure, run_dag, monkeypatch, tmp_path
):
    from elevation.devkit.activity import activity_records
    from elevation.devkit.cloudtrail_lake import CloudTrailLakeDouble

    day, ids, counts, _, sessions = simulated_day
    records, _ = activity_records(sessions)
    with CloudTrailLakeDouble(records, page_size=25) as lake:
        monkeypatch.setenv("AIRFLOW_CONN_AWS_LAKE", json.dumps({
            "conn_type": "aws", "login": "testing", "password": "testing",
            "extra": {"endpoint_url": lake.endpoint_url, "region_name": "us-east-1"}}))
        configure({
            "extract": {"source": "lake", "lake_event_data_store_arn": lake.event_data_store_arn,
                        "lake_conn_id": "aws_lake", "poll_interval": "0.1s", "max_wait": "60s",
                        "output_location": str(tmp_path / "lake-extract")},
        })
        lake.next_query(running_polls=3)
        run = run_dag("elevation_extract", datetime.now(UTC), {"night": day.isoformat()})
        assert run.state == "success"
        assert len(lake.queries) == 1  # one query for every session of the night, not one per session
        # It was still RUNNING when first looked at: the wait went through the trigger (deferred), then finished.
        assert lake.requests.count("DescribeQuery") >= 4
        instances = {ti.task_id: ti for ti in run.get_task_instances()}
        assert instances["wait_for_lake"].state == "success"
        result = instances["extract"].xcom_pull(task_ids="extract")
    assert result["bytes_scanned"] > 0
    assert result["events_per_session"][str(ids["break-glass"])] == counts[str(ids["break-glass"])]


def test_reports_can_be_published_to_s3_with_their_layout(simulated_day, world, configure, run_dag, tmp_path):
    day, ids, _, folder, _ = simulated_day
    s3 = world.emulator.client("s3")
    s3.create_bucket(Bucket="security-reports")
    configure({
        "extract": {"source": "s3", "s3_bucket": TRAIL_BUCKET, "s3_conn_id": "aws_default",
                    "output_location": str(folder / "cloudtrail")},
        "audit": {"reports_location": "s3://security-reports/elevation", "base_url": "https://audit.example.com/elevation"},
    })
    assert run_dag("elevation_extract", datetime.now(UTC), {"night": day.isoformat()}).state == "success"
    run = run_dag("elevation_audit", datetime.now(UTC), {"night": day.isoformat()})
    assert run.state == "success"
    result = [ti for ti in run.get_task_instances() if ti.task_id == "audit"][0].xcom_pull(task_ids="audit")
    assert result["index"] == f"s3://security-reports/elevation/{day.isoformat()}/index.html"
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket="security-reports")["Contents"]}
    assert f"elevation/{day.isoformat()}/index.html" in keys
    assert {f"elevation/sessions/{request_id}.html" for request_id in ids.values()} <= keys
    index = s3.get_object(Bucket="security-reports", Key=f"elevation/{day.isoformat()}/index.html")
    assert index["ContentType"].startswith("text/html")
    assert f"https://audit.example.com/elevation/sessions/{ids['group']}.html" in index["Body"].read().decode()


def test_on_cloudtrail_lake_late_events_are_found_by_querying_the_earlier_nights_again(
    simulated_day, configure, monkeypatch, tmp_path, make_runtime
):
    from elevation.devkit.activity import activity_records
    from elevation.devkit.cloudtrail_lake import CloudTrailLakeDouble
    from elevation.devkit.trail_events import make_event, sso_identity
    from elevation.extract.location import resolve_location
    from elevation.extract.manifest import read_manifest
    from elevation.nightly import run_extract

    day, ids, counts, _, sessions = simulated_day
    records, _ = activity_records(sessions)
    group = next(session for session in sessions if session.session_id == str(ids["break-glass"]))
    late = make_event(sso_identity(group.account_id, group.permission_set_name, group.user_names[0]), "PutObject",
                      "s3.amazonaws.com", group.granted_at + timedelta(minutes=20),
                      recipient_account=group.account_id, event_id="lake-late-1")
    with CloudTrailLakeDouble(records, page_size=50) as lake:
        monkeypatch.setenv("AIRFLOW_CONN_AWS_LAKE", json.dumps({
            "conn_type": "aws", "login": "testing", "password": "testing",
            "extra": {"endpoint_url": lake.endpoint_url, "region_name": "us-east-1"}}))
        output = tmp_path / "lake-late"
        configure({"extract": {"source": "lake", "lake_event_data_store_arn": lake.event_data_store_arn,
                               "lake_conn_id": "aws_lake", "poll_interval": "0.1s", "max_wait": "60s",
                               "output_location": str(output)}})
        runtime = make_runtime()
        first = run_extract(runtime, day)
        assert first.events_per_session[group.session_id] == counts[group.session_id]
        assert [problem for problem in first.problems if problem.kind == "empty"] == []
        lake.load([*records, late])  # it reaches the event data store after the night was extracted
        second = run_extract(runtime, day + timedelta(days=1))
        assert second.late_events == {day.isoformat(): {group.session_id: 1}}
        filesystem, base = resolve_location(output)
        manifest = read_manifest(filesystem, base, day)
        assert manifest is not None and manifest.late_events == {group.session_id: 1}
        assert run_extract(runtime, day + timedelta(days=1)).late_events == {}  # once
        # A session whose closed window Lake returns nothing for is shown as such, not as a clean session.
        lake.load([record for record in records if record["userIdentity"].get("arn", "").find(
            group.user_names[0]) < 0])
        again = run_extract(runtime, day)
        empty = [problem for problem in again.problems if problem.kind == "empty"]
        assert [problem.session_id for problem in empty] == [group.session_id]
        assert "returned no events" in empty[0].message


def test_an_s3_output_location_is_reached_through_the_output_connection(monkeypatch):
    """extract.output_location on s3:// is written and read with extract.output_conn_id's credentials, not
    whatever connection happens to be the default."""
    import elevation.nightly as nightly

    asked: list[str] = []

    def session_of(conn_id: str):  # noqa: ANN202
        asked.append(conn_id)
        return None, "http://127.0.0.1:1", "eu-west-1"

    monkeypatch.setattr(nightly, "airflow_session", session_of)
    monkeypatch.setattr("elevation.extract.location.resolve_location",
                        lambda location, **kw: (kw, location.removeprefix("s3://")))
    options, base = nightly._output("s3://night-data/cloudtrail", "aws_night_data")
    assert asked == ["aws_night_data"] and base == "night-data/cloudtrail"
    assert options["region_name"] == "eu-west-1" and options["endpoint_url"] == "http://127.0.0.1:1"
    assert nightly._output("/tmp/local", "aws_night_data")[1] == "/tmp/local" and asked == ["aws_night_data"]
