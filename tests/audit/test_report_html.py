"""Session reports and the nightly index: contents, downloads, and escaping of hostile data in a real browser.

Everything in an event is written by whoever is being audited. The payloads below would set `window.__pwned` or the
page title if they ever ran; the browser tests load the rendered files in headless Chromium and check they did not,
that no element of the payload exists, that the payload shows as text, and they leave screenshots (laptop and phone
width) in the artifacts folder (ELEVATION_TEST_ARTIFACTS, default build/test-artifacts/audit).
"""

from __future__ import annotations

import csv
import html
import json
import os
import re
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from conftest import generated_records
from elevation.audit import Finding, load_rules
from elevation.audit.facts import DataProblem, SessionFacts, SessionNotes
from elevation.audit.report import (
    SHOWN_PER_RULE,
    DriftOverview,
    build_timeline,
    render_index,
    render_session_report,
    safe_name,
    session_summary,
    write_findings_jsonl,
)
from elevation.audit.suppressions import Suppression, split_suppressed
from elevation.devkit.trail_events import make_event, role_identity, sso_identity
from elevation.extract.manifest import missing_data_message
from elevation.resources import data_path

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("ELEVATION_TEST_ARTIFACTS", REPO / "build" / "test-artifacts" / "audit"))
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)

SCRIPT = "<script>window.__pwned=1;document.title='PWNED'</script>"
IMG = '"><img src=x onerror="document.title=\'PWNED\'">'
GRANTED = datetime(2024, 7, 31, 12, 0, tzinfo=UTC)


def hostile_records() -> list[dict[str, Any]]:
    """A session's generated calls (routine ones, a StopLogging, a security group opened to the world) with a
    hostile user agent, and a bucket policy whose bucket name is an HTML payload."""
    records = generated_records("StopLogging", "AuthorizeSecurityGroupIngress", account="143434273843")
    for record in records:
        record["userAgent"] = f"aws-cli/2.15 {SCRIPT}"
    last = max(record["eventTime"] for record in records)
    records.append(
        {
            "eventVersion": "1.09",
            "eventID": "bucket-policy-1",
            "eventTime": last,
            "eventSource": "s3.amazonaws.com",
            "eventName": "PutBucketPolicy",
            "awsRegion": "eu-west-1",
            "readOnly": False,
            "sourceIPAddress": "198.51.100.9",
            "userAgent": SCRIPT,
            "recipientAccountId": "143434273843",
            "requestParameters": {
                "bucketName": f"bucket{IMG}",
                "bucketPolicy": {
                    "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject"}]
                },
            },
        }
    )
    return records


def session(records: list[dict[str, Any]], provisional: bool = True) -> SessionFacts:
    last = max(datetime.fromisoformat(record["eventTime"].replace("Z", "+00:00")) for record in records)
    return SessionFacts(
        session_id="sess-0001",
        requester=f"mallory{IMG}@example.com",
        principal="mallory",
        account_id="143434273843",
        account_name=f"prod {SCRIPT}",
        permission_set="AdministratorAccess",
        approver="bob@example.com",
        justification=f"INC-42: restore logging {SCRIPT}",
        ticket=f"INC-42{IMG}",
        granted_at=min(datetime.fromisoformat(r["eventTime"].replace("Z", "+00:00")) for r in records)
        - timedelta(minutes=5),
        ended_at=last - timedelta(seconds=1),
        window_end=last + timedelta(hours=12),
        provisional=provisional,
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("reports")
    records = hostile_records()
    facts = session(records)
    rules = load_rules()
    findings = rules.evaluate_records(records, session_id=facts.session_id)
    report = render_session_report(facts, records, findings, out, base_url="")
    entry = session_summary(facts, records, findings, report.name)
    quiet = SessionFacts(
        session_id="sess-0002", requester="carol", account_id="143434273843", provisional=False
    )
    quiet_report = render_session_report(quiet, [], [], out)
    entries = [session_summary(quiet, [], [], quiet_report.name), entry]
    jsonl = write_findings_jsonl(findings, out, "2024-07-31")
    index = render_index(entries, out, "2024-07-31", findings_file=jsonl.name)
    return {
        "out": out,
        "report": report,
        "index": index,
        "findings": findings,
        "jsonl": jsonl,
        "records": records,
    }


def test_templates_are_found_in_the_source_tree() -> None:
    assert (data_path("templates") / "session_report.html.j2").is_file()
    assert (data_path("templates") / "index.html.j2").is_file()


def test_report_escapes_every_payload(rendered: dict[str, Any]) -> None:
    page = rendered["report"].read_text()
    assert "<script" not in page.lower()
    assert "<img" not in page.lower()
    assert 'onerror="document' not in page
    assert html.escape(SCRIPT, quote=True) in page or "&lt;script&gt;window.__pwned=1" in page
    assert "Content-Security-Policy" in page


def test_report_shows_the_session_and_its_findings(rendered: dict[str, Any]) -> None:
    page = html.unescape(rendered["report"].read_text())
    for text in (
        "sess-0001",
        "AdministratorAccess",
        "bob@example.com",
        "INC-42: restore logging",
        "Provisional",
    ):
        assert text in page
    assert "StopLogging" in page
    titles = {finding.title for finding in rendered["findings"]}
    assert titles and all(title in page for title in titles)
    assert '"name": "org-trail"' in page  # parameters pretty-printed (StopLogging's)
    assert "Write operations" in page
    assert "<svg" in rendered["report"].read_text()


def finding(number: int, rule: str, title: str, severity: str = "low") -> Finding:
    """A finding `number` seconds after the grant."""
    return Finding(
        f"e-{rule}-{number}", GRANTED + timedelta(seconds=number), "kms.amazonaws.com", "Decrypt", rule, title,
        severity, "sess-loud", "eu-west-1", "198.51.100.7", "aws-cli/2", {"keyId": f"k-{number}"}, None, "1",
    )


def test_a_rule_firing_thousands_of_times_is_counted_not_listed(tmp_path: Path) -> None:
    findings = [finding(number, "r-decrypt", "KMS Decrypt called directly") for number in range(3000)]
    findings.append(finding(3000, "r-other", "Another low finding"))
    report = render_session_report(SessionFacts(session_id="sess-loud"), [], findings, tmp_path)
    page = html.unescape(report.read_text())
    assert page.count('<article class="finding') == SHOWN_PER_RULE + 1
    assert "3001 findings" in page
    assert f"… and {3000 - SHOWN_PER_RULE} more “KMS Decrypt called directly” findings not shown here" in page
    assert "Another low finding" in page
    assert report.stat().st_size < 200_000


def test_the_timeline_marks_findings_once_per_moment_and_severity() -> None:
    facts = SessionFacts(session_id="t", granted_at=GRANTED, ended_at=GRANTED + timedelta(hours=2))
    findings = [finding(number, "r-decrypt", "KMS Decrypt called directly") for number in range(500)]
    findings.append(finding(3600, "r-trail", "CloudTrail logging stopped", "high"))
    timeline = build_timeline([], findings, facts)  # 72 buckets of 100 s over the two hours
    *lows, high = timeline.marks  # the worst is drawn last, on top
    assert len(lows) == 5  # 500 decrypts over the first 500 s: one mark per 100-second bucket, not 500
    assert sum(int(mark["title"].split()[0]) for mark in lows) == 500
    assert all(mark["severity"] == "low" and "low findings from" in mark["title"] for mark in lows)
    assert high["title"].startswith("high: CloudTrail logging stopped") and high["x"] > lows[-1]["x"]


def test_downloads_are_written_next_to_the_report_and_linked(rendered: dict[str, Any]) -> None:
    out: Path = rendered["out"]
    page = rendered["report"].read_text()
    assert 'href="sess-0001.events.csv"' in page and 'href="sess-0001.events.parquet"' in page
    table = pq.read_table(out / "sess-0001.events.parquet")
    assert table.num_rows == len(rendered["records"])
    with (out / "sess-0001.events.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(rendered["records"])


def test_csv_cells_that_would_run_as_formulas_are_defused(tmp_path: Path) -> None:
    record = {"eventID": "1", "eventTime": "2024-01-01T00:00:00Z", "eventName": "PutObject",
              "userAgent": "=HYPERLINK(\"http://evil\",\"x\")", "eventSource": "s3.amazonaws.com"}  # fmt: skip
    render_session_report(SessionFacts(session_id="csv"), [record], [], tmp_path)
    with (tmp_path / "csv.events.csv").open(newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["userAgent"].startswith("'=")
    assert pq.read_table(tmp_path / "csv.events.parquet").column("userAgent")[0].as_py().startswith("=")


def test_index_lists_worst_first_and_links_reports(rendered: dict[str, Any]) -> None:
    page = rendered["index"].read_text()
    assert page.index("sess-0001") < page.index("sess-0002")
    assert 'href="sess-0001.html"' in page
    assert "<script" not in page.lower() and "<img" not in page.lower()


def test_findings_file_is_one_json_object_per_finding(rendered: dict[str, Any]) -> None:
    lines = rendered["jsonl"].read_text().splitlines()
    assert len(lines) == len(rendered["findings"])
    first = json.loads(lines[0])
    assert {"eventID", "eventSource", "eventName", "rule_id", "title", "severity", "session_id"} <= set(first)


def test_session_ids_never_escape_the_output_folder() -> None:
    assert "/" not in safe_name("../../etc/passwd")
    assert safe_name("sess-1") == "sess-1"
    assert safe_name("a b") != safe_name("a_b")


# ---------------------------------------------------------------------------------------------------------------
# In a real browser


def chromium(*arguments: str, profile: Path) -> subprocess.CompletedProcess[str]:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (apt-get install -y chromium)")
        pytest.skip("chromium not installed: browser checks of the HTML escaping were NOT run")
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", *arguments,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=True)


def dump_dom(page: Path, profile: Path) -> str:
    return chromium("--virtual-time-budget=2000", "--dump-dom", page.as_uri(), profile=profile).stdout


@pytest.mark.browser
@pytest.mark.parametrize("page", ["report", "index"])
def test_payloads_do_not_run_in_a_browser(rendered: dict[str, Any], page: str, tmp_path: Path) -> None:
    dom = dump_dom(rendered[page], tmp_path / "profile")
    title = re.search(r"<title>(.*?)</title>", dom, re.S)
    assert title is not None, "the page did not render"
    assert "PWNED" not in title.group(1)
    assert ("sess-0001" in title.group(1)) if page == "report" else ("2024-07-31" in title.group(1))
    assert "<script" not in dom.lower()
    assert "<img" not in dom.lower()
    if page == "report":
        # The payload is there, as text: the DOM serialiser escapes text nodes.
        assert "&lt;script&gt;window.__pwned=1;document.title='PWNED'&lt;/script&gt;" in dom
        assert 'mallory"&gt;&lt;img src=x onerror="document.title=\'PWNED\'"&gt;@example.com' in dom
        assert 'bucket\\"&gt;&lt;img src=x onerror=' in dom  # inside the pretty-printed JSON: \" escapes


@pytest.mark.browser
def test_a_screenshot_of_the_report_is_produced(rendered: dict[str, Any], tmp_path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name, size in (("session_report_laptop.png", "1280,2400"), ("session_report_phone.png", "390,2400")):
        target = ARTIFACTS / name
        target.unlink(missing_ok=True)
        chromium(
            f"--window-size={size}",
            f"--screenshot={target}",
            rendered["report"].as_uri(),
            profile=tmp_path / name,
        )
        assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert target.stat().st_size > 10_000
    shutil.copy(rendered["report"], ARTIFACTS / "session_report.html")


# ---------------------------------------------------------------------------------------------------------------
# What a reviewer needs on the page: attempts, shared events, suppressions, data problems, the session's facts

ACCOUNT = "143434273843"
START = datetime(2024, 7, 31, 13, 0, tzinfo=UTC)


def review_records() -> list[dict[str, Any]]:
    """An Identity Center session: routine calls, one bucket deleted, six refused bucket deletions, one
    CreateAccessKey; then the new key and an assumed role used in this account and another."""
    identity = sso_identity(ACCOUNT, "AdministratorAccess", "alice@example.com")
    records = []

    def add(name: str, source: str, minute: float, *, event_id: str, who: dict[str, Any] = identity,
            account: str = ACCOUNT, **extra: Any) -> None:  # fmt: skip
        records.append(make_event(who, name, source, START + timedelta(minutes=minute), recipient_account=account,
                                  event_id=event_id, **extra))  # fmt: skip

    for index in range(5):
        add("ListBuckets", "s3.amazonaws.com", index, event_id=f"list-{index}")
    add("DeleteBucket", "s3.amazonaws.com", 6, event_id="delete-ok", request={"bucketName": "old-logs"})
    for index in range(6):
        add("DeleteBucket", "s3.amazonaws.com", 7 + index / 10, event_id=f"delete-denied-{index}",
            request={"bucketName": "media-archive"}, error_code="AccessDenied")  # fmt: skip
    add("CreateAccessKey", "iam.amazonaws.com", 10, event_id="new-key", request={"userName": "deploy-bot"},
        response={"accessKey": {"userName": "deploy-bot", "accessKeyId": "AKIAEXAMPLENEWKEY001", "status": "Active"}})  # fmt: skip
    add("AssumeRole", "sts.amazonaws.com", 11, event_id="assume",
        request={"roleArn": "arn:aws:iam::210987654321:role/Deployer", "roleSessionName": "hop"},
        response={"credentials": {"accessKeyId": "ASIAEXAMPLEHOP00001", "expiration": "x"},
                  "assumedRoleUser": {"arn": "arn:aws:sts::210987654321:assumed-role/Deployer/hop",
                                      "assumedRoleId": "AROAEXAMPLE:hop"}})  # fmt: skip
    add("AssumeRole", "sts.amazonaws.com", 11.5, event_id="assume-denied", error_code="AccessDenied",
        request={"roleArn": "arn:aws:iam::210987654321:role/Admin"}, response=None)  # fmt: skip
    key_user = {"type": "IAMUser", "arn": f"arn:aws:iam::{ACCOUNT}:user/deploy-bot", "accountId": ACCOUNT,
                "accessKeyId": "AKIAEXAMPLENEWKEY001", "userName": "deploy-bot"}  # fmt: skip
    for index in range(3):
        add("ListUsers", "iam.amazonaws.com", 12 + index, event_id=f"key-use-{index}", who=key_user)
    hop = role_identity("210987654321", "Deployer", "hop", "ASIAEXAMPLEHOP00001")
    add("PutBucketPolicy", "s3.amazonaws.com", 16, event_id="hop-write", who=hop, account="210987654321",
        request={"bucketName": "shared"})  # fmt: skip
    add("GetCallerIdentity", "sts.amazonaws.com", 17, event_id="hop-read", who=hop, account="210987654321")
    return records


def review_session(**changes: Any) -> SessionFacts:
    facts = SessionFacts(
        session_id="12", requester="alice@example.com", principal="user alice", account_id=ACCOUNT,
        account_name="prod", permission_set="AdministratorAccess", approver="bob@example.com",
        justification="INC-7: clean up old buckets", ticket="INC-7",
        requested_start=START - timedelta(minutes=10), requested_end=START + timedelta(hours=2),
        granted_at=START - timedelta(minutes=5), ended_at=START + timedelta(minutes=30),
        assignment_removed_at=START + timedelta(minutes=31), window_end=START + timedelta(hours=13),
    )  # fmt: skip
    return replace(facts, **changes)


@pytest.fixture(scope="module")
def pack() -> Any:
    return load_rules()


def review_report(tmp_path: Path, pack: Any, *, facts: SessionFacts | None = None, records: list | None = None,
                  notes: SessionNotes | None = None, **kwargs: Any) -> tuple[str, list[Finding]]:  # fmt: skip
    notes = notes or SessionNotes()
    facts = facts or review_session()
    records = review_records() if records is None else records
    findings = pack.evaluate_records(records, session_id=facts.session_id)
    rules = {finding.rule_id: pack.rule(finding.rule_id) for finding in findings}
    report = render_session_report(facts, records, findings, tmp_path, notes=notes, rules=rules, **kwargs)
    return html.unescape(report.read_text()), findings


def cards(page: str) -> list[str]:
    return re.findall(r'<article class="finding[^"]*">(.*?)</article>', page, re.S)


def test_failed_calls_are_one_attempt_card_rated_below_the_success(tmp_path: Path, pack: Any) -> None:
    page, findings = review_report(tmp_path, pack)
    deletes = [finding for finding in findings if finding.event_name == "DeleteBucket"]
    assert len(deletes) == 7 and {finding.rule_severity for finding in deletes} == {"high"}
    attempts = [card for card in cards(page) if "Attempted: Database, bucket" in card]
    assert len(attempts) == 1  # six refused calls: one card, not six
    (attempt,) = attempts
    assert "Attempted: Database, bucket or file system deleted — 6 calls failed: AccessDenied" in attempt
    assert "2024-07-31 13:07:00 UTC" in attempt and "2024-07-31 13:07:30 UTC" in attempt  # first and last
    assert "s3:DeleteBucket ×6" in attempt
    success = [card for card in cards(page) if "Attempted:" not in card and "delete-ok" in card]
    assert len(success) == 1
    # The success sits under "high", the attempt under "medium" (one step lower).
    findings_at = page.index("<h2>Findings")
    high_at = page.index('<h3><span class="sev high">high</span> 1 finding<', findings_at)
    medium_at = page.index('<h3><span class="sev medium">medium</span> ', findings_at)
    assert high_at < page.index("delete-ok") < medium_at < page.index("Attempted: Database")
    assert "Rated</dt><dd>medium" in attempt and "the rule says high" in attempt


def test_cards_say_what_the_rule_means_and_who_acted(tmp_path: Path, pack: Any) -> None:
    page, findings = review_report(tmp_path, pack)
    (card,) = [card for card in cards(page) if "IAM access key created" in card]
    rule = pack.rule(next(f.rule_id for f in findings if f.title == "IAM access key created"))
    assert " ".join(rule.description.split()) in " ".join(card.split())
    assert "T1098.001" in card and "Key rotation for a service user" in card
    assert rule.next_step in card
    assert f'class="muted rule-id">{rule.rule_id}<' in card
    assert f"arn:aws:sts::{ACCOUNT}:assumed-role/AWSReservedSSO_AdministratorAccess_" in card


def test_the_count_badges_count_every_finding_not_only_those_shown(tmp_path: Path) -> None:
    findings = [finding(number, "r-decrypt", "KMS Decrypt called directly") for number in range(SHOWN_PER_RULE + 15)]
    findings.append(finding(999, "r-trail", "CloudTrail logging stopped", "high"))
    page = render_session_report(SessionFacts(session_id="loud"), [], findings, tmp_path).read_text()
    assert page.count('<article class="finding') == SHOWN_PER_RULE + 1
    badges = dict(re.findall(r'<li class="badge-(\w+)"><b>(\d+)</b>', page))
    assert badges == {"low": str(SHOWN_PER_RULE + 15), "high": "1"}


def test_an_event_shared_with_another_session_is_marked_with_a_link(tmp_path: Path, pack: Any) -> None:
    notes = SessionNotes(shared_events={"delete-ok": ("15",), "list-0": ("15", "16")})
    page, _ = review_report(tmp_path, pack, notes=notes, base_url="https://audit.example/r/sessions")
    (card,) = [card for card in cards(page) if "delete-ok" in card]
    assert 'shared with <a href="https://audit.example/r/sessions/15.html">session 15</a>' in card
    writes = page[page.index("Write operations"):page.index("Downloads")]
    row = next(row for row in writes.split("<tr") if "13:06:00" in row)
    assert "shared with" in row and "session 15" in row
    assert "session 16" not in page  # list-0 is a read: not in the write list, and no finding is about it


def test_suppressed_findings_are_counted_and_listed(tmp_path: Path, pack: Any) -> None:
    facts = review_session()
    records = review_records()
    everything = pack.evaluate_records(records, session_id=facts.session_id)
    rule = Suppression(rule="IAM access key created", reason="deploy-bot key rotation (SEC-9)",
                       expires=date(2026, 12, 31))  # fmt: skip
    kept, suppressed = split_suppressed(everything, [rule], date(2026, 11, 29))
    assert len(suppressed) == 1
    rules = {finding.rule_id: pack.rule(finding.rule_id) for finding in everything}
    report = render_session_report(facts, records, kept, tmp_path, notes=SessionNotes(suppressed=tuple(suppressed)),
                                   rules=rules)  # fmt: skip
    page = html.unescape(report.read_text())
    assert '<li class="badge-suppressed"><b>1</b>suppressed</li>' in page
    listing = page[page.index("Suppressed findings (1)"):]
    assert "IAM access key created" in listing and "deploy-bot key rotation (SEC-9)" in listing
    assert "2026-12-31" in listing
    assert not [card for card in cards(page) if "IAM access key created" in card]
    summary = session_summary(facts, records, kept, "12.html", notes=SessionNotes(suppressed=tuple(suppressed)))
    assert summary.suppressed == 1 and sum(summary.findings_by_severity.values()) == len(kept)


def test_missing_data_is_an_error_banner_never_a_clean_report(tmp_path: Path) -> None:
    problem = DataProblem("missing", missing_data_message(ACCOUNT, date(2024, 7, 31)), account_id=ACCOUNT,
                          day="2024-07-31", locator="s3://trail/o-abc/AWSLogs/143434273843/CloudTrail/")  # fmt: skip
    facts = review_session()
    report = render_session_report(facts, [], [], tmp_path, notes=SessionNotes(problems=(problem,)))
    page = html.unescape(report.read_text())
    assert "No CloudTrail data found for account 143434273843 on day 2024-07-31: check extract.s3_prefix / s3_org_id" in page
    assert '<p class="banner error">' in report.read_text()
    assert page.lower().count("no cloudtrail data found") == 1  # the sentence once, not again as its detail
    assert "s3://trail/o-abc/AWSLogs/143434273843/CloudTrail/" in page
    assert "No rule matched any event" not in page
    assert "incomplete" in page
    clean = html.unescape(render_session_report(facts, [], [], tmp_path / "clean").read_text())
    assert "No rule matched any event of this session" in clean and "banner error" not in clean
    entry = session_summary(facts, [], [], "12.html", notes=SessionNotes(problems=(problem,)))
    quiet = session_summary(replace(facts, session_id="13"), [], [], "13.html")
    index = render_index([quiet, entry], tmp_path, "2024-07-31", problems=(problem,)).read_text()
    assert index.index(">12</a>") < index.index(">13</a>")  # missing data is not clean: before the clean one
    assert index.count("data missing</span>") == 1
    assert "No CloudTrail data found for account 143434273843" in html.unescape(index)


def test_skipped_files_are_data_warnings_and_late_events_a_banner(tmp_path: Path) -> None:
    skipped = DataProblem("skipped", "truncated gzip: 3 records read", account_id=ACCOUNT, day="2024-07-31",
                          locator="s3://trail/AWSLogs/143434273843/x.json.gz")  # fmt: skip
    notes = SessionNotes(problems=(skipped,), late_events=4, first_final_at=datetime(2024, 8, 1, 6, tzinfo=UTC))
    page = html.unescape(render_session_report(review_session(), [], [], tmp_path, notes=notes).read_text())
    assert "banner error" not in page
    warnings = page[page.index("Data warnings (1)"):]
    assert "truncated gzip: 3 records read" in warnings and "x.json.gz" in warnings
    assert "Updated: 4 events delivered late arrived after this report was first final (2024-08-01 06:00:00 UTC)" in page
    index = html.unescape(render_index([], tmp_path, "2024-07-31", problems=(skipped,)).read_text())
    assert "Data warnings (1)" in index and "truncated gzip" in index and "banner error" not in index


def test_a_kept_assignment_is_said_and_gives_no_credential_tail(tmp_path: Path, pack: Any) -> None:
    ended = START + timedelta(minutes=8)  # events go on after the end: the assignment was kept
    kept = review_session(ended_at=ended, assignment_removed_at=None, assignment_kept="standing assignment")
    page, _ = review_report(tmp_path, pack, facts=kept)
    assert "kept at the session's end: standing assignment; still in place" in page
    assert "after the assignment was removed" not in page
    assert "refused calls" in page and "events in other accounts" in page  # the other flags are still there
    for_other = review_session(ended_at=ended, assignment_removed_at=None,
                               assignment_kept="request 15 is still active until 2024-07-31 15:00:00+00:00")
    page, _ = review_report(tmp_path / "other", pack, facts=for_other)
    assert "kept at the session's end: request 15 is still active" in page
    assert '(<a href="15.html">session 15</a>)' in page
    later = review_session(ended_at=ended, assignment_removed_at=ended + timedelta(hours=2),
                           assignment_kept="request 15 is still active until 2024-07-31 15:00:00+00:00")
    page, _ = review_report(tmp_path / "later", pack, facts=later)
    assert "removed 2024-07-31 15:08:00 UTC (by the session that kept it)" in page
    assert "after the assignment was removed" not in page  # its events before 15:08 are no tail
    removed = review_session(ended_at=ended, assignment_removed_at=ended)
    page, _ = review_report(tmp_path / "removed", pack, facts=removed)
    assert "after the assignment was removed" in page and "removed 2024-07-31 13:08:00 UTC" in page
    tails = [session_summary(facts, review_records(), [], "x").flags for facts in (kept, for_other, removed)]
    assert tails == [2, 2, 3]  # refused calls, other accounts; the removed one adds the credential tail


def test_the_session_facts_say_how_long_and_how_it_ended(tmp_path: Path, pack: Any) -> None:
    early = review_session(ended_by="carol@example.com", end_reason="work done")
    page, _ = review_report(tmp_path, pack, facts=early)
    facts = page[page.index('<dl class="facts">'):page.index("</dl>")]
    assert "2024-07-31 12:50:00 UTC → 2024-07-31 15:00:00 UTC" in facts  # requested
    assert "35 min" in facts  # granted 12:55, ended 13:30
    assert "early, by carol@example.com" in facts and "Reason: work done" in facts
    assert "removed 2024-07-31 13:31:00 UTC" in facts
    services = page[page.index("By service"):page.index("Session flags") if "Session flags" in page else None]
    rows = {cells[0]: cells[1:] for cells in re.findall(r"<tr><td>([^<]+)</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td>", services)}  # fmt: skip
    assert rows["s3"] == ("13", "8", "6")  # 5 list + 7 deletes + the hop's PutBucketPolicy; 6 refused
    assert rows["iam"] == ("4", "1", "0") and "s3.amazonaws.com" not in services


@pytest.mark.parametrize(
    ("ticket_url", "linked"),
    [
        ("https://tickets.example/INC-7", True),
        ("http://tickets.example/INC-7", True),
        ("javascript:alert(document.domain)", False),
        ("JaVaScRiPt:alert(1)", False),
        ("java\tscript:alert(1)", False),
        ("data:text/html,<script>alert(1)</script>", False),
        ("//tickets.example/INC-7", False),
        ("https://tickets.example/INC 7", False),
    ],
)
def test_the_ticket_is_a_link_only_for_http_urls(tmp_path: Path, ticket_url: str, linked: bool) -> None:
    facts = review_session(ticket_url=ticket_url)
    page = render_session_report(facts, [], [], tmp_path).read_text()
    index = render_index([session_summary(facts, [], [], "12.html")], tmp_path, "2024-07-31").read_text()
    for text in (page, index):
        anchors = re.findall(r'<a href="([^"]*)"[^>]*>INC-7</a>', text)
        assert anchors == ([html.escape(ticket_url)] if linked else [])
        assert "INC-7" in text
        assert 'href="javascript' not in text.lower() and 'href="data' not in text.lower()


def test_the_night_link_goes_to_the_nights_index(tmp_path: Path) -> None:
    facts = SessionFacts(session_id="12")
    relative = render_session_report(facts, [], [], tmp_path / "a", night="2024-07-31").read_text()
    assert '<a href="../2024-07-31/index.html">Night index</a>' in relative
    based = render_session_report(facts, [], [], tmp_path / "b", base_url="https://audit.example/r/sessions",
                                  night="2024-07-31").read_text()  # fmt: skip
    assert '<a href="https://audit.example/r/2024-07-31/index.html">Night index</a>' in based
    assert 'href="https://audit.example/r/sessions/12.events.csv"' in based
    adhoc = render_session_report(facts, [], [], tmp_path / "c").read_text()
    assert "Night index" not in adhoc and 'href="index.html"' not in adhoc


def test_the_index_shows_window_ticket_justification_and_reconcile_link(tmp_path: Path) -> None:
    facts = review_session(ticket_url="https://tickets.example/INC-7", justification="x" * 400)
    drift = DriftOverview(open_items=1, by_kind={"unexpected": 1}, latest_report="../reconcile/latest.html")
    index = render_index([session_summary(facts, [], [], "../sessions/12.html")], tmp_path, "2024-07-31",
                         drift=drift).read_text()  # fmt: skip
    assert "2024-07-31 12:55:00 UTC →<br>2024-07-31 13:30:00 UTC" in index
    assert '<a href="https://tickets.example/INC-7" rel="noreferrer noopener">INC-7</a>' in index
    assert "x" * 139 + "…" in index and "x" * 141 not in index
    assert '<a href="../reconcile/latest.html">Latest reconcile report</a>' in index
