"""The `reconcile` section of the configuration: the scope the system manages, what it may do, and its limits."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from elevation.access.policy import AccountId, Duration

OU_OR_ROOT = re.compile(r"ou-[0-9a-z]{4,32}-[0-9a-z]{8,32}|r-[0-9a-z]{4,32}")


class ProtectedPrincipals(BaseModel):
    """Never removed by reconcile in any mode, and never reported as removable (break-glass users, the admins)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: tuple[str, ...] = ()  # Identity Center user names
    groups: tuple[str, ...] = ()  # Identity Center group display names


class ReconcileSettings(BaseModel):
    """Every field has a default; with no accounts and no OUs in scope, reconcile reads and touches nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["report", "enforce"] = "report"
    accounts: tuple[AccountId, ...] = ()
    ous: tuple[str, ...] = ()  # OU ids (or the root id): every account below them, at any depth
    # Permission set names; empty: the ones the policy's eligibility and auto-approval rules name.
    permission_sets: tuple[str, ...] = ()
    protected: ProtectedPrincipals = ProtectedPrincipals()
    grace_period: Duration = timedelta(minutes=10)  # after a recorded grant or removal, not drift yet
    max_removals: int = Field(5, ge=0)  # enforce: a run that would remove more removes nothing and fails
    recreate_missing: bool = False  # a missing assignment may be the security team's deliberate removal
    reports_location: str | None = None  # default: <audit.reports_location>/reconcile

    @field_validator("ous")
    @classmethod
    def _ous(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for ou in value:
            if not OU_OR_ROOT.fullmatch(ou):
                raise ValueError(f"not an OU id (ou-xxxx-xxxxxxxx) or root id (r-xxxx): {ou!r}")
        return value

    @property
    def has_scope(self) -> bool:
        return bool(self.accounts or self.ous)
