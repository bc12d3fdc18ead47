"""Suppressions: by rule id or title, field globs (also nested request parameters), expiry, required reason."""

from __future__ import annotations

from datetime import date
from typing import Any

import pydantic
import pytest

from elevation.audit import Finding, load_rules_from_yaml
from elevation.audit.settings import AuditSettings
from elevation.audit.suppressions import Suppression, split_suppressed

RULE = """
title: S3 bucket deleted
id: 4a0c7e55-0000-4000-8000-000000000001
logsource: {product: aws, service: cloudtrail}
detection:
  selection: {eventSource: s3.amazonaws.com, eventName: DeleteBucket}
  condition: selection
level: high
"""
RULE_ID = "4a0c7e55-0000-4000-8000-000000000001"
TERRAFORM = "APN/1.0 HashiCorp/1.0 Terraform/1.9.8 (+https://www.terraform.io) terraform-provider-aws/5.80.0"
ALICE = "arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_Admin_0123456789abcdef/alice@example.com"
TODAY = date(2026, 11, 29)


def findings(**overrides: Any) -> list[Finding]:
    records = [
        {
            "eventID": f"e-{index}",
            "eventTime": "2026-11-27T09:14:03Z",
            "eventSource": "s3.amazonaws.com",
            "eventName": "DeleteBucket",
            "userAgent": agent,
            "sourceIPAddress": "203.0.113.24",
            "userIdentity": {"type": "AssumedRole", "arn": ALICE},
            "requestParameters": {"bucketName": bucket, "Host": f"{bucket}.s3.eu-west-1.amazonaws.com"},
            **overrides,
        }
        for index, (agent, bucket) in enumerate(
            [(TERRAFORM, "ci-scratch-1234"), ("aws-cli/2.22.4", "ci-scratch-5678"), (TERRAFORM, "customer-data")]
        )
    ]
    return load_rules_from_yaml(RULE).evaluate_records(records, session_id="s-1")


def buckets(items: list[Any]) -> list[str]:
    return [(item[0] if isinstance(item, tuple) else item).request_parameters["bucketName"] for item in items]


@pytest.mark.parametrize("rule", [RULE_ID, "S3 bucket deleted"])
def test_a_suppression_by_rule_id_or_title_without_match_takes_every_finding_of_the_rule(rule: str) -> None:
    suppression = Suppression(rule=rule, reason="sandbox account, buckets are throwaway")
    kept, suppressed = split_suppressed(findings(), [suppression], TODAY)
    assert kept == [] and len(suppressed) == 3
    assert all(item is suppression for _, item in suppressed)


def test_another_rule_is_not_suppressed() -> None:
    kept, suppressed = split_suppressed(findings(), [Suppression(rule="Other rule", reason="x")], TODAY)
    assert len(kept) == 3 and suppressed == []


def test_field_globs_must_all_match_and_are_case_sensitive() -> None:
    terraform = Suppression(rule=RULE_ID, match={"userAgent": "*Terraform/*"}, reason="the pipeline's clean-up")
    kept, suppressed = split_suppressed(findings(), [terraform], TODAY)
    assert buckets(kept) == ["ci-scratch-5678"] and buckets(suppressed) == ["ci-scratch-1234", "customer-data"]

    both = Suppression(
        rule=RULE_ID,
        match={"userAgent": "*Terraform/*", "requestParameters.bucketName": "ci-scratch-*"},
        reason="the pipeline's clean-up of scratch buckets",
    )
    kept, suppressed = split_suppressed(findings(), [both], TODAY)
    assert buckets(kept) == ["ci-scratch-5678", "customer-data"] and buckets(suppressed) == ["ci-scratch-1234"]

    shouting = Suppression(rule=RULE_ID, match={"userAgent": "*TERRAFORM/*"}, reason="case matters")
    assert split_suppressed(findings(), [shouting], TODAY)[1] == []


def test_fields_of_the_finding_and_of_the_event() -> None:
    by_principal = Suppression(rule=RULE_ID, match={"principal_arn": "*/alice@example.com"}, reason="Alice's lab")
    by_ip = Suppression(rule=RULE_ID, match={"sourceIPAddress": "203.0.113.*"}, reason="office range")
    by_name = Suppression(rule=RULE_ID, match={"eventName": "Delete*", "severity": "high"}, reason="reviewed")
    for suppression in (by_principal, by_ip, by_name):
        assert len(split_suppressed(findings(), [suppression], TODAY)[1]) == 3, suppression
    nobody = Suppression(rule=RULE_ID, match={"requestParameters.noSuchKey": "*"}, reason="absent field")
    assert split_suppressed(findings(), [nobody], TODAY)[1] == []


def test_expiry_stops_applying_after_the_date() -> None:
    suppression = Suppression(rule=RULE_ID, reason="migration week", expires=date(2026, 11, 30))
    assert len(split_suppressed(findings(), [suppression], date(2026, 11, 30))[1]) == 3  # the last day counts
    kept, suppressed = split_suppressed(findings(), [suppression], date(2026, 12, 1))
    assert len(kept) == 3 and suppressed == []


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_a_suppression_without_reason_is_a_clear_validation_error(reason: str | None) -> None:
    fields: dict[str, Any] = {"rule": RULE_ID}
    if reason is not None:
        fields["reason"] = reason
    with pytest.raises(pydantic.ValidationError, match="reason"):
        Suppression(**fields)


def test_suppressions_are_part_of_the_audit_settings() -> None:
    settings = AuditSettings.model_validate(
        {"suppressions": [{"rule": RULE_ID, "match": {"userAgent": "*Terraform*"}, "reason": "pipeline",
                           "expires": "2026-12-31"}]}
    )
    assert settings.suppressions == [
        Suppression(rule=RULE_ID, match={"userAgent": "*Terraform*"}, reason="pipeline", expires=date(2026, 12, 31))
    ]
    assert AuditSettings().suppressions == []
    with pytest.raises(pydantic.ValidationError, match="reason"):
        AuditSettings.model_validate({"suppressions": [{"rule": RULE_ID}]})
