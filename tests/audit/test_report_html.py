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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from conftest import generated_records
from elevation.audit import Finding, load_rules
from elevation.audit.facts import SessionFacts
from elevation.audit.report import (
    SHOWN_PER_RULE,
    build_timeline,
    render_index,
    render_session_report,
    safe_name,
    session_summary,
    write_findings_jsonl,
)
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
