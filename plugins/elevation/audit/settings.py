"""The `audit` section of the configuration: which rules, and where reports go and how they are linked."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
    #: The ticket as a link in reports, e.g. "https://tickets.example.com/browse/{ticket}" (http(s) only).
    ticket_url_template: str | None = None
    suppressions: list[Suppression] = Field(default_factory=list)  # expected findings, with reason and expiry

    @field_validator("ticket_url_template")
    @classmethod
    def _ticket_url(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith(("https://", "http://")) or "{ticket}" not in value):
            raise ValueError("must be an http(s) URL containing {ticket}, e.g. https://tickets.example.com/{ticket}")
        return value
