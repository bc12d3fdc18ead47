"""The night's findings file for a SIEM: `findings-<night>.jsonl`, each finding once, with its session's context.

A finding is written when its session's audit is final (a provisional audit is redone the next night: writing it then
would repeat it), in exactly one night's file, under a stable `key` (session, event, rule) so a SIEM that upserts
would not double it even if it saw it twice. Each line carries who did it and on whose access: requester,
principal, account, permission set, ticket, approver, and the rule's ATT&CK technique ids, so a line reads alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from elevation.audit.engine import Finding
from elevation.audit.facts import SessionFacts
from elevation.audit.report import safe_name
from elevation.audit.rules import CompiledRule


def finding_line(
    finding: Finding,
    session: SessionFacts,
    rule: CompiledRule | None,
    *,
    report_url: str | None = None,
    shared_with: tuple[str, ...] = (),
    suppressed_because: str | None = None,
) -> dict[str, Any]:
    line = finding.to_dict()
    line.update(
        state="provisional" if session.provisional else "final",
        requester=session.requester,
        principal=session.principal,
        account_id=session.account_id,
        account_name=session.account_name,
        permission_set=session.permission_set,
        approver=session.approver,
        ticket=session.ticket,
        attack=list(rule.attack_ids) if rule else [],
        tags=list(rule.tags) if rule else [],
        report=report_url,
        shared_with=list(shared_with),
        suppressed=suppressed_because,
    )
    return line


class FindingsFile:
    """`findings-<night>.jsonl`, written line by line as sessions are audited (a night's findings are never held
    in memory at once) into a hidden partial file, moved into place only when complete: a reader sees the old
    file or the new one. Use as a context manager; an exception leaves the previous file untouched."""

    def __init__(self, output_dir: Path, night: str) -> None:
        self.path = Path(output_dir) / f"findings-{safe_name(night)}.jsonl"
        self._partial = self.path.with_name(f".{self.path.name}.partial")
        self.lines = 0

    def __enter__(self) -> FindingsFile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self._partial.open("w", encoding="utf-8")
        return self

    def write(self, line: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(line, ensure_ascii=False, sort_keys=True, default=str) + "\n")
        self.lines += 1

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        self._file.close()
        if kind is None:
            self._partial.replace(self.path)
        else:
            self._partial.unlink(missing_ok=True)


def write_findings_file(lines: Iterable[Mapping[str, Any]], output_dir: Path, night: str) -> Path:
    with FindingsFile(output_dir, night) as out:
        for line in lines:
            out.write(line)
    return out.path
