"""The `audit` section of the configuration: which rules, and where reports go and how they are linked."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from elevation.audit.suppressions import Suppression

#: SigmaHQ's "AWS STS AssumeRole Misuse" matches every event of an Identity Center session (each one is an
#: assumed role by construction), so in this system it is noise; switched off unless a team turns it back on.
NOISY_FOR_ELEVATED_SESSIONS = ("905d389b-b853-46d0-9d3d-dea0d3a3cd49",)


class AuditSettings(BaseModel):
    """Every field has a default, so the section may be omitted (the shipped rule pack, local reports)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule_folders: list[Path] = Field(default_factory=list)  # more Sigma rules (e.g. a SigmaHQ checkout)
    include_pack: bool = True
    disabled_rules: list[str] = Field(default_factory=lambda: list(NOISY_FOR_ELEVATED_SESSIONS))
    reports_location: str = "reports/out"  # a local folder or s3://bucket/prefix; sessions/ and one folder per night
    reports_conn_id: str = "aws_default"  # for an s3:// reports_location
    base_url: str | None = None  # how people reach the reports (internal static site); None: relative links
    suppressions: list[Suppression] = Field(default_factory=list)  # expected findings, with reason and expiry
