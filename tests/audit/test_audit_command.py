"""`elevation audit-events`: every input format, unreadable input (non-zero, file named), empty folders (exit 0)."""

from __future__ import annotations

import argparse
import gzip
import html
import io
import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import generated_records
from elevation.audit.command import EXIT_OK, EXIT_UNREADABLE, register, run
from elevation.cloudtrail.records import iter_records_from_path
from elevation.cloudtrail.schema import EVENT_SCHEMA, record_to_row
from elevation.devkit.trail_events import make_event, sso_identity


def records() -> list[dict[str, Any]]:
    """A session's generated calls: routine ones, then one StopLogging."""
    return generated_records("StopLogging")


@pytest.fixture(scope="module")
def stop_logging(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JSON array of those records, as Stratus Red Team and CloudTrail's console export write them."""
    path = tmp_path_factory.mktemp("samples") / "cloudtrail-stop.json"
    path.write_text(json.dumps(records()))
    assert list(iter_records_from_path(path)) == records()
    return path


def audit(*paths: Path, html: Path | None = None) -> tuple[int, list[dict[str, Any]], str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    status = run(list(paths), [], html, stdout, stderr)
    return status, [json.loads(line) for line in stdout.getvalue().splitlines()], stderr.getvalue()


def assert_stop_logging_found(lines: list[dict[str, Any]]) -> None:
    assert lines, "StopLogging must give at least one finding"
    for line in lines:
        assert {"eventID", "eventSource", "eventName", "rule_id", "title", "severity"} <= set(line)
    assert any(
        line["eventName"] == "StopLogging" and line["severity"] in ("high", "critical") for line in lines
    )


def test_json_array(stop_logging: Path) -> None:
    status, lines, _ = audit(stop_logging)
    assert status == EXIT_OK
    assert_stop_logging_found(lines)


def test_gzip_trail_file(tmp_path: Path) -> None:
    trail = tmp_path / "111122223333_CloudTrail_eu-west-1_20240731T1305Z_abc.json.gz"
    trail.write_bytes(gzip.compress(json.dumps({"Records": records()}).encode()))
    status, lines, _ = audit(trail)
    assert status == EXIT_OK
    assert_stop_logging_found(lines)


def test_json_lines(tmp_path: Path) -> None:
    export = tmp_path / "export.jsonl"
    export.write_text("".join(json.dumps(record) + "\n" for record in records()))
    status, lines, _ = audit(export)
    assert status == EXIT_OK
    assert_stop_logging_found(lines)


def test_extract_parquet(tmp_path: Path) -> None:
    table = pa.Table.from_pylist(
        [record_to_row(record, "sess-9") for record in records()], schema=EVENT_SCHEMA
    )
    pq.write_table(table, tmp_path / "events.parquet")
    status, lines, _ = audit(tmp_path / "events.parquet")
    assert status == EXIT_OK
    assert_stop_logging_found(lines)
    assert {line["session_id"] for line in lines} == {"sess-9"}


def test_every_format_gives_the_same_findings(tmp_path: Path) -> None:
    (tmp_path / "a.json.gz").write_bytes(gzip.compress(json.dumps({"Records": records()}).encode()))
    pq.write_table(
        pa.Table.from_pylist([record_to_row(record, "s") for record in records()], schema=EVENT_SCHEMA),
        tmp_path / "b.parquet",
    )
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records()))
    status, lines, _ = audit(tmp_path)
    assert status == EXIT_OK
    per_file: dict[str, set[tuple[str, str]]] = {}
    for line in lines:
        per_file.setdefault(Path(line["file"]).name, set()).add((line["eventID"], line["rule_id"]))
    assert set(per_file) == {"a.json.gz", "b.parquet", "c.jsonl"}
    assert per_file["a.json.gz"] == per_file["b.parquet"] == per_file["c.jsonl"]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("truncated.json.gz", gzip.compress(b'{"Records": []}')[:-8]),
        ("broken.json", b'{"Records": [{"eventID": "1",'),
        ("broken.parquet", b"PAR1 this is not really parquet"),
    ],
)
def test_unreadable_file_fails_naming_it(tmp_path: Path, stop_logging: Path, name: str, content: bytes) -> None:
    bad = tmp_path / name
    bad.write_bytes(content)
    status, lines, stderr = audit(stop_logging, bad)
    assert status == EXIT_UNREADABLE
    assert str(bad) in stderr
    assert_stop_logging_found(lines)  # the readable file is still audited


def test_missing_path_fails(tmp_path: Path) -> None:
    status, lines, stderr = audit(tmp_path / "nope.json")
    assert status == EXIT_UNREADABLE
    assert "nope.json" in stderr and lines == []


def test_empty_folder_is_not_an_error(tmp_path: Path) -> None:
    status, lines, stderr = audit(tmp_path)
    assert status == EXIT_OK
    assert lines == []
    assert "no CloudTrail files found" in stderr


def test_html_report(tmp_path: Path, stop_logging: Path) -> None:
    status, lines, stderr = audit(stop_logging, html=tmp_path / "out")
    assert status == EXIT_OK and lines
    (report,) = (tmp_path / "out").glob("*.html")
    assert "StopLogging" in report.read_text()
    assert str(report) in stderr


def test_register_adds_the_sub_command() -> None:
    parser = argparse.ArgumentParser(prog="elevation")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["audit-events", "a.json", "b", "--rules", "r1", "--rules", "r2", "--html", "out"]
    )
    assert args.paths == [Path("a.json"), Path("b")]
    assert args.rules == [Path("r1"), Path("r2")]
    assert args.html == Path("out")
    assert callable(args.handler)


def test_python_dash_m_entry_point(tmp_path: Path, stop_logging: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    good = subprocess.run(
        [sys.executable, "-m", "elevation.audit.command", "audit-events", str(stop_logging)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert good.returncode == 0, good.stderr
    assert any(json.loads(line)["eventName"] == "StopLogging" for line in good.stdout.splitlines())
    failed = subprocess.run(
        [sys.executable, "-m", "elevation.audit.command", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == EXIT_UNREADABLE
    assert str(bad) in failed.stderr


def test_html_report_says_what_was_audited_in_time_order_with_who_acted(tmp_path: Path) -> None:
    """Two files read late-first: the report's title names the files, the span and the accounts; the cards are in
    time order with the acting identity; failed calls are one attempt card; no night index to link to."""
    identity = sso_identity("111122223333", "AdministratorAccess", "alice@example.com")
    start = datetime(2024, 7, 31, 13, tzinfo=UTC)

    def key_created(hour: int, user: str) -> dict[str, Any]:
        return make_event(identity, "CreateAccessKey", "iam.amazonaws.com", start + timedelta(hours=hour),
                          recipient_account="111122223333", event_id=f"key-{user}", request={"userName": user})  # fmt: skip

    late, early = tmp_path / "a-late.json", tmp_path / "b-early.json"
    late.write_text(json.dumps([key_created(2, "late-bot")]))
    denied = [
        make_event(identity, "DeleteBucket", "s3.amazonaws.com", start + timedelta(minutes=minute),
                   recipient_account="444455556666", event_id=f"denied-{minute}", error_code="AccessDenied",
                   request={"bucketName": "archive"})
        for minute in range(3)
    ]  # fmt: skip
    early.write_text(json.dumps([key_created(1, "early-bot"), *denied]))
    status, lines, _ = audit(late, early, html=tmp_path / "out")
    assert status == EXIT_OK and lines[0]["eventID"] == "key-late-bot"  # stdout: file by file, as read
    (report,) = (tmp_path / "out").glob("*.html")
    page = html.unescape(report.read_text())
    title = "Ad-hoc audit of 2 files: events from 2024-07-31 13:00:00 UTC to 2024-07-31 15:00:00 UTC in accounts 111122223333, 444455556666"
    assert f"<title>{title}" in page and f"<h1>{title}</h1>" in page
    assert str(late) in page and str(early) in page
    assert page.index("key-early-bot") < page.index("key-late-bot")  # time order, not file order
    assert page.count(f"{identity['arn']}</dd>") >= 3  # the acting identity on each card
    assert page.count("Attempted: Database, bucket or file system deleted — 3 calls failed: AccessDenied") == 1
    assert "Check whose key it is" in page  # the rule's next step
    badges = dict(re.findall(r'<li class="badge-(\w+)"><b>(\d+)</b>', page))
    assert badges["medium"] == str(2 + 3)  # two keys, three refused deletions one step below high
    assert "Night index" not in page and 'href="index.html"' not in page
