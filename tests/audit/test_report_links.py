"""Every link of a rendered night resolves: the index, two session reports and their downloads, laid out on disk as
the nightly run writes them (`<reports>/<night>/index.html`, `<reports>/sessions/<id>.html`), opened in headless
Chromium (the links are read from the DOM the browser built, not from the template's text)."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import pytest
from test_report_html import dump_dom, review_records, review_session

from elevation.audit import load_rules
from elevation.audit.facts import SessionNotes
from elevation.audit.report import (
    DriftOverview,
    render_index,
    render_session_report,
    session_summary,
    write_findings_jsonl,
    write_output,
)

NIGHT = "2024-07-31"
TICKET = "https://tickets.example/browse/INC-7"


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Session 12 (a ticket link, an event shared with 15, its assignment removed) and session 15 (its
    assignment kept for 12), the night's index with the findings file and the latest reconcile report."""
    root = tmp_path_factory.mktemp("reports")
    sessions, night_dir = root / "sessions", root / NIGHT
    pack = load_rules()
    records = review_records()
    first = review_session(ticket_url=TICKET)
    second = review_session(session_id="15", ticket="INC-8", ticket_url="javascript:alert(1)",
                            assignment_removed_at=None, assignment_kept="session 12")  # fmt: skip
    shared = {"delete-ok": ("12", "15")}
    entries, pages, all_findings = [], [], []
    for facts, own in ((first, records), (second, records[:8])):
        findings = pack.evaluate_records(own, session_id=facts.session_id)
        rules = {finding.rule_id: pack.rule(finding.rule_id) for finding in findings}
        notes = SessionNotes(shared_events=shared)
        page = render_session_report(facts, own, findings, sessions, night=NIGHT, notes=notes, rules=rules)
        entries.append(session_summary(facts, own, findings, f"../sessions/{page.name}", notes=notes))
        pages.append(page)
        all_findings.extend(findings)
    findings_file = write_findings_jsonl(all_findings, night_dir, NIGHT)
    latest = write_output(root / "reconcile", "latest.html", b"<!doctype html><title>latest</title>")
    drift = DriftOverview(open_items=1, by_kind={"unexpected": 1}, latest_report="../reconcile/latest.html")
    index = render_index(entries, night_dir, NIGHT, findings_file=findings_file.name, drift=drift)
    return {"index": index, "sessions": pages, "jsonl": findings_file, "latest": latest}


def links(page: Path, profile: Path) -> list[str]:
    """The href of every element of the page as Chromium built it."""
    dom = dump_dom(page, profile)
    assert "</html>" in dom, "the page did not render"
    return [html.unescape(href) for href in re.findall(r'\shref="([^"]*)"', dom)]


def resolved(page: Path, href: str) -> Path | str:
    """A local file for a link on `page`, or the URL itself when it leaves the disk."""
    target = urlsplit(urljoin(page.as_uri(), href))
    return Path(unquote(target.path)) if target.scheme == "file" else target.geturl()


@pytest.mark.browser
@pytest.mark.parametrize("name", ["index", "session 12", "session 15"])
def test_every_link_of_a_rendered_night_resolves(night: dict[str, Any], name: str, tmp_path: Path) -> None:
    page = night["index"] if name == "index" else night["sessions"][0 if name == "session 12" else 1]
    found = links(page, tmp_path / "profile")
    targets = [resolved(page, href) for href in found]
    outside = [target for target in targets if not isinstance(target, Path)]
    assert outside == ([TICKET] if name in ("index", "session 12") else [])  # only the http(s) ticket leaves
    missing = [str(target) for target in targets if isinstance(target, Path) and not target.is_file()]
    assert not missing, f"{page.name} links to missing files: {missing}"
    local = {target for target in targets if isinstance(target, Path)}
    if name == "index":
        assert local >= {*night["sessions"], night["jsonl"], night["latest"]}
    else:
        stem = page.stem
        assert local >= {night["index"], page.with_name(f"{stem}.events.csv"), page.with_name(f"{stem}.events.parquet")}
        other = night["sessions"][1 if name == "session 12" else 0]
        assert other in local  # shared event (and, for 15, the session its assignment was kept for)
