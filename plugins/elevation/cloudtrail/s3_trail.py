"""Trail log files in S3 as a source: list and read only the night's folders of the accounts that matter.

A trail delivers gzip JSON files under `AWSLogs/[o-orgid/]ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/`, named after
the delivery time (`..._20240731T1305Z_<random>.json.gz`), in the folder of the delivery day (UTC). So the source
lists, per account and region (regions configured, or listed from the bucket), the UTC days that the read span
touches, keeps the objects whose delivery time can hold events of the span, and reads them one at a time
(a few fetched ahead in threads): a night is never held in one list. A file that cannot be read (corrupt or
truncated gzip, invalid JSON, no Records) or a record without eventID/eventTime is skipped with a warning that
names the object; the rest of the night goes on.
"""

from __future__ import annotations

import logging
import re
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

from elevation.cloudtrail.matcher import DerivedCredential, parse_assumed_role_arn
from elevation.cloudtrail.records import (
    PARSE_THREADS,
    MalformedLogFile,
    SourceReport,
    SourceWarning,
    TruncatedLogFile,
    columnar_enabled,
    iter_records,
    parse_trail_file,
    screened_records,
    trail_columns,
)
from elevation.cloudtrail.schema import parse_event_time
from elevation.cloudtrail.sessions import ACCOUNT_ID, SessionIdentity

log = logging.getLogger(__name__)

__all__ = [
    "S3TrailSource",
    "SourceReport",
    "SourceWarning",
    "account_prefix",
    "day_prefix",
    "delivery_time",
    "utc_days",
]

DELIVERY_STAMP = re.compile(r"_(\d{8}T\d{4})Z_")
#: A file's name carries the end of its delivery period; events in it can be this much older than the stamp
#: beyond CloudTrail's usual delay, so files stamped this long before the span start are still read.
DELIVERY_SLACK = timedelta(minutes=5)
ORG_ID = re.compile(r"o-[a-z0-9]{10,32}")
#: Files of an account followed for chained credentials are read this long after the credentials expire.
DELIVERY_MARGIN_FOR_FOLLOW = timedelta(minutes=15)


def utc_days(start: datetime, end: datetime) -> list[date]:
    """Every UTC calendar day that [start, end] touches (the delivery folders to list)."""
    first, last = start.astimezone(UTC).date(), end.astimezone(UTC).date()
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]


def account_prefix(prefix: str, org_id: str | None, account_id: str) -> str:
    """`[prefix/]AWSLogs/[o-org/]ACCOUNT/CloudTrail/` with the values validated (they become S3 prefixes)."""
    if not ACCOUNT_ID.fullmatch(account_id):
        raise ValueError(f"not an AWS account id: {account_id!r}")
    if org_id is not None and not ORG_ID.fullmatch(org_id):
        raise ValueError(f"not an AWS organization id: {org_id!r}")
    parts = [prefix.strip("/")] if prefix.strip("/") else []
    parts.append("AWSLogs")
    if org_id:
        parts.append(org_id)
    parts += [account_id, "CloudTrail"]
    return "/".join(parts) + "/"


def day_prefix(account_root: str, region: str, day: date) -> str:
    return f"{account_root}{region}/{day:%Y/%m/%d}/"


def delivery_time(key: str) -> datetime | None:
    """The delivery stamp in a trail file's name, or None when the name does not carry one."""
    found = DELIVERY_STAMP.search(key.rsplit("/", 1)[-1])
    if not found:
        return None
    return datetime.strptime(found.group(1), "%Y%m%dT%H%M").replace(tzinfo=UTC)


def may_hold_span(key: str, start: datetime, end: datetime) -> bool:
    """Whether a file delivered at its stamp can hold events of [start, end]: delivered after start (minus
    slack). Files stamped after `end` are kept too when they are in a listed folder: a late run reads
    late deliveries, and the event time filter decides."""
    stamp = delivery_time(key)
    return stamp is None or stamp >= start - DELIVERY_SLACK


class S3TrailSource:
    """Reads trail files for the accounts of the night's sessions (plus `extra_accounts`)."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        prefix: str = "",
        org_id: str | None = None,
        regions: Sequence[str] | None = None,
        extra_accounts: Iterable[str] = (),
        prefetch: int = 8,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.org_id = org_id
        self.regions = list(regions) if regions is not None else None
        self.extra_accounts = list(extra_accounts)
        for account in self.extra_accounts:
            account_prefix(prefix, org_id, account)  # validates
        self.prefetch = max(1, prefetch)
        self._accounts_read: set[str] = set()
        self.report = SourceReport()
        #: Objects listed per (session account, UTC day folder), over all regions: a day with none at all is
        #: a layout mistake (prefix, org id) or a broken trail, never a quiet day (see :meth:`empty_days`).
        self.listed: Counter[tuple[str, date]] = Counter()
        #: Records older than the listed span are kept from this time on: a night's run reads the files delivered
        #: during it, and late deliveries of earlier nights' events are in them (see extract_night's late_lookback).
        self.keep_events_from: datetime | None = None
        #: Objects listed per (account, UTC day) whose S3 LastModified is at or after `changed_since`.
        self.changed_since: datetime | None = None
        self.changed: Counter[tuple[str, date]] = Counter()

    # -- listing ----------------------------------------------------------------------------------------------

    def _regions_of(self, account_root: str) -> list[str]:
        if self.regions is not None:
            return self.regions
        paginator = self.client.get_paginator("list_objects_v2")
        found = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=account_root, Delimiter="/"):
            for common in page.get("CommonPrefixes") or []:
                found.append(common["Prefix"][len(account_root) :].rstrip("/"))
        return sorted(found)

    def iter_keys(
        self, accounts: Iterable[str], start: datetime, end: datetime, *, count: bool = False
    ) -> Iterator[str]:
        """Keys of the files that can hold events of [start, end], folder by folder (lazily). With `count`, the
        objects of each (account, day) are counted in :attr:`listed` (and :attr:`changed`)."""
        for account in sorted(set(accounts)):
            root = account_prefix(self.prefix, self.org_id, account)
            days = utc_days(start, end)
            if count:
                for day in days:
                    self.listed[(account, day)] += 0  # known, even when nothing is found
            for region in self._regions_of(root):
                for day in days:
                    paginator = self.client.get_paginator("list_objects_v2")
                    for page in paginator.paginate(Bucket=self.bucket, Prefix=day_prefix(root, region, day)):
                        for item in page.get("Contents") or []:
                            self.report.objects_listed += 1
                            key = item["Key"]
                            if key.endswith("/"):
                                continue
                            if count:
                                self.listed[(account, day)] += 1
                                modified = item.get("LastModified")
                                if self.changed_since is not None and modified is not None and (
                                    modified >= self.changed_since
                                ):
                                    self.changed[(account, day)] += 1
                            if may_hold_span(key, start, end):
                                yield key

    def empty_days(self) -> list[tuple[str, date]]:
        """(account, UTC day) pairs of the sessions' accounts for which the listing found no object at all."""
        return sorted(pair for pair, found in self.listed.items() if not found)

    def changed_objects(
        self, accounts: Iterable[str], start: datetime, end: datetime, since: datetime
    ) -> Counter[tuple[str, date]]:
        """Objects of these accounts' day folders for [start, end] that landed (LastModified) at or after `since`:
        the late deliveries a night written at `since` has not read. Lists only, reads nothing."""
        self.changed_since = since
        self.changed = Counter()
        for _ in self.iter_keys(accounts, start, end, count=True):
            pass
        return Counter({pair: found for pair, found in self.changed.items() if found})

    # -- reading ----------------------------------------------------------------------------------------------

    def _fetch(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def _fetched(
        self, keys: Iterable[str], columnar: bool = False
    ) -> Iterator[tuple[str, bytes | Exception, Any]]:
        """(key, bytes or the error, the file parsed natively or None) in key order, with up to `prefetch` GETs in
        flight; with `columnar`, each file fetched is also decompressed and parsed ahead (without the GIL), by
        as many threads as there are cores (more would only fight over the GIL)."""
        parsers = ThreadPoolExecutor(max_workers=PARSE_THREADS, thread_name_prefix="trail-parse")

        def fetch(key: str) -> tuple[bytes, Future[Any] | None]:
            data = self._fetch(key)
            return data, (parsers.submit(parse_trail_file, data) if columnar else None)

        with parsers, ThreadPoolExecutor(max_workers=self.prefetch, thread_name_prefix="trail-get") as pool:
            window: deque[tuple[str, Future[tuple[bytes, Future[Any] | None]]]] = deque()
            for key in keys:
                window.append((key, pool.submit(fetch, key)))
                if len(window) >= self.prefetch * 2:
                    yield self._result(*window.popleft())
            while window:
                yield self._result(*window.popleft())

    @staticmethod
    def _result(
        key: str, future: Future[tuple[bytes, Future[Any] | None]]
    ) -> tuple[str, bytes | Exception, Any]:
        try:
            data, parsing = future.result()
        except Exception as error:  # reported per object, the night goes on
            return key, error, None
        try:
            return key, data, (parsing.result() if parsing is not None else None)
        except Exception:  # not parsed natively: read the ordinary way
            return key, data, None

    def _read_objects(
        self, keys: Iterable[str], start: datetime, end: datetime
    ) -> Iterator[tuple[dict, str]]:
        # A matcher set as `record_screen` (the extract does) lets ordinary trail files be read natively: only the
        # records that may be a session's become dicts; any other file is read record by record (iter_records).
        screen = getattr(self, "record_screen", None)
        for key, data, parsed in self._fetched(keys, columnar=screen is not None and columnar_enabled()):
            locator = f"s3://{self.bucket}/{key}"
            if isinstance(data, Exception):
                self.report.warn(locator, f"could not read the object: {data}")
                continue
            self.report.objects_read += 1
            self.report.bytes_read += len(data)
            columns = trail_columns(data, parsed)
            if columns is not None:
                self.report.records_read += columns.count
                first = self.keep_events_from or start
                for record in screened_records(columns, screen, locator, first, end):
                    yield record, locator
                continue
            problems: list[TruncatedLogFile] = []
            try:
                records = list(iter_records(data, locator, on_problem=problems.append))
            except MalformedLogFile as error:
                self.report.warn(locator, error.reason)
                continue
            for problem in problems:  # truncated: the records before the cut are read, the file still reported
                self.report.warn(locator, problem.reason)
            for index, record in enumerate(records):
                self.report.records_read += 1
                moment = self._checked_time(record, locator, index)
                if moment is None:
                    continue
                if (self.keep_events_from or start) <= moment <= end:
                    yield record, locator

    def _checked_time(self, record: dict[str, Any], locator: str, index: int) -> datetime | None:
        if not record.get("eventID"):
            self.report.records_skipped += 1
            self.report.warn(locator, f"Records[{index}] has no eventID")
            return None
        try:
            return parse_event_time(record["eventTime"])
        except (KeyError, ValueError, TypeError):
            self.report.records_skipped += 1
            self.report.warn(locator, f"Records[{index}] ({record.get('eventID')}) has no valid eventTime")
            return None

    # -- the source interface ---------------------------------------------------------------------------------

    def records(
        self, sessions: Sequence[SessionIdentity], start: datetime, end: datetime
    ) -> Iterator[tuple[dict[str, Any], str]]:
        """(record, object URL) of every record with eventTime in [start, end] in the sessions' accounts."""
        accounts = {session.account_id for session in sessions} | set(self.extra_accounts)
        self._accounts_read |= accounts
        yield from self._read_objects(self.iter_keys(accounts, start, end, count=True), start, end)

    def records_for_credentials(
        self,
        credentials: Sequence[DerivedCredential],
        locators: set[str],
        start: datetime,
        end: datetime,
    ) -> Iterator[tuple[dict[str, Any], str]]:
        """Read again the objects that held records seen before the event that made them a session's, and read
        the accounts the sessions assumed roles in (not read yet) for the lifetime of those credentials."""
        prefix = f"s3://{self.bucket}/"
        keys = sorted(locator[len(prefix) :] for locator in locators if locator.startswith(prefix))
        yield from self._read_objects(keys, start, end)
        lifetimes: dict[str, tuple[datetime, datetime]] = {}
        for credential in credentials:
            parsed = parse_assumed_role_arn(credential.assumed_role_arn)
            if parsed is None or parsed[0] in self._accounts_read or not ACCOUNT_ID.fullmatch(parsed[0]):
                continue
            first, last = lifetimes.get(parsed[0], (credential.issued_at, credential.expires_at))
            lifetimes[parsed[0]] = (min(first, credential.issued_at), max(last, credential.expires_at))
        for account, (first, last) in sorted(lifetimes.items()):
            window = (max(start, first), min(end, last + DELIVERY_MARGIN_FOR_FOLLOW))
            if window[0] > window[1]:
                continue
            log.info("following assumed-role credentials into account %s", account)
            self._accounts_read.add(account)
            yield from self._read_objects(self.iter_keys({account}, *window), start, end)
