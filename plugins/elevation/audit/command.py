"""`elevation audit-events PATH [PATH ...]`: apply the rules to CloudTrail files that never went through the pipeline.

For incident response: point it at trail files (gzip or not), JSON arrays, JSON Lines or the extract's Parquet, get
one JSON object per finding on stdout (pipe it to jq or a SIEM). Exit status: 0 when every input was read, whatever
was found; 2 when an input could not be read (the message names the file; findings of the readable files are still
printed, so a single corrupt file does not hide the rest). An empty folder is not an error: a note on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa

from elevation.audit.engine import Finding, RuleSet, finding_sort_key, load_rules, read_events
from elevation.cloudtrail.records import READABLE_SUFFIXES, MalformedLogFile, iter_records_from_path
from elevation.cloudtrail.schema import row_to_record

EXIT_OK = 0
EXIT_UNREADABLE = 2
PARQUET_SUFFIXES = (".parquet", ".parq")


@dataclass
class Inputs:
    """What a walk over the command's paths found."""

    files: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)
    empty_folders: list[Path] = field(default_factory=list)


def collect_inputs(paths: Sequence[Path]) -> Inputs:
    """Files named explicitly are always read; in folders, event-looking files (hidden ones and digests ignored)."""
    inputs = Inputs()
    for path in paths:
        if path.is_file():
            inputs.files.append(path)
        elif path.is_dir():
            found = []
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                relative = file.relative_to(path)
                if (
                    any(part.startswith(".") for part in relative.parts)
                    or "CloudTrail-Digest" in relative.parts
                ):
                    continue
                if file.name.lower().endswith((*READABLE_SUFFIXES, *PARQUET_SUFFIXES)):
                    found.append(file)
                else:
                    inputs.skipped.append(file)
            if not found:
                inputs.empty_folders.append(path)
            inputs.files.extend(found)
        else:
            inputs.missing.append(path)
    return inputs


def _is_parquet(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == b"PAR1"


def findings_of_file(rules: RuleSet, path: Path) -> tuple[list[Finding], pa.Table | list[dict[str, Any]]]:
    """Findings and events of one file; raises MalformedLogFile naming the file on anything unreadable."""
    if _is_parquet(path):
        try:
            table = read_events(path)
            return rules.evaluate_table(table), table
        except (pa.ArrowException, ValueError, OSError) as error:
            raise MalformedLogFile(str(path), f"unreadable Parquet ({error})") from error
    try:
        records = list(iter_records_from_path(path))
    except OSError as error:
        raise MalformedLogFile(str(path), f"cannot read ({error.strerror or error})") from error
    return rules.evaluate_records(records), records


def _records_of(events: pa.Table | list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    if isinstance(events, pa.Table):
        yield from (row_to_record(row) for row in events.to_pylist())
    else:
        yield from events


def run(
    paths: Sequence[Path],
    rule_folders: Sequence[Path],
    html_dir: Path | None,
    stdout: TextIO,
    stderr: TextIO,
    include_pack: bool = True,
    load: Callable[..., RuleSet] = load_rules,
) -> int:
    """The command, with its streams as arguments (tests call this)."""
    try:
        rules = load(rule_folders, include_pack=include_pack)
    except FileNotFoundError as error:
        print(f"elevation audit-events: {error}", file=stderr)
        return EXIT_UNREADABLE
    if rules.unsupported:
        print(f"note: {len(rules.unsupported)} rule(s) not supported and skipped:", file=stderr)
        for rule in rules.unsupported:
            print(f"  {rule.path}: {rule.title}: {rule.reason}", file=stderr)
    inputs = collect_inputs(paths)
    status = EXIT_OK
    for path in inputs.missing:
        print(f"elevation audit-events: {path}: no such file or folder", file=stderr)
        status = EXIT_UNREADABLE
    for folder in inputs.empty_folders:
        print(f"note: {folder}: no CloudTrail files found (nothing to audit)", file=stderr)
    for path in inputs.skipped:
        print(f"note: {path}: skipped, not a CloudTrail or Parquet file name", file=stderr)

    all_findings: list[Finding] = []
    all_records: list[dict[str, Any]] = []
    read: list[str] = []
    for path in inputs.files:
        try:
            findings, events = findings_of_file(rules, path)
        except MalformedLogFile as error:
            print(f"elevation audit-events: cannot read {error.name}: {error.reason}", file=stderr)
            status = EXIT_UNREADABLE
            continue
        for finding in findings:
            line = finding.to_dict()
            line["file"] = str(path)
            stdout.write(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n")
        all_findings.extend(findings)
        read.append(str(path))
        if html_dir is not None:
            all_records.extend(_records_of(events))
    stdout.flush()
    if html_dir is not None:
        report = write_adhoc_report(all_records, all_findings, html_dir, rules=rules, files=read)
        print(f"report: {report}", file=stderr)
    print(
        f"{len(all_findings)} finding(s) in {len(inputs.files)} file(s) with {len(rules.rules)} rules",
        file=stderr,
    )
    return status


def write_adhoc_report(
    records: list[dict[str, Any]],
    findings: list[Finding],
    html_dir: Path,
    *,
    rules: RuleSet | None = None,
    files: Sequence[str] = (),
) -> Path:
    """One report for everything read, through the session report's view (no session facts: this is not a
    pipeline session; no night): its title says what was audited (files, time span of the events, accounts), the
    findings are in time order with their rule's text and acting identity, failed calls grouped as attempts."""
    from elevation.audit.facts import SessionFacts
    from elevation.audit.report import render_session_report

    now = datetime.now(UTC)
    session = SessionFacts(session_id=f"adhoc-{now:%Y%m%dT%H%M%SZ}", requester="ad-hoc audit (audit-events)")
    by_id = {rule.rule_id: rule for rule in rules.rules} if rules is not None else None
    return render_session_report(
        session,
        records,
        sorted(findings, key=finding_sort_key),
        html_dir,
        generated_at=now,
        rules=by_id,
        files=list(files),
    )


def _handle(args: argparse.Namespace) -> int:
    return run(args.paths, args.rules, args.html, sys.stdout, sys.stderr, include_pack=not args.no_pack)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `audit-events` to the `elevation` console script."""
    parser = subparsers.add_parser(
        "audit-events",
        help="apply the audit rules to CloudTrail files or the extract's Parquet",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="file or folder (searched recursively)"
    )
    parser.add_argument(
        "--rules",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="extra Sigma rule folder (repeatable)",
    )
    parser.add_argument("--no-pack", action="store_true", help="do not load the project's rule pack")
    parser.add_argument(
        "--html", type=Path, metavar="DIR", help="also write an HTML report (and downloads) here"
    )
    parser.set_defaults(handler=_handle)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m elevation.audit.command audit-events ...` (or without the sub-command name)."""
    parser = argparse.ArgumentParser(prog="elevation")
    subparsers = parser.add_subparsers(dest="command", required=True)
    register(subparsers)
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] not in ("audit-events", "-h", "--help"):
        arguments.insert(0, "audit-events")
    args = parser.parse_args(arguments)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
