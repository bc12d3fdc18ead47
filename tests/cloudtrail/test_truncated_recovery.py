"""A file cut short gives the records before the cut, and is still reported; a corrupt one is still rejected whole.

Property-style: every cut point of a gzip trail file, a plain trail file, a JSON array and JSON Lines recovers a
prefix of the records (never a wrong or partial record) and reports the file as truncated.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from elevation.cloudtrail.records import MalformedLogFile, TruncatedLogFile, iter_records
from elevation.cloudtrail.s3_trail import S3TrailSource
from elevation.devkit.trail_events import MIDNIGHT, PROD, trail_key

NAME = "s3://bucket/AWSLogs/111111111111/CloudTrail/us-east-1/2024/08/01/file.json.gz"


def _records(count: int) -> list[dict[str, Any]]:
    """Varied records: nested documents, numbers, literals, escapes and non-ASCII text, so cuts land everywhere."""
    return [
        {
            "eventID": f"ev-{index}",
            "eventTime": f"2024-08-01T00:{index:02d}:00Z",
            "eventName": "PutObject",
            "readOnly": index % 2 == 0,
            "errorCode": None,
            "userIdentity": {"type": "AssumedRole", "arn": f"arn:aws:sts::{PROD}:assumed-role/R/u{index}"},
            "requestParameters": {"key": f'caf\u00e9/\u2603 "quoted" \\ {index}', "size": -12.5e-3 * index},
            "resources": [{"ARN": "arn:aws:s3:::b", "count": index}],
        }
        for index in range(count)
    ]


def _read(data: bytes) -> tuple[list[dict[str, Any]], list[TruncatedLogFile]]:
    problems: list[TruncatedLogFile] = []
    return list(iter_records(data, NAME, on_problem=problems.append)), problems


SHAPES = {
    "trail-file": lambda records: json.dumps({"Records": records}),
    "trail-file-pretty": lambda records: json.dumps({"Records": records}, indent=2, ensure_ascii=False),
    "array": lambda records: json.dumps(records, ensure_ascii=False),
    "json-lines": lambda records: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_every_cut_of_the_text_recovers_a_prefix_and_reports_it(shape: str) -> None:
    records = _records(4)
    whole = SHAPES[shape](records).encode()
    assert _read(whole) == (records, [])
    for cut in range(1, len(whole)):
        text = whole[:cut]
        try:
            got, problems = _read(text)
        except MalformedLogFile as error:  # only cuts that leave nothing to read are rejected outright
            assert not isinstance(error, TruncatedLogFile)
            assert not text.strip(), (cut, error.reason)
            continue
        assert got == records[: len(got)], cut  # a prefix: never a wrong or partial record
        if not problems:  # a cut between records that leaves a complete document (JSON Lines)
            assert shape == "json-lines" and text.rstrip().endswith(b"}"), cut
            continue
        (problem,) = problems
        assert problem.cut == "text" and problem.records_recovered == len(got), cut
        assert problem.reason.startswith("truncated JSON (") and "the rest is lost" in problem.reason
    # a cut just before the next record's end keeps every record before it
    second_id = whole.index(b'"ev-1"')
    assert _read(whole[:second_id])[0] == records[:1]


@pytest.mark.parametrize("shape", ["trail-file", "json-lines"])
def test_every_cut_of_a_gzip_recovers_a_prefix_and_reports_a_truncated_gzip(shape: str) -> None:
    records = _records(30)
    whole = gzip.compress(SHAPES[shape](records).encode(), 9)
    recovered_counts = []
    for cut in range(2, len(whole)):
        got, problems = _read(whole[:cut])
        assert got == records[: len(got)], cut
        (problem,) = problems
        assert problem.cut == "gzip" and problem.records_recovered == len(got)
        assert problem.reason.startswith(f"truncated gzip (the compressed data ends at byte {cut}): ")
        assert problem.reason.endswith(
            f"{len(got)} record{'' if len(got) == 1 else 's'} recovered, the rest is lost"
        )
        recovered_counts.append(len(got))
    assert recovered_counts == sorted(recovered_counts)  # more data, never fewer records
    assert recovered_counts[-1] == len(
        records
    )  # cut in the trailer: every record is there, the file still reported
    assert 0 < recovered_counts[len(recovered_counts) // 2] < len(records)


def test_without_a_handler_the_recovered_records_come_first_then_the_error() -> None:
    records = _records(10)
    whole = gzip.compress(json.dumps({"Records": records}).encode())
    seen = []
    with pytest.raises(TruncatedLogFile) as caught:
        for record in iter_records(whole[: len(whole) * 2 // 3], NAME):
            seen.append(record)
    assert seen and seen == records[: len(seen)]
    assert isinstance(caught.value, MalformedLogFile) and caught.value.records_recovered == len(seen)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"Records": [{"eventID": "a"}, {"eventID": oops}, {"eventID": "c"}]}', "invalid JSON at line 1"),
        (b'{"Records": [{"eventID": "a"},\n{"eventID": oops}, {"eventID": "c"', "invalid JSON at line 2"),
        (b'[{"eventID": "a"} {"eventID": "b"}', "invalid JSON at line 1"),
        (b'{"eventID": "a"}\n{"eventID": oops}\n{"eventID": "c"}\n', "invalid JSON at line 2"),
        (b'{"eventID": "a"}\n{"eventID": "b",\n', "invalid JSON at line 2"),  # ended by a newline: not cut
        (b'{"Records": [1, {"eventID": "b"', "Records[0] is a int"),
    ],
)
def test_invalid_json_in_the_middle_is_not_taken_for_a_cut(data: bytes, reason: str) -> None:
    for payload in (data, gzip.compress(data)):
        with pytest.raises(MalformedLogFile) as caught:
            _read(payload)
        assert not isinstance(caught.value, TruncatedLogFile) and reason in caught.value.reason


def test_a_corrupt_gzip_is_still_rejected() -> None:
    whole = gzip.compress(json.dumps({"Records": _records(30)}).encode())
    corrupt = bytearray(whole)
    corrupt[len(whole) // 2] ^= 0xFF
    with pytest.raises(MalformedLogFile, match="corrupt gzip") as caught:
        _read(bytes(corrupt)[: len(whole) * 3 // 4])
    assert not isinstance(caught.value, TruncatedLogFile)


def test_the_s3_source_reads_what_a_truncated_object_holds_and_warns(emulator: Any) -> None:
    s3 = emulator.client("s3")
    bucket = "truncated-trail"
    s3.create_bucket(Bucket=bucket)
    records = [
        {
            "eventID": f"ev-{index}",
            "eventTime": f"2024-08-01T00:{index:02d}:00Z",
            "eventName": "CreateUser",
            "recipientAccountId": PROD,
            "awsRegion": "us-east-1",
            "requestParameters": {"userName": f"user-{index}", "padding": f"{index:x}" * 40},
        }
        for index in range(40)
    ]
    whole = gzip.compress(json.dumps({"Records": records}).encode())
    bodies = {
        "truncated-gzip": whole[: len(whole) // 2],
        "truncated-text": json.dumps({"Records": records[:5]}).encode()[:-30],
        "corrupt": whole[:200] + b"\x00" * 40 + whole[240:],
        "fine": gzip.compress(json.dumps({"Records": [records[0] | {"eventID": "fine"}]}).encode()),
    }
    keys = {}
    for index, (name, body) in enumerate(bodies.items()):
        key = trail_key(
            "", None, PROD, "us-east-1", datetime(2024, 8, 1, 0, 15 + index, tzinfo=UTC), salt=name
        )
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        keys[name] = f"s3://{bucket}/{key}"
    source = S3TrailSource(s3, bucket, prefetch=2)
    span = (MIDNIGHT - timedelta(hours=1), MIDNIGHT + timedelta(days=1))
    got: dict[str, list[str]] = {}
    for record, locator in source.records([_session()], *span):
        got.setdefault(locator, []).append(record["eventID"])
    from_gzip = got[keys["truncated-gzip"]]
    assert 0 < len(from_gzip) < len(records) and from_gzip == [
        r["eventID"] for r in records[: len(from_gzip)]
    ]
    assert got[keys["truncated-text"]] == ["ev-0", "ev-1", "ev-2", "ev-3"]
    assert got[keys["fine"]] == ["fine"] and keys["corrupt"] not in got
    warnings = {w.locator: w.reason for w in source.report.warnings}
    assert warnings[keys["truncated-gzip"]].startswith("truncated gzip (")
    assert warnings[keys["truncated-gzip"]].endswith(f"{len(from_gzip)} records recovered, the rest is lost")
    assert warnings[keys["truncated-text"]].startswith("truncated JSON (")
    assert warnings[keys["truncated-text"]].endswith("4 records recovered, the rest is lost")
    assert warnings[keys["corrupt"]].startswith("corrupt gzip")
    assert keys["fine"] not in warnings
    assert source.report.records_read == len(from_gzip) + 4 + 1


def _session() -> Any:
    from elevation.cloudtrail.sessions import SessionIdentity

    return SessionIdentity(
        "x",
        PROD,
        "Admin",
        ("u",),
        MIDNIGHT,
        MIDNIGHT + timedelta(hours=1),
        MIDNIGHT + timedelta(hours=1),
        timedelta(hours=1),
    )
