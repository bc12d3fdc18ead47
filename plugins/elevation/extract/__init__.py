"""The nightly extract: CloudTrail events of the elevated sessions into Hive-partitioned Parquet."""

from elevation.extract.night import (
    DEFAULT_DELIVERY_MARGIN,
    EventSource,
    ExtractSummary,
    extract_night,
    plan_lake_queries,
)
from elevation.extract.nights import night_of, night_window, read_span, sessions_for_night
from elevation.extract.settings import ExtractSettings
from elevation.extract.writer import WrittenPartition, write_partition

__all__ = [
    "DEFAULT_DELIVERY_MARGIN",
    "EventSource",
    "ExtractSettings",
    "ExtractSummary",
    "WrittenPartition",
    "extract_night",
    "night_of",
    "night_window",
    "plan_lake_queries",
    "read_span",
    "sessions_for_night",
    "write_partition",
]
