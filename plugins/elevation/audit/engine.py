"""Evaluate a rule set over CloudTrail events in one pass, fast enough to cost about as much as reading them.

Why it is fast: nearly every rule names the calls it is about (``eventName`` / ``eventSource``). Rules are indexed by
those values; on an Arrow table the typed columns are dictionary-encoded once for the whole table, each rule's tests
on typed columns are decided once per *distinct* value (a few hundred names, not a million rows) and broadcast to
rows with one ``take``. The rows are grouped by call once, so each rule only looks at the rows of the calls it names
(a rule about a rare call costs a few slices; rules naming the same calls share them). Where a rule's verdict
depends on a nested document (``requestParameters``...), a substring search of the JSON text narrows the rows first;
what is left goes to Python as a *residual*: the rule with its typed tests replaced by their verdicts, judged once
per distinct document text where it reads one document, else once per row. Rules that name no call
(``userIdentity.type: Root``) get the same vectorised treatment over the whole table.

Verdicts are three-valued on the way (certainly true / maybe / certainly false), so the vectorised pass never decides
what only the nested document can decide, and :meth:`RuleSet.evaluate_table` agrees with
:meth:`RuleSet.evaluate_records` on the same events.

The result is a findings table (:data:`FINDINGS_SCHEMA`, one ``take`` per column); :class:`Finding` objects are made
from it in bulk only for whoever reads them, and keep the event's requestParameters as JSON text until it is read.
"""

from __future__ import annotations

import gc
import hashlib
import json
import re
import re._constants as _regex_constants
import re._parser as _regex_parser
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from importlib import resources as importlib_resources
from itertools import repeat
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from elevation.audit.exposure import EXPOSURE_CALLS, EXPOSURE_RULES, SUPERSEDED_RULE_IDS, assess
from elevation.audit.rules import (
    SEVERITIES,
    SEVERITY_RANK,
    AllOf,
    AnyOf,
    AnyOfTests,
    CompiledRule,
    FieldTest,
    KeywordTest,
    LoadResult,
    Node,
    Not,
    RegexTest,
    StringTest,
    UnsupportedRule,
    ValueTest,
    compile_folder,
    compile_yaml,
    effective_severity,
    normalize_event_name,
    resolve,
)
from elevation.cloudtrail.schema import (
    BOOL_FIELDS,
    JSON_FIELDS,
    OTHER_FIELDS_COLUMN,
    STRING_FIELDS,
    USER_IDENTITY_COLUMNS,
    parse_event_time,
    row_to_record,
)

#: CloudTrail path -> typed column of EVENT_SCHEMA that holds the same value (as text, booleans as bool).
TYPED_COLUMNS: dict[tuple[str, ...], str] = {
    **{(name,): name for name in (*STRING_FIELDS, *BOOL_FIELDS)},
    **{("userIdentity", *path): column for column, path in USER_IDENTITY_COLUMNS},
}
#: Columns worth reading as Arrow dictionaries: they repeat within a session (userIdentity is the same ~700 bytes on
#: every event of a session; reading it as plain text costs more than all typed columns together). Unique ones
#: (eventID, requestID) and mostly-unique documents (requestParameters, responseElements) are cheaper plain.
DICTIONARY_COLUMNS: tuple[str, ...] = tuple(
    name
    for name in (
        *STRING_FIELDS,
        *(column for column, _ in USER_IDENTITY_COLUMNS),
        "session_id",
        "userIdentity",
        OTHER_FIELDS_COLUMN,
    )
    if name not in {"eventID", "requestID", "sharedEventID"}
)
REQUIRED_COLUMNS: tuple[str, ...] = ("eventID", "eventTime", "eventSource", "eventName")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_JSON_COLUMNS = frozenset(JSON_FIELDS)
#: Text that JSON writes the same way whoever serialises it (no escapes, no non-ASCII): safe to search in raw JSON.
_SAFE_TEXT = re.compile(r"[A-Za-z0-9 _.:@=+,$-]+")
#: Index drivers, in order of preference: a rule is indexed by the first of these its condition requires.
_DRIVERS: tuple[tuple[str, ...], ...] = (("eventName",), ("eventSource",))


#: Field names of :class:`Finding`, in constructor order.
FINDING_FIELDS: tuple[str, ...] = (
    "event_id",
    "event_time",
    "event_source",
    "event_name",
    "rule_id",
    "title",
    "severity",
    "session_id",
    "aws_region",
    "source_ip",
    "user_agent",
    "request_parameters",
    "error_code",
    "recipient_account_id",
    "principal_arn",
    "rule_severity",
)
_UNPARSED: Any = object()  # request parameters not parsed from their JSON text yet


class Finding:
    """One rule matching one event (an event matching two rules gives two findings).

    ``rule_severity`` is the rule's own level; ``severity`` the *effective* one: one step lower when the call failed
    (see :func:`~elevation.audit.rules.effective_severity`; the engine computes it, the constructor stores what it
    is given and takes ``rule_severity`` to be ``severity`` when it is not given). ``principal_arn`` is the acting
    identity (``userIdentity.arn``). :attr:`key` is a stable key for upserts into a SIEM.

    Immutable (every field is a read-only attribute); equal when all fields are equal. ``request_parameters`` is the
    one field that costs: a night can give a million findings and a report shows few of them, so findings built from
    a table keep the event's JSON text and parse it when the field is first read (then keep the dict).
    """

    __match_args__ = FINDING_FIELDS
    __slots__ = (
        "_event_id",
        "_event_time",
        "_event_source",
        "_event_name",
        "_rule_id",
        "_title",
        "_severity",
        "_session_id",
        "_aws_region",
        "_source_ip",
        "_user_agent",
        "_request_parameters",
        "_request_parameters_json",
        "_error_code",
        "_recipient_account_id",
        "_principal_arn",
        "_rule_severity",
    )

    def __init__(
        self,
        event_id: str,
        event_time: datetime,
        event_source: str,
        event_name: str,
        rule_id: str,
        title: str,
        severity: str,
        session_id: str | None,
        aws_region: str | None,
        source_ip: str | None,
        user_agent: str | None,
        request_parameters: dict | None,
        error_code: str | None,
        recipient_account_id: str | None,
        principal_arn: str | None = None,
        rule_severity: str | None = None,
    ) -> None:
        self._event_id = event_id
        self._event_time = event_time
        self._event_source = event_source
        self._event_name = event_name
        self._rule_id = rule_id
        self._title = title
        self._severity = severity
        self._session_id = session_id
        self._aws_region = aws_region
        self._source_ip = source_ip
        self._user_agent = user_agent
        self._request_parameters = request_parameters
        self._request_parameters_json = None
        self._error_code = error_code
        self._recipient_account_id = recipient_account_id
        self._principal_arn = principal_arn
        self._rule_severity = severity if rule_severity is None else rule_severity

    @property
    def event_id(self) -> str:
        return self._event_id

    @property
    def event_time(self) -> datetime:
        return self._event_time

    @property
    def event_source(self) -> str:
        return self._event_source

    @property
    def event_name(self) -> str:
        return self._event_name

    @property
    def rule_id(self) -> str:
        return self._rule_id

    @property
    def title(self) -> str:
        return self._title

    @property
    def severity(self) -> str:
        """The effective severity: the rule's, one step lower for a failed call."""
        return self._severity

    @property
    def rule_severity(self) -> str:
        """The rule's own level."""
        return self._rule_severity

    @property
    def session_id(self) -> str | None:
        return self._session_id

    @property
    def aws_region(self) -> str | None:
        return self._aws_region

    @property
    def source_ip(self) -> str | None:
        return self._source_ip

    @property
    def user_agent(self) -> str | None:
        return self._user_agent

    @property
    def request_parameters(self) -> dict | None:
        """The event's requestParameters object (None when absent or not an object), parsed on first read."""
        value = self._request_parameters
        if value is _UNPARSED:
            document = _parse_document(self._request_parameters_json)
            value = document if isinstance(document, dict) else None
            self._request_parameters = value
            self._request_parameters_json = None
        return value

    @property
    def error_code(self) -> str | None:
        return self._error_code

    @property
    def recipient_account_id(self) -> str | None:
        return self._recipient_account_id

    @property
    def principal_arn(self) -> str | None:
        """The acting identity: the event's ``userIdentity.arn`` (for an Identity Center session, the assumed role
        session ``arn:aws:sts::ACCOUNT:assumed-role/AWSReservedSSO_.../user``)."""
        return self._principal_arn

    @property
    def failed(self) -> bool:
        """The call failed (the event has an errorCode)."""
        return bool(self._error_code)

    @property
    def outcome(self) -> str:
        """``succeeded``, or ``failed: <errorCode>``."""
        return f"failed: {self._error_code}" if self._error_code else "succeeded"

    @property
    def key(self) -> str:
        """A stable key for upserts into a SIEM: the first 32 hex digits of
        ``sha256(f"{session_id}|{event_id}|{rule_id}")`` (session_id "" when None)."""
        text = f"{self._session_id or ''}|{self._event_id}|{self._rule_id}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, self._values())

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in FINDING_FIELDS)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        # requestParameters is a dict (unhashable, and equal findings have equal ones): hash the other fields.
        return hash(tuple(getattr(self, name) for name in FINDING_FIELDS if name != "request_parameters"))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in FINDING_FIELDS)
        return f"{self.__class__.__qualname__}({fields})"

    def to_dict(self) -> dict[str, Any]:
        """The machine-readable form (JSON Lines for the command and the nightly SIEM file)."""
        return {
            "eventID": self.event_id,
            "eventTime": self.event_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "eventSource": self.event_source,
            "eventName": self.event_name,
            "rule_id": self.rule_id,
            "title": self.title,
            "severity": self.severity,
            "rule_severity": self.rule_severity,
            "key": self.key,
            "session_id": self.session_id,
            "principal_arn": self.principal_arn,
            "awsRegion": self.aws_region,
            "sourceIPAddress": self.source_ip,
            "userAgent": self.user_agent,
            "errorCode": self.error_code,
            "outcome": self.outcome,
            "recipientAccountId": self.recipient_account_id,
            "requestParameters": self.request_parameters,
        }


def _finding_from_row(
    event_id: str,
    event_time: datetime,
    event_source: str,
    event_name: str,
    rule_id: str,
    title: str,
    severity: str,
    session_id: str | None,
    aws_region: str | None,
    source_ip: str | None,
    user_agent: str | None,
    request_parameters_json: str | None,
    error_code: str | None,
    recipient_account_id: str | None,
    principal_arn: str | None,
    rule_severity: str,
) -> Finding:
    """A finding whose request parameters are still JSON text (the table path makes findings in bulk with this)."""
    finding = _new(Finding)
    finding._event_id = event_id
    finding._event_time = event_time
    finding._event_source = event_source
    finding._event_name = event_name
    finding._rule_id = rule_id
    finding._title = title
    finding._severity = severity
    finding._session_id = session_id
    finding._aws_region = aws_region
    finding._source_ip = source_ip
    finding._user_agent = user_agent
    finding._request_parameters = _UNPARSED if request_parameters_json else None
    finding._request_parameters_json = request_parameters_json
    finding._error_code = error_code
    finding._recipient_account_id = recipient_account_id
    finding._principal_arn = principal_arn
    finding._rule_severity = rule_severity
    return finding


_new = object.__new__


def finding_sort_key(finding: Finding) -> tuple[Any, ...]:
    """Time order, worst finding first within an event (effective severity, then rule id): the order people read a
    session in."""
    return (finding.event_time, finding.event_id, -SEVERITY_RANK.get(finding.severity, 0), finding.rule_id)


# ---------------------------------------------------------------------------------------------------------------
# Index: which rules can possibly match an event with this eventName / eventSource


def requirement(node: Node, path: tuple[str, ...]) -> Node | None:
    """A necessary condition of `node` that only looks at `path`, or None when `node` does not constrain it."""
    if isinstance(node, FieldTest):
        return node if node.path == path and node.mode == "value" else None
    if isinstance(node, AllOf):
        found = [req for child in node.children if (req := requirement(child, path)) is not None]
        if not found:
            return None
        return found[0] if len(found) == 1 else AllOf(tuple(found))
    if isinstance(node, AnyOf):
        found = [requirement(child, path) for child in node.children]
        if any(req is None for req in found):
            return None
        return AnyOf(tuple(req for req in found if req is not None))
    return None  # Not, keywords: no necessary condition on a single field


def _exact_values_of_test(test: ValueTest | None) -> set[str] | None:
    if isinstance(test, StringTest) and test.kind == "exact" and not test.cased:
        return {test.pattern}
    if isinstance(test, AnyOfTests):
        sets = [_exact_values_of_test(item) for item in test.tests]
        if any(values is None for values in sets):
            return None
        return set().union(*sets)  # type: ignore[arg-type]
    return None


def exact_values(req: Node) -> set[str] | None:
    """The (lower-case) values that satisfy `req` when it is a plain list of exact strings, else None."""
    if isinstance(req, FieldTest):
        return _exact_values_of_test(req.test)
    if isinstance(req, AnyOf):
        sets = [exact_values(child) for child in req.children]
        if any(values is None for values in sets):
            return None
        return set().union(*sets)  # type: ignore[arg-type]
    return None


class _Driver:
    """Rules indexed by the values of one field they require (exact values in a dict, patterns tested)."""

    def __init__(self, path: tuple[str, ...]) -> None:
        self.path = path
        self.exact: dict[str, list[int]] = {}
        self.patterns: list[tuple[int, Node]] = []
        self._cache: dict[str, tuple[int, ...]] = {}

    def add(self, index: int, req: Node) -> None:
        values = exact_values(req)
        if values is None:
            self.patterns.append((index, req))
        else:
            for value in values:
                self.exact.setdefault(value, []).append(index)

    def rules_for(self, value: Any) -> tuple[int, ...]:
        """Indexes of the rules whose requirement this value meets (cached per distinct value)."""
        if not isinstance(value, str):
            return ()
        cached = self._cache.get(value)
        if cached is not None:
            return cached
        keys = {value.lower()}
        if self.path == ("eventName",):
            keys.add(normalize_event_name(value).lower())
        found: set[int] = set()
        for key in keys:
            found.update(self.exact.get(key, ()))
        probe = {self.path[0]: value}
        found.update(index for index, req in self.patterns if req.evaluate(probe))
        result = tuple(sorted(found))
        self._cache[value] = result
        return result


class _Plan:
    """The rules split by index driver; built once per RuleSet."""

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        self.rules = tuple(rules)
        self.drivers = [_Driver(path) for path in _DRIVERS]
        self.indexed: list[int] = []
        self.unindexed: list[int] = []
        #: Verdicts of tests on the call columns, per value. Their values are API names, a bounded vocabulary, so
        #: these are kept from one evaluation to the next (the nightly audit evaluates a night session by session).
        self.call_verdicts: dict[tuple[Any, ...], dict[Any, bool]] = {}
        for index, rule in enumerate(self.rules):
            for driver in self.drivers:
                req = requirement(rule.predicate, driver.path)
                if req is not None:
                    driver.add(index, req)
                    self.indexed.append(index)
                    break
            else:
                self.unindexed.append(index)

    def candidates(self, event: Any) -> list[int]:
        """Rules worth evaluating on one record, in rule order."""
        found: set[int] = set(self.unindexed)
        for driver in self.drivers:
            found.update(driver.rules_for(event.get(driver.path[0])))
        return sorted(found)


# ---------------------------------------------------------------------------------------------------------------
# Vectorised, three-valued evaluation over typed columns

Mask = bool | pa.BooleanArray


def _and(left: Mask, right: Mask) -> Mask:
    if left is False or right is False:
        return False
    if left is True:
        return right
    if right is True:
        return left
    return pc.and_(left, right)


def _or(left: Mask, right: Mask) -> Mask:
    if left is True or right is True:
        return True
    if left is False:
        return right
    if right is False:
        return left
    return pc.or_(left, right)


def _not(mask: Mask) -> Mask:
    if isinstance(mask, bool):
        return not mask
    return pc.invert(mask)


class _Source:
    """The table under evaluation.

    Rows are taken in ascending order of position (frames, findings): a column of few chunks is taken chunk by
    chunk, so the big text columns (requestParameters, eventID) are never copied whole; a dictionary column, or one
    of many chunks, is made contiguous once (`take` on a chunked array may concatenate all of it on every call).
    Low-cardinality columns (Arrow dictionaries, booleans) are encoded once for the whole table and a field test is
    judged once per distinct value of the whole table: frames take the indices, they neither re-encode nor re-judge.
    """

    def __init__(
        self, table: pa.Table, call_verdicts: dict[tuple[Any, ...], dict[Any, bool]] | None = None
    ) -> None:
        self.table = table
        self.num_rows = table.num_rows
        self.column_names = table.column_names
        self._call_verdicts = {} if call_verdicts is None else call_verdicts
        self._contiguous: dict[str, pa.Array] = {}
        self._encoded: dict[str, tuple[pa.Array, list[Any]]] = {}
        self._verdicts: dict[tuple[Any, ...], list[bool]] = {}
        self.shared = {
            field.name
            for field in table.schema
            if pa.types.is_dictionary(field.type) or pa.types.is_boolean(field.type)
        }

    def column(self, name: str) -> pa.ChunkedArray:
        return self.table.column(name)

    def contiguous(self, name: str) -> pa.Array:
        if name not in self._contiguous:
            data = self.table.column(name)
            if pa.types.is_dictionary(data.type):
                data = data.unify_dictionaries()
            self._contiguous[name] = data.combine_chunks()
        return self._contiguous[name]

    def take(self, name: str, rows: pa.Array) -> pa.Array | pa.ChunkedArray:
        """The values of column `name` at `rows` (positions in ascending order)."""
        data = self._contiguous.get(name)
        if data is not None:
            return pc.take(data, rows)
        column = self.table.column(name)
        if column.num_chunks == 1:
            return pc.take(column.chunk(0), rows)
        if pa.types.is_dictionary(column.type) or column.num_chunks > _MAX_CHUNKS_TAKEN_APART:
            return pc.take(self.contiguous(name), rows)
        return _take_ascending(column, rows)

    def encoded(self, column: str) -> tuple[pa.Array, list[Any]]:
        """Whole-table encoding of a shared column: (indices, nulls one past the dictionary; distinct values)."""
        if column not in self._encoded:
            self._encoded[column] = _encode(self.table.column(column))
        return self._encoded[column]

    def verdicts(self, test: FieldTest, column: str) -> list[bool]:
        """The test's verdict on each distinct value of a shared column, then on null."""
        if test.key not in self._verdicts:
            _, values = self.encoded(column)
            if column in _CALL_COLUMNS:
                known = self._call_verdicts.setdefault(test.key, {})
                verdicts = []
                for value in (*values, None):
                    verdict = known.get(value)
                    if verdict is None:
                        verdict = known[value] = test.judge_value(value)
                    verdicts.append(verdict)
            else:
                verdicts = [test.judge_value(value) for value in (*values, None)]
            self._verdicts[test.key] = verdicts
        return self._verdicts[test.key]


_MAX_CHUNKS_TAKEN_APART = 64
_SEARCHED_AS_LIST = 16_384
_CALL_COLUMNS = frozenset(("eventName", "eventSource"))


def _take_ascending(column: pa.ChunkedArray, rows: pa.Array) -> pa.ChunkedArray:
    """`take` without concatenating the chunks: `rows` ascending, so each chunk's rows are one slice of them."""
    pieces: list[pa.Array] = []
    start = low = 0
    count = len(rows)
    # Few rows: search a Python list of them (a probe of the Arrow array makes a scalar, ~1 µs).
    positions, key = (rows.to_pylist(), None) if count <= _SEARCHED_AS_LIST else (rows, _as_py)
    for chunk in column.chunks:
        if low == count:
            break
        end = start + len(chunk)
        high = bisect_left(positions, end, low, count, key=key)
        if high > low:
            pieces.append(pc.take(chunk, pc.subtract(rows.slice(low, high - low), start)))
        start, low = end, high
    return pa.chunked_array(pieces, column.type)


def _as_py(scalar: pa.Scalar) -> Any:
    return scalar.as_py()


def _encode(data: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, list[Any]]:
    """(indices with nulls pointing one past the dictionary, distinct values)."""
    if isinstance(data, pa.Array):
        data = pa.chunked_array([data])
    if pa.types.is_boolean(data.type):
        data = pc.cast(data, pa.string())
    if pa.types.is_dictionary(data.type):
        array = data.unify_dictionaries().combine_chunks()
        if len(array.dictionary) > max(_SMALL_DICTIONARY, len(array) // 8):
            # A slice of a bigger table (one session of a night) keeps the whole dictionary: judging every value
            # would cost more than the rows; keep the values these rows use.
            array = pc.dictionary_encode(array.dictionary_decode())
    else:
        array = pc.dictionary_encode(data.combine_chunks())
    values = array.dictionary.to_pylist()
    indices = array.indices if array.null_count == 0 else pc.fill_null(array.indices, len(values))
    return indices, values


_SMALL_DICTIONARY = 64


@lru_cache(maxsize=1024)
def _required_text(pattern: str, flags: int) -> str | None:
    """The longest safe text (see _SAFE_TEXT) every match of a case-sensitive regex contains: the literals it
    starts its top level with, in a row. Any text the regex is found in contains it, and so does the JSON text of
    the document that text comes from (safe characters are never escaped), so it narrows like a string needle."""
    if flags & re.IGNORECASE:
        return None  # case folding makes "contains this text" a weaker promise than a needle needs
    try:
        parsed = _regex_parser.parse(pattern, flags)
    except (re.error, RecursionError):
        return None
    if parsed.state.flags & (re.IGNORECASE | re.VERBOSE):  # inline (?i) or (?x)
        return None
    runs, run = [], []
    for op, argument in parsed:
        if op is _regex_constants.LITERAL:
            run.append(chr(argument))
        else:
            runs.append("".join(run))
            run = []
    runs.append("".join(run))
    pieces = [piece for text in runs for piece in _SAFE_TEXT.findall(text)]
    best = max(pieces, key=len, default="")
    return best if len(best) >= 3 else None


class _Frame:
    """Some rows of the table (all, or the candidates of a pass), columns taken and dictionary-encoded on first use.

    With `with_json`, tests on nested documents are narrowed by a substring search of the JSON text (the key must
    appear, and a plain string value too): a necessary condition only, so it bounds, never decides, a match.
    """

    def __init__(self, table: _Source, row_ids: pa.Array | None, with_json: bool = False) -> None:
        self.table = table
        self.row_ids = row_ids  # positions in `table`; None when this frame is the whole table
        self.num_rows = table.num_rows if row_ids is None else len(row_ids)
        self.with_json = with_json
        self.names = set(table.column_names)
        self._columns: dict[str, pa.ChunkedArray | pa.Array] = {}
        self._encoded: dict[str, tuple[pa.Array, list[Any]]] = {}
        self._leaves: dict[tuple[Any, ...], tuple[Mask, Mask] | None] = {}
        self._needles: dict[tuple[str, tuple[str, bool] | None], pa.BooleanArray] = {}
        self._json_view: _Frame | None = None  # these rows with_json, made once (see json_view)

    def json_view(self) -> _Frame:
        """These rows for a second look that searches the JSON text too; shared by the rules that look at them."""
        if self._json_view is None:
            self._json_view = _Frame(self.table, self.row_ids, with_json=True)
        return self._json_view

    def column(self, name: str) -> pa.ChunkedArray | pa.Array:
        if name not in self._columns:
            if self.row_ids is None:
                self._columns[name] = self.table.column(name)
            else:
                self._columns[name] = self.table.take(name, self.row_ids)
        return self._columns[name]

    def encoded(self, column: str) -> tuple[pa.Array, list[Any]]:
        """(indices with nulls pointing one past the dictionary, distinct values)."""
        if column not in self._encoded:
            if column in self.table.shared:
                indices, values = self.table.encoded(column)
                if self.row_ids is not None:
                    indices = pc.take(indices, self.row_ids)
                self._encoded[column] = (indices, values)
            else:
                self._encoded[column] = _encode(self.column(column))
        return self._encoded[column]

    def leaf(self, test: FieldTest) -> tuple[Mask, Mask] | None:
        """(certainly, maybe) for a field test on every row, or None when nothing here can tell."""
        key = test.key
        if key not in self._leaves:
            self._leaves[key] = self._typed_leaf(test) or (self._json_leaf(test) if self.with_json else None)
        return self._leaves[key]

    def typed_verdict(self, test: FieldTest) -> Mask | None:
        """The exact verdict of a test on a typed column on every row, or None for a test typed columns cannot decide."""
        return self.leaf(test)[0] if self._is_typed(test) else None

    def _is_typed(self, test: FieldTest) -> bool:
        column = TYPED_COLUMNS.get(test.path)
        return column is not None and column in self.names and test.mode != "fieldref"

    def _typed_leaf(self, test: FieldTest) -> tuple[Mask, Mask] | None:
        """Exact, from a typed column: the test is decided once per distinct value and broadcast with `take`."""
        if not self._is_typed(test):
            return None
        column = TYPED_COLUMNS[test.path]
        indices, values = self.encoded(column)
        if column in self.table.shared:
            lookup = self.table.verdicts(test, column)
        else:
            lookup = [test.judge_value(value) for value in (*values, None)]
        if not any(lookup):
            return (False, False)
        if all(lookup):
            return (True, True)
        mask = pc.take(pa.array(lookup, pa.bool_()), indices)
        return (mask, mask)

    def _json_leaf(self, test: FieldTest) -> tuple[Mask, Mask] | None:
        """Necessary conditions on the JSON text of the document the path lives in."""
        if test.mode not in ("value", "exists") or test.path[0] == "eventTime" or test.path in TYPED_COLUMNS:
            return None
        column = test.path[0] if test.path[0] in _JSON_COLUMNS else OTHER_FIELDS_COLUMN
        if column not in self.names:
            return None
        needles: list[tuple[str, bool]] = []  # (text, ignore case)
        if len(test.path) > 1 or column == OTHER_FIELDS_COLUMN:
            if not _SAFE_TEXT.fullmatch(test.path[-1]):
                return None
            needles.append((f'"{test.path[-1]}"', False))
        # Values are searched ignoring case even for cased tests: a test sees a number as Python writes it ("inf",
        # "nan") and the JSON text holds it as JSON does ("Infinity", "NaN").
        value = test.test
        if (
            isinstance(value, StringTest)
            and value.kind in ("exact", "prefix", "suffix", "contains")
            and _SAFE_TEXT.fullmatch(value.pattern)
        ):
            needles.append((value.pattern, True))
        elif isinstance(value, RegexTest) and (literal := _required_text(value.pattern, value.flags)):
            needles.append((literal, True))
        maybe: Mask = True
        for needle in needles or [None]:
            maybe = _and(maybe, self._found(column, needle))
        return (False, maybe)

    def _found(self, column: str, needle: tuple[str, bool] | None) -> pa.BooleanArray:
        """Rows whose JSON text contains the needle (text, ignore case); any text when None. Rules repeat the same
        needle (a list of 22 ports is 22 tests of one key), so each is searched once per frame."""
        key = (column, needle)
        if key not in self._needles:
            text = self.column(column)
            if pa.types.is_dictionary(text.type):
                text = pc.cast(text, pa.string())
            if needle is None:
                self._needles[key] = pc.is_valid(text)
            else:
                found = pc.match_substring(text, needle[0], ignore_case=needle[1])
                self._needles[key] = pc.fill_null(found, False)
        return self._needles[key]

    def bounds(self, node: Node) -> tuple[Mask, Mask]:
        """(rows where `node` is certainly true, rows where it may be true)."""
        if isinstance(node, FieldTest):
            return self.leaf(node) or (False, True)
        if isinstance(node, KeywordTest):
            return (False, True)
        if isinstance(node, AllOf):
            lower: Mask = True
            upper: Mask = True
            for child in node.children:
                child_lower, child_upper = self.bounds(child)
                lower, upper = _and(lower, child_lower), _and(upper, child_upper)
                # certainly false everywhere (lower is within upper): the other children cannot change that
                if upper is False:
                    return False, False
            return lower, upper
        if isinstance(node, AnyOf):
            lower, upper = False, False
            for child in node.children:
                child_lower, child_upper = self.bounds(child)
                lower, upper = _or(lower, child_lower), _or(upper, child_upper)
                if lower is True:  # certainly true everywhere
                    return True, True
            return lower, upper
        if isinstance(node, Not):
            child_lower, child_upper = self.bounds(node.child)
            return _not(child_upper), _not(child_lower)
        return (False, True)

    def rows(self, mask: Mask) -> pa.Array:
        """Positions in the original table of the rows where `mask` holds."""
        if mask is False:
            return pa.array([], pa.int64())
        positions = pc.indices_nonzero(pa.repeat(True, self.num_rows) if mask is True else mask)
        return positions if self.row_ids is None else pc.take(self.row_ids, positions)


class _Columns:
    """Some rows of the table as Python values; a column is taken and converted (for all these rows) when a rule
    first reads it, so rows decided in Python cost only the columns their rules look at."""

    __slots__ = ("source", "rows", "_lists")

    def __init__(self, source: _Source, rows: pa.Array) -> None:
        self.source = source
        self.rows = rows
        self._lists: dict[str, list[Any] | None] = {}

    def names(self) -> list[str]:
        return self.source.column_names

    def values(self, column: str) -> list[Any] | None:
        """The column's values, or None when the table has no such column."""
        if column not in self._lists:
            if column not in self.source.column_names:
                self._lists[column] = None
            else:
                data = self.source.take(column, self.rows)
                self._lists[column] = column_times(data) if pa.types.is_timestamp(data.type) else column_values(data)
        return self._lists[column]


class _RemembersPaths:
    """An event that remembers :func:`resolve` per path (a rule's list of 22 ports is 22 tests of one path)."""

    __slots__ = ("_resolved",)

    def __init__(self) -> None:
        self._resolved: dict[tuple[str, ...], list[Any]] = {}

    def get(self, key: str, default: Any = None) -> Any:
        raise NotImplementedError

    def values_at(self, path: tuple[str, ...]) -> list[Any]:
        values = self._resolved.get(path)
        if values is None:
            values = self._resolved[path] = resolve(self, path)
        return values


class RowView(_RemembersPaths):
    """A row of EVENT_SCHEMA seen as a CloudTrail record, parsing a nested document only when a rule asks for it."""

    __slots__ = ("columns", "position", "_parsed")

    _TYPED = frozenset((*STRING_FIELDS, *BOOL_FIELDS))
    _JSON = frozenset(JSON_FIELDS)

    def __init__(self, columns: _Columns, position: int) -> None:
        super().__init__()
        self.columns = columns
        self.position = position
        self._parsed: dict[str, Any] = {}

    def typed(self, column: str) -> Any:
        """The value of a column of the row as the table stores it (None when absent)."""
        values = self.columns.values(column)
        return None if values is None else values[self.position]

    def _json(self, column: str) -> Any:
        if column not in self._parsed:
            text = self.typed(column)
            self._parsed[column] = _parse_document(text)
        return self._parsed[column]

    def get(self, key: str, default: Any = None) -> Any:
        if key in self._TYPED:
            value = self.typed(key)
            return default if value is None else value
        if key in self._JSON:
            value = self._json(key)
            return default if value is None else value
        if key == "eventTime":
            return self.materialize()["eventTime"]
        others = self._json(OTHER_FIELDS_COLUMN) or {}
        return others.get(key, default)

    def materialize(self) -> dict[str, Any]:
        return row_to_record({name: self.typed(name) for name in self.columns.names()})


def _residuals(frame: _Frame, predicate: Node, mask: Mask) -> Iterable[tuple[Node | bool, list[int]]]:
    """(residual, rows) for the rows of `frame` where `mask` holds: the residual is the predicate with each test on
    a typed column replaced by its verdict on those rows (known from the vectorised pass), so Python is left to
    judge what only the documents can decide. Rows with the same verdicts share one residual."""
    if mask is False:
        return []
    rows = frame.rows(mask).to_pylist()
    if not rows:
        return []
    known: dict[tuple[Any, ...], bool] = {}
    varying: dict[tuple[Any, ...], list[bool]] = {}  # test key -> verdict on each of `rows`
    for test in predicate.fields():
        if test.key in known or test.key in varying or (verdict := frame.typed_verdict(test)) is None:
            continue
        if isinstance(verdict, bool):
            known[test.key] = verdict
        else:
            varying[test.key] = (verdict if mask is True else pc.filter(verdict, mask)).to_pylist()
    per_row = zip(*varying.values(), strict=True) if varying else repeat(())
    groups: dict[tuple[bool, ...], list[int]] = {}
    for row, verdicts in zip(rows, per_row, strict=False):  # per_row is endless when nothing varies
        groups.setdefault(verdicts, []).append(row)
    return [
        (_substitute(predicate, known | dict(zip(varying, verdicts, strict=True))), group)
        for verdicts, group in groups.items()
    ]


def _substitute(node: Node, known: dict[tuple[Any, ...], bool]) -> Node | bool:
    """`node` with the field tests in `known` replaced by their verdicts, simplified."""
    if isinstance(node, FieldTest):
        return known.get(node.key, node)
    if isinstance(node, (AllOf, AnyOf)):
        decisive = isinstance(node, AnyOf)  # the child verdict that decides the whole node
        children: list[Node] = []
        for child in node.children:
            value = _substitute(child, known)
            if value is decisive:
                return decisive
            if value is not (not decisive):
                children.append(value)  # type: ignore[arg-type]
        if not children:
            return not decisive
        return children[0] if len(children) == 1 else type(node)(tuple(children))
    if isinstance(node, Not):
        value = _substitute(node.child, known)
        return (not value) if isinstance(value, bool) else Not(value)
    return node


def _decide(source: _Source, pending: list[tuple[int, Node, list[int]]]) -> list[tuple[pa.Array, int]]:
    """(rows, rule index) of the rows whose residual holds, judged in Python. A residual that reads one document
    (requestParameters, mostly) is judged once per distinct document text (a parameter read a thousand times is one
    verdict); any other once per row, on a view of the row."""
    decided: list[tuple[pa.Array, int]] = []
    on_rows: list[tuple[int, Node, list[int]]] = []
    documents: dict[str, Any] = {}  # JSON text -> parsed, shared by every residual
    by_document = _Compiler(_RemembersPaths.values_at)
    for index, residual, rows in pending:
        column = _single_document(residual)
        if column is None or column not in source.column_names:
            on_rows.append((index, residual, rows))
            continue
        positions = pa.array(rows, pa.int64())
        indices, texts = _encode(source.take(column, positions))
        check = by_document.compile(residual)
        for text in texts:
            if text not in documents:
                documents[text] = _parse_document(text)
        verdicts = [check(_Document(column, documents[text])) for text in texts]
        verdicts.append(check(_Document(column, None)))  # the rows without the document
        if any(verdicts):
            decided.append((pc.filter(positions, pc.take(pa.array(verdicts, pa.bool_()), indices)), index))
    if on_rows:
        rows = sorted({row for _, _, group in on_rows for row in group})
        columns = _Columns(source, pa.array(rows, pa.int64()))
        views = {row: RowView(columns, position) for position, row in enumerate(rows)}
        by_row = _Compiler(_RemembersPaths.values_at)
        for index, residual, group in on_rows:
            check = by_row.compile(residual)
            matched = [row for row in group if check(views[row])]
            if matched:
                decided.append((pa.array(matched, pa.int64()), index))
    return decided


def _single_document(node: Node) -> str | None:
    """The one nested-document column every test of `node` reads, or None (tests of several columns, of the
    whole event, or comparing fields)."""
    columns = set()
    for test in node.fields():
        if test.mode == "fieldref" or test.path[0] not in _JSON_COLUMNS:
            return None
        columns.add(test.path[0])
    if len(columns) != 1 or _has_keywords(node):
        return None
    return columns.pop()


def _has_keywords(node: Node) -> bool:
    if isinstance(node, KeywordTest):
        return True
    if isinstance(node, (AllOf, AnyOf)):
        return any(_has_keywords(child) for child in node.children)
    if isinstance(node, Not):
        return _has_keywords(node.child)
    return False


class _Document(_RemembersPaths):
    """One parsed document seen as an event holding only it: what a single-document residual needs."""

    __slots__ = ("column", "value")

    def __init__(self, column: str, value: Any) -> None:
        super().__init__()
        self.column = column
        self.value = value

    def get(self, key: str, default: Any = None) -> Any:
        return self.value if key == self.column and self.value is not None else default


class _Compiler:
    """Compiles residual predicates into closures that judge as `Node.evaluate` does; `values_at` is how a field
    test reads its values from the events they are given (_RemembersPaths.values_at)."""

    def __init__(self, values_at: Callable[[Any, tuple[str, ...]], list[Any]]) -> None:
        self.values_at = values_at

    def compile(self, node: Node) -> Callable[[Any], bool]:
        if isinstance(node, FieldTest):
            return node.checker(self.values_at)
        if isinstance(node, (AllOf, AnyOf)):
            checks = tuple(self.compile(child) for child in node.children)
            return _all_check(checks) if isinstance(node, AllOf) else _any_check(checks)
        if isinstance(node, Not):
            inner = self.compile(node.child)
            return lambda row: not inner(row)
        return node.evaluate


def _all_check(checks: tuple[Callable[[Any], bool], ...]) -> Callable[[Any], bool]:
    def check(row: Any) -> bool:
        for child in checks:  # noqa: SIM110 (a loop: no generator per call, this runs for every row and node)
            if not child(row):
                return False
        return True

    return check


def _any_check(checks: tuple[Callable[[Any], bool], ...]) -> Callable[[Any], bool]:
    def check(row: Any) -> bool:
        for child in checks:  # noqa: SIM110 (as above)
            if child(row):
                return True
        return False

    return check


# ---------------------------------------------------------------------------------------------------------------
# The rule set


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _event_time(value: Any) -> datetime:
    try:
        return parse_event_time(value) if value is not None else _EPOCH
    except (TypeError, ValueError):
        return _EPOCH


class RuleSet:
    """Compiled rules plus the ones that could not be loaded. Treat `rules` as read-only once evaluating.

    With `exposure` on, every evaluation also rates who the session's writes let in (:mod:`elevation.audit.exposure`:
    public, outside the organization, another account when the organization is not known, inside it) as findings
    of the exposure pseudo-rules, and drops the findings of the pack rules it supersedes on the events it judged.
    `organization_accounts` (the organization's account ids) makes it organization-aware; :meth:`with_organization`
    returns a copy that knows them. :func:`load_rules` turns exposure on with the pack.
    """

    def __init__(
        self,
        rules: Iterable[CompiledRule] = (),
        unsupported: Iterable[UnsupportedRule] = (),
        skipped: Iterable[UnsupportedRule] = (),
        *,
        exposure: bool = False,
        organization_accounts: Iterable[str] | None = None,
        exposure_disabled: Iterable[str] = (),
    ) -> None:
        self.rules: list[CompiledRule] = list(rules)
        self.unsupported: list[UnsupportedRule] = list(unsupported)
        #: Rules not meant for CloudTrail (other log sources) and duplicates: not loaded, not an error.
        self.skipped: list[UnsupportedRule] = list(skipped)
        self.exposure = exposure
        self.organization_accounts: frozenset[str] | None = (
            None if organization_accounts is None else frozenset(str(item) for item in organization_accounts)
        )
        #: Exposure pseudo-rules switched off (by id or title): their verdicts give no finding and supersede nothing.
        self.exposure_disabled: frozenset[str] = frozenset(exposure_disabled)
        self._plan_cache: _Plan | None = None

    def __repr__(self) -> str:
        exposure = ""
        if self.exposure:
            known = "unknown" if self.organization_accounts is None else f"{len(self.organization_accounts)} accounts"
            exposure = f", exposure (organization: {known})"
        return (
            f"RuleSet({len(self.rules)} rules, {len(self.unsupported)} unsupported, {len(self.skipped)} skipped"
            f"{exposure})"
        )

    def with_organization(self, accounts: Iterable[str]) -> RuleSet:
        """A copy of this rule set (same rules) with organization-aware exposure: `accounts` are the organization's
        account ids."""
        return RuleSet(
            self.rules,
            self.unsupported,
            self.skipped,
            exposure=True,
            organization_accounts=accounts,
            exposure_disabled=self.exposure_disabled,
        )

    @property
    def exposure_rules(self) -> tuple[CompiledRule, ...]:
        """The exposure pseudo-rules this rule set reports (none when exposure is off)."""
        if not self.exposure:
            return ()
        return tuple(
            rule
            for rule in EXPOSURE_RULES.values()
            if rule.rule_id not in self.exposure_disabled and rule.title not in self.exposure_disabled
        )

    def rule(self, rule_id: str) -> CompiledRule | None:
        """The rule with this id (its metadata for a report card), the exposure pseudo-rules included (whether or not
        this rule set evaluates them: findings may come from elsewhere); None if unknown."""
        for rule in self.rules:
            if rule.rule_id == rule_id:
                return rule
        return EXPOSURE_RULES.get(rule_id)

    def _exposure_of(self, event: Any) -> CompiledRule | None:
        """The exposure pseudo-rule that rates this event, or None (exposure off, no verdict, verdict disabled)."""
        verdict = assess(event, self.organization_accounts)
        if verdict is None:
            return None
        rule = verdict.rule
        if rule.rule_id in self.exposure_disabled or rule.title in self.exposure_disabled:
            return None
        return rule

    def _plan(self) -> _Plan:
        if self._plan_cache is None or self._plan_cache.rules != tuple(self.rules):
            self._plan_cache = _Plan(self.rules)
        return self._plan_cache

    # -- records ------------------------------------------------------------------------------------------------

    def evaluate_records(self, records: Iterable[dict], session_id: str | None = None) -> list[Finding]:
        """Findings for nested CloudTrail records (as in trail files), sorted by time."""
        plan = self._plan()
        found: list[tuple[tuple[Any, ...], int, Finding]] = []
        for position, record in enumerate(records):
            exposure = self._exposure_of(record) if self.exposure else None
            for index in plan.candidates(record):
                rule = plan.rules[index]
                if exposure is not None and rule.rule_id in SUPERSEDED_RULE_IDS:
                    continue
                if rule.predicate.evaluate(record):
                    finding = self._finding_from_record(record, rule, session_id)
                    found.append((finding_sort_key(finding), position, finding))
            if exposure is not None:
                finding = self._finding_from_record(record, exposure, session_id)
                found.append((finding_sort_key(finding), position, finding))
        found.sort(
            key=lambda item: item[:2]
        )  # input order breaks ties (event ids repeat in hand-made fixtures)
        return [finding for _, _, finding in found]

    @staticmethod
    def _finding_from_record(record: dict[str, Any], rule: CompiledRule, session_id: str | None) -> Finding:
        parameters = record.get("requestParameters")
        error_code = _text(record.get("errorCode"))
        identity = record.get("userIdentity")
        return Finding(
            event_id=str(record.get("eventID") or ""),
            event_time=_event_time(record.get("eventTime")),
            event_source=str(record.get("eventSource") or ""),
            event_name=str(record.get("eventName") or ""),
            rule_id=rule.rule_id,
            title=rule.title,
            severity=effective_severity(rule.severity, error_code),
            session_id=session_id,
            aws_region=_text(record.get("awsRegion")),
            source_ip=_text(record.get("sourceIPAddress")),
            user_agent=_text(record.get("userAgent")),
            request_parameters=parameters if isinstance(parameters, dict) else None,
            error_code=error_code,
            recipient_account_id=_text(record.get("recipientAccountId")),
            principal_arn=_text(identity.get("arn")) if isinstance(identity, dict) else None,
            rule_severity=rule.severity,
        )

    # -- tables -------------------------------------------------------------------------------------------------

    def evaluate_table(self, table: pa.Table) -> list[Finding]:
        """Findings for a table of EVENT_SCHEMA (nested documents as JSON text), sorted by time."""
        return findings_from_table(self.findings_table(table))

    def findings_table(self, table: pa.Table) -> pa.Table:
        """The findings of a table of EVENT_SCHEMA as a table of :data:`FINDINGS_SCHEMA`, sorted by time: the
        whole evaluation, column-wise (Python objects are made only for the findings someone reads)."""
        missing = [name for name in REQUIRED_COLUMNS if name not in table.column_names]
        if missing:
            raise ValueError(f"not an events table: missing column(s) {', '.join(missing)}")
        plan = self._plan()
        if table.num_rows == 0 or not (plan.rules or self.exposure):
            return FINDINGS_SCHEMA.empty_table()
        source = _Source(table, plan.call_verdicts)
        whole = _Frame(source, None)
        certain: list[tuple[pa.Array, int]] = []  # (original rows, rule index)
        pending: list[tuple[int, Node, list[int]]] = []  # (rule index, what Python must decide, on these rows)

        # Rules that name their calls: each is looked at on the rows with such a call only (rules naming the same
        # calls share those rows, and what was taken and searched in them).
        frames: list[tuple[_Frame, list[int]]] = [
            (_Frame(source, rows), indexes) for rows, indexes in _rule_rows(whole, plan)
        ]
        if plan.unindexed:
            frames.append((whole, plan.unindexed))

        for frame, rule_indexes in frames:
            for index in rule_indexes:
                predicate = plan.rules[index].predicate
                lower, upper = frame.bounds(predicate)
                rows = frame.rows(lower)
                if len(rows):
                    certain.append((rows, index))
                if upper is False or upper is lower:
                    continue
                undecided = frame.rows(_and(upper, _not(lower)))
                if not len(undecided):
                    continue
                # Second look at the undecided rows only, now searching the JSON text of nested documents.
                narrow = frame.json_view() if len(undecided) == frame.num_rows else _Frame(source, undecided, True)
                lower, upper = narrow.bounds(predicate)
                rows = narrow.rows(lower)
                if len(rows):
                    certain.append((rows, index))
                for residual, residual_rows in _residuals(narrow, predicate, _and(upper, _not(lower))):
                    if residual is True:
                        certain.append((pa.array(residual_rows, pa.int64()), index))
                    elif residual is not False:
                        pending.append((index, residual, residual_rows))
        certain.extend(_decide(source, pending))
        rules: Sequence[CompiledRule] = plan.rules
        if self.exposure:
            certain, rules = self._with_exposure(source, whole, plan, certain)
        return _findings_table(source, rules, certain)

    def _with_exposure(
        self, source: _Source, whole: _Frame, plan: _Plan, certain: list[tuple[pa.Array, int]]
    ) -> tuple[list[tuple[pa.Array, int]], Sequence[CompiledRule]]:
        """The matches plus the exposure verdicts (their pseudo-rules appended to the rules), minus the superseded
        rules' matches on the events judged. Only rows of the calls the exposure check knows are read, as events."""
        if "eventName" not in source.column_names:
            return certain, plan.rules
        indices, names = whole.encoded("eventName")
        lookup = [isinstance(name, str) and normalize_event_name(name) in EXPOSURE_CALLS for name in names]
        if not any(lookup):
            return certain, plan.rules
        rows = pc.indices_nonzero(pc.take(pa.array([*lookup, False], pa.bool_()), indices))
        if not len(rows):
            return certain, plan.rules
        rows = rows.cast(pa.int64())
        columns = _Columns(source, rows)
        pseudo = list(EXPOSURE_RULES.values())
        by_rule: dict[int, list[int]] = {}
        for position, row in enumerate(rows.to_pylist()):
            rule = self._exposure_of(RowView(columns, position))
            if rule is not None:
                by_rule.setdefault(pseudo.index(rule), []).append(row)
        if not by_rule:
            return certain, plan.rules
        judged = pa.array(sorted(row for group in by_rule.values() for row in group), pa.int64())
        kept: list[tuple[pa.Array, int]] = []
        for matched, index in certain:
            if plan.rules[index].rule_id in SUPERSEDED_RULE_IDS:
                matched = pc.filter(matched, pc.invert(pc.is_in(matched.cast(pa.int64()), value_set=judged)))
                if not len(matched):
                    continue
            kept.append((matched, index))
        offset = len(plan.rules)
        kept.extend((pa.array(group, pa.int64()), offset + number) for number, group in by_rule.items())
        return kept, (*plan.rules, *pseudo)


def _rule_rows(whole: _Frame, plan: _Plan) -> list[tuple[pa.Array, list[int]]]:
    """For the indexed rules, the rows whose driver column (eventName, eventSource) holds a value the rule requires:
    the only rows it can match; rules that require the same values get one entry. Rows are grouped by value once,
    so a rule about a rare call costs a few slices."""
    pieces: dict[int, list[tuple[tuple[int, int], pa.Array]]] = {}
    for number, driver in enumerate(plan.drivers):
        if not (driver.exact or driver.patterns):
            continue
        indices, values = whole.encoded(TYPED_COLUMNS[driver.path])
        wanted = {
            position: rules for position, value in enumerate(values) if (rules := driver.rules_for(value))
        }
        if not wanted:
            continue
        lookup = pa.array([position in wanted for position in range(len(values))] + [False], pa.bool_())
        rows = pc.indices_nonzero(pc.take(lookup, indices))
        keys = pc.take(indices, rows)
        order = pc.sort_indices(keys)
        rows = pc.take(rows, order)
        counts = pc.value_counts(keys)
        sizes = dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True))
        start = 0
        for position in sorted(sizes):  # the order of `rows`, sorted by value
            group = rows.slice(start, sizes[position])
            start += sizes[position]
            for index in wanted[position]:
                pieces.setdefault(index, []).append(((number, position), group))
    by_groups: dict[tuple[tuple[int, int], ...], tuple[list[pa.Array], list[int]]] = {}
    for index, groups in sorted(pieces.items()):
        by_groups.setdefault(tuple(key for key, _ in groups), ([group for _, group in groups], []))[1].append(index)
    return [(_ascending(groups), indexes) for groups, indexes in by_groups.values()]


def _ascending(groups: list[pa.Array]) -> pa.Array:
    """Row positions of several groups, in ascending order (each group is ascending already)."""
    if len(groups) == 1:
        return groups[0]
    rows = pa.concat_arrays(groups)
    return pc.take(rows, pc.sort_indices(rows))


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Creating a hundred thousand objects in a row triggers full collections that scan the whole heap
    (half the cost of building findings); none of these objects form cycles."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


_SCAN = json.JSONDecoder().scan_once


def _parse_document(text: str | None) -> Any:
    """json.loads minus its two whitespace regex matches (a tenth of the cost of a million findings)."""
    if not text:
        return None
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


def column_values(column: pa.ChunkedArray | pa.Array, null: Any = None) -> list[Any]:
    """to_pylist (nulls as `null`), without Arrow's slow path for dictionary arrays (50x slower than indexing the
    values)."""
    if isinstance(column, pa.ChunkedArray):
        # chunks of a dictionary column can have different dictionaries: unify them before combining
        array = (
            column.unify_dictionaries() if pa.types.is_dictionary(column.type) else column
        ).combine_chunks()
    else:
        array = column
    if pa.types.is_dictionary(array.type):
        values = array.dictionary.to_pylist()
        if null is not None:
            values = [null if value is None else value for value in values]
        values.append(null)
        return list(map(values.__getitem__, pc.fill_null(array.indices, len(values) - 1).to_pylist()))
    if null is not None and array.null_count:
        array = pc.fill_null(array, null)
    return array.to_pylist()


def column_times(column: pa.ChunkedArray | pa.Array) -> list[datetime]:
    """Aware UTC datetimes of a timestamp column (a null is the epoch): Arrow's own conversion is ~3 s per
    million, this one builds each datetime from its parts in one C call."""
    if not pa.types.is_timestamp(column.type):
        return [_event_time(value) for value in column_values(column)]
    if column.type.unit == "ns":  # rounded to the microsecond, as timedelta does
        return [
            _EPOCH + timedelta(microseconds=value * 0.001) if value is not None else _EPOCH
            for value in pc.cast(column, pa.int64()).to_pylist()
        ]
    if column.null_count:
        column = pc.fill_null(column, pa.scalar(0, column.type))
    wall = pc.cast(column, pa.timestamp(column.type.unit))  # the same instants, as UTC wall-clock time
    parts = [part(wall).to_pylist() for part in (pc.year, pc.month, pc.day, pc.hour, pc.minute, pc.second)]
    micros = pc.add(pc.multiply(pc.millisecond(wall), 1000), pc.microsecond(wall)).to_pylist()
    return list(map(datetime, *parts, micros, repeat(UTC)))


#: The findings of a table, one row per (event, rule) match, as :meth:`RuleSet.findings_table` returns them:
#: :class:`Finding`'s fields, ``request_parameters`` as the event's JSON text. Values that repeat (the call, the
#: session, the rule) are Arrow dictionaries, as the extract's Parquet reads them.
_REPEATING = pa.dictionary(pa.int32(), pa.string())
FINDINGS_SCHEMA = pa.schema(
    [
        pa.field(
            name,
            {"event_time": pa.timestamp("us", tz="UTC"), "event_id": pa.string(), "request_parameters": pa.string()}
            .get(name, _REPEATING),
        )
        for name in FINDING_FIELDS
    ]
)
#: Finding field -> events column it is taken from (the rule's fields come from the rule).
_FINDING_SOURCES: dict[str, str] = {
    "event_id": "eventID",
    "event_time": "eventTime",
    "event_source": "eventSource",
    "event_name": "eventName",
    "session_id": "session_id",
    "aws_region": "awsRegion",
    "source_ip": "sourceIPAddress",
    "user_agent": "userAgent",
    "request_parameters": "requestParameters",
    "error_code": "errorCode",
    "recipient_account_id": "recipientAccountId",
    "principal_arn": "userIdentity_arn",
}


def _findings_table(source: _Source, rules: Sequence[CompiledRule], matches: list[tuple[pa.Array, int]]) -> pa.Table:
    """The table of (rows, rule) matches (`rules[index]`), built column-wise: the matched events are taken once per
    column (in ascending position, see :meth:`_Source.take`) and put in reading order by one sort on their keys. A
    rule that matches every event of a night must not cost much more than the reading did."""
    if not matches:
        return FINDINGS_SCHEMA.empty_table()
    rows = pa.concat_arrays([rows.cast(pa.int64()) for rows, _ in matches])
    rule_of = pa.concat_arrays([pa.repeat(pa.scalar(index, pa.int32()), len(rows)) for rows, index in matches])
    # In ascending position, the order _Source.take wants (and the tie-breaker of the stable sort below).
    ascending = pc.sort_indices(rows)
    rows, rule_of = pc.take(rows, ascending), pc.take(rule_of, ascending)
    taken = {
        field: _as_type(source.take(column, rows), FINDINGS_SCHEMA.field(field).type)
        for field, column in _FINDING_SOURCES.items()
        if column in source.column_names
    }
    # The effective severity: the rule's, one step lower where the call failed (effective_severity, vectorised).
    rule_rank = pc.take(pa.array([SEVERITY_RANK[rule.severity] for rule in rules], pa.int8()), rule_of)
    if "error_code" in taken:
        failed = pc.cast(_nonempty(taken["error_code"]), pa.int8())
        rank = pc.max_element_wise(pc.subtract(rule_rank, failed), pa.scalar(0, pa.int8()))
    else:
        rank = rule_rank
    # Reading order (finding_sort_key): time, event, worst finding first, then rule id; input order breaks ties.
    by_id = sorted(range(len(rules)), key=lambda i: rules[i].rule_id)
    id_rank = [0] * len(rules)
    for position, index in enumerate(by_id):
        id_rank[index] = position
    order = pc.sort_indices(
        pa.table({"time": taken["event_time"], "event": taken["event_id"], "severity": rank,
                  "rule": pc.take(pa.array(id_rank, pa.int32()), rule_of)}),
        sort_keys=[("time", "ascending"), ("event", "ascending"), ("severity", "descending"),
                   ("rule", "ascending")],
    )
    rule_of = pc.take(rule_of, order)
    columns = []
    for field in FINDINGS_SCHEMA:
        if field.name in ("rule_id", "title", "rule_severity"):
            attribute = "severity" if field.name == "rule_severity" else field.name
            values = pa.array([getattr(rule, attribute) for rule in rules], pa.string())
            data = pa.DictionaryArray.from_arrays(rule_of, values)
        elif field.name == "severity":
            data = pa.DictionaryArray.from_arrays(
                pc.cast(pc.take(rank, order), pa.int32()), pa.array(SEVERITIES, pa.string())
            )
        elif field.name in taken:
            data = pc.take(taken[field.name], order)
        else:
            data = pa.nulls(len(rule_of), field.type)
        columns.append(data.combine_chunks() if isinstance(data, pa.ChunkedArray) else data)
    return pa.Table.from_arrays(columns, schema=FINDINGS_SCHEMA)


def _nonempty(data: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Per row: a non-null, non-empty text (judged once per distinct value of a dictionary column)."""
    if isinstance(data, pa.ChunkedArray):
        return pa.chunked_array([_nonempty(chunk) for chunk in data.chunks], pa.bool_())
    if pa.types.is_dictionary(data.type):
        verdicts = pc.fill_null(pc.greater(pc.utf8_length(data.dictionary), 0), False)
        return pc.fill_null(pc.take(verdicts, data.indices), False)
    return pc.fill_null(pc.greater(pc.utf8_length(data), 0), False)


def _as_type(data: pa.Array | pa.ChunkedArray, target: pa.DataType) -> pa.Array | pa.ChunkedArray:
    """A taken events column as the findings table holds it. The extract's columns already are; a table from
    elsewhere may hold times as text or nanoseconds, or numbers where text belongs: converted as a record's value
    would be (times parsed, a null or unreadable time the epoch; other values as text)."""
    if data.type == target:
        return data
    if pa.types.is_timestamp(target):
        if pa.types.is_timestamp(data.type):
            if data.type.unit == "ns":
                data = pc.round_temporal(data, unit="microsecond")
            data = data.cast(pa.timestamp(data.type.unit, tz="UTC") if data.type.tz is None else data.type)
            return pc.fill_null(data.cast(target, safe=False), pa.scalar(0, target))
        return pa.array([_event_time(value) for value in column_values(data)], target)
    if pa.types.is_dictionary(target) and pa.types.is_dictionary(data.type):
        if pa.types.is_string(data.type.value_type):
            return data.cast(target)
    elif pa.types.is_string(data.type) or pa.types.is_large_string(data.type):
        return data.cast(target)
    return pa.array([_text(value) for value in column_values(data)], pa.string()).cast(target)


def findings_from_table(findings: pa.Table) -> list[Finding]:
    """:class:`Finding` objects for the rows of a findings table (see :data:`FINDINGS_SCHEMA`), in its order: each
    column turned into a Python list in one call and the findings made by one `map` over those lists (no per-row
    dicts, no JSON parsing: see :attr:`Finding.request_parameters`)."""

    def column(name: str, null: Any = None) -> list[Any]:
        return column_values(findings.column(name), null)

    with _gc_paused():
        return list(
            map(
                _finding_from_row,
                column("event_id", ""),
                column_times(findings.column("event_time")),
                column("event_source", ""),
                column("event_name", ""),
                column("rule_id"),
                column("title"),
                column("severity"),
                column("session_id"),
                column("aws_region"),
                column("source_ip"),
                column("user_agent"),
                column("request_parameters"),
                column("error_code"),
                column("recipient_account_id"),
                column("principal_arn"),
                column("rule_severity"),
            )
        )


# ---------------------------------------------------------------------------------------------------------------
# Loading


def pack_folder() -> Path:
    """The project's own rule pack (package data, so it ships in the wheel)."""
    return Path(str(importlib_resources.files("elevation.audit") / "rulepack"))


def _ruleset(
    result: LoadResult,
    exposure: bool = False,
    organization_accounts: Iterable[str] | None = None,
    exposure_disabled: Iterable[str] = (),
) -> RuleSet:
    """Drop duplicate rule ids (the same SigmaHQ rule copied into two folders must not report twice)."""
    seen: dict[str, CompiledRule] = {}
    skipped = list(result.skipped)
    for rule in result.rules:
        if rule.rule_id in seen:
            skipped.append(
                UnsupportedRule(
                    rule.path,
                    rule.title,
                    f"duplicate rule id {rule.rule_id}, already in {seen[rule.rule_id].path}",
                )
            )
            continue
        seen[rule.rule_id] = rule
    return RuleSet(
        seen.values(),
        result.unsupported,
        skipped,
        exposure=exposure,
        organization_accounts=organization_accounts,
        exposure_disabled=exposure_disabled,
    )


def load_rules(
    extra_folders: Sequence[Path] = (),
    include_pack: bool = True,
    disabled: Iterable[str] = (),
    organization_accounts: Iterable[str] | None = None,
    exposure: bool | None = None,
) -> RuleSet:
    """The pack plus configured folders. `disabled` lists rule ids (or titles) a team has switched off (exposure
    pseudo-rules included). Exposure (see :class:`RuleSet`) is on with the pack unless `exposure` says otherwise;
    `organization_accounts` (the organization's account ids) makes it organization-aware."""
    result = LoadResult()
    folders = ([pack_folder()] if include_pack else []) + [Path(folder) for folder in extra_folders]
    for folder in folders:
        if folder.is_dir():
            result.extend(compile_folder(folder))
        elif folder.is_file():
            result.extend(compile_yaml(folder.read_text(encoding="utf-8"), str(folder)))
        elif folder != pack_folder():
            raise FileNotFoundError(f"rule folder not found: {folder}")
    off = set(disabled)
    if exposure is None:
        exposure = include_pack
    if off:
        kept = [rule for rule in result.rules if rule.rule_id not in off and rule.title not in off]
        result.skipped.extend(
            UnsupportedRule(rule.path, rule.title, "disabled by configuration")
            for rule in result.rules
            if rule not in kept
        )
        result.rules = kept
    exposure_off = {
        rule.rule_id for rule in EXPOSURE_RULES.values() if rule.rule_id in off or rule.title in off
    }
    return _ruleset(result, exposure, organization_accounts, exposure_off)


def load_rules_from_yaml(text: str) -> RuleSet:
    """Rules from one YAML text (one or several documents): for tests and ad-hoc rules."""
    return _ruleset(compile_yaml(text, "<yaml>"))


def read_events(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    """Read an extract Parquet file, low-cardinality columns as Arrow dictionaries (cheaper to read and to audit),
    one chunk per row group (pq.read_table cuts them into 128k-row batches: more chunks for every take to visit)."""
    names = pq.read_schema(path).names
    with pq.ParquetFile(path, read_dictionary=[n for n in DICTIONARY_COLUMNS if n in names]) as file:
        return file.read(columns=list(columns) if columns else None)
