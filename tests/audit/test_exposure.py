"""Organization-aware exposure through the real rule set: public is critical, an account outside the organization
high, another account with the organization unknown medium, inside it low; removing access is no exposure. Every
case is evaluated on both paths (records and table), which must agree."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pytest

from elevation.audit import Finding, RuleSet, load_rules
from elevation.audit.exposure import (
    EXPOSURE_RULES,
    INSIDE,
    OTHER_ACCOUNT,
    OUTSIDE,
    PUBLIC,
    SUPERSEDED_RULE_IDS,
    assess,
)
from elevation.cloudtrail.schema import EVENT_SCHEMA, record_to_row

OWN = "111122223333"
SIBLING = "222233334444"  # another account of the organization
STRANGER = "999988887777"  # not in the organization
ORGANIZATION = frozenset({OWN, SIBLING})


def policy(principal: Any, condition: dict[str, Any] | None = None, effect: str = "Allow") -> str:
    statement: dict[str, Any] = {"Effect": effect, "Principal": principal, "Action": "*", "Resource": "*"}
    if condition:
        statement["Condition"] = condition
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def event(source: str, name: str, parameters: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "eventVersion": "1.10",
        "eventID": f"{name}-{abs(hash(json.dumps(parameters, sort_keys=True)))}",
        "eventTime": "2026-11-27T09:14:03Z",
        "eventSource": source,
        "eventName": name,
        "awsRegion": "eu-west-1",
        "recipientAccountId": OWN,
        "userIdentity": {"type": "AssumedRole", "accountId": OWN,
                         "arn": f"arn:aws:sts::{OWN}:assumed-role/AWSReservedSSO_Admin_0123456789abcdef/alice"},
        "requestParameters": parameters,
        **fields,
    }


def s3_policy(principal: Any, condition: dict[str, Any] | None = None, as_text: bool = False) -> dict[str, Any]:
    document = json.loads(policy(principal, condition))
    return event("s3.amazonaws.com", "PutBucketPolicy",
                 {"bucketName": "data", "bucketPolicy": json.dumps(document) if as_text else document})


def snapshot(key: str, items: list[dict[str, str]]) -> dict[str, Any]:
    return event("ec2.amazonaws.com", "ModifySnapshotAttribute",
                 {"snapshotId": "snap-0a1b2c3d4e5f60718", "attributeType": "CREATE_VOLUME_PERMISSION",
                  "createVolumePermission": {key: {"items": items}}})


def image(items: list[dict[str, str]]) -> dict[str, Any]:
    return event("ec2.amazonaws.com", "ModifyImageAttribute",
                 {"imageId": "ami-0a1b2c3d4e5f60718", "attributeType": "launchPermission",
                  "launchPermission": {"add": {"items": items}}})


def db_snapshot(**values: list[str]) -> dict[str, Any]:
    return event("rds.amazonaws.com", "ModifyDBSnapshotAttribute",
                 {"dBSnapshotIdentifier": "prod-db-final", "attributeName": "restore", **values})


def trust(principal: Any, name: str = "UpdateAssumeRolePolicy", condition: dict[str, Any] | None = None):
    key = "policyDocument" if name == "UpdateAssumeRolePolicy" else "assumeRolePolicyDocument"
    return event("iam.amazonaws.com", name, {"roleName": "deploy", key: policy(principal, condition)})


def ram(principals: list[str], external: bool | None = None) -> dict[str, Any]:
    parameters: dict[str, Any] = {"name": "subnets", "resourceArns": ["arn:aws:ec2:eu-west-1:111122223333:subnet/x"],
                                  "principals": principals}
    if external is not None:
        parameters["allowExternalPrincipals"] = external
    return event("ram.amazonaws.com", "CreateResourceShare", parameters)


# (case, event, verdict with the organization known, verdict without it)
CASES: list[tuple[str, dict[str, Any], str | None, str | None]] = [
    # S3 bucket policy (an object, as CloudTrail logs it, or JSON text)
    ("s3 public", s3_policy("*"), PUBLIC, PUBLIC),
    ("s3 public AWS *", s3_policy({"AWS": "*"}, as_text=True), PUBLIC, PUBLIC),
    ("s3 outside account", s3_policy({"AWS": f"arn:aws:iam::{STRANGER}:root"}), OUTSIDE, OTHER_ACCOUNT),
    ("s3 sibling account", s3_policy({"AWS": [f"arn:aws:iam::{SIBLING}:role/reader"]}), INSIDE, OTHER_ACCOUNT),
    ("s3 own account", s3_policy({"AWS": OWN}), INSIDE, INSIDE),
    ("s3 wildcard restricted to the org", s3_policy("*", {"StringEquals": {"aws:PrincipalOrgID": "o-abc"}}),
     INSIDE, INSIDE),
    ("s3 wildcard restricted to an outside account",
     s3_policy("*", {"StringEquals": {"aws:PrincipalAccount": STRANGER}}), OUTSIDE, OTHER_ACCOUNT),
    ("s3 wildcard with a source IP only", s3_policy("*", {"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}}),
     PUBLIC, PUBLIC),
    ("s3 service principal", s3_policy({"Service": "logging.s3.amazonaws.com"}), None, None),
    ("s3 deny everyone", event("s3.amazonaws.com", "PutBucketPolicy",
                               {"bucketName": "d", "bucketPolicy": policy("*", effect="Deny")}), None, None),
    ("s3 policy deleted (revert)", event("s3.amazonaws.com", "DeleteBucketPolicy", {"bucketName": "d"}), None, None),
    # KMS, SQS, SNS, Secrets Manager, ECR, Glacier, Backup
    ("kms outside", event("kms.amazonaws.com", "PutKeyPolicy",
                          {"keyId": "k", "policyName": "default", "policy": policy({"AWS": STRANGER})}),
     OUTSIDE, OTHER_ACCOUNT),
    ("sqs public", event("sqs.amazonaws.com", "SetQueueAttributes",
                         {"queueUrl": "q", "attributes": {"Policy": policy("*")}}), PUBLIC, PUBLIC),
    ("sns public", event("sns.amazonaws.com", "SetTopicAttributes",
                         {"topicArn": "t", "attributeName": "Policy", "attributeValue": policy({"AWS": "*"})}),
     PUBLIC, PUBLIC),
    ("sns delivery policy", event("sns.amazonaws.com", "SetTopicAttributes",
                                  {"topicArn": "t", "attributeName": "DeliveryPolicy", "attributeValue": "{}"}),
     None, None),
    ("secret outside", event("secretsmanager.amazonaws.com", "PutResourcePolicy",
                             {"secretId": "s", "resourcePolicy": policy({"AWS": f"arn:aws:iam::{STRANGER}:root"})}),
     OUTSIDE, OTHER_ACCOUNT),
    ("ecr sibling", event("ecr.amazonaws.com", "SetRepositoryPolicy",
                          {"repositoryName": "r", "policyText": policy({"AWS": SIBLING})}), INSIDE, OTHER_ACCOUNT),
    ("glacier public", event("glacier.amazonaws.com", "SetVaultAccessPolicy",
                             {"vaultName": "v", "accountId": "-", "policy": {"policy": policy("*")}}), PUBLIC, PUBLIC),
    ("backup outside", event("backup.amazonaws.com", "PutBackupVaultAccessPolicy",
                             {"backupVaultName": "v", "policy": policy({"AWS": STRANGER})}), OUTSIDE, OTHER_ACCOUNT),
    # Lambda permissions
    ("lambda public", event("lambda.amazonaws.com", "AddPermission20150331v2",
                            {"functionName": "f", "statementId": "s", "action": "lambda:InvokeFunction",
                             "principal": "*"}), PUBLIC, PUBLIC),
    ("lambda outside account", event("lambda.amazonaws.com", "AddPermission20150331v2",
                                     {"functionName": "f", "statementId": "s", "action": "lambda:InvokeFunction",
                                      "principal": STRANGER}), OUTSIDE, OTHER_ACCOUNT),
    ("lambda service for own account", event("lambda.amazonaws.com", "AddPermission20150331v2",
                                             {"functionName": "f", "statementId": "s",
                                              "action": "lambda:InvokeFunction", "principal": "s3.amazonaws.com",
                                              "sourceAccount": OWN}), INSIDE, INSIDE),
    ("lambda service without account", event("lambda.amazonaws.com", "AddPermission20150331v2",
                                             {"functionName": "f", "statementId": "s",
                                              "action": "lambda:InvokeFunction",
                                              "principal": "events.amazonaws.com"}), None, None),
    # IAM role trust
    ("trust outside", trust({"AWS": f"arn:aws:iam::{STRANGER}:root"}), OUTSIDE, OTHER_ACCOUNT),
    ("trust anyone", trust({"AWS": "*"}), PUBLIC, PUBLIC),
    ("trust google", trust({"Federated": "accounts.google.com"}, "CreateRole"), OUTSIDE, OUTSIDE),
    ("trust github oidc of own account", trust(
        {"Federated": f"arn:aws:iam::{OWN}:oidc-provider/token.actions.githubusercontent.com"}, "CreateRole"),
     INSIDE, INSIDE),
    ("trust service", trust({"Service": "lambda.amazonaws.com"}, "CreateRole"), None, None),
    # snapshot, image, DB snapshot shares
    ("snapshot public", snapshot("add", [{"group": "all"}]), PUBLIC, PUBLIC),
    ("snapshot outside", snapshot("add", [{"userId": STRANGER}]), OUTSIDE, OTHER_ACCOUNT),
    ("snapshot sibling", snapshot("add", [{"userId": SIBLING}]), INSIDE, OTHER_ACCOUNT),
    ("snapshot unshared (revert)", snapshot("remove", [{"userId": STRANGER}]), None, None),
    ("image to an outside organization", image([{"organizationArn": f"arn:aws:organizations::{STRANGER}:"
                                                 "organization/o-zzzzzzzzzz"}]), OUTSIDE, OTHER_ACCOUNT),
    ("db snapshot public", db_snapshot(valuesToAdd=["all"]), PUBLIC, PUBLIC),
    ("db snapshot outside", db_snapshot(valuesToAdd=[STRANGER]), OUTSIDE, OTHER_ACCOUNT),
    ("db snapshot unshared (revert)", db_snapshot(valuesToRemove=[STRANGER]), None, None),
    # RAM
    ("ram outside", ram([STRANGER]), OUTSIDE, OTHER_ACCOUNT),
    ("ram sibling", ram([SIBLING], external=False), INSIDE, INSIDE),
]


def findings(ruleset: RuleSet, record: dict[str, Any]) -> tuple[list[Finding], list[Finding]]:
    by_records = ruleset.evaluate_records([record], session_id="s-1")
    table = pa.Table.from_pylist([record_to_row(record, "s-1")], schema=EVENT_SCHEMA)
    by_table = ruleset.evaluate_table(table)
    assert by_records == by_table
    assert ruleset.findings_table(table).num_rows == len(by_table)
    return by_records, by_table


@pytest.fixture(scope="module")
def pack() -> RuleSet:
    return load_rules()


@pytest.fixture(scope="module")
def organization(pack: RuleSet) -> RuleSet:
    return pack.with_organization(ORGANIZATION)


@pytest.mark.parametrize(("name", "record", "known", "unknown"), CASES, ids=[case[0] for case in CASES])
def test_exposure_verdicts_on_both_paths(
    name: str, record: dict[str, Any], known: str | None, unknown: str | None, pack: RuleSet, organization: RuleSet
) -> None:
    for ruleset, expected in ((organization, known), (pack, unknown)):
        verdict = assess(record, ruleset.organization_accounts)
        assert (verdict.rule_id if verdict else None) == expected, (name, ruleset)
        found, _ = findings(ruleset, record)
        exposure = [finding for finding in found if finding.rule_id in EXPOSURE_RULES]
        if expected is None:
            assert exposure == []
            continue
        (finding,) = exposure
        assert finding.rule_id == expected
        assert finding.severity == EXPOSURE_RULES[expected].severity
        # the exposure verdict replaces the pack's organization-blind rules on the same event
        assert not [item for item in found if item.rule_id in SUPERSEDED_RULE_IDS]
        assert found == sorted(found, key=lambda item: (item.event_time, item.event_id,
                                                         -["informational", "low", "medium", "high",
                                                           "critical"].index(item.severity), item.rule_id))


def test_severities_by_verdict() -> None:
    assert {rule_id: rule.severity for rule_id, rule in EXPOSURE_RULES.items()} == {
        PUBLIC: "critical", OUTSIDE: "high", OTHER_ACCOUNT: "medium", INSIDE: "low"}
    for rule in EXPOSURE_RULES.values():
        assert rule.description and rule.falsepositives and rule.next_step and rule.attack_ids


def test_outside_accounts_are_named_by_the_verdict_and_in_the_request_parameters(organization: RuleSet) -> None:
    record = s3_policy({"AWS": [f"arn:aws:iam::{STRANGER}:root", SIBLING]})
    verdict = assess(record, ORGANIZATION)
    assert verdict is not None and verdict.outside_accounts == (STRANGER,)
    (finding,) = [f for f in organization.evaluate_records([record]) if f.rule_id in EXPOSURE_RULES]
    assert STRANGER in json.dumps(finding.request_parameters)


def test_a_failed_share_is_one_step_lower(organization: RuleSet) -> None:
    record = db_snapshot(valuesToAdd=["all"])
    record["errorCode"] = "AccessDenied"
    found, _ = findings(organization, record)
    (finding,) = [f for f in found if f.rule_id == PUBLIC]
    assert (finding.rule_severity, finding.severity, finding.outcome) == ("critical", "high", "failed: AccessDenied")


def test_rule_metadata_and_switching_exposure_off(organization: RuleSet) -> None:
    assert organization.rule(OUTSIDE) is EXPOSURE_RULES[OUTSIDE]
    record = s3_policy({"AWS": STRANGER})
    off = load_rules(disabled=[OUTSIDE])
    assert not [f for f in off.with_organization(ORGANIZATION).evaluate_records([record])
                if f.rule_id in EXPOSURE_RULES]
    assert not [f for f in load_rules(exposure=False).evaluate_records([record]) if f.rule_id in EXPOSURE_RULES]
    known = load_rules(organization_accounts=ORGANIZATION)
    assert [f.rule_id for f in known.evaluate_records([record]) if f.rule_id in EXPOSURE_RULES] == [OUTSIDE]
