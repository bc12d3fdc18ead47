"""evaluate_table (vectorised, over the extract's Parquet) and evaluate_records (nested records) agree."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import shared_data
from elevation.audit import Finding, RuleSet, load_rules, read_events
from elevation.audit.engine import FINDINGS_SCHEMA, finding_sort_key, findings_from_table
from elevation.cloudtrail.records import iter_records_from_path
from elevation.cloudtrail.schema import EVENT_SCHEMA, record_to_row, row_to_record


def real_records() -> Iterator[dict[str, Any]]:
    for folder in ("stratus-red-team", "panther-rule-tests"):
        for path in sorted(shared_data(f"cloudtrail/{folder}").glob("*.json")):
            yield from iter_records_from_path(path)


@pytest.fixture(scope="module", params=["pack", "pack+sigmahq"])
def ruleset(request: pytest.FixtureRequest) -> RuleSet:
    """The project's rule pack alone (runs everywhere), and with SigmaHQ's AWS CloudTrail rules (the shared copy)."""
    if request.param == "pack":
        return load_rules()
    return load_rules([shared_data("sigma/rules/cloud/aws/cloudtrail")])


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    """The real records of the shared samples (Stratus Red Team, Panther) as the extract's rows."""
    converted = []
    for index, record in enumerate(real_records()):
        record = {**record, "eventID": record.get("eventID") or f"generated-{index}"}
        record.setdefault("eventTime", "2024-01-01T00:00:00Z")
        try:
            converted.append(record_to_row(record, f"session-{index % 7}"))
        except (
            ValueError
        ):  # a few hand-made fixtures have eventTime "redacted": the extract would drop them too
            continue
    return converted


def key(finding: Finding) -> tuple[Any, ...]:
    return (
        finding.event_id,
        finding.rule_id,
        finding.session_id,
        json.dumps(finding.request_parameters, sort_keys=True),
    )


def test_records_and_table_give_the_same_findings(ruleset: RuleSet, rows: list[dict[str, Any]]) -> None:
    table = pa.Table.from_pylist(rows, schema=EVENT_SCHEMA)
    by_table = ruleset.evaluate_table(table)
    by_records: list[Finding] = []
    for session in sorted({row["session_id"] for row in rows}):
        records = [row_to_record(row) for row in rows if row["session_id"] == session]
        by_records += ruleset.evaluate_records(records, session_id=session)
    assert len(by_table) > 300  # the sample data is attacks: plenty of findings
    assert sorted(map(key, by_table)) == sorted(map(key, by_records))


def test_a_parquet_round_trip_with_dictionary_columns_changes_nothing(
    ruleset: RuleSet, rows: list[dict[str, Any]], tmp_path: Path
) -> None:
    table = pa.Table.from_pylist(rows, schema=EVENT_SCHEMA)
    pq.write_table(table, tmp_path / "events.parquet", row_group_size=97)  # many chunks
    reread = read_events(tmp_path / "events.parquet")
    assert pa.types.is_dictionary(reread.schema.field("eventName").type)
    assert reread.column("eventName").num_chunks > 1
    assert ruleset.evaluate_table(reread) == ruleset.evaluate_table(table)


def test_the_findings_table_holds_every_finding_in_reading_order_and_survives_parquet(
    ruleset: RuleSet, rows: list[dict[str, Any]], tmp_path: Path
) -> None:
    table = pa.Table.from_pylist(rows, schema=EVENT_SCHEMA)
    found = ruleset.findings_table(table)
    findings = ruleset.evaluate_table(table)
    assert found.schema == FINDINGS_SCHEMA
    assert found.num_rows == len(findings) > 300
    assert findings == sorted(findings, key=finding_sort_key)  # time, then the worst rule first
    assert found.column("rule_id").to_pylist() == [finding.rule_id for finding in findings]
    assert found.column("severity").to_pylist() == [finding.severity for finding in findings]
    documents = [json.loads(text) if text else None for text in found.column("request_parameters").to_pylist()]
    assert [document if isinstance(document, dict) else None for document in documents] == [
        finding.request_parameters for finding in findings
    ]
    pq.write_table(found, tmp_path / "findings.parquet")
    assert findings_from_table(pq.read_table(tmp_path / "findings.parquet")) == findings


def test_a_document_repeated_across_events_is_judged_with_each_events_own_fields(ruleset: RuleSet) -> None:
    """The table path judges a document once per distinct text; the verdict must still depend on each event."""
    parameters = {"name": "/prod/db/password", "withDecryption": True}
    person = {"type": "AssumedRole", "arn": "arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_Admin_1/alice"}
    service = {**person, "invokedBy": "cloudformation.amazonaws.com"}
    events = [
        ("by-a-person", "GetParameter", person),
        ("by-a-service", "GetParameter", service),
        ("a-write", "PutParameter", person),
        ("by-path", "GetParametersByPath", person),
    ]
    records = [
        {
            "eventID": event_id,
            "eventTime": f"2024-07-31T13:06:2{index}Z",
            "eventSource": "ssm.amazonaws.com",
            "eventName": name,
            "userIdentity": identity,
            "requestParameters": parameters,
        }
        for index, (event_id, name, identity) in enumerate(events)
    ]
    table = pa.Table.from_pylist([record_to_row(record, "s-1") for record in records], schema=EVENT_SCHEMA)
    decrypted = {
        finding.event_id for finding in ruleset.evaluate_table(table) if "decryption" in finding.title.lower()
    }
    assert decrypted == {"by-a-person", "by-path"}
    assert sorted(map(key, ruleset.evaluate_table(table))) == sorted(
        map(key, ruleset.evaluate_records(records, session_id="s-1"))
    )


def test_tables_from_elsewhere_with_text_times_nanoseconds_or_numbers_give_the_same_findings(
    ruleset: RuleSet,
) -> None:
    record = {
        "eventID": "e-1",
        "eventTime": "2024-07-31T13:06:24Z",
        "eventSource": "cloudtrail.amazonaws.com",
        "eventName": "StopLogging",
        "requestParameters": {"name": "org-trail"},
    }
    table = pa.Table.from_pylist([record_to_row(record, "s-1")], schema=EVENT_SCHEMA)
    expected = ruleset.evaluate_records([record], session_id="s-1")
    assert expected
    at = table.schema.get_field_index("eventTime")
    nanoseconds = pa.array([1_722_431_184_000_000_123], pa.timestamp("ns", tz="UTC"))
    variants = {
        "Lake's text": pa.array(["2024-07-31 13:06:24.000"]),
        "nanoseconds": nanoseconds,
        "no time zone": pa.array([datetime(2024, 7, 31, 13, 6, 24)], pa.timestamp("us")),
    }
    for name, times in variants.items():
        found = ruleset.evaluate_table(table.set_column(at, pa.field("eventTime", times.type), times))
        assert found == expected, name
    numbers = table.set_column(
        table.schema.get_field_index("recipientAccountId"), "recipientAccountId", pa.array([111122223333])
    )
    assert [finding.recipient_account_id for finding in ruleset.evaluate_table(numbers)] == ["111122223333"] * len(
        expected
    )


def test_findings_carry_the_event_context(ruleset: RuleSet) -> None:
    record = {
        "eventID": "e-1",
        "eventTime": "2024-07-31T13:06:24Z",
        "eventSource": "cloudtrail.amazonaws.com",
        "eventName": "StopLogging",
        "awsRegion": "eu-west-1",
        "sourceIPAddress": "198.51.100.7",
        "userAgent": "aws-cli/2.15",
        "requestParameters": {"name": "org-trail"},
        "recipientAccountId": "111122223333",
        "readOnly": False,
    }
    table = pa.Table.from_pylist([record_to_row(record, "s-42")], schema=EVENT_SCHEMA)
    findings = ruleset.evaluate_table(table)
    assert findings, "StopLogging must be flagged"
    finding = findings[0]
    assert finding.session_id == "s-42"
    assert finding.event_time == datetime(2024, 7, 31, 13, 6, 24, tzinfo=UTC)
    assert (finding.event_source, finding.event_name) == ("cloudtrail.amazonaws.com", "StopLogging")
    assert (finding.aws_region, finding.source_ip, finding.user_agent) == (
        "eu-west-1",
        "198.51.100.7",
        "aws-cli/2.15",
    )
    assert finding.request_parameters == {"name": "org-trail"}
    assert finding.recipient_account_id == "111122223333"
    assert finding.severity in {"high", "critical"}
    assert ruleset.evaluate_records([record], session_id="s-42") == findings


def test_an_empty_table_gives_no_findings(ruleset: RuleSet) -> None:
    assert ruleset.evaluate_table(EVENT_SCHEMA.empty_table()) == []
    assert ruleset.findings_table(EVENT_SCHEMA.empty_table()).schema == FINDINGS_SCHEMA


def test_a_table_without_the_event_columns_is_refused(ruleset: RuleSet) -> None:
    with pytest.raises(ValueError, match="eventName"):
        ruleset.evaluate_table(
            pa.table({"eventID": ["x"], "eventTime": ["2024-01-01T00:00:00Z"], "eventSource": ["s"]})
        )


def test_benign_reads_give_no_findings(ruleset: RuleSet) -> None:
    record = {
        "eventID": "r-1",
        "eventTime": "2024-07-31T13:06:24Z",
        "eventSource": "ec2.amazonaws.com",
        "eventName": "DescribeInstances",
        "readOnly": True,
        "userIdentity": {"type": "IAMUser", "userName": "ci"},
    }
    assert ruleset.evaluate_records([record]) == []
