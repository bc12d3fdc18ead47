"""Reading CloudTrail files: every shape, detected by content; broken files named, never half-read silently."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from conftest import shared_data
from elevation.cloudtrail.records import (
    MalformedLogFile,
    identity_of_key,
    iter_records,
    iter_records_from_path,
    read_trail_columns,
)

EVENT = {"eventID": "e1", "eventTime": "2024-07-31T13:06:24Z", "eventName": "StopLogging"}


@pytest.fixture
def data() -> Path:
    """The shared samples of real CloudTrail records."""
    return shared_data("cloudtrail")


def test_reads_every_real_sample_and_reports_the_files_it_does_not_read(data: Path) -> None:
    skipped: list[str] = []
    records = list(iter_records_from_path(data, on_skip=lambda path, reason: skipped.append(path.name)))
    stratus = list(iter_records_from_path(data / "stratus-red-team", on_skip=lambda p, r: None))
    panther = list(iter_records_from_path(data / "panther-rule-tests", on_skip=lambda p, r: None))
    assert (len(stratus), len(panther)) == (310, 488)  # the counts the data README promises
    assert len(records) == 310 + 488
    assert sorted(skipped) == ["LICENSE", "LICENSE.txt", "NOTICE", "README.md"]
    assert all(isinstance(record, dict) and "eventName" in record for record in records)


def test_a_named_file_is_read_whatever_its_name(tmp_path: Path) -> None:
    target = tmp_path / "export.txt"
    target.write_bytes(gzip.compress(json.dumps({"Records": [EVENT]}).encode()))
    assert list(iter_records_from_path(target)) == [EVENT]


@pytest.mark.parametrize(
    "payload",
    [
        json.dumps({"Records": [EVENT, EVENT]}),
        json.dumps([EVENT, EVENT]),
        json.dumps(EVENT) + "\n\n" + json.dumps(EVENT) + "\n",
        "\ufeff" + json.dumps([EVENT, EVENT]),
    ],
    ids=["trail-file", "array", "json-lines", "bom"],
)
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_every_shape_plain_or_gzip_gives_the_same_records(payload: str, compress: bool) -> None:
    data = payload.encode()
    data = gzip.compress(data) if compress else data
    assert list(iter_records(data, "x.json")) == [EVENT, EVENT]


def test_a_single_event_object_is_one_record() -> None:
    assert list(iter_records(json.dumps(EVENT).encode(), "one.json")) == [EVENT]


def test_gzip_is_detected_by_magic_bytes_not_by_name() -> None:
    body = json.dumps({"Records": [EVENT]}).encode()
    assert list(iter_records(gzip.compress(body), "looks-plain.json")) == [EVENT]
    assert list(iter_records(body, "looks-compressed.json.gz")) == [EVENT]


def _error(data: bytes, name: str = "AWSLogs/111111111111/file.json.gz") -> MalformedLogFile:
    with pytest.raises(MalformedLogFile) as caught:
        list(iter_records(data, name))
    assert caught.value.name == name and name in str(caught.value)
    return caught.value


def test_truncated_and_corrupt_gzip_are_named() -> None:
    whole = gzip.compress(json.dumps({"Records": [EVENT] * 50}).encode())
    assert "truncated gzip" in _error(whole[: len(whole) // 2]).reason  # raised after the records recovered
    assert "corrupt gzip" in _error(whole[:10] + b"\x00garbage" * 20).reason


def test_invalid_json_lines_name_the_line_after_the_good_ones() -> None:
    data = (json.dumps(EVENT) + "\n" + json.dumps(EVENT) + "\n{not json\n").encode()
    seen = []
    with pytest.raises(MalformedLogFile, match="invalid JSON at line 3"):
        for record in iter_records(data, "export.jsonl"):
            seen.append(record)
    assert seen == [EVENT, EVENT]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty file"),
        (b"   \n", "empty file"),
        (b'{"Records": [', "truncated JSON (the text stops mid-record at line 1): 0 records recovered"),
        (b'{"Records": [{"eventID": "a"} {"eventID": "b"}]}', "invalid JSON at line 1"),
        (b'{"Records": {"a": 1}}', "Records is not a list"),
        (b'{"Labels": []}', "no Records"),
        (b'{"Records": [1]}', "Records[0] is a int"),
        (b"[1, 2]", "element 0"),
        (b'"text"', "not records"),
        (b"\xff\xfe\x00", "not UTF-8"),
    ],
)
def test_malformed_content_says_what_is_wrong(payload: bytes, reason: str) -> None:
    assert reason in _error(payload).reason


def test_a_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(iter_records_from_path(tmp_path / "nope"))


def test_lower_cased_field_names_are_restored() -> None:
    """Lake exports and Panther's fixtures write `eventname`, `useridentity`: the rest of the code sees CloudTrail's."""
    lowered = {
        "eventid": "e1",
        "eventname": "GetRecords",
        "eventtime": "2023-01-10 21:04:02",
        "useridentity": {"arn": "arn:aws:sts::111111111111:assumed-role/R/s", "principalid": "AROA:s"},
    }
    (record,) = iter_records(json.dumps([lowered]).encode(), "lake-export.json")
    assert record["eventName"] == "GetRecords" and record["eventID"] == "e1"
    assert record["userIdentity"] == {"arn": lowered["useridentity"]["arn"], "principalId": "AROA:s"}


def _trail(records: list[dict]) -> bytes:
    return gzip.compress(json.dumps({"Records": records}).encode())


IDENTITY = {
    "type": "AssumedRole",
    "arn": "arn:aws:sts::111111111111:assumed-role/R/u",
    "principalId": "AROAX:u",
    "accessKeyId": "ASIAX",
    "sessionContext": {"sessionIssuer": {"type": "Role", "userName": "R"}},
}


def test_the_columnar_reader_gives_times_and_distinct_identities() -> None:
    records = [EVENT | {"eventID": f"e{i}", "userIdentity": IDENTITY if i % 2 else None} for i in range(5)]
    columns = read_trail_columns(_trail(records))
    assert columns is not None and columns.count == 5
    assert columns.times == [EVENT["eventTime"]] * 5
    assert (columns.earliest, columns.latest) == (EVENT["eventTime"], EVENT["eventTime"])
    assert len(columns.identities) == 2 and columns.codes == [0, 1, 0, 1, 0]
    with_identity = identity_of_key(columns.identities[1])
    assert (
        with_identity["arn"] == IDENTITY["arn"]
        and with_identity["sessionContext"]["sessionIssuer"]["userName"] == "R"
    )
    assert columns.record(3) == records[3]
    plain = read_trail_columns(json.dumps({"Records": records}).encode())  # not gzip: the records are read as is
    assert plain is not None and plain.record(4) == records[4]


@pytest.mark.parametrize(
    "data",
    [
        gzip.compress(json.dumps({"Records": [EVENT]}, indent=1).encode()),  # pretty-printed
        _trail([EVENT | {"eventTime": "2024-07-31T13:06:24.5Z"}]),  # not CloudTrail's exact time form
        _trail([EVENT | {"eventTime": "2024-13-31T13:06:24Z"}]),  # no such month
        _trail([{"eventid": "e1", "eventtime": EVENT["eventTime"], "eventname": "X"}]),  # lower-cased names
        _trail([EVENT | {"eventID": ""}]),
        _trail([EVENT | {"userIdentity": "root"}]),  # a field of another type
        _trail([EVENT | {"userIdentity": {"arn": "a\x1fb"}}]),  # the identity separator inside a value
        gzip.compress(json.dumps({"Records": [EVENT]}).encode())[:-3],  # truncated
        gzip.compress(b'{"Records": []}')
        + gzip.compress(json.dumps({"Records": [EVENT]}).encode()),  # 2 members
        json.dumps([EVENT]).encode(),  # a JSON array
        b'\xef\xbb\xbf{"Records": []}',
    ],
)
def test_the_columnar_reader_leaves_unusual_files_to_the_ordinary_one(data: bytes) -> None:
    assert read_trail_columns(data) is None
