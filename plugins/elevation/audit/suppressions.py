"""Suppressions: findings a team has judged expected, with the reason and until when (pure; no I/O).

A suppression names a rule (its id or its title) and, optionally, field globs that must all match the finding:
a key of :meth:`Finding.to_dict` (``principal_arn``, ``eventName``, ``userAgent``, ``sourceIPAddress``, ...) or a
nested request parameter (``requestParameters.bucketName``). Values are :func:`fnmatch.fnmatchcase` globs
(case-sensitive: ``*``, ``?``, ``[...]``). It applies while ``today <= expires`` (no expiry: always). The reason is
required: a suppression nobody can explain is not reviewed again.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from fnmatch import fnmatchcase
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from elevation.audit.engine import Finding

#: Other spellings of the finding's fields (the names a CloudTrail reader would try first).
_ALIASES: dict[str, str] = {
    "event_id": "eventID",
    "event_source": "eventSource",
    "event_name": "eventName",
    "aws_region": "awsRegion",
    "source_ip": "sourceIPAddress",
    "user_agent": "userAgent",
    "error_code": "errorCode",
    "recipient_account_id": "recipientAccountId",
    "request_parameters": "requestParameters",
    "userIdentity.arn": "principal_arn",
}


class Suppression(BaseModel):
    """One rule's findings that are expected where all `match` globs hold, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: str = Field(min_length=1)  # a rule id or title
    match: dict[str, str] = Field(default_factory=dict)
    reason: str
    expires: date | None = None

    @field_validator("reason")
    @classmethod
    def _reason_is_given(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a suppression needs a reason (who decided, and why the findings are expected)")
        return value.strip()

    def active(self, today: date) -> bool:
        return self.expires is None or today <= self.expires

    def applies_to(self, finding: Finding, today: date) -> bool:
        """Active, about this finding's rule, and every glob matches one of the field's values."""
        if not self.active(today) or self.rule not in (finding.rule_id, finding.title):
            return False
        if not self.match:
            return True
        document = finding.to_dict()
        return all(_matches(_values(document, field), pattern) for field, pattern in self.match.items())


def _values(document: dict[str, Any], field: str) -> list[Any]:
    """The values at a dotted path of the finding's dictionary (lists on the way are traversed)."""
    field = _ALIASES.get(field, field)
    if field in document:
        current: list[Any] = [document[field]]
    else:
        head, _, rest = field.partition(".")
        head = _ALIASES.get(head, head)
        if head not in document or not rest:
            return []
        current = [document[head]]
        for key in rest.split("."):
            following: list[Any] = []
            for value in current:
                if isinstance(value, dict) and key in value:
                    following.append(value[key])
                elif isinstance(value, list):
                    following.extend(item[key] for item in value if isinstance(item, dict) and key in item)
            current = following
    values: list[Any] = []
    for value in current:
        values.extend(value if isinstance(value, list) else [value])
    return values


def _matches(values: list[Any], pattern: str) -> bool:
    for value in values:
        if value is None or isinstance(value, (dict, list)):
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        if fnmatchcase(text, pattern):
            return True
    return False


def split_suppressed(
    findings: Iterable[Finding], suppressions: Iterable[Suppression], today: date
) -> tuple[list[Finding], list[tuple[Finding, Suppression]]]:
    """(findings no active suppression applies to, [(finding, the first suppression that applies)]), both in the
    findings' order."""
    active = [item for item in suppressions if item.active(today)]
    kept: list[Finding] = []
    suppressed: list[tuple[Finding, Suppression]] = []
    for finding in findings:
        for item in active:
            if item.applies_to(finding, today):
                suppressed.append((finding, item))
                break
        else:
            kept.append(finding)
    return kept, suppressed
