"""The Sigma features the evaluator supports, one behaviour per test.

Every verdict is checked twice, on the nested record (evaluate_records) and on the Parquet-shaped row
(evaluate_table), because the two paths must never disagree.
"""

from __future__ import annotations

import json
import re
import textwrap
import uuid
from typing import Any

import pyarrow as pa
import pytest

from elevation.audit import RuleSet, load_rules_from_yaml
from elevation.audit.rules import searchable
from elevation.cloudtrail.schema import EVENT_SCHEMA, record_to_row


def rules(detection: str, level: str = "high", extra: str = "") -> RuleSet:
    text = textwrap.dedent(
        """\
        title: test rule
        id: {id}
        status: test
        logsource:
            product: aws
            service: cloudtrail
        detection:
        {detection}
        level: {level}
        {extra}
        """
    ).format(
        id=uuid.uuid4(),
        detection=textwrap.indent(textwrap.dedent(detection), "    "),
        level=level,
        extra=extra,
    )
    loaded = load_rules_from_yaml(text)
    assert not loaded.unsupported, loaded.unsupported
    assert len(loaded.rules) == 1
    return loaded


def event(**fields: Any) -> dict[str, Any]:
    record = {
        "eventID": str(uuid.uuid4()),
        "eventTime": "2026-01-02T03:04:05Z",
        "eventSource": "ec2.amazonaws.com",
        "eventName": "DescribeInstances",
        "awsRegion": "eu-west-1",
        "recipientAccountId": "111122223333",
        "userIdentity": {
            "type": "AssumedRole",
            "arn": "arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_Admin_1/alice",
        },
    }
    record.update(fields)
    return record


def matches(ruleset: RuleSet, record: dict[str, Any]) -> bool:
    """The verdict of both evaluation paths, which must agree."""
    by_record = len(ruleset.evaluate_records([record])) == 1
    table = pa.Table.from_pylist([record_to_row(record, "session-1")], schema=EVENT_SCHEMA)
    by_table = len(ruleset.evaluate_table(table)) == 1
    assert by_record == by_table, f"records say {by_record}, table says {by_table} for {record}"
    return by_record


def test_plain_values_match_case_insensitively_and_exactly() -> None:
    ruleset = rules("selection:\n    eventName: StopLogging\ncondition: selection")
    assert matches(ruleset, event(eventName="StopLogging"))
    assert matches(ruleset, event(eventName="stoplogging"))
    assert not matches(ruleset, event(eventName="StopLoggingNow"))


def test_cased_modifier_makes_the_comparison_case_sensitive() -> None:
    ruleset = rules("selection:\n    userAgent|cased: TruffleHog\ncondition: selection")
    assert matches(ruleset, event(userAgent="TruffleHog"))
    assert not matches(ruleset, event(userAgent="trufflehog"))


def test_a_list_of_values_is_or_and_a_map_is_and() -> None:
    ruleset = rules(
        """\
        selection:
            eventSource: cloudtrail.amazonaws.com
            eventName:
                - StopLogging
                - DeleteTrail
        condition: selection
        """
    )
    assert matches(ruleset, event(eventSource="cloudtrail.amazonaws.com", eventName="DeleteTrail"))
    assert not matches(ruleset, event(eventSource="ec2.amazonaws.com", eventName="DeleteTrail"))
    assert not matches(ruleset, event(eventSource="cloudtrail.amazonaws.com", eventName="CreateTrail"))


def test_a_list_of_maps_is_or() -> None:
    ruleset = rules(
        """\
        selection:
            - eventName: StopLogging
            - userIdentity.type: Root
        condition: selection
        """
    )
    assert matches(ruleset, event(eventName="StopLogging"))
    assert matches(ruleset, event(userIdentity={"type": "Root"}))
    assert not matches(ruleset, event())


@pytest.mark.parametrize(
    ("modifier", "value", "good", "bad"),
    [
        ("contains", "Browser", "S3 Browser 9.1", "aws-cli/2.0"),
        ("startswith", "aws-cli/", "aws-cli/2.15 Python/3.11", "Boto3 aws-cli/"),
        ("endswith", "exe/x86_64", "aws-cli/2.15 exe/x86_64", "exe/x86_64 aws-cli"),
    ],
)
def test_string_modifiers(modifier: str, value: str, good: str, bad: str) -> None:
    ruleset = rules(f"selection:\n    userAgent|{modifier}: '{value}'\ncondition: selection")
    assert matches(ruleset, event(userAgent=good))
    assert not matches(ruleset, event(userAgent=bad))


def test_all_modifier_requires_every_value() -> None:
    ruleset = rules(
        "selection:\n    userAgent|contains|all:\n        - S3\n        - Browser\ncondition: selection"
    )
    assert matches(ruleset, event(userAgent="S3 Browser"))
    assert not matches(ruleset, event(userAgent="S3 client"))


def test_wildcards_star_and_question_mark_and_escapes() -> None:
    ruleset = rules("selection:\n    eventName: 'Put*Polic?'\ncondition: selection")
    assert matches(ruleset, event(eventName="PutBucketPolicy"))
    assert matches(ruleset, event(eventName="PutRolePolicy"))
    assert not matches(ruleset, event(eventName="PutRolePolicies"))
    literal = rules("selection:\n    requestParameters.name: 'a\\*b'\ncondition: selection")
    assert matches(literal, event(requestParameters={"name": "a*b"}))
    assert not matches(literal, event(requestParameters={"name": "axxb"}))


def test_regular_expressions_search_and_honour_the_i_flag() -> None:
    ruleset = rules("selection:\n    userIdentity.arn|re: ':assumed-role/aws:.+'\ncondition: selection")
    assert matches(ruleset, event(userIdentity={"arn": "arn:aws:sts::1:assumed-role/aws:ec2-instance/i-1"}))
    assert not matches(
        ruleset, event(userIdentity={"arn": "arn:aws:sts::1:assumed-role/AWS:ec2-instance/i-1"})
    )
    ignoring_case = rules(
        "selection:\n    userIdentity.arn|re|i: ':assumed-role/aws:.+'\ncondition: selection"
    )
    assert matches(ignoring_case, event(userIdentity={"arn": "arn:aws:sts::1:assumed-role/AWS:ec2/i-1"}))


def test_regular_expressions_reach_into_nested_documents_and_json_strings() -> None:
    ruleset = rules(
        "selection:\n    requestParameters.policy|re: '\"Principal\"\\s*:\\s*\"\\*\"'\ncondition: selection"
    )
    public = {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject"}]}
    private = {"Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::1:root"}}]}
    assert matches(ruleset, event(requestParameters={"policy": public}))
    assert matches(ruleset, event(requestParameters={"policy": json.dumps(public)}))  # a policy sent as text
    assert not matches(ruleset, event(requestParameters={"policy": private}))
    assert not matches(ruleset, event(requestParameters={"policy": "Principal"}))
    assert not matches(ruleset, event(requestParameters={"other": public}))


def test_numbers_json_writes_differently_from_python_are_still_found() -> None:
    """A test sees Infinity and NaN as Python writes them ("inf", "nan"); the stored JSON text says Infinity/NaN."""
    for detection in (
        "selection:\n    requestParameters.limit|re: 'inf'\ncondition: selection",
        "selection:\n    requestParameters.limit|contains|cased: 'nan'\ncondition: selection",
    ):
        ruleset = rules(detection)
        value = json.loads('{"limit": Infinity}' if "inf" in detection else '{"limit": NaN}')
        assert matches(ruleset, event(requestParameters=value)), detection


@pytest.mark.parametrize(
    "pattern",
    [".+:assumed-role/aws:.+", ".*admin", ".+", ".*", ".+x|^y", ".+?z", ".*+q", ".{2}ab", "a.+", r"\.+b"],
)
def test_a_leading_dot_star_is_dropped_only_where_search_finds_the_same_texts(pattern: str) -> None:
    texts = ["", "x", "ab", "zab", "\nx", "y", "yx", "q", "admin", "\nadmin", "..b", "a\nb", "z",
             "arn:aws:sts::1:assumed-role/aws:ec2/i-1", ":assumed-role/aws:ec2", "arn:aws:sts::1:assumed-role/aws:"]
    for flags in (0, re.DOTALL, re.IGNORECASE):
        rewritten = searchable(pattern, flags)
        for text in texts:
            expected = re.search(pattern, text, flags) is not None
            assert (re.search(rewritten, text, flags) is not None) == expected, (pattern, rewritten, text, flags)
    assert searchable(".+:assumed-role/aws:.+") == ".:assumed-role/aws:.+"
    assert searchable(".*admin") == "admin"
    assert searchable(".+?z") == ".+?z"  # lazy: left as written


def test_cidr_modifier_for_ipv4_and_ipv6() -> None:
    ruleset = rules(
        "selection:\n    sourceIPAddress|cidr:\n        - 10.0.0.0/8\n        - 2001:db8::/32\ncondition: selection"
    )
    assert matches(ruleset, event(sourceIPAddress="10.20.30.40"))
    assert matches(ruleset, event(sourceIPAddress="2001:db8::1"))
    assert not matches(ruleset, event(sourceIPAddress="192.0.2.1"))
    assert not matches(ruleset, event(sourceIPAddress="AWS Internal"))


def test_exists_modifier() -> None:
    present = rules("selection:\n    requestParameters.layers|exists: true\ncondition: selection")
    absent = rules("selection:\n    requestParameters.layers|exists: false\ncondition: selection")
    with_layers = event(requestParameters={"layers": ["arn:aws:lambda:eu-west-1:1:layer:x:1"]})
    without = event(requestParameters={"functionName": "f"})
    assert matches(present, with_layers) and not matches(present, without)
    assert matches(absent, without) and not matches(absent, with_layers)


def test_null_matches_an_absent_or_null_field() -> None:
    ruleset = rules("selection:\n    eventName: DeleteBucket\n    errorCode: null\ncondition: selection")
    assert matches(ruleset, event(eventName="DeleteBucket"))
    assert matches(ruleset, event(eventName="DeleteBucket", errorCode=None))
    assert not matches(ruleset, event(eventName="DeleteBucket", errorCode="AccessDenied"))


def test_keywords_search_every_value_of_the_event() -> None:
    ruleset = rules("keywords:\n    - 'stratus-red-team'\ncondition: keywords")
    assert matches(ruleset, event(requestParameters={"bucketName": "my-Stratus-Red-Team-bucket"}))
    assert matches(ruleset, event(userAgent="stratus-red-team_1234"))
    assert not matches(ruleset, event(requestParameters={"bucketName": "logs"}))


def test_conditions_and_or_not_with_parentheses() -> None:
    ruleset = rules(
        """\
        selection:
            eventName: ListBuckets
        filter_role:
            userIdentity.type: AssumedRole
        filter_service:
            sourceIPAddress: AWS Internal
        condition: selection and not (filter_role or filter_service)
        """
    )
    assert matches(ruleset, event(eventName="ListBuckets", userIdentity={"type": "IAMUser"}))
    assert not matches(ruleset, event(eventName="ListBuckets"))  # an assumed role
    assert not matches(
        ruleset,
        event(eventName="ListBuckets", userIdentity={"type": "IAMUser"}, sourceIPAddress="AWS Internal"),
    )


def test_one_of_and_all_of_selectors() -> None:
    detection = """\
        selection_stop:
            eventName: StopLogging
        selection_delete:
            eventName: DeleteTrail
        source:
            eventSource: cloudtrail.amazonaws.com
        condition: {condition}
        """
    one_of = rules(detection.format(condition="1 of selection_* and source"))
    assert matches(one_of, event(eventSource="cloudtrail.amazonaws.com", eventName="DeleteTrail"))
    assert not matches(one_of, event(eventSource="cloudtrail.amazonaws.com", eventName="CreateTrail"))
    all_of = rules(
        """\
        selection_name:
            eventName: StopLogging
        selection_source:
            eventSource: cloudtrail.amazonaws.com
        condition: all of them
        """
    )
    assert matches(all_of, event(eventSource="cloudtrail.amazonaws.com", eventName="StopLogging"))
    assert not matches(all_of, event(eventSource="ec2.amazonaws.com", eventName="StopLogging"))


def test_lists_in_the_record_are_traversed() -> None:
    ruleset = rules(
        "selection:\n    requestParameters.ipPermissions.items.ipRanges.items.cidrIp: 0.0.0.0/0\ncondition: selection"
    )
    opened = {
        "ipPermissions": {
            "items": [
                {"ipRanges": {"items": [{"cidrIp": "10.0.0.0/8"}]}},
                {"ipRanges": {"items": [{"cidrIp": "10.1.0.0/16"}, {"cidrIp": "0.0.0.0/0"}]}},
            ]
        }
    }
    assert matches(ruleset, event(eventName="AuthorizeSecurityGroupIngress", requestParameters=opened))
    closed = {"ipPermissions": {"items": [{"ipRanges": {"items": [{"cidrIp": "10.0.0.0/8"}]}}]}}
    assert not matches(ruleset, event(eventName="AuthorizeSecurityGroupIngress", requestParameters=closed))


def test_an_object_is_matched_as_its_json_text() -> None:
    ruleset = rules(
        "selection:\n    eventName: PutBucketVersioning\n    requestParameters|contains: Suspended\ncondition: selection"
    )
    suspended = {"bucketName": "b", "VersioningConfiguration": {"Status": "Suspended"}}
    enabled = {"bucketName": "b", "VersioningConfiguration": {"Status": "Enabled"}}
    assert matches(ruleset, event(eventName="PutBucketVersioning", requestParameters=suspended))
    assert not matches(ruleset, event(eventName="PutBucketVersioning", requestParameters=enabled))


def test_booleans_and_numbers_match_json_values_and_their_text() -> None:
    decrypted = rules("selection:\n    requestParameters.withDecryption: true\ncondition: selection")
    assert matches(decrypted, event(requestParameters={"withDecryption": True}))
    assert matches(decrypted, event(requestParameters={"withDecryption": "true"}))
    assert not matches(decrypted, event(requestParameters={"withDecryption": False}))
    port = rules("selection:\n    requestParameters.fromPort: 22\ncondition: selection")
    assert matches(port, event(requestParameters={"fromPort": 22}))
    assert matches(port, event(requestParameters={"fromPort": "22"}))
    assert not matches(port, event(requestParameters={"fromPort": 2222}))
    above = rules("selection:\n    requestParameters.count|gt: 10\ncondition: selection")
    assert matches(above, event(requestParameters={"count": 11}))
    assert not matches(above, event(requestParameters={"count": 10}))


def test_fieldref_compares_two_fields() -> None:
    ruleset = rules(
        """\
        selection:
            eventName: UpdateLoginProfile
        filter_self:
            userIdentity.userName|fieldref: requestParameters.userName
        condition: selection and not filter_self
        """
    )
    someone_else = event(
        eventName="UpdateLoginProfile",
        userIdentity={"userName": "alice"},
        requestParameters={"userName": "bob"},
    )
    themselves = event(
        eventName="UpdateLoginProfile",
        userIdentity={"userName": "alice"},
        requestParameters={"userName": "Alice"},
    )
    assert matches(ruleset, someone_else)
    assert not matches(ruleset, themselves)


@pytest.mark.parametrize(
    ("rule_value", "logged"),
    [
        ("UpdateFunctionCode", "UpdateFunctionCode20150331v2"),
        ("UpdateFunctionCode20150331v2", "UpdateFunctionCode20150331v2"),
        ("UpdateFunctionCode20150331v2", "UpdateFunctionCode20150331"),
        ("UpdateFunctionCode*", "UpdateFunctionCode20150331v2"),
        ("AddPermission", "AddPermission20150331v2"),
    ],
)
def test_lambda_event_names_match_with_and_without_api_version(rule_value: str, logged: str) -> None:
    ruleset = rules(
        f"selection:\n    eventSource: lambda.amazonaws.com\n    eventName: {rule_value}\ncondition: selection"
    )
    assert matches(ruleset, event(eventSource="lambda.amazonaws.com", eventName=logged))
    assert not matches(ruleset, event(eventSource="lambda.amazonaws.com", eventName="GetFunction20150331v2"))


@pytest.mark.parametrize("level", ["informational", "low", "medium", "high", "critical"])
def test_severity_comes_from_the_level(level: str) -> None:
    ruleset = rules("selection:\n    eventName: StopLogging\ncondition: selection", level=level)
    (finding,) = ruleset.evaluate_records([event(eventName="StopLogging")])
    assert finding.severity == level


def test_an_event_matching_two_rules_gives_two_findings() -> None:
    text = "\n---\n".join(
        textwrap.dedent(
            f"""\
            title: {title}
            id: {uuid.uuid4()}
            logsource: {{product: aws, service: cloudtrail}}
            detection:
                selection:
                    eventName: StopLogging
                condition: selection
            level: {level}
            """
        )
        for title, level in (("first", "medium"), ("second", "critical"))
    )
    ruleset = load_rules_from_yaml(text)
    record = event(eventName="StopLogging")
    findings = ruleset.evaluate_records([record])
    assert [finding.title for finding in findings] == ["second", "first"]  # worst first within an event
    assert {finding.event_id for finding in findings} == {record["eventID"]}
    table = pa.Table.from_pylist([record_to_row(record, "s")], schema=EVENT_SCHEMA)
    assert [finding.title for finding in ruleset.evaluate_table(table)] == ["second", "first"]


@pytest.mark.parametrize(
    ("detection", "reason"),
    [
        ("selection:\n    eventName: ListBuckets\ncondition: selection | count() > 5", "aggregation"),
        ("selection:\n    eventName: ListBuckets\ntimeframe: 5m\ncondition: selection", "timeframe"),
        ("selection:\n    eventName|base65: ListBuckets\ncondition: selection", "modifier"),
        ("selection:\n    eventName|expand: '%names%'\ncondition: selection", "placeholder"),
        (
            "selection:\n    eventName: ListBuckets\ncondition: selection and missing_selection",
            "missing_selection",
        ),
    ],
)
def test_unsupported_rules_are_listed_with_the_reason(detection: str, reason: str) -> None:
    text = textwrap.dedent(
        """\
        title: not for us
        logsource: {{product: aws, service: cloudtrail}}
        detection:
        {detection}
        """
    ).format(detection=textwrap.indent(detection, "    "))
    loaded = load_rules_from_yaml(text)
    assert loaded.rules == []
    (unsupported,) = loaded.unsupported
    assert unsupported.title == "not for us"
    assert reason in unsupported.reason


def test_correlation_rules_are_unsupported_and_other_log_sources_skipped() -> None:
    text = textwrap.dedent(
        """\
        title: windows rule
        logsource: {product: windows, category: process_creation}
        detection:
            selection:
                Image|endswith: '\\\\cmd.exe'
            condition: selection
        ---
        title: many denied calls
        correlation:
            type: event_count
            rules: [some_rule]
            group-by: [userIdentity.arn]
            timespan: 10m
            condition: {gte: 10}
        """
    )
    loaded = load_rules_from_yaml(text)
    assert loaded.rules == []
    assert [rule.title for rule in loaded.unsupported] == ["many denied calls"]
    assert "correlation" in loaded.unsupported[0].reason
    assert [rule.title for rule in loaded.skipped] == ["windows rule"]


def test_next_step_and_attack_ids_are_read_from_the_rule() -> None:
    ruleset = load_rules_from_yaml(
        textwrap.dedent(
            """\
            title: with metadata
            id: 2f7c1b8e-0000-4000-8000-000000000001
            logsource: {product: aws, service: cloudtrail}
            detection: {selection: {eventName: CreateUser}, condition: selection}
            tags: [attack.persistence, attack.t1136.003, attack.T1098, attack.g0016, attack.s0677]
            next_step: >
              Check who the new principal belongs to
              and whether the ticket mentions it
            level: medium
            """
        )
    )
    (rule,) = ruleset.rules
    assert rule.next_step == "Check who the new principal belongs to and whether the ticket mentions it"
    assert rule.attack_ids == ("T1136.003", "T1098")
    assert ruleset.rule(rule.rule_id) is rule and ruleset.rule("other") is None
    (bare,) = rules("selection: {eventName: CreateUser}\ncondition: selection").rules
    assert bare.next_step == "" and bare.attack_ids == ()
