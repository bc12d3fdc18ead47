"""Partition ownership (pure) and the extract's configuration section."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from pydantic import ValidationError

from elevation.cloudtrail.sessions import SessionIdentity
from elevation.extract import ExtractSettings, night_of, night_window, read_span, sessions_for_night
from elevation.extract.nights import owns


def test_nights_tile_time_without_gaps_or_overlaps_even_across_daylight_saving() -> None:
    for zone in ("UTC", "Europe/Paris", "America/New_York"):
        day = date(2024, 3, 8)
        previous_end = None
        for _ in range(5):  # across the US/EU spring-forward weekends
            start, end = night_window(day, zone)
            assert previous_end is None or start == previous_end
            assert night_of(start, zone) == day and night_of(end - timedelta(microseconds=1), zone) == day
            previous_end, day = end, day + timedelta(days=1)
    start, end = night_window(date(2024, 3, 31), "Europe/Paris")
    assert end - start == timedelta(hours=23)


def test_exactly_one_night_owns_an_event_and_reads_reach_past_it() -> None:
    moment = datetime(2024, 8, 1, 0, 0, tzinfo=UTC)
    owners = [d for d in (date(2024, 7, 31), date(2024, 8, 1)) if owns(*night_window(d), moment)]
    assert owners == [date(2024, 8, 1)]
    start, end = night_window(date(2024, 8, 1))
    assert read_span(start, end, timedelta(minutes=15)) == (
        start - timedelta(hours=1),
        end + timedelta(minutes=15),
    )


def test_a_session_is_extracted_every_night_its_window_touches() -> None:
    session = SessionIdentity(
        "s",
        "111111111111",
        "Admin",
        ("u",),
        datetime(2024, 7, 31, 22, tzinfo=UTC),
        None,
        datetime(2024, 7, 31, 23, 30, tzinfo=UTC),
        timedelta(hours=12),
    )
    nights = [
        d
        for d in (date(2024, 7, 30), date(2024, 7, 31), date(2024, 8, 1), date(2024, 8, 2))
        if sessions_for_night([session], *night_window(d))
    ]
    assert nights == [date(2024, 7, 31), date(2024, 8, 1)], "the credential tail reaches into the next night"


def test_settings_default_to_s3_utc_and_forbid_unknown_keys() -> None:
    settings = ExtractSettings()
    assert (settings.source, settings.timezone, settings.delivery_margin) == (
        "s3",
        "UTC",
        timedelta(minutes=15),
    )
    assert settings.s3_conn_id == "aws_cloudtrail_logs" != settings.lake_conn_id
    with pytest.raises(ValidationError):
        ExtractSettings(bucket="typo")
    with pytest.raises(ValueError, match="s3_bucket"):
        ExtractSettings().check_source()
    ExtractSettings(
        source="lake", lake_event_data_store_arn="arn:aws:cloudtrail:us-east-1:1:eventdatastore/ab-12"
    ).check_source()


@pytest.mark.parametrize(
    "bad",
    [
        {"extra_accounts": ["1234"]},
        {"timezone": "Mars/Olympus"},
        {"s3_org_id": "o-../x"},
        {"lake_event_data_store_arn": 'arn:aws:cloudtrail:us-east-1:1:eventdatastore/x"; --'},
        {"delivery_margin": -60},
        {"source": "athena"},
    ],
)
def test_settings_reject_what_would_reach_a_query_or_a_path_unchecked(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ExtractSettings(**bad)
