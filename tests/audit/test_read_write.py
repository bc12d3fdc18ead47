"""Read or write: CloudTrail's readOnly where it is present, the name only where it is absent."""

from __future__ import annotations

import pytest

from elevation.audit.classify import facts_from_record, is_read_only, read_only_from_name


@pytest.mark.parametrize(
    ("read_only", "name", "expected"),
    [
        (True, "PutBucketPolicy", True),  # readOnly wins over the name, both ways
        (False, "DescribeInstances", False),
        ("true", "CreateUser", True),  # some exports write booleans as text
        ("false", "GetSecretValue", False),
    ],
)
def test_read_only_field_decides_when_present(read_only: object, name: str, expected: bool) -> None:
    assert is_read_only(read_only, name) is expected


@pytest.mark.parametrize(
    "name",
    ["GetSecretValue", "DescribeInstances", "ListBuckets", "HeadObject", "LookupEvents", "BatchGetItem",
     "ListFunctions20150331", "Decrypt", "SearchResources", "Get"],
)  # fmt: skip
def test_names_that_read(name: str) -> None:
    assert is_read_only(None, name) is True


@pytest.mark.parametrize(
    "name",
    ["StopLogging", "DeleteTrail", "PutEventSelectors", "UpdateAssumeRolePolicy", "CreateLoginProfile",
     "ModifySnapshotAttribute", "UpdateFunctionCode20150331v2", "SendCommand", "GetSessionToken",
     "GetFederationToken", "Listen", "Getaway", "AssumeRole", "ConsoleLogin"],
)  # fmt: skip
def test_names_that_write(name: str) -> None:
    assert is_read_only(None, name) is False
    assert read_only_from_name(name) is False


def test_event_facts_use_the_field_then_the_name() -> None:
    with_field = facts_from_record(
        {"eventID": "1", "eventTime": "2024-01-01T00:00:00Z", "eventName": "ListUsers", "readOnly": False}
    )
    without = facts_from_record(
        {"eventID": "2", "eventTime": "2024-01-01T00:00:00Z", "eventName": "ListUsers"}
    )
    assert with_field.read_only is False
    assert without.read_only is True
