"""Read CloudTrail records out of the files people actually have.

One reader for every shape CloudTrail data comes in: trail files delivered to S3 (`{"Records": [...]}`, usually
gzip), exports and SIEM dumps (JSON arrays, JSON Lines) and single events pasted from the console. The format is
detected from the content, never from the file name, because names lie (`.json` files that are gzip, `.gz` that
are not). A file that cannot be read raises :class:`MalformedLogFile` naming the file and what is wrong, so an
audit never silently works on less data than it thinks it has.
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
#: File names a folder walk reads (content is still sniffed); anything else (README, LICENSE) is reported as skipped.
READABLE_SUFFIXES: tuple[str, ...] = (".json", ".jsonl", ".ndjson", ".gz", ".log")


class MalformedLogFile(ValueError):
    """A CloudTrail file that cannot be read as a whole; `name` says which, `reason` what is wrong."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


@dataclass(frozen=True)
class SourceWarning:
    """Something skipped, and where: `locator` names the file, S3 object or Lake query."""

    locator: str
    reason: str


@dataclass
class SourceReport:
    """What a source read for one night and what it had to skip, for the run's summary and logs."""

    warnings: list[SourceWarning] = field(default_factory=list)
    objects_listed: int = 0
    objects_read: int = 0
    bytes_read: int = 0
    records_read: int = 0
    records_skipped: int = 0
    bytes_scanned: int = 0
    queries: list[str] = field(default_factory=list)

    def warn(self, locator: str, reason: str) -> None:
        self.warnings.append(SourceWarning(locator, reason))
        log.warning("skipped %s: %s", locator, reason)


def _decompress(data: bytes, name: str) -> bytes:
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except EOFError as error:
        raise MalformedLogFile(name, f"truncated gzip ({error})") from error
    except (OSError, zlib.error) as error:
        raise MalformedLogFile(name, f"corrupt gzip ({error})") from error


#: CloudTrail's field names; Lake exports and some SIEMs lower-case them (`eventname`, `useridentity`).
CANONICAL_FIELDS: dict[str, str] = {
    name.lower(): name
    for name in (
        "eventVersion",
        "userIdentity",
        "eventTime",
        "eventSource",
        "eventName",
        "awsRegion",
        "sourceIPAddress",
        "userAgent",
        "errorCode",
        "errorMessage",
        "requestParameters",
        "responseElements",
        "additionalEventData",
        "requestID",
        "eventID",
        "readOnly",
        "resources",
        "eventType",
        "apiVersion",
        "managementEvent",
        "recipientAccountId",
        "sharedEventID",
        "vpcEndpointId",
        "eventCategory",
        "serviceEventDetails",
        "sessionCredentialFromConsole",
        "tlsDetails",
        "addendum",
        "edgeDeviceDetails",
        "insightDetails",
    )
}
CANONICAL_IDENTITY_FIELDS: dict[str, str] = {
    name.lower(): name
    for name in (
        "type",
        "principalId",
        "arn",
        "accountId",
        "accessKeyId",
        "userName",
        "sessionContext",
        "sessionIssuer",
        "attributes",
        "creationDate",
        "mfaAuthenticated",
        "webIdFederationData",
        "sourceIdentity",
        "invokedBy",
        "identityProvider",
        "onBehalfOf",
        "userId",
        "identityStoreArn",
        "ec2RoleDelivery",
    )
}


def _canonical_identity(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            CANONICAL_IDENTITY_FIELDS.get(key, key): _canonical_identity(item) for key, item in value.items()
        }
    return value


def canonical_record(record: dict[str, Any]) -> dict[str, Any]:
    """Restore CloudTrail's field names on a record whose names were lower-cased (`eventname` -> `eventName`);
    records that already use them are returned as they are."""
    if "eventName" in record or "eventname" not in record:
        return record
    result = {CANONICAL_FIELDS.get(key.lower(), key): item for key, item in record.items()}
    if "userIdentity" in result:
        result["userIdentity"] = _canonical_identity(result["userIdentity"])
    return result


def _check_record(value: Any, name: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedLogFile(name, f"{where} is a {type(value).__name__}, not a JSON object")
    return canonical_record(value)


def _line_number(text: bytes, position: int) -> int:
    return text.count(b"\n", 0, position) + 1


def _iter_json_lines(text: bytes, name: str, start: int) -> Iterator[dict[str, Any]]:
    """One event per line; blank lines are allowed, anything else that is not a JSON object is an error."""
    line_number = _line_number(text, start)
    position = start
    while position < len(text):
        end = text.find(b"\n", position)
        if end < 0:
            end = len(text)
        line = text[position:end].strip()
        if line:
            try:
                value = json.loads(line)
            except ValueError as error:
                raise MalformedLogFile(name, f"invalid JSON at line {line_number}: {error}") from error
            yield _check_record(value, name, f"line {line_number}")
        position = end + 1
        line_number += 1


def iter_records(data: bytes, name: str) -> Iterator[dict[str, Any]]:
    """Yield the CloudTrail records of one file's bytes (gzip or not; trail file, JSON array, JSON Lines or one
    event). Raises :class:`MalformedLogFile` (possibly after yielding the good lines of a JSON Lines file)."""
    text = _decompress(data, name)
    if text.startswith(b"\xef\xbb\xbf"):
        text = text[3:]
    start = len(text) - len(text.lstrip())
    if start == len(text):
        raise MalformedLogFile(name, "empty file")
    decoder = json.JSONDecoder()
    try:
        # raw_decode needs str; decoding is lazy for JSON Lines only in the sense that we stop at the first value.
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as error:
        raise MalformedLogFile(name, f"not UTF-8 text ({error})") from error
    char_start = len(decoded) - len(decoded.lstrip())
    try:
        first, first_end = decoder.raw_decode(decoded, char_start)
    except ValueError as error:
        raise MalformedLogFile(
            name, f"invalid JSON at line {decoded.count(chr(10), 0, getattr(error, 'pos', 0)) + 1}: {error}"
        ) from error
    if decoded[first_end:].strip():
        # More than one value: JSON Lines (one object per line).
        if not isinstance(first, dict):
            raise MalformedLogFile(name, "extra data after the first JSON value (not JSON Lines of objects)")
        yield from _iter_json_lines(text, name, start)
        return
    if isinstance(first, list):
        for index, value in enumerate(first):
            yield _check_record(value, name, f"element {index}")
        return
    if not isinstance(first, dict):
        raise MalformedLogFile(name, f"a JSON {type(first).__name__}, not records")
    if "Records" in first:
        records = first["Records"]
        if not isinstance(records, list):
            raise MalformedLogFile(name, "Records is not a list")
        for index, value in enumerate(records):
            yield _check_record(value, name, f"Records[{index}]")
        return
    if {"eventName", "eventID", "eventTime", "eventname", "eventid"} & first.keys():
        yield canonical_record(first)
        return
    raise MalformedLogFile(name, "no Records (neither a trail file, a list of events nor an event)")


def _log_skip(path: Path, reason: str) -> None:
    log.warning("not a CloudTrail file, skipped: %s (%s)", path, reason)


def iter_records_from_path(
    path: Path, *, on_skip: Callable[[Path, str], None] | None = None
) -> Iterator[dict[str, Any]]:
    """Records of a file, or of every file under a folder (recursively, in sorted order).

    A file named explicitly is always read. In a folder, files whose names do not look like event files
    (README.md, LICENSE) are reported through `on_skip` (default: a logged warning), never skipped silently;
    hidden files (`.DS_Store`) are ignored. A malformed file raises :class:`MalformedLogFile`.
    """
    path = Path(path)
    if path.is_file():
        yield from iter_records(path.read_bytes(), str(path))
        return
    if not path.is_dir():
        raise FileNotFoundError(path)
    report = on_skip or _log_skip
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = file.relative_to(path)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if not file.name.lower().endswith(READABLE_SUFFIXES):
            report(file, "name does not end with " + "/".join(READABLE_SUFFIXES))
            continue
        yield from iter_records(file.read_bytes(), str(file))
