"""The `extract` section of the configuration: where CloudTrail comes from and where the Parquet goes."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from elevation.access.policy import Duration
from elevation.cloudtrail.lake import event_data_store_id
from elevation.cloudtrail.s3_trail import ORG_ID
from elevation.cloudtrail.sessions import ACCOUNT_ID


class ExtractSettings(BaseModel):
    """Every field has a default, so the section may be omitted (S3 trail source, UTC nights, local output)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["s3", "lake"] = "s3"
    # S3 trail logs (the trail bucket usually lives in a log-archive account: its own connection).
    s3_bucket: str | None = None
    s3_prefix: str = ""
    s3_org_id: str | None = None
    s3_conn_id: str = "aws_cloudtrail_logs"
    extra_accounts: list[str] = Field(default_factory=list)
    regions: list[str] | None = None  # None: list the region folders the trail wrote
    # CloudTrail Lake.
    lake_event_data_store_arn: str | None = None
    lake_conn_id: str = "aws_default"
    poll_interval: Duration = timedelta(seconds=10)
    max_wait: Duration = timedelta(hours=1)
    # Nights.
    delivery_margin: Duration = timedelta(minutes=15)
    #: Each night's run also adds to the nights within this lookback the events of theirs delivered late (found in
    #: tonight's files; on CloudTrail Lake, by querying those nights again). 0 turns the re-check off.
    late_delivery_lookback: Duration = timedelta(days=2)
    timezone: str = "UTC"
    output_location: str = "data/cloudtrail"
    #: The Airflow AWS connection that writes and reads an s3:// output_location (pyarrow's S3 client).
    output_conn_id: str = "aws_default"

    @field_validator("extra_accounts")
    @classmethod
    def _accounts(cls, value: list[str]) -> list[str]:
        for account in value:
            if not ACCOUNT_ID.fullmatch(account):
                raise ValueError(f"not an AWS account id (12 digits): {account!r}")
        return value

    @field_validator("s3_org_id")
    @classmethod
    def _org(cls, value: str | None) -> str | None:
        if value is not None and not ORG_ID.fullmatch(value):
            raise ValueError(f"not an organization id (o-...): {value!r}")
        return value

    @field_validator("lake_event_data_store_arn")
    @classmethod
    def _store(cls, value: str | None) -> str | None:
        if value is not None:
            event_data_store_id(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown time zone {value!r}") from error
        return value

    @field_validator("poll_interval", "max_wait", "delivery_margin", "late_delivery_lookback")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("must not be negative")
        return value

    def check_source(self) -> None:
        """The chosen source's required fields (checked when the extract runs, so other DAGs can load config)."""
        if self.source == "s3" and not self.s3_bucket:
            raise ValueError("extract.source is 's3' but extract.s3_bucket is not set")
        if self.source == "lake" and not self.lake_event_data_store_arn:
            raise ValueError("extract.source is 'lake' but extract.lake_event_data_store_arn is not set")
