"""Read CloudTrail records out of the files people actually have.

One reader for every shape CloudTrail data comes in: trail files delivered to S3 (`{"Records": [...]}`, usually
gzip), exports and SIEM dumps (JSON arrays, JSON Lines) and single events pasted from the console. The format is
detected from the content, never from the file name, because names lie (`.json` files that are gzip, `.gz` that
are not). A file that cannot be read raises :class:`MalformedLogFile` naming the file and what is wrong, so an
audit never silently works on less data than it thinks it has.

A file cut short (a gzip whose end is missing, a text that stops mid-record) still gives the records before the
cut: :func:`iter_records` yields them, then reports a :class:`TruncatedLogFile` (a :class:`MalformedLogFile`)
saying how many were recovered, to `on_problem` when the caller passes one, else by raising it. Anything else
wrong (a corrupt gzip, invalid JSON in the middle) is not recovered: the file is rejected as a whole.
"""

from __future__ import annotations

import functools
import gzip
import json
import logging
import os
import re
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

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


class TruncatedLogFile(MalformedLogFile):
    """A file cut short: the `records_recovered` records before the cut were read, whatever followed is lost.
    `cut` says where: `gzip` (the compressed data ends early) or `text` (the JSON stops mid-record)."""

    def __init__(self, name: str, reason: str, records_recovered: int, cut: str) -> None:
        super().__init__(name, reason)
        self.records_recovered = records_recovered
        self.cut = cut


#: Receives the problem of a file whose readable records were yielded anyway (today: a truncated file).
ProblemHandler = Callable[[TruncatedLogFile], None]


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


def _gunzip_prefix(data: bytes) -> bytes:
    """What a gzip cut short decompresses to: every member's output up to where the data stops."""
    parts: list[bytes] = []
    rest = data
    while rest:
        stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
        parts.append(stream.decompress(rest))
        if not stream.eof:
            break
        rest = stream.unused_data
    return b"".join(parts)


def _decompress(data: bytes, name: str) -> tuple[bytes, bool]:
    """(the text, whether the gzip was cut short); a corrupt gzip raises."""
    if not data.startswith(GZIP_MAGIC):
        return data, False
    try:
        return gzip.decompress(data), False
    except EOFError:
        pass
    except (OSError, zlib.error) as error:
        raise MalformedLogFile(name, f"corrupt gzip ({error})") from error
    try:
        return _gunzip_prefix(data), True
    except zlib.error as error:  # corrupt before the cut: nothing trustworthy
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


_NUMBER_TAIL = re.compile(r"[0-9.eE+-]+")
_LITERALS = ("true", "false", "null", "NaN", "Infinity", "-Infinity")


def _ends_mid_value(document: str, error: json.JSONDecodeError) -> bool:
    """Whether a decoding error only says that the text stopped (a prefix of valid JSON), not that it is wrong."""
    rest = document[error.pos :].rstrip()
    if not rest or error.msg.startswith("Unterminated string"):  # the scanners say this only at the end
        return True
    if error.msg.startswith("Invalid \\uXXXX escape"):
        return len(rest) <= 5 and document[error.pos :] == rest
    if document[error.pos :] != rest:  # something after the failing token: not at the end
        return False
    if error.msg.startswith("Expecting value") and any(
        literal.startswith(rest) and literal != rest for literal in _LITERALS
    ):
        return True
    return bool(_NUMBER_TAIL.fullmatch(rest)) and error.msg.startswith("Expecting")


def _invalid(name: str, document: str, error: json.JSONDecodeError) -> MalformedLogFile:
    return MalformedLogFile(
        name, f"invalid JSON at line {document.count(chr(10), 0, error.pos) + 1}: {error}"
    )


#: What a record yields while parsing: the description of the cut when the text stops mid-record, else None.
_Parsed = Generator[dict[str, Any], None, str | None]


def _iter_json_lines(text: bytes, name: str, start: int) -> _Parsed:
    """One event per line; blank lines are allowed, anything else that is not a JSON object is an error, except
    a last line cut short, without its newline (the file is truncated: the lines before it are the records)."""
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
                last = end >= len(text)  # no newline after it: the writer stopped mid-line
                decoded = line.decode("utf-8", "replace")
                if last and isinstance(error, json.JSONDecodeError) and _ends_mid_value(decoded, error):
                    return f"the last line ({line_number}) stops mid-record"
                raise MalformedLogFile(name, f"invalid JSON at line {line_number}: {error}") from error
            yield _check_record(value, name, f"line {line_number}")
        position = end + 1
        line_number += 1
    return None


_TRAIL_OPENING = re.compile(r'\{\s*"Records"\s*:\s*\[')


def _recover_elements(document: str, position: int, name: str, label: str) -> _Parsed:
    """The complete elements of an array that the text cuts short, from `position` (just after its `[`)."""
    decoder = json.JSONDecoder()
    index = 0
    length = len(document)
    while True:
        while position < length and document[position].isspace():
            position += 1
        if position >= length or document[position] == "]":
            break
        try:
            value, position = decoder.raw_decode(document, position)
        except json.JSONDecodeError as error:
            if _ends_mid_value(document, error):
                break
            raise _invalid(name, document, error) from error
        yield _check_record(value, name, f"{label}[{index}]" if label else f"element {index}")
        index += 1
        while position < length and document[position].isspace():
            position += 1
        if position < length and document[position] == ",":
            position += 1
        elif position < length and document[position] != "]":
            raise MalformedLogFile(
                name, f"invalid JSON at line {document.count(chr(10), 0, position) + 1}: expecting ','"
            )
    return f"the text stops mid-record at line {document.count(chr(10)) + 1}"


def _parse(text: bytes, name: str) -> _Parsed:
    """The records of a file's text; returns how the text is cut short, if it is (None when it is whole)."""
    if text.startswith(b"\xef\xbb\xbf"):
        text = text[3:]
    start = len(text) - len(text.lstrip())
    if start == len(text):
        raise MalformedLogFile(name, "empty file")
    decoder = json.JSONDecoder()
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.end != len(text) or error.reason != "unexpected end of data":
            raise MalformedLogFile(name, f"not UTF-8 text ({error})") from error
        text = text[: error.start]  # a character cut in two at the end: the JSON is cut there too
        decoded = text.decode("utf-8")
    char_start = len(decoded) - len(decoded.lstrip())
    try:
        first, first_end = decoder.raw_decode(decoded, char_start)
    except json.JSONDecodeError as error:
        if not _ends_mid_value(decoded, error):
            raise _invalid(name, decoded, error) from error
        if decoded.startswith("[", char_start):
            return (yield from _recover_elements(decoded, char_start + 1, name, ""))
        opening = _TRAIL_OPENING.match(decoded, char_start)
        if opening:
            return (yield from _recover_elements(decoded, opening.end(), name, "Records"))
        return f"the text stops mid-record at line {decoded.count(chr(10)) + 1}"  # one event or line, cut
    if decoded[first_end:].strip():
        # More than one value: JSON Lines (one object per line).
        if not isinstance(first, dict):
            raise MalformedLogFile(name, "extra data after the first JSON value (not JSON Lines of objects)")
        return (yield from _iter_json_lines(text, name, start))
    if isinstance(first, list):
        for index, value in enumerate(first):
            yield _check_record(value, name, f"element {index}")
        return None
    if not isinstance(first, dict):
        raise MalformedLogFile(name, f"a JSON {type(first).__name__}, not records")
    if "Records" in first:
        records = first["Records"]
        if not isinstance(records, list):
            raise MalformedLogFile(name, "Records is not a list")
        for index, value in enumerate(records):
            yield _check_record(value, name, f"Records[{index}]")
        return None
    if {"eventName", "eventID", "eventTime", "eventname", "eventid"} & first.keys():
        yield canonical_record(first)
        return None
    raise MalformedLogFile(name, "no Records (neither a trail file, a list of events nor an event)")


def iter_records(
    data: bytes, name: str, *, on_problem: ProblemHandler | None = None
) -> Iterator[dict[str, Any]]:
    """Yield the CloudTrail records of one file's bytes (gzip or not; trail file, JSON array, JSON Lines or one
    event). Raises :class:`MalformedLogFile` (possibly after yielding the good lines of a JSON Lines file).

    A truncated file (gzip cut short, text ending mid-record) yields every complete record before the cut, then
    reports a :class:`TruncatedLogFile` ("truncated gzip (...): N records recovered, the rest is lost"): passed to
    `on_problem` when given (the iteration then ends normally), raised otherwise, so a caller that wants the
    whole file or nothing still gets the error."""
    text, gzip_cut = _decompress(data, name)
    count = 0
    if gzip_cut and not text.strip():
        cut = None
    else:
        parsed = _parse(text, name)
        while True:
            try:
                record = next(parsed)
            except StopIteration as stop:
                cut = stop.value
                break
            count += 1
            yield record
    if not gzip_cut and cut is None:
        return
    outcome = f"{count} record{'' if count == 1 else 's'} recovered, the rest is lost"
    if gzip_cut:
        problem = TruncatedLogFile(
            name, f"truncated gzip (the compressed data ends at byte {len(data)}): {outcome}", count, "gzip"
        )
    else:
        problem = TruncatedLogFile(name, f"truncated JSON ({cut}): {outcome}", count, "text")
    if on_problem is None:
        raise problem
    on_problem(problem)


def _log_skip(path: Path, reason: str) -> None:
    log.warning("not a CloudTrail file, skipped: %s (%s)", path, reason)


def iter_records_from_path(
    path: Path,
    *,
    on_skip: Callable[[Path, str], None] | None = None,
    on_problem: ProblemHandler | None = None,
) -> Iterator[dict[str, Any]]:
    """Records of a file, or of every file under a folder (recursively, in sorted order).

    A file named explicitly is always read. In a folder, files whose names do not look like event files
    (README.md, LICENSE) are reported through `on_skip` (default: a logged warning), never skipped silently;
    hidden files (`.DS_Store`) are ignored. A malformed file raises :class:`MalformedLogFile`; a truncated one
    yields what it holds and then goes to `on_problem` (or raises, without one), as in :func:`iter_records`.
    """
    path = Path(path)
    if path.is_file():
        yield from iter_records(path.read_bytes(), str(path), on_problem=on_problem)
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
        yield from iter_records(file.read_bytes(), str(file), on_problem=on_problem)


# -- the columnar path: decide "not a session's" without building a dict per record ----------------------------------

#: Set to 0 to read every trail file through :func:`iter_records` (the benchmark's "before", and a way out).
COLUMNAR_ENV = "ELEVATION_COLUMNAR_READS"
#: userIdentity fields (and sessionContext.sessionIssuer fields) that say who acted: all the matcher reads.
IDENTITY_FIELDS: tuple[str, ...] = ("type", "arn", "accountId", "accessKeyId", "principalId")
ISSUER_FIELDS: tuple[str, ...] = ("type", "arn", "userName", "accountId", "principalId")
_TIME_FORM = "%Y-%m-%dT%H:%M:%SZ"
#: Threads that parse trail files natively: one per core (the parse runs without the GIL; more threads than
#: cores only fight over the GIL for the Python between the native calls).
PARSE_THREADS = os.cpu_count() or 1


def columnar_enabled() -> bool:
    return os.environ.get(COLUMNAR_ENV, "1") != "0"


@functools.cache
def _columns_schema() -> Any:
    import pyarrow as pa

    text = pa.string()
    issuer = pa.struct([(name, text) for name in ISSUER_FIELDS])
    identity = pa.struct(
        [(name, text) for name in IDENTITY_FIELDS]
        + [("sessionContext", pa.struct([("sessionIssuer", issuer)]))]
    )
    record = pa.struct(
        [("eventID", text), ("eventTime", text), ("eventName", text), ("userIdentity", identity)]
    )
    return pa.schema([("Records", pa.list_(record))])


@dataclass
class TrailColumns:
    """A trail file read natively (pyarrow.json, typed columns only): the first and last event time, the file's
    distinct identities, and per record (on demand) its event time and the index of its identity; the records
    themselves are parsed from `data` (the object as read, gzip or not) only if asked."""

    data: bytes
    count: int
    earliest: str  # event times are CloudTrail's `YYYY-MM-DDTHH:MM:SSZ` (checked), which sort as text
    latest: str
    identities: list[tuple[str | None, ...]]  # distinct identities (see :func:`identity_of_key`)
    _times: Any = None  # pyarrow arrays until asked for
    _codes: Any = None
    _records: list[Any] | None = None

    @functools.cached_property
    def times(self) -> list[str]:
        """Per record, its eventTime."""
        return self._times.to_pylist()

    @functools.cached_property
    def codes(self) -> list[int]:
        """Per record, the index of its identity in `identities`."""
        return self._codes.to_pylist()

    def record(self, index: int) -> dict[str, Any]:
        """The whole record, as :func:`iter_records` gives it (the file's JSON is parsed on first use; the parse
        that made these columns checked that the gzip is one whole member, so decompressing again is safe)."""
        if self._records is None:
            data = self.data
            text = zlib.decompress(data, 16 + zlib.MAX_WBITS) if data.startswith(GZIP_MAGIC) else data
            self._records = json.loads(text)["Records"]
        return self._records[index]


def identity_of_key(key: tuple[str | None, ...]) -> dict[str, Any]:
    """The userIdentity (the fields the matcher reads) behind an identity of :class:`TrailColumns`."""
    identity: dict[str, Any] = dict(zip(IDENTITY_FIELDS, key, strict=False))
    issuer = dict(zip(ISSUER_FIELDS, key[len(IDENTITY_FIELDS) :], strict=True))
    identity["sessionContext"] = {"sessionIssuer": issuer}
    return identity


_SEPARATOR = "\x1f"


def parse_trail_file(data: bytes) -> tuple[Any, ...] | None:
    """The native half of :func:`read_trail_columns` (gunzip, pyarrow.json, the checks on the typed columns and the
    distinct identities, all without the GIL, so the reading threads run it side by side), or None (see there).
    The text is not kept: the few files whose records are wanted are decompressed again (cheaper than holding
    every file of the read-ahead window decompressed)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    try:
        if data.startswith(GZIP_MAGIC):
            stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
            text = stream.decompress(data)
            if not stream.eof or stream.unused_data:
                return None
        else:
            text = data
        body = text.strip()
        if not body.startswith(b"{") or b"\n" in body:
            return None
        table = pj.read_json(
            pa.BufferReader(body),
            read_options=pj.ReadOptions(use_threads=False, block_size=len(body) + 64),
            parse_options=pj.ParseOptions(
                explicit_schema=_columns_schema(), unexpected_field_behavior="ignore"
            ),
        )
        column = table.column("Records")
        if table.num_rows != 1 or column.num_chunks != 1 or column.null_count:
            return None
        records = column.chunk(0).flatten()
        if not len(records):
            return ()
        event_id, event_time, event_name = (
            records.field(name) for name in ("eventID", "eventTime", "eventName")
        )
        if records.null_count or event_id.null_count or event_name.null_count or event_time.null_count:
            return None
        if pc.min(pc.utf8_length(event_id)).as_py() == 0:
            return None
        lengths = pc.min_max(pc.utf8_length(event_time)).as_py()
        if lengths["min"] != 20 or lengths["max"] != 20:
            return None
        if pc.strptime(event_time, format="%Y-%m-%dT%H:%M:%SZ", unit="s", error_is_null=True).null_count:
            return None
        span = pc.min_max(event_time).as_py()
        # flatten(): a field of a missing userIdentity / sessionContext / sessionIssuer is missing (null) too
        *identity, context = records.field("userIdentity").flatten()
        (issuer,) = context.flatten()
        keys = pc.binary_join_element_wise(
            *identity, *issuer.flatten(), _SEPARATOR, null_handling="replace", null_replacement=""
        )
        encoded = pc.dictionary_encode(keys)
    except (zlib.error, pa.ArrowException, ValueError):
        return None
    return event_time, span["min"], span["max"], encoded.indices, encoded.dictionary


def trail_columns(data: bytes, parsed: tuple[Any, ...] | None) -> TrailColumns | None:
    """The Python half of :func:`read_trail_columns`: the file's distinct identities as values."""
    if parsed is None:
        return None
    if not parsed:
        return TrailColumns(data, 0, "", "", [])
    times, earliest, latest, codes, dictionary = parsed
    width = len(IDENTITY_FIELDS) + len(ISSUER_FIELDS)
    identities = [tuple(value or None for value in key.split(_SEPARATOR)) for key in dictionary.to_pylist()]
    if any(len(identity) != width for identity in identities):  # a separator inside a value
        return None
    return TrailColumns(data, len(codes), earliest, latest, identities, times, codes)


def read_trail_columns(data: bytes) -> TrailColumns | None:
    """Read a trail file (`{"Records": [...]}` on one line, gzip or not) natively, or None when this path cannot
    vouch for giving what :func:`iter_records` gives (anything unusual: truncated or corrupt gzip, several gzip
    members, a BOM, a pretty-printed file, a field of an unexpected type, a record without eventID, eventName or
    an eventTime of CloudTrail's exact form): the caller then reads the file the ordinary way."""
    return trail_columns(data, parse_trail_file(data))


class RecordScreen(Protocol):
    """What :func:`screened_records` asks of a matcher (see SessionMatcher): whether a principal may be a
    session's, to remember where a principal that is not was seen, and a value that changes when it learns."""

    def principal_of_identity(self, identity: dict[str, Any]) -> Any: ...

    def match_windows(self, principal: Any) -> list[tuple[datetime, datetime]]: ...

    def all_windows(self) -> list[tuple[datetime, datetime]]: ...

    def remember(self, principal: Any, locator: str) -> None: ...

    def knowledge(self) -> Any: ...


def _text_windows(windows: list[tuple[datetime, datetime]]) -> list[tuple[str, str]]:
    """Time windows as CloudTrail writes times, which sort as text (to the second: the ends rounded inwards)."""
    result = []
    for start, end in windows:
        first = start.astimezone(UTC)
        first += timedelta(microseconds=(1_000_000 - first.microsecond) % 1_000_000)
        last = end.astimezone(UTC).replace(microsecond=0)
        result.append(
            (first.replace(tzinfo=None).isoformat() + "Z", last.replace(tzinfo=None).isoformat() + "Z")
        )
    return result


def screened_records(
    columns: TrailColumns, screen: RecordScreen, locator: str, start: datetime, end: datetime
) -> Iterator[dict[str, Any]]:
    """The records of [start, end] that may be a session's (by principal and time), in file order, as dicts;
    every other record of the span is only remembered (`screen.remember`, once per distinct principal between two yielded
    records), exactly as the matcher would have on seeing it. The decisions are taken again after each record
    yielded if the matcher learnt from it (an AssumeRole's credentials, a role id)."""

    if not columns.count:
        return
    ((low, high),) = _text_windows([(start, end)])
    earliest, latest = columns.earliest, columns.latest
    if latest < low or high < earliest:
        return
    principals = [_principal(screen, key) for key in columns.identities]
    if not any(first <= latest and earliest <= last for first, last in _text_windows(screen.all_windows())):
        # no record of the file can be a session's (the usual case): only note where each principal was seen
        if low <= earliest and latest <= high:
            seen: Iterable[int] = range(len(principals))
        else:
            seen = {
                c for c, moment in zip(columns.codes, columns.times, strict=True) if low <= moment <= high
            }
        for code in seen:
            screen.remember(principals[code], locator)
        return
    times = columns.times
    in_span = [low <= moment <= high for moment in times]
    known = screen.knowledge()
    windows = [_text_windows(screen.match_windows(principal)) for principal in principals]
    waiting: set[int] = set()
    for index, (inside, code) in enumerate(zip(in_span, columns.codes, strict=True)):
        if not inside:
            continue
        moment = times[index]
        if not any(first <= moment <= last for first, last in windows[code]):
            waiting.add(code)
            continue
        for other in waiting:
            screen.remember(principals[other], locator)
        waiting.clear()
        yield columns.record(index)
        if screen.knowledge() != known:
            known = screen.knowledge()
            windows = [_text_windows(screen.match_windows(principal)) for principal in principals]
    for other in waiting:
        screen.remember(principals[other], locator)


#: userIdentity -> principal, shared by the files of a night (principal_of is pure; a night has few identities).
_PRINCIPALS: dict[tuple[str | None, ...], Any] = {}


def _principal(screen: RecordScreen, key: tuple[str | None, ...]) -> Any:
    try:
        return _PRINCIPALS[key]
    except KeyError:
        if len(_PRINCIPALS) > 100_000:
            _PRINCIPALS.clear()
        principal = _PRINCIPALS[key] = screen.principal_of_identity(identity_of_key(key))
        return principal
