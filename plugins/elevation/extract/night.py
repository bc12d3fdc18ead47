"""`extract_night`: the one call the `elevation_extract` DAG makes per night.

It reads the night's span from a source (S3 trail files or CloudTrail Lake), matches records to the sessions,
follows the credentials the sessions assumed, and writes the night's partition atomically. Exactly-once: the
night owns the events whose eventTime is in [start, end) (see :mod:`elevation.extract.nights`), duplicates in the
input (CloudTrail may deliver an event twice, files are re-read) are dropped by (session_id, eventID), and the
partition is replaced as a whole.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from pyarrow import fs as pafs

from elevation.cloudtrail.matcher import DerivedCredential, MintedCredential, SessionMatcher
from elevation.cloudtrail.records import SourceReport, SourceWarning
from elevation.cloudtrail.schema import parse_event_time, record_to_row
from elevation.cloudtrail.sessions import SessionIdentity
from elevation.extract.late import LateEvents, carried_over, merge_late
from elevation.extract.location import resolve_location
from elevation.extract.manifest import DataProblem, NightManifest, missing_days, read_manifest, write_manifest
from elevation.extract.nights import DEFAULT_LOOKBACK, night_of, owns, read_span, sessions_for_night
from elevation.extract.writer import write_partition

log = logging.getLogger(__name__)

DEFAULT_DELIVERY_MARGIN = timedelta(minutes=15)


class EventSource(Protocol):
    """What the extract needs from a source: (record, locator) pairs, and a second look for late discoveries."""

    report: SourceReport

    def records(
        self, sessions: Sequence[SessionIdentity], start: datetime, end: datetime
    ) -> Iterator[tuple[dict[str, Any], str | None]]: ...

    def records_for_credentials(
        self, credentials: Sequence[DerivedCredential], locators: set[str], start: datetime, end: datetime
    ) -> Iterator[tuple[dict[str, Any], str | None]]: ...


@dataclass
class ExtractSummary:
    """What a night's run did: shown in the task log, returned to the DAG (XCom) via :meth:`to_dict`."""

    night: date
    start: datetime
    end: datetime
    read_start: datetime
    read_end: datetime
    sessions: int
    events_per_session: dict[str, int]
    events_written: int = 0
    duplicates_dropped: int = 0
    bytes_scanned: int = 0
    queries: list[str] = field(default_factory=list)
    objects_read: int = 0
    records_read: int = 0
    reread_passes: int = 0
    warnings: list[SourceWarning] = field(default_factory=list)
    files_written: list[str] = field(default_factory=list)
    output_bytes: int = 0
    minted_credentials: list[MintedCredential] = field(default_factory=list)
    derived_credentials: list[DerivedCredential] = field(default_factory=list)
    #: What the reader of the night's reports must know about the data (see :class:`DataProblem`).
    problems: list[DataProblem] = field(default_factory=list)
    #: Earlier nights that gained events delivered late, found in this night's files: {night: {session: count}}.
    late_events: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (dates and datetimes as ISO text)."""

        def plain(value: Any) -> Any:
            if isinstance(value, datetime | date):
                return value.isoformat()
            if isinstance(value, dict):
                return {key: plain(item) for key, item in value.items()}
            if isinstance(value, list | tuple):
                return [plain(item) for item in value]
            return value

        return plain(asdict(self))


def _matched_rows(
    matcher: SessionMatcher,
    source: EventSource,
    sessions: Sequence[SessionIdentity],
    start: datetime,
    end: datetime,
    span: tuple[datetime, datetime],
    follow_hops: int,
    summary: ExtractSummary,
    late: LateEvents | None = None,
) -> Iterator[dict[str, Any]]:
    seen: set[tuple[str, str]] = set()
    handled: set[tuple[str, str]] = set()

    def rows_of(pairs: Iterator[tuple[dict[str, Any], str | None]]) -> Iterator[dict[str, Any]]:
        for record, locator in pairs:
            matches = matcher.match(record, locator)
            if not matches:
                continue
            try:
                moment = parse_event_time(record["eventTime"])
            except (KeyError, ValueError, TypeError):
                source.report.warn(str(locator), f"record {record.get('eventID')} has no valid eventTime")
                continue
            if not owns(start, end, moment):
                if late is not None and late.start <= moment < start:
                    late.add(record, moment, matches, str(locator))
                continue
            for match in matches:
                key = (match.session_id, str(record.get("eventID")))
                if key in seen:
                    summary.duplicates_dropped += 1
                    continue
                try:
                    row = record_to_row(record, match.session_id)
                except (KeyError, ValueError, TypeError) as error:
                    source.report.warn(str(locator), f"record {record.get('eventID')} unusable: {error!r}")
                    break
                seen.add(key)
                summary.events_per_session[match.session_id] += 1
                yield row

    # The matcher screens the records of whole files natively where the source can (S3 trail files, see
    # S3TrailSource._read_objects): only records that may be a session's reach match() as dicts.
    import contextlib

    previous_screen = getattr(source, "record_screen", None)
    with contextlib.suppress(AttributeError):  # a source that takes no attributes reads record by record
        source.record_screen = matcher  # type: ignore[attr-defined]
    try:
        yield from rows_of(source.records(sessions, *span))
        # Late discoveries: credentials assumed by the sessions, and files read before what explained them.
        for _ in range(max(1, follow_hops) + 1):
            fresh = [c for c in matcher.derived if (c.session_id, c.event_id) not in handled]
            handled.update((c.session_id, c.event_id) for c in fresh)
            locators = matcher.locators_to_reread()
            if not fresh and not locators:
                break
            summary.reread_passes += 1
            yield from rows_of(source.records_for_credentials(fresh, locators, *span))
    finally:
        if getattr(source, "record_screen", None) is matcher:
            source.record_screen = previous_screen  # type: ignore[attr-defined]


def extract_night(
    sessions: Sequence[SessionIdentity],
    source: EventSource,
    start: datetime,
    end: datetime,
    output: Any,
    *,
    timezone: str = "UTC",
    delivery_margin: timedelta = DEFAULT_DELIVERY_MARGIN,
    lookback: timedelta = DEFAULT_LOOKBACK,
    follow_hops: int = 1,
    filesystem: pafs.FileSystem | None = None,
    now: datetime | None = None,
    late_lookback: timedelta = timedelta(0),
) -> ExtractSummary:
    """Extract the night [start, end) (UTC, one local day of `timezone`) into `output` (a folder, `s3://...`, or
    a base path on `filesystem`). Sessions whose audit window misses the night are ignored; with no session
    left, an empty partition is still written, so a retried run with fewer sessions leaves no stale events.

    Next to the partition goes its manifest (:mod:`elevation.extract.manifest`): `now` (the real clock, before
    listing) is when the night's folders were listed. With `late_lookback`, the sessions of the earlier nights
    within it are matched too, and their events found in tonight's files (delivered late) are added to those
    nights (see :mod:`elevation.extract.late`); `summary.late_events` says which nights and sessions gained."""
    if start.tzinfo is None or end.tzinfo is None or end <= start:
        raise ValueError(f"bad night window {start!r} .. {end!r}")
    listed_at = now or datetime.now(UTC)
    night = night_of(start, timezone)
    active = sessions_for_night(sessions, start, end)
    span = read_span(start, end, delivery_margin, lookback)
    summary = ExtractSummary(
        night=night,
        start=start,
        end=end,
        read_start=span[0],
        read_end=span[1],
        sessions=len(active),
        events_per_session=dict.fromkeys((session.session_id for session in active), 0),
    )
    if filesystem is None:
        filesystem, base = resolve_location(output)
    else:
        base = str(output).rstrip("/")
    earlier = [session for session in sessions_for_night(sessions, start - late_lookback, start)
               if session not in active] if late_lookback > timedelta(0) else []
    late = LateEvents(start - late_lookback, timezone) if earlier and hasattr(source, "keep_events_from") else None
    if late is not None:
        source.keep_events_from = late.start  # type: ignore[attr-defined]
    matcher = SessionMatcher([*active, *earlier], follow_hops=follow_hops)
    rows: Iterator[dict[str, Any]] = (
        _matched_rows(matcher, source, [*active, *earlier], start, end, span, follow_hops, summary, late)
        if active or earlier else iter(())
    )
    keep = {session.session_id for session in active}
    previous = read_manifest(filesystem, base, night)  # what earlier merges of late events added stays known
    written = write_partition(filesystem, base, night, carried_over(filesystem, base, night, rows, keep))
    found = dict(summary.events_per_session)  # what the source gave this run (the partition may hold more)
    summary.events_per_session = {**dict.fromkeys(keep, 0),
                                  **Counter(_session_ids(filesystem, written.path))}
    if late is not None:
        summary.late_events = {day.isoformat(): gained
                               for day, gained in merge_late(filesystem, base, late).items()}
    report = source.report
    summary.events_written = written.rows
    summary.files_written = [written.path]
    summary.output_bytes = written.bytes
    summary.bytes_scanned = report.bytes_scanned
    summary.queries = list(report.queries)
    summary.objects_read = report.objects_read
    summary.records_read = report.records_read
    summary.warnings = list(report.warnings)
    summary.minted_credentials = [c for c in matcher.minted if owns(start, end, c.event_time)]
    summary.derived_credentials = [c for c in matcher.derived if owns(start, end, c.issued_at)]
    summary.problems = _problems(source, active, start, end, summary.warnings, found)
    write_manifest(filesystem, base, night, NightManifest(
        night=night.isoformat(), source="s3" if hasattr(source, "empty_days") else "lake",
        listed_at=listed_at.isoformat(), read_start=span[0].isoformat(), read_end=span[1].isoformat(),
        events_per_session=dict(summary.events_per_session), problems=summary.problems,
        accounts=sorted({session.account_id for session in active}),
        rewrites=previous.rewrites if previous else 0,
        late_events={key: value for key, value in (previous.late_events if previous else {}).items()
                     if key in keep},
    ))
    for problem in summary.problems:
        if problem.is_error:
            log.error("night %s: %s", night, problem.message)
    log.info(
        "night %s: %d events for %d sessions, %d warnings, %d bytes scanned",
        night,
        summary.events_written,
        len(active),
        len(summary.warnings),
        summary.bytes_scanned,
    )
    return summary


_TRAIL_FOLDER = re.compile(r"/AWSLogs/(?:o-[a-z0-9]+/)?(\d{12})/CloudTrail/[^/]+/(\d{4})/(\d{2})/(\d{2})/")


def _problems(
    source: EventSource, sessions: Sequence[SessionIdentity], start: datetime, end: datetime,
    warnings: Sequence[SourceWarning], found: dict[str, int],
) -> list[DataProblem]:
    """Missing days (S3: a session's account with no object at all in a day folder of its window), sessions
    a closed Lake query returned nothing for, and every skipped or partly read file, placed by account and day."""
    problems: list[DataProblem] = []
    listed = getattr(source, "listed", None)
    if listed is not None:
        problems += missing_days(sessions, start, end, listed)
    else:
        for session in sessions:
            if not found.get(session.session_id) and session.audit_window[1] <= end:
                problems.append(DataProblem(
                    "empty", f"CloudTrail Lake returned no events for session {session.session_id} (account "
                    f"{session.account_id}, window closed): check that extract.lake_event_data_store_arn "
                    "collects this account", session.account_id, session_id=session.session_id))
    for warning in warnings:
        folder = _TRAIL_FOLDER.search(warning.locator)
        account, day = (folder.group(1), "-".join(folder.group(2, 3, 4))) if folder else (None, None)
        problems.append(DataProblem("skipped", f"{warning.locator}: {warning.reason}", account, day,
                                    warning.locator))
    return problems


def _session_ids(filesystem: pafs.FileSystem, path: str) -> list[str]:
    import pyarrow.parquet as pq

    with filesystem.open_input_file(path) as source:
        return pq.read_table(source, columns=["session_id"]).column("session_id").to_pylist()


def plan_lake_queries(
    sessions: Sequence[SessionIdentity],
    start: datetime,
    end: datetime,
    event_data_store: str,
    *,
    delivery_margin: timedelta = DEFAULT_DELIVERY_MARGIN,
    lookback: timedelta = DEFAULT_LOOKBACK,
) -> list[str]:
    """The statements :func:`extract_night` will run for this night on Lake, for the deferrable path: the DAG
    starts them, waits in `CloudTrailLakeQueryTrigger`, and passes `{statement: (query_id, bytes_scanned)}` as
    `LakeSource(ready_queries=...)`, so extract_night fetches those results instead of scanning again."""
    from elevation.cloudtrail.lake import build_sessions_queries

    active = sessions_for_night(sessions, start, end)
    if not active:
        return []
    return build_sessions_queries(event_data_store, active, *read_span(start, end, delivery_margin, lookback))
