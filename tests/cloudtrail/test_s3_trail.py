"""The S3 trail source: only the night's folders of the relevant accounts; broken files skipped and named."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from elevation.cloudtrail.s3_trail import S3TrailSource, account_prefix, delivery_time, utc_days
from elevation.devkit.trail_events import DEV, MIDNIGHT, PROD, SHARED, Scenario, trail_key, upload_trail

ORG = "o-abcdefghij"
SPAN = (MIDNIGHT - timedelta(hours=1), MIDNIGHT + timedelta(days=1, minutes=15))


def test_prefixes_and_delivery_stamps() -> None:
    assert account_prefix("", ORG, PROD) == f"AWSLogs/{ORG}/{PROD}/CloudTrail/"
    assert account_prefix("/trail/", None, PROD) == f"trail/AWSLogs/{PROD}/CloudTrail/"
    for bad in ("11111111111", "../etc/passwd1"):
        with pytest.raises(ValueError):
            account_prefix("", None, bad)
    with pytest.raises(ValueError):
        account_prefix("", "o-x/../", PROD)
    key = trail_key("", ORG, PROD, "us-east-1", datetime(2024, 8, 1, 0, 5, tzinfo=UTC))
    assert key.startswith(f"AWSLogs/{ORG}/{PROD}/CloudTrail/us-east-1/2024/08/01/")
    assert delivery_time(key) == datetime(2024, 8, 1, 0, 5, tzinfo=UTC)
    assert delivery_time("AWSLogs/x/no-stamp.json.gz") is None
    assert utc_days(*SPAN) == [
        datetime(2024, 7, 31).date(),
        datetime(2024, 8, 1).date(),
        datetime(2024, 8, 2).date(),
    ]


def test_reads_only_the_sessions_accounts_and_the_span(
    emulator: Any, trail_bucket: str, scenario: Scenario
) -> None:
    source = S3TrailSource(emulator.client("s3"), trail_bucket, org_id=ORG)
    keys = list(source.iter_keys({PROD}, *SPAN))
    assert keys and all(f"/{PROD}/CloudTrail/" in key for key in keys)
    regions_with_prod_events = {r["awsRegion"] for r in scenario.records if r["recipientAccountId"] == PROD}
    assert {key.split("/")[4] for key in keys} <= regions_with_prod_events
    assert {"us-east-1", "eu-west-1"} <= {key.split("/")[4] for key in keys}, (
        "regions are listed, not assumed"
    )
    assert all(delivery_time(key) >= SPAN[0] - timedelta(minutes=5) for key in keys), (
        "older files skipped by name"
    )
    records = list(source.records(scenario.sessions[:1], *SPAN))
    assert records and all(SPAN[0] <= _time(r) <= SPAN[1] for r, _ in records)
    assert {r["recipientAccountId"] for r, _ in records} == {PROD}
    assert source.report.warnings == []


def test_configured_regions_and_extra_accounts(emulator: Any, trail_bucket: str) -> None:
    source = S3TrailSource(
        emulator.client("s3"), trail_bucket, org_id=ORG, regions=["eu-west-1"], extra_accounts=[SHARED]
    )
    keys = [key for record, key in source.records([_session(DEV)], *SPAN)]
    assert {key.split("/")[5] for key in keys} == {DEV, SHARED}
    assert {key.split("/")[7] for key in keys} == {"eu-west-1"}


def _time(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(record["eventTime"].replace("Z", "+00:00"))


def test_malformed_objects_are_skipped_with_a_warning_naming_them_and_the_rest_is_read(emulator: Any) -> None:
    s3 = emulator.client("s3")
    bucket = "broken-trail"
    s3.create_bucket(Bucket=bucket)
    good = {
        "eventID": "good",
        "eventTime": "2024-08-01T00:10:00Z",
        "eventName": "CreateUser",
        "recipientAccountId": PROD,
        "awsRegion": "us-east-1",
    }
    whole = gzip.compress(json.dumps({"Records": [good] * 20}).encode())
    bodies = {
        "corrupt": whole[:10] + b"\x00" * 40,
        "truncated": whole[: len(whole) // 2],
        "invalid-json": gzip.compress(b'{"Records": [{"eventID": }, {"eventID": "x"}]}'),
        "no-records": gzip.compress(b'{"Digest": true}'),
        "missing-fields": gzip.compress(
            json.dumps(
                {
                    "Records": [
                        {"eventTime": "2024-08-01T00:10:00Z"},
                        {"eventID": "no-time"},
                        good | {"eventID": "kept"},
                    ]
                }
            ).encode()
        ),
        "fine": gzip.compress(json.dumps({"Records": [good | {"eventID": "fine"}]}).encode()),
    }
    keys = {}
    for index, (name, body) in enumerate(bodies.items()):
        key = trail_key(
            "", None, PROD, "us-east-1", datetime(2024, 8, 1, 0, 15 + index, tzinfo=UTC), salt=name
        )
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        keys[name] = f"s3://{bucket}/{key}"
    source = S3TrailSource(s3, bucket, prefetch=2)
    got = [record["eventID"] for record, _ in source.records([_session()], *SPAN)]
    assert sorted(got) == ["fine", "kept"]  # the truncated gzip is cut before its first record ends
    warnings = {
        (w.locator, w.reason.split(" (")[0] if "gzip" in w.reason else w.reason)
        for w in source.report.warnings
    }
    assert (keys["corrupt"], "corrupt gzip") in warnings
    assert (keys["truncated"], "truncated gzip") in warnings
    assert any(loc == keys["invalid-json"] and r.startswith("invalid JSON") for loc, r in warnings)
    assert any(loc == keys["no-records"] and "no Records" in r for loc, r in warnings)
    assert (keys["missing-fields"], "Records[0] has no eventID") in warnings
    assert any(loc == keys["missing-fields"] and "no valid eventTime" in r for loc, r in warnings)
    assert source.report.records_skipped == 2
    assert source.report.objects_read == len(bodies)


def _session(account: str = PROD) -> Any:
    from elevation.cloudtrail.sessions import SessionIdentity

    return SessionIdentity(
        "x",
        account,
        "Admin",
        ("u",),
        MIDNIGHT,
        MIDNIGHT + timedelta(hours=1),
        MIDNIGHT + timedelta(hours=1),
        timedelta(hours=1),
    )


@pytest.mark.parametrize("night", ["2024-07-31", "2024-08-01", "2024-08-02"])
def test_the_columnar_read_writes_the_same_night_as_the_record_by_record_read(
    emulator: Any, scenario: Scenario, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, night: str
) -> None:
    """The native (pyarrow.json) screening path and the plain one give the same Parquet (events and values; row
    order aside), the same warnings and the same credentials, on a night with sessions, noise, chained AssumeRole
    credentials, a duplicate delivery, real records of every shape, and broken files (truncated, corrupt)."""
    import pyarrow.parquet as pq

    from elevation.cloudtrail import records as records_module
    from elevation.extract import extract_night, night_window

    s3 = emulator.client("s3")
    bucket = "columnar-vs-records"
    upload_trail(s3, bucket, scenario.records, org_id=ORG, file_period=timedelta(minutes=30))
    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for item in page.get("Contents") or []
        if f"/{PROD}/" in item["Key"] and delivery_time(item["Key"]) >= MIDNIGHT + timedelta(hours=12)
    ]  # files of the afternoon: neither the chained credentials' AssumeRole nor their use
    body = s3.get_object(Bucket=bucket, Key=keys[len(keys) // 2])["Body"].read()
    s3.put_object(Bucket=bucket, Key=keys[len(keys) // 2], Body=body[: len(body) * 2 // 3])  # truncated
    body = bytearray(s3.get_object(Bucket=bucket, Key=keys[len(keys) // 3])["Body"].read())
    body[len(body) // 2] ^= 0xFF
    s3.put_object(Bucket=bucket, Key=keys[len(keys) // 3], Body=bytes(body))  # corrupt
    start, end = night_window(datetime.fromisoformat(night).date())
    screened_calls = []
    real_screen = records_module.screened_records

    def counting(*args: Any, **kwargs: Any) -> Any:
        screened_calls.append(1)
        return real_screen(*args, **kwargs)

    results = {}
    for mode in ("1", "0"):
        monkeypatch.setenv(records_module.COLUMNAR_ENV, mode)
        monkeypatch.setattr("elevation.cloudtrail.s3_trail.screened_records", counting)
        output = tmp_path / mode
        summary = extract_night(scenario.sessions, S3TrailSource(s3, bucket, org_id=ORG), start, end, output)
        table = pq.read_table(summary.files_written[0])
        rows = sorted(table.to_pylist(), key=lambda row: (row["session_id"], row["eventID"]))
        results[mode] = (rows, summary, len(screened_calls))
    (fast_rows, fast, fast_calls), (slow_rows, slow, slow_calls) = results["1"], results["0"]
    assert (fast_calls > 0 or not fast.sessions) and slow_calls == fast_calls, "columnar only when on"
    assert fast_rows == slow_rows and fast.events_written == slow.events_written
    assert fast.events_per_session == slow.events_per_session
    assert fast.duplicates_dropped == slow.duplicates_dropped
    assert sorted(map(repr, fast.warnings)) == sorted(map(repr, slow.warnings))
    if night == "2024-08-01":
        reasons = [w.reason for w in fast.warnings]
        assert any("truncated gzip" in r for r in reasons) and any("corrupt gzip" in r for r in reasons), reasons
    assert fast.derived_credentials == slow.derived_credentials
    assert fast.minted_credentials == slow.minted_credentials
    assert (fast.records_read, fast.objects_read, fast.reread_passes) == (
        slow.records_read,
        slow.objects_read,
        slow.reread_passes,
    )
    if night == "2024-07-31":
        assert [c.access_key_id for c in fast.derived_credentials] == ["ASIAALICEDEPLOY00001"]
    if night == "2024-08-01":  # alice's chained role credentials (assumed before midnight) used after it
        assert any(row["userIdentity_accessKeyId"] == "ASIAALICEDEPLOY00001" for row in fast_rows), fast_rows
