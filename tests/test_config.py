"""The configuration file: validated at load; a broken file names the file, the field and the problem."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml

from elevation.config import ConfigError, load_config


def write(tmp_path, document) -> str:
    path = tmp_path / "elevation.yaml"
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document), encoding="utf-8")
    return str(path)


PERSON = {"login": "alice", "email": "alice@example.com", "identity_center_user": "alice"}


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("policy: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "the top level must be a mapping"),
        ({"policy": {"limits": {"max_duration": "forever"}}}, "policy.limits.max_duration"),
        ({"policy": {"forbidden_accounts": ["1234"]}}, "policy.forbidden_accounts.0: Value error, '1234' is not an AWS account id"),
        ({"policy": {"people": [PERSON], "approvers": [{"accounts": ["111122223333"], "approvers": ["zoe"]}]}},
         "approvers.0.approvers names ['zoe'], who are not listed under people"),
        ({"policy": {"standing_assignments": [{"permission_set": "ReadOnlyAccess", "account": "111122223333"}]}},
         "policy.standing_assignments.0: Value error, give exactly one of user or group"),
        ({"policy": {"eligibility": [{"name": "x", "principals": {}, "permission_sets": ["A"], "max_durtion": "1h"}]}},
         "policy.eligibility.0.max_durtion: Extra inputs are not permitted"),
        ({"polcy": {}}, "polcy: Extra inputs are not permitted"),
        ({"policy": {"people": [PERSON, {**PERSON, "login": "alice2"}]}}, "'alice@example.com' names two people"),
        ({"policy": {"grants": {"max_creations_in_flight": 50}}}, "policy.grants.max_creations_in_flight"),
    ],
    ids=["yaml", "top-level", "duration", "account", "unknown approver", "standing", "typo", "section", "dup", "limit"],
)
def test_a_broken_file_names_the_file_the_field_and_the_problem(tmp_path, document, expected):
    path = write(tmp_path, document)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert path in str(raised.value)
    assert expected in str(raised.value)


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load_config(tmp_path / "nope.yaml")


def test_the_management_account_can_never_be_requested_and_durations_read_as_people_write_them(tmp_path):
    config = load_config(write(tmp_path, {"policy": {
        "management_account_id": "123456789012",
        "forbidden_accounts": ["999999999999"],
        "limits": {"max_duration": "90m", "request_expiry": "PT2H"},
    }}))
    assert config.policy.never_requestable == {"123456789012", "999999999999"}
    assert config.policy.limits.max_duration == timedelta(minutes=90)
    assert config.policy.limits.request_expiry == timedelta(hours=2)
    assert config.connections.aws == "aws_default"


def test_the_example_configuration_in_the_repository_is_valid():
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "config" / "elevation.example.yaml"
    config = load_config(example)
    assert config.policy.people and config.policy.eligibility and config.policy.approvers
