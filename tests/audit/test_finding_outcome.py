"""The fields a finding gained for the report cards and the SIEM: the acting principal, the rule's own level next to
the effective severity (one step lower for a failed call), the outcome and a stable key; the same on both paths."""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow as pa
import pytest

from elevation.audit import Finding, load_rules_from_yaml
from elevation.audit.engine import FINDING_FIELDS, FINDINGS_SCHEMA, finding_sort_key
from elevation.audit.rules import effective_severity
from elevation.cloudtrail.schema import EVENT_SCHEMA, record_to_row

RULES = """
title: Trail stopped
id: 6b1e1a5c-0000-4000-8000-000000000001
logsource: {product: aws, service: cloudtrail}
detection:
  selection: {eventSource: cloudtrail.amazonaws.com, eventName: StopLogging}
  condition: selection
level: critical
---
title: Any CloudTrail call
id: 6b1e1a5c-0000-4000-8000-000000000002
logsource: {product: aws, service: cloudtrail}
detection:
  selection: {eventSource: cloudtrail.amazonaws.com}
  condition: selection
level: informational
---
title: Bucket deleted
id: 6b1e1a5c-0000-4000-8000-000000000003
logsource: {product: aws, service: cloudtrail}
detection:
  selection: {eventSource: s3.amazonaws.com, eventName: DeleteBucket}
  condition: selection
level: high
---
title: Any S3 call
id: 6b1e1a5c-0000-4000-8000-000000000004
logsource: {product: aws, service: cloudtrail}
detection:
  selection: {eventSource: s3.amazonaws.com}
  condition: selection
level: low
"""
ROLE_ARN = "arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_Admin_0123456789abcdef/alice@example.com"


def record(event_id: str, name: str, error: str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "eventID": event_id,
        "eventTime": "2026-11-27T09:14:03Z",
        "eventSource": "s3.amazonaws.com" if name == "DeleteBucket" else "cloudtrail.amazonaws.com",
        "eventName": name,
        "userIdentity": {"type": "AssumedRole", "arn": ROLE_ARN, "accountId": "111122223333"},
        "requestParameters": {"name": "org-trail"},
        **({"errorCode": error} if error else {}),
        **fields,
    }


def both(records: list[dict[str, Any]]) -> tuple[list[Finding], list[Finding]]:
    rules = load_rules_from_yaml(RULES)
    table = pa.Table.from_pylist([record_to_row(item, "s-1") for item in records], schema=EVENT_SCHEMA)
    return rules.evaluate_records(records, session_id="s-1"), rules.evaluate_table(table)


@pytest.mark.parametrize(
    ("level", "error", "expected"),
    [
        ("critical", None, "critical"),
        ("critical", "TrailNotFoundException", "high"),
        ("high", "AccessDenied", "medium"),
        ("medium", "AccessDenied", "low"),
        ("low", "AccessDenied", "informational"),
        ("informational", "AccessDenied", "informational"),
        ("high", "", "high"),  # an empty errorCode is no error
    ],
)
def test_effective_severity(level: str, error: str | None, expected: str) -> None:
    assert effective_severity(level, error) == expected


def test_a_failed_stop_logging_is_not_critical_on_both_paths() -> None:
    records = [record("e-1", "StopLogging", "TrailNotFoundException"), record("e-2", "StopLogging")]
    by_records, by_table = both(records)
    assert by_records == by_table
    failed = [f for f in by_table if f.event_id == "e-1" and f.title == "Trail stopped"][0]
    assert (failed.severity, failed.rule_severity) == ("high", "critical")
    assert failed.failed and failed.outcome == "failed: TrailNotFoundException"
    succeeded = [f for f in by_table if f.event_id == "e-2" and f.title == "Trail stopped"][0]
    assert (succeeded.severity, succeeded.rule_severity) == ("critical", "critical")
    assert not succeeded.failed and succeeded.outcome == "succeeded"
    assert {f.principal_arn for f in by_table} == {ROLE_ARN}


def test_six_denied_deletes_are_medium_and_sorted_by_effective_severity() -> None:
    records = [record(f"e-{i}", "DeleteBucket", "AccessDenied") for i in range(6)]
    records.append(record("e-9", "DeleteBucket", eventTime="2026-11-27T09:15:00Z"))
    by_records, by_table = both(records)
    assert by_records == by_table
    assert [(f.event_id, f.severity) for f in by_table if f.title == "Bucket deleted"] == [
        *((f"e-{i}", "medium") for i in range(6)),
        ("e-9", "high"),
    ]
    assert by_table == sorted(by_table, key=finding_sort_key)
    # the "any S3 call" rule is low, so failed it is informational
    assert {f.severity for f in by_table if f.title == "Any S3 call" and f.failed} == {"informational"}


def test_clamped_severities_sort_by_rule_id_on_both_paths() -> None:
    """A failed low and a failed informational finding are both informational: rule id decides, on both paths."""
    rules = load_rules_from_yaml(
        """
title: Z low
id: ffffffff-0000-4000-8000-000000000001
logsource: {product: aws, service: cloudtrail}
detection: {selection: {eventName: StopLogging}, condition: selection}
level: low
---
title: A informational
id: 00000000-0000-4000-8000-000000000002
logsource: {product: aws, service: cloudtrail}
detection: {selection: {eventName: StopLogging}, condition: selection}
level: informational
"""
    )
    for error, expected in ((None, ["Z low", "A informational"]), ("AccessDenied", ["A informational", "Z low"])):
        records = [record("e-1", "StopLogging", error)]
        table = pa.Table.from_pylist([record_to_row(item, "s-1") for item in records], schema=EVENT_SCHEMA)
        by_records, by_table = rules.evaluate_records(records, session_id="s-1"), rules.evaluate_table(table)
        assert by_records == by_table
        assert [f.title for f in by_table] == expected


def test_key_is_stable_and_in_the_dictionary() -> None:
    (finding, *_), _ = both([record("e-1", "StopLogging")])
    expected = hashlib.sha256(f"s-1|e-1|{finding.rule_id}".encode()).hexdigest()[:32]
    assert finding.key == expected and len(finding.key) == 32
    data = finding.to_dict()
    assert data["key"] == expected
    assert data["principal_arn"] == ROLE_ARN
    assert data["rule_severity"] == "critical" and data["severity"] == "critical"
    assert data["outcome"] == "succeeded"
    without_session = Finding(
        event_id="e-1", event_time=finding.event_time, event_source="x", event_name="y", rule_id="r", title="t",
        severity="low", session_id=None, aws_region=None, source_ip=None, user_agent=None, request_parameters=None,
        error_code=None, recipient_account_id=None,
    )
    assert without_session.key == hashlib.sha256(b"|e-1|r").hexdigest()[:32]
    assert without_session.rule_severity == "low" and without_session.principal_arn is None


def test_the_findings_table_has_the_new_columns() -> None:
    assert FINDING_FIELDS[-2:] == ("principal_arn", "rule_severity")
    assert FINDINGS_SCHEMA.names == list(FINDING_FIELDS)
    rules = load_rules_from_yaml(RULES)
    records = [record("e-1", "StopLogging", "AccessDenied")]
    table = rules.findings_table(
        pa.Table.from_pylist([record_to_row(item, "s-1") for item in records], schema=EVENT_SCHEMA)
    )
    assert table.schema == FINDINGS_SCHEMA
    assert table.column("principal_arn").to_pylist() == [ROLE_ARN, ROLE_ARN]
    assert table.column("rule_severity").to_pylist() == ["critical", "informational"]
    assert table.column("severity").to_pylist() == ["high", "informational"]
