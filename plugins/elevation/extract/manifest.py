"""What a night's extract knew when it wrote the partition: `date=YYYY-MM-DD/_manifest.json` next to the events.

The audit reads it to tell the reader what the data lacks (days of an account with no trail data at all, files
skipped or only partly readable), and the next runs read it to find late deliveries: objects that landed in the
night's folders after `listed_at` were not read, so the night is extracted again. The name starts with `_`, so
Parquet dataset readers (pyarrow, DuckDB, Athena) never take it for data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta

from pyarrow import fs as pafs

from elevation.cloudtrail.sessions import SessionIdentity
from elevation.extract.writer import partition_dir

MANIFEST_NAME = "_manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class DataProblem:
    """Something about the CloudTrail data behind a report that its reader must know.

    `missing`: a day of a session's account with no trail data at all (a wrong `s3_prefix` / `s3_org_id`, or a
    broken trail): an error, the audit of that day is not clean, it is blind. `empty`: CloudTrail Lake returned
    nothing for a session whose window is closed. `skipped`: a file skipped or only partly readable.
    `account_id` / `day` (UTC, YYYY-MM-DD) say which reports it touches; `locator` names the file or query."""

    kind: str  # missing | empty | skipped
    message: str
    account_id: str | None = None
    day: str | None = None
    locator: str | None = None
    session_id: str | None = None

    @property
    def is_error(self) -> bool:
        return self.kind == "missing"


def missing_data_message(account_id: str, day: date) -> str:
    return (f"no CloudTrail data found for account {account_id} on day {day:%Y-%m-%d}: "
            "check extract.s3_prefix / s3_org_id (and that the trail delivers this account)")


def missing_days(
    sessions: Sequence[SessionIdentity], start: datetime, end: datetime, listed: Mapping[tuple[str, date], int]
) -> list[DataProblem]:
    """The (account, UTC day) folders that a session's window within the night [start, end) touches and where
    the listing found no object at all. Only pairs that were listed are judged (`listed` has them, even at 0)."""
    found: dict[tuple[str, date], DataProblem] = {}
    for session in sessions:
        window_start, window_end = session.audit_window
        first, last = max(window_start, start), min(window_end, end - timedelta(microseconds=1))
        if first > last:
            continue
        day = first.astimezone(UTC).date()
        while day <= last.astimezone(UTC).date():
            pair = (session.account_id, day)
            if pair in listed and not listed[pair] and pair not in found:
                found[pair] = DataProblem("missing", missing_data_message(*pair), session.account_id,
                                          day.isoformat())
            day += timedelta(days=1)
    return [found[pair] for pair in sorted(found)]


@dataclass
class NightManifest:
    night: str
    source: str  # s3 | lake
    listed_at: str  # ISO, real clock: objects that landed at or after it were not read
    read_start: str
    read_end: str
    events_per_session: dict[str, int] = field(default_factory=dict)
    problems: list[DataProblem] = field(default_factory=list)
    accounts: list[str] = field(default_factory=list)  # the sessions' accounts the night read
    rewrites: int = 0  # how many times late deliveries were merged into the night
    late_events: dict[str, int] = field(default_factory=dict)  # session id -> events that arrived late
    version: int = MANIFEST_VERSION

    @property
    def listed_time(self) -> datetime:
        return datetime.fromisoformat(self.listed_at)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, indent=1).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> NightManifest:
        document = json.loads(data)
        problems = [DataProblem(**problem) for problem in document.pop("problems", [])]
        known = {name for name in cls.__dataclass_fields__}
        return cls(problems=problems, **{key: value for key, value in document.items() if key in known})


def manifest_path(base: str, night: date) -> str:
    return f"{partition_dir(base, night)}/{MANIFEST_NAME}"


def write_manifest(filesystem: pafs.FileSystem, base: str, night: date, manifest: NightManifest) -> None:
    """Written after the partition is committed (a manifest never describes a partition that is not there)."""
    if not isinstance(filesystem, pafs.S3FileSystem):  # S3 has no folders
        filesystem.create_dir(partition_dir(base, night), recursive=True)
    with filesystem.open_output_stream(manifest_path(base, night)) as sink:
        sink.write(manifest.to_json())


def read_manifest(filesystem: pafs.FileSystem, base: str, night: date) -> NightManifest | None:
    """The night's manifest; None when the night was never extracted (or by a version that wrote none)."""
    path = manifest_path(base, night)
    if filesystem.get_file_info(path).type != pafs.FileType.File:
        return None
    with filesystem.open_input_stream(path) as source:
        return NightManifest.from_json(source.read())


def problems_touching(problems: Iterable[DataProblem], account_id: str, days: Iterable[str],
                      session_id: str) -> tuple[DataProblem, ...]:
    """The problems a session's report must show: its account's days, and its own (Lake's empty result).
    A skipped file of its account counts for every report of that account's days: the file's events are
    unknown, so any session of the account may have lost some."""
    wanted = set(days)
    return tuple(
        problem for problem in problems
        if problem.session_id == session_id
        or (problem.session_id is None and problem.account_id == account_id
            and (problem.day is None or problem.day in wanted))
    )
