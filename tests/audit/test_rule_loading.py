"""Loading rule folders: the pack, SigmaHQ's AWS CloudTrail rules, and rules we cannot evaluate (listed, never fatal)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import shared_data
from elevation.audit import load_rules
from elevation.audit.engine import pack_folder


@pytest.fixture
def sigmahq_cloudtrail() -> Path:
    """SigmaHQ's AWS CloudTrail rules, from the shared copy."""
    return shared_data("sigma/rules/cloud/aws/cloudtrail")


@pytest.fixture
def sigmahq_unsupported() -> Path:
    """SigmaHQ's old CloudTrail rules with aggregations (count() by, timeframe), which the engine does not evaluate."""
    return shared_data("sigma/unsupported")


def test_all_57_sigmahq_cloudtrail_rules_load(sigmahq_cloudtrail: Path) -> None:
    loaded = load_rules([sigmahq_cloudtrail], include_pack=False)
    assert len(list(sigmahq_cloudtrail.glob("*.yml"))) == 57
    assert loaded.unsupported == []
    assert len(loaded.rules) == 57
    assert {rule.severity for rule in loaded.rules} == {"low", "medium", "high"}
    assert len({rule.rule_id for rule in loaded.rules}) == 57


def test_the_8_old_aggregation_rules_are_listed_with_a_reason(sigmahq_unsupported: Path) -> None:
    loaded = load_rules([sigmahq_unsupported], include_pack=False)
    assert loaded.rules == []
    assert len(loaded.unsupported) == 8
    for rule in loaded.unsupported:
        assert rule.title and Path(rule.path).is_file()
        assert "aggregation" in rule.reason or "timeframe" in rule.reason, rule


def test_pack_plus_external_folders_load_together(sigmahq_cloudtrail: Path, sigmahq_unsupported: Path) -> None:
    pack_only = load_rules()
    combined = load_rules([sigmahq_cloudtrail, sigmahq_unsupported])
    assert len(combined.rules) == len(pack_only.rules) + 57
    assert len(combined.unsupported) == len(pack_only.unsupported) + 8


def test_a_mixed_folder_never_stops_the_load(
    tmp_path: Path, sigmahq_cloudtrail: Path, sigmahq_unsupported: Path
) -> None:
    shutil.copy(sigmahq_cloudtrail / "aws_cloudtrail_disable_logging.yml", tmp_path / "good.yml")
    shutil.copy(sigmahq_unsupported / "cloud" / "aws_enum_listing.yml", tmp_path / "aggregation.yml")
    (tmp_path / "broken.yml").write_text("title: [unclosed\n")
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "windows.yaml").write_text(
        "title: cmd\nlogsource: {product: windows}\ndetection: {sel: {Image: x}, condition: sel}\n"
    )
    (tmp_path / "README.md").write_text("not a rule")
    loaded = load_rules([tmp_path], include_pack=False)
    assert [rule.title for rule in loaded.rules] == ["AWS CloudTrail Important Change"]
    reasons = {Path(rule.path).name: rule.reason for rule in loaded.unsupported}
    assert set(reasons) == {"aggregation.yml", "broken.yml"}
    assert "cannot parse" in reasons["broken.yml"]
    assert [rule.title for rule in loaded.skipped] == ["cmd"]


def test_the_same_rule_in_two_folders_is_loaded_once(tmp_path: Path, sigmahq_cloudtrail: Path) -> None:
    shutil.copy(sigmahq_cloudtrail / "aws_cloudtrail_disable_logging.yml", tmp_path / "copy.yml")
    loaded = load_rules([sigmahq_cloudtrail, tmp_path], include_pack=False)
    assert len(loaded.rules) == 57
    assert any("duplicate rule id" in rule.reason for rule in loaded.skipped)


def test_rules_can_be_disabled_by_id_or_title(sigmahq_cloudtrail: Path) -> None:
    loaded = load_rules([sigmahq_cloudtrail], include_pack=False, disabled=["AWS STS AssumeRole Misuse"])
    assert len(loaded.rules) == 56
    assert [rule.title for rule in loaded.skipped] == ["AWS STS AssumeRole Misuse"]


def test_a_missing_extra_folder_is_an_error_not_an_empty_rule_set(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="rule folder not found"):
        load_rules([tmp_path / "nope"], include_pack=False)


def test_the_pack_is_package_data() -> None:
    assert pack_folder().name == "rulepack"
    assert pack_folder().parent.name == "audit"
