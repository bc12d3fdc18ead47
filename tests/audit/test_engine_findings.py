"""Findings built in bulk from a table: the lazy request parameters, and the Arrow helpers they are built with."""

from __future__ import annotations

import pickle
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from elevation.audit import Finding, load_rules_from_yaml
from elevation.audit.engine import _take_ascending, column_times
from elevation.cloudtrail.schema import EVENT_SCHEMA, record_to_row

RULE = """
title: Trail stopped
id: 6b1e1a5c-0000-4000-8000-000000000001
logsource: {product: aws, service: cloudtrail}
detection:
  selection: {eventSource: cloudtrail.amazonaws.com, eventName: StopLogging}
  condition: selection
level: high
"""


def record(**fields: Any) -> dict[str, Any]:
    return {
        "eventID": "e-1",
        "eventTime": "2024-07-31T13:06:24Z",
        "eventSource": "cloudtrail.amazonaws.com",
        "eventName": "StopLogging",
        "awsRegion": "eu-west-1",
        "requestParameters": {"name": "org-trail", "nested": {"list": [1, "two", None]}},
        **fields,
    }


def findings_of_table(records: list[dict[str, Any]]) -> list[Finding]:
    table = pa.Table.from_pylist([record_to_row(item, "s-1") for item in records], schema=EVENT_SCHEMA)
    return load_rules_from_yaml(RULE).evaluate_table(table)


def test_request_parameters_are_parsed_when_read_and_equal_the_records_path() -> None:
    (by_table,) = findings_of_table([record()])
    (by_records,) = load_rules_from_yaml(RULE).evaluate_records([record()], session_id="s-1")
    assert by_table._request_parameters_json is not None  # still the event's JSON text
    assert by_table.request_parameters == {"name": "org-trail", "nested": {"list": [1, "two", None]}}
    assert by_table.request_parameters is by_table.request_parameters  # parsed once, then kept
    assert by_table == by_records and hash(by_table) == hash(by_records)
    assert by_table.to_dict() == by_records.to_dict()


@pytest.mark.parametrize("parameters", [None, [1, 2], "text"])
def test_request_parameters_that_are_not_an_object_read_as_none(parameters: Any) -> None:
    (by_table,) = findings_of_table([record(requestParameters=parameters)])
    assert by_table.request_parameters is None
    assert by_table.to_dict()["requestParameters"] is None


def test_a_finding_is_immutable_picklable_and_readable() -> None:
    (finding,) = findings_of_table([record()])
    with pytest.raises(AttributeError):
        finding.event_name = "StartLogging"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        finding.extra = 1  # type: ignore[attr-defined]
    copy = pickle.loads(pickle.dumps(finding))
    assert copy == finding and copy.request_parameters == finding.request_parameters
    assert repr(finding).startswith(
        "Finding(event_id='e-1', event_time=datetime.datetime(2024, 7, 31, 13, 6, 24"
    )
    built = Finding(
        event_id="e-1",
        event_time=datetime(2024, 7, 31, 13, 6, 24, tzinfo=UTC),
        event_source="cloudtrail.amazonaws.com",
        event_name="StopLogging",
        rule_id=finding.rule_id,
        title=finding.title,
        severity=finding.severity,
        session_id="s-1",
        aws_region="eu-west-1",
        source_ip=None,
        user_agent=None,
        request_parameters={"name": "org-trail", "nested": {"list": [1, "two", None]}},
        error_code=None,
        recipient_account_id=None,
    )
    assert built == finding
    assert built != copy.to_dict()


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_times_are_aware_utc_datetimes_whatever_the_unit(unit: str) -> None:
    scale = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}[unit]
    rng = random.Random(unit)
    per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[unit]
    values: list[int | None] = [
        rng.randrange(-(10**9), 4 * 10**9) * per_second // 1000 + rng.randrange(per_second // 1000 or 1)
        for _ in range(500)
    ]
    values += [None, 0, 1, 999_999, 1500, 2500]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    expected = [epoch if v is None else epoch + timedelta(microseconds=v * scale) for v in values]
    for tz in ("UTC", None, "+02:00"):
        column = pa.array(values, pa.int64()).cast(pa.timestamp(unit, tz=tz))
        converted = column_times(pa.chunked_array([column[:100], column[100:]]))
        assert converted == expected
        assert all(moment.tzinfo is UTC for moment in converted)


def test_take_ascending_equals_take_across_chunks() -> None:
    rng = random.Random(3)
    sizes = [5, 0, 17, 1, 40, 9]
    chunks = [pa.array([f"value-{i}-{j}" for j in range(size)], pa.string()) for i, size in enumerate(sizes)]
    column = pa.chunked_array(chunks)
    for count in (0, 1, 10, 72, 300):
        rows = pa.array(sorted(rng.randrange(len(column)) for _ in range(count)), pa.int64())
        taken = _take_ascending(column, rows)
        assert taken.to_pylist() == pc.take(column, rows).to_pylist()
    rows = pc.indices_nonzero(pa.array([True] * len(column)))  # uint64, as frames make them
    assert _take_ascending(column, rows).to_pylist() == column.to_pylist()
