"""The project's own Sigma rule pack (plugins/elevation/audit/rulepack), evaluated with the real engine.

Three checks:

1. Every rule of the pack has hand-written cases in ``rulepack_cases/<rule>.yml``: at least one CloudTrail record it
   must match and one it must not (typically the benign variant of the same call: a security group opened to
   10.0.0.0/8, a snapshot shared with nobody, a parameter read without decryption). Parametrized by rule file, so a
   rule without cases fails.
2. Stratus Red Team's detonation logs (``$ELEVATION_SHARED_DATA/cloudtrail/stratus-red-team/``): every technique
   file of the credential-access, defense-evasion, exfiltration, impact, persistence and privilege-escalation tactics
   gets at least one finding of level medium or higher.
3. Panther's labelled rule fixtures (``$ELEVATION_SHARED_DATA/cloudtrail/panther-rule-tests/``): of the records
   Panther expects one of its rules to fire on, at least 80% get a finding from the pack. The agreement and the misses
   are printed (run with ``-s``) and shown in the terminal summary of every run.

The shared data is read in place (``ELEVATION_SHARED_DATA``, by default ``../shared/data`` next to the repository); it
is never copied into it. Without it, 2 and 3 are skipped (under CI: failed), 1 runs everywhere.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import SHARED_DATA, shared_data
from elevation.audit import Finding, RuleSet, load_rules, load_rules_from_yaml
from elevation.audit.engine import pack_folder
from elevation.audit.rules import SEVERITY_RANK, effective_severity

REPO = Path(__file__).resolve().parents[2]
PACK_DIR = REPO / "plugins" / "elevation" / "audit" / "rulepack"
CASES_DIR = Path(__file__).resolve().parent / "rulepack_cases"
STRATUS_DIR = SHARED_DATA / "cloudtrail" / "stratus-red-team"
PANTHER_DIR = SHARED_DATA / "cloudtrail" / "panther-rule-tests"

RULE_FILES = sorted(PACK_DIR.glob("*.yml"))
STRATUS_TACTICS = (
    "aws.credential-access",
    "aws.defense-evasion",
    "aws.exfiltration",
    "aws.impact",
    "aws.persistence",
    "aws.privilege-escalation",
)
STRATUS_FILES = sorted(
    path for path in STRATUS_DIR.glob("aws.*.json") if path.name.startswith(STRATUS_TACTICS)
)
PANTHER_FILES = sorted(PANTHER_DIR.glob("*.json"))
PANTHER_MIN_AGREEMENT = 0.80

LEVELS = ("informational", "low", "medium", "high", "critical")
CASE_NAMESPACE = uuid.UUID("0c8b8f7e-3b59-4a7c-9d8e-5a1f0e2d4c6b")

# The envelope of a call made from an IAM Identity Center session (assumed role AWSReservedSSO_<set>_<hash>, the
# user's name as role session name). Cases give eventSource, eventName, requestParameters and whatever else differs;
# top-level keys of a case replace the envelope's (a case's userIdentity replaces the whole identity).
BASE_EVENT: dict[str, Any] = {
    "eventVersion": "1.10",
    "userIdentity": {
        "type": "AssumedRole",
        "principalId": "AROA4EXAMPLESSOUSER01:alice@example.com",
        "arn": "arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_AdministratorAccess_5f1c8e2a9b3d4e6f/alice@example.com",
        "accountId": "111122223333",
        "accessKeyId": "ASIA4EXAMPLESESSION01",
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": "AROA4EXAMPLESSOUSER01",
                "arn": "arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/eu-west-1/"
                "AWSReservedSSO_AdministratorAccess_5f1c8e2a9b3d4e6f",
                "accountId": "111122223333",
                "userName": "AWSReservedSSO_AdministratorAccess_5f1c8e2a9b3d4e6f",
            },
            "attributes": {"creationDate": "2026-11-27T08:58:12Z", "mfaAuthenticated": "false"},
        },
    },
    "eventTime": "2026-11-27T09:14:03Z",
    "awsRegion": "eu-west-1",
    "sourceIPAddress": "203.0.113.24",
    "userAgent": "aws-cli/2.22.4 md/awscrt#0.23.0 ua/2.0 os/linux#6.8.0-49-generic md/arch#x86_64 lang/python#3.12.6 "
    "md/pyimpl#CPython cfg/retry-mode#standard md/installer#exe md/distrib#ubuntu.24 md/prompt#off",
    "requestParameters": None,
    "responseElements": None,
    "requestID": "5d2c7f0e-9a41-4b7e-8c3d-1f0e2a9b8c7d",
    "eventID": "",
    "readOnly": False,
    "eventType": "AwsApiCall",
    "managementEvent": True,
    "recipientAccountId": "111122223333",
    "eventCategory": "Management",
    "tlsDetails": {
        "tlsVersion": "TLSv1.3",
        "cipherSuite": "TLS_AES_128_GCM_SHA256",
        "clientProvidedHostHeader": "example.eu-west-1.amazonaws.com",
    },
}


def make_event(rule: str, case_name: str, fields: dict[str, Any]) -> dict[str, Any]:
    """A full CloudTrail record: the session envelope with the case's fields on top and a stable eventID."""
    event = copy.deepcopy(BASE_EVENT)
    event.update(copy.deepcopy(fields))
    event["eventID"] = str(uuid.uuid5(CASE_NAMESPACE, f"{rule}/{case_name}"))
    return event


def records_of(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return data["Records"] if isinstance(data, dict) else data


# ------------------------------------------------------------------------------------------------------------------
# Reporting: coverage lines go to stdout (visible with -s) and to the terminal summary of every run.

_REPORT_PLUGIN = "elevation-rulepack-coverage"


class _CoverageReport:
    def __init__(self) -> None:
        self.sections: dict[str, list[str]] = {}

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.sections:
            return
        terminalreporter.section("rule pack coverage")
        for key in sorted(self.sections):
            for line in self.sections[key]:
                terminalreporter.write_line(line)


def report(config: pytest.Config, key: str, lines: list[str]) -> None:
    plugin = config.pluginmanager.get_plugin(_REPORT_PLUGIN)
    if plugin is None:
        plugin = _CoverageReport()
        config.pluginmanager.register(plugin, _REPORT_PLUGIN)
    plugin.sections[key] = lines
    print("\n" + "\n".join(lines))


# ------------------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def pack() -> RuleSet:
    return load_rules()


@pytest.fixture(scope="module")
def stratus_dir() -> Path:
    return shared_data("cloudtrail/stratus-red-team")


@pytest.fixture(scope="module")
def panther_dir() -> Path:
    return shared_data("cloudtrail/panther-rule-tests")


@pytest.fixture(scope="module")
def stratus_findings(pack: RuleSet, stratus_dir: Path) -> dict[str, list[Finding]]:
    return {path.name: pack.evaluate_records(records_of(path)) for path in STRATUS_FILES}


def _best(findings: list[Finding]) -> int:
    return max((SEVERITY_RANK[finding.severity] for finding in findings), default=-1)


# ------------------------------------------------------------------------------------------------------------------
# The pack as a whole


def test_pack_is_large_and_loads_completely(pack: RuleSet) -> None:
    assert len(RULE_FILES) >= 60, "the pack should cover the categories of the issue with 60+ rules"
    assert {Path(path).name for path in (rule.path for rule in pack.rules)} == {
        path.name for path in RULE_FILES
    }
    assert Path(pack_folder()).resolve() == PACK_DIR.resolve()
    assert pack.unsupported == [], [(item.path, item.reason) for item in pack.unsupported]
    assert pack.skipped == [], [(item.path, item.reason) for item in pack.skipped]
    ids = [rule.rule_id for rule in pack.rules]
    assert len(ids) == len(set(ids)), "rule ids must be unique"


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda path: path.stem)
def test_rule_metadata(rule_file: Path) -> None:
    """One rule per file, with what a security team needs to read, triage and cite it."""
    documents = list(yaml.safe_load_all(rule_file.read_text(encoding="utf-8")))
    assert len(documents) == 1, "one rule per file"
    rule = documents[0]
    assert re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)+", rule_file.stem), "file names are lower_snake_case"
    assert uuid.UUID(str(rule["id"])).version in (4, 5)
    assert rule["author"] == "elevation"
    assert rule["logsource"] == {"product": "aws", "service": "cloudtrail"}
    assert rule["level"] in LEVELS
    assert rule["title"] and len(rule["title"]) <= 90
    assert len(rule["description"].split()) >= 12, "explain why the call matters"
    assert rule["falsepositives"], "say when it fires on legitimate work"
    tags = rule["tags"]
    assert all(tag.startswith("attack.") for tag in tags)
    assert any(re.fullmatch(r"attack\.t\d{4}(\.\d{3})?", tag) for tag in tags), (
        "at least one ATT&CK technique"
    )
    assert "condition" in rule["detection"]
    assert isinstance(rule.get("next_step"), str) and rule["next_step"].strip(), "say what to check next"
    assert "\n" not in rule["next_step"].strip() and len(rule["next_step"]) <= 160, "next_step is one short line"
    text = rule_file.read_text(encoding="utf-8")
    if "lambda.amazonaws.com" in text:
        # Lambda logs API versions in event names (UpdateFunctionCode20150331v2): the pack lists bare names and
        # also matches the suffixed forms with startswith, so it works on engines that do not normalise names.
        assert "eventName|startswith" in text


def test_every_pack_rule_has_report_card_metadata(pack: RuleSet) -> None:
    """What a report card shows, as the compiled rules carry it (and RuleSet.rule finds it by id)."""
    for rule in pack.rules:
        assert rule.description, rule.path
        assert rule.attack_ids and all(re.fullmatch(r"T\d{4}(\.\d{3})?", item) for item in rule.attack_ids), rule.path
        assert rule.falsepositives, rule.path
        assert rule.next_step and "\n" not in rule.next_step, rule.path
        assert pack.rule(rule.rule_id) is rule
    assert pack.rule("no-such-rule") is None


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda path: path.stem)
def test_rule_cases(rule_file: Path) -> None:
    """Each rule on its own matches its matching cases, with its level as severity, and none of the others."""
    case_file = CASES_DIR / f"{rule_file.stem}.yml"
    assert case_file.is_file(), f"no cases for {rule_file.name}: write {case_file.relative_to(REPO)}"
    cases = yaml.safe_load(case_file.read_text(encoding="utf-8"))
    assert cases["rule"] == rule_file.stem
    assert cases.get("match"), "at least one event the rule must match"
    assert cases.get("no_match"), "at least one event the rule must not match"

    ruleset = load_rules_from_yaml(rule_file.read_text(encoding="utf-8"))
    assert len(ruleset.rules) == 1 and not ruleset.unsupported
    rule = ruleset.rules[0]
    level = yaml.safe_load(rule_file.read_text(encoding="utf-8"))["level"]

    missed = []
    for case in cases["match"]:
        findings = ruleset.evaluate_records([make_event(rule_file.stem, case["name"], case["event"])])
        if [finding.rule_id for finding in findings] != [rule.rule_id]:
            missed.append(case["name"])
            continue
        # The rule's level is the finding's rule_severity; a failed call (errorCode) is one step lower.
        assert findings[0].rule_severity == level
        assert findings[0].severity == effective_severity(level, case["event"].get("errorCode"))
        assert findings[0].title == rule.title
    wrongly = [
        case["name"]
        for case in cases["no_match"]
        if ruleset.evaluate_records([make_event(rule_file.stem, case["name"], case["event"])])
    ]
    assert not missed, f"{rule_file.stem} did not match: {missed}"
    assert not wrongly, f"{rule_file.stem} matched benign events: {wrongly}"


def test_cases_have_no_orphans() -> None:
    """A case file whose rule was renamed or removed would otherwise never run."""
    rules = {path.stem for path in RULE_FILES}
    orphans = sorted(path.name for path in CASES_DIR.glob("*.yml") if path.stem not in rules)
    assert not orphans, f"case files without a rule: {orphans}"


# ------------------------------------------------------------------------------------------------------------------
# Stratus Red Team detonations


def test_shared_data_is_present(stratus_dir: Path, panther_dir: Path) -> None:
    assert STRATUS_FILES, f"no Stratus Red Team technique files under {STRATUS_DIR}"
    assert PANTHER_FILES, f"no Panther fixtures under {PANTHER_DIR}"


# Without the shared data, one placeholder case, skipped by `stratus_findings` with the reason (not pytest's "empty
# parameter set", which would not name the path or fail under CI).
@pytest.mark.parametrize(
    "technique", STRATUS_FILES or [STRATUS_DIR / "no-technique-files"], ids=lambda path: path.stem
)
def test_stratus_technique_gets_medium_or_higher(
    technique: Path, stratus_findings: dict[str, list[Finding]]
) -> None:
    findings = stratus_findings[technique.name]
    found = sorted({(finding.severity, finding.title) for finding in findings})
    assert _best(findings) >= SEVERITY_RANK["medium"], f"{technique.name}: only {found or 'no findings'}"


def test_stratus_coverage_summary(
    stratus_findings: dict[str, list[Finding]], request: pytest.FixtureRequest
) -> None:
    covered = [
        name for name, findings in stratus_findings.items() if _best(findings) >= SEVERITY_RANK["medium"]
    ]
    lines = [
        f"Stratus Red Team: {len(covered)} of {len(stratus_findings)} technique files in scope get a finding of "
        "medium or higher"
    ]
    for name, findings in sorted(stratus_findings.items()):
        worst = max(findings, key=lambda finding: SEVERITY_RANK[finding.severity], default=None)
        shown = f"{worst.severity}: {worst.title}" if worst else "NO FINDING"
        lines.append(f"  {'ok  ' if name in covered else 'MISS'} {name} -> {shown}")
    report(request.config, "1-stratus", lines)
    assert len(covered) == len(stratus_findings)


# ------------------------------------------------------------------------------------------------------------------
# Panther's labelled fixtures


def test_panther_agreement(pack: RuleSet, panther_dir: Path, request: pytest.FixtureRequest) -> None:
    """Of the records Panther's rules fire on, the share that gets any finding from the pack."""
    expected = hits = flagged_negatives = negatives = 0
    misses: list[str] = []
    for path in PANTHER_FILES:
        data = json.loads(path.read_text(encoding="utf-8"))
        if "Labels" not in data:
            continue  # scenario files without labels
        for record, label in zip(data["Records"], data["Labels"], strict=True):
            findings = pack.evaluate_records([record])
            if label["expected_result"]:
                expected += 1
                if findings:
                    hits += 1
                else:
                    call = f"{record.get('eventSource')} {record.get('eventName')}"
                    misses.append(f"  miss {label['rule_id']}: {label['test_name']} ({call})")
            else:
                negatives += 1
                flagged_negatives += bool(findings)
    assert expected, "no labelled Panther records found"
    agreement = hits / expected
    lines = [
        f"Panther fixtures: {hits} of {expected} records Panther expects a rule to fire on get a finding "
        f"({agreement:.1%}; required {PANTHER_MIN_AGREEMENT:.0%})",
        f"  (of {negatives} records Panther expects no alert on, the pack flags {flagged_negatives}: mostly failed "
        "attempts, which the pack reports on purpose, and Panther rules that depend on allowlists or history)",
        *misses,
    ]
    report(request.config, "2-panther", lines)
    assert agreement >= PANTHER_MIN_AGREEMENT
