"""Late deliveries: events of an earlier night that reach the trail after that night was written.

CloudTrail names and files a log by its delivery time, so an event delivered late sits in a later folder, among the
files a later night's run reads anyway. That run keeps the records it matches whose time belongs to an earlier
night still inside the re-check lookback (:class:`LateEvents`), and :func:`merge_late` adds the ones that night's
partition does not hold yet, rewriting it atomically (exactly once: keyed by session and eventID). A night is also
never made smaller by a re-run: :func:`carried_over` keeps the events its partition already holds for sessions that
are still the night's, so a retried or manual run of an old night does not drop what an earlier merge added.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from elevation.cloudtrail.schema import EVENT_SCHEMA, record_to_row
from elevation.extract.manifest import read_manifest, write_manifest
from elevation.extract.nights import night_of
from elevation.extract.writer import FINAL_NAME, partition_dir, write_partition

log = logging.getLogger(__name__)


@dataclass
class LateEvents:
    """Matched records of earlier nights ([start, the night's start)), by owner night and (session, eventID)."""

    start: datetime
    timezone: str = "UTC"
    rows: dict[date, dict[tuple[str, str], dict[str, Any]]] = field(default_factory=dict)

    def add(self, record: dict[str, Any], moment: datetime, matches: Sequence[Any], locator: str) -> None:
        night = self.rows.setdefault(night_of(moment, self.timezone), {})
        for match in matches:
            key = (match.session_id, str(record.get("eventID")))
            if key in night:
                continue
            try:
                night[key] = record_to_row(record, match.session_id)
            except (KeyError, ValueError, TypeError) as error:
                log.warning("late record %s in %s unusable: %r", record.get("eventID"), locator, error)


def _partition_table(filesystem: pafs.FileSystem, base: str, night: date) -> pa.Table | None:
    path = f"{partition_dir(base, night)}/{FINAL_NAME}"
    if filesystem.get_file_info(path).type != pafs.FileType.File:
        return None
    with filesystem.open_input_file(path) as source:
        return pq.read_table(source, schema=EVENT_SCHEMA)


def carried_over(
    filesystem: pafs.FileSystem, base: str, night: date, rows: Iterable[dict[str, Any]], sessions: set[str]
) -> Iterator[dict[str, Any]]:
    """`rows`, then the rows the night's current partition holds for `sessions` that `rows` did not repeat."""
    written: set[tuple[str, str]] = set()
    for row in rows:
        written.add((row["session_id"], row["eventID"]))
        yield row
    existing = _partition_table(filesystem, base, night)
    if existing is None or not existing.num_rows:
        return
    for row in existing.to_pylist():
        if row["session_id"] in sessions and (row["session_id"], row["eventID"]) not in written:
            yield row


def merge_late(filesystem: pafs.FileSystem, base: str, late: LateEvents) -> dict[date, dict[str, int]]:
    """Add each earlier night's late events its partition lacks; {night: {session id: events added}}.

    A night that was never extracted is left alone (its own run will read them). The manifest records the
    rewrite and the events each session gained late, for the audit to say so."""
    added: dict[date, dict[str, int]] = {}
    for night, rows in sorted(late.rows.items()):
        manifest = read_manifest(filesystem, base, night)
        existing = _partition_table(filesystem, base, night)
        if manifest is None or existing is None:
            log.info("night %s: %d late events found, but the night was never extracted", night, len(rows))
            continue
        held = set(zip(existing.column("session_id").to_pylist(), existing.column("eventID").to_pylist(),
                       strict=True))
        new = [row for key, row in rows.items() if key not in held]
        if not new:
            continue
        write_partition(filesystem, base, night, (*existing.to_pylist(), *new))
        gained = Counter(row["session_id"] for row in new)
        for session_id, count in gained.items():
            manifest.events_per_session[session_id] = manifest.events_per_session.get(session_id, 0) + count
            manifest.late_events[session_id] = manifest.late_events.get(session_id, 0) + count
        manifest.rewrites += 1
        write_manifest(filesystem, base, night, manifest)
        added[night] = dict(gained)
        log.warning("night %s: %d events delivered late were added (%s)", night, len(new),
                    ", ".join(f"session {key}: {value}" for key, value in sorted(gained.items())))
    return added
