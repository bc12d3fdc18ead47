"""Evaluate a rule set over CloudTrail events in one pass, fast enough to cost about as much as reading them.

Why it is fast: nearly every rule names the calls it is about (``eventName`` / ``eventSource``). Rules are indexed by
those values; on an Arrow table the typed columns are dictionary-encoded once, each rule's tests on typed columns are
decided once per *distinct* value (a few hundred names, not a million rows) and broadcast to rows with one ``take``.
Only rows some rule could match are looked at further; only where a rule's verdict depends on a nested document
(``requestParameters``...) is that row parsed from JSON and the compiled predicate run in Python. Rules that name no
call (``userIdentity.type: Root``) get the same vectorised treatment over the whole table.

Verdicts are three-valued on the way (certainly true / maybe / certainly false), so the vectorised pass never decides
what only the nested document can decide, and :meth:`RuleSet.evaluate_table` agrees with
:meth:`RuleSet.evaluate_records` on the same events.
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from elevation.audit.rules import (
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
    StringTest,
    UnsupportedRule,
    ValueTest,
    compile_folder,
    compile_yaml,
    normalize_event_name,
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
_FINDING_COLUMNS: tuple[str, ...] = (
    "eventID",
    "eventTime",
    "eventSource",
    "eventName",
    "session_id",
    "awsRegion",
    "sourceIPAddress",
    "userAgent",
    "requestParameters",
    "errorCode",
    "recipientAccountId",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_JSON_COLUMNS = frozenset(JSON_FIELDS)
#: Text that JSON writes the same way whoever serialises it (no escapes, no non-ASCII): safe to search in raw JSON.
_SAFE_TEXT = re.compile(r"[A-Za-z0-9 _.:@=+,$-]+")
#: Index drivers, in order of preference: a rule is indexed by the first of these its condition requires.
_DRIVERS: tuple[tuple[str, ...], ...] = (("eventName",), ("eventSource",))


@dataclass(frozen=True)
class Finding:
    """One rule matching one event (an event matching two rules gives two findings)."""

    event_id: str
    event_time: datetime
    event_source: str
    event_name: str
    rule_id: str
    title: str
    severity: str
    session_id: str | None
    aws_region: str | None
    source_ip: str | None
    user_agent: str | None
    request_parameters: dict | None
    error_code: str | None
    recipient_account_id: str | None

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
            "session_id": self.session_id,
            "awsRegion": self.aws_region,
            "sourceIPAddress": self.source_ip,
            "userAgent": self.user_agent,
            "errorCode": self.error_code,
            "recipientAccountId": self.recipient_account_id,
            "requestParameters": self.request_parameters,
        }


def finding_sort_key(finding: Finding) -> tuple[Any, ...]:
    """Time order, worst rule first within an event: the order people read a session in."""
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
    """The table under evaluation; a column is made contiguous once, because `take` on a chunked column
    concatenates all its chunks on every call."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.num_rows = table.num_rows
        self.column_names = table.column_names
        self._contiguous: dict[str, pa.Array] = {}

    def column(self, name: str) -> pa.ChunkedArray:
        return self.table.column(name)

    def contiguous(self, name: str) -> pa.Array:
        if name not in self._contiguous:
            data = self.table.column(name)
            if pa.types.is_dictionary(data.type):
                data = data.unify_dictionaries()
            self._contiguous[name] = data.combine_chunks()
        return self._contiguous[name]

    def take(self, rows: pa.Array, columns: Sequence[str] | None = None) -> pa.Table:
        names = [name for name in (columns or self.column_names) if name in self.column_names]
        return pa.table({name: pc.take(self.contiguous(name), rows) for name in names})


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

    def column(self, name: str) -> pa.ChunkedArray | pa.Array:
        if name not in self._columns:
            if self.row_ids is None:
                self._columns[name] = self.table.column(name)
            else:
                self._columns[name] = pc.take(self.table.contiguous(name), self.row_ids)
        return self._columns[name]

    def encoded(self, column: str) -> tuple[pa.Array, list[Any]]:
        """(indices with nulls pointing one past the dictionary, distinct values)."""
        if column not in self._encoded:
            data = self.column(column)
            if isinstance(data, pa.Array):
                data = pa.chunked_array([data])
            if pa.types.is_boolean(data.type):
                data = pc.cast(data, pa.string())
            if pa.types.is_dictionary(data.type):
                array = data.unify_dictionaries().combine_chunks()
            else:
                array = pc.dictionary_encode(data.combine_chunks())
            values = array.dictionary.to_pylist()
            indices = pc.fill_null(array.indices, len(values))
            self._encoded[column] = (indices, values)
        return self._encoded[column]

    def leaf(self, test: FieldTest) -> tuple[Mask, Mask] | None:
        """(certainly, maybe) for a field test on every row, or None when nothing here can tell."""
        key = test.key
        if key not in self._leaves:
            self._leaves[key] = self._typed_leaf(test) or (self._json_leaf(test) if self.with_json else None)
        return self._leaves[key]

    def _typed_leaf(self, test: FieldTest) -> tuple[Mask, Mask] | None:
        """Exact, from a typed column: the test is decided once per distinct value and broadcast with `take`."""
        column = TYPED_COLUMNS.get(test.path)
        if column is None or column not in self.names or test.mode == "fieldref":
            return None
        indices, values = self.encoded(column)
        lookup = [test.judge_value(value) for value in values]
        lookup.append(test.judge_value(None))
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
        text = self.column(column)
        if pa.types.is_dictionary(text.type):
            text = pc.cast(text, pa.string())
        needles: list[tuple[str, bool]] = []
        if len(test.path) > 1 or column == OTHER_FIELDS_COLUMN:
            if not _SAFE_TEXT.fullmatch(test.path[-1]):
                return None
            needles.append((f'"{test.path[-1]}"', False))
        value = test.test
        if (
            isinstance(value, StringTest)
            and value.kind in ("exact", "prefix", "suffix", "contains")
            and _SAFE_TEXT.fullmatch(value.pattern)
        ):
            needles.append((value.pattern, not value.cased))
        if not needles:
            maybe: Mask = pc.is_valid(text)
        else:
            maybe = True
            for needle, ignore_case in needles:
                found = pc.fill_null(pc.match_substring(text, needle, ignore_case=ignore_case), False)
                maybe = _and(maybe, found)
        return (False, maybe)

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
            return lower, upper
        if isinstance(node, AnyOf):
            lower, upper = False, False
            for child in node.children:
                child_lower, child_upper = self.bounds(child)
                lower, upper = _or(lower, child_lower), _or(upper, child_upper)
            return lower, upper
        if isinstance(node, Not):
            child_lower, child_upper = self.bounds(node.child)
            return _not(child_upper), _not(child_lower)
        return (False, True)

    def rows(self, mask: Mask) -> pa.Array:
        """Positions in the original table of the rows where `mask` holds."""
        if mask is False:
            return pa.array([], pa.int64())
        positions = pa.array(range(self.num_rows), pa.int64()) if mask is True else pc.indices_nonzero(mask)
        return positions if self.row_ids is None else pc.take(self.row_ids, positions)


class RowView:
    """A row of EVENT_SCHEMA seen as a CloudTrail record, parsing a nested document only when a rule asks for it."""

    __slots__ = ("row", "_parsed")

    _TYPED = frozenset((*STRING_FIELDS, *BOOL_FIELDS))
    _JSON = frozenset(JSON_FIELDS)

    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row
        self._parsed: dict[str, Any] = {}

    def _json(self, column: str) -> Any:
        if column not in self._parsed:
            text = self.row.get(column)
            self._parsed[column] = json.loads(text) if text else None
        return self._parsed[column]

    def get(self, key: str, default: Any = None) -> Any:
        if key in self._TYPED:
            value = self.row.get(key)
            return default if value is None else value
        if key in self._JSON:
            value = self._json(key)
            return default if value is None else value
        if key == "eventTime":
            return self.materialize()["eventTime"]
        others = self._json(OTHER_FIELDS_COLUMN) or {}
        return others.get(key, default)

    def materialize(self) -> dict[str, Any]:
        return row_to_record(self.row)


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
    """Compiled rules plus the ones that could not be loaded. Treat `rules` as read-only once evaluating."""

    def __init__(
        self,
        rules: Iterable[CompiledRule] = (),
        unsupported: Iterable[UnsupportedRule] = (),
        skipped: Iterable[UnsupportedRule] = (),
    ) -> None:
        self.rules: list[CompiledRule] = list(rules)
        self.unsupported: list[UnsupportedRule] = list(unsupported)
        #: Rules not meant for CloudTrail (other log sources) and duplicates: not loaded, not an error.
        self.skipped: list[UnsupportedRule] = list(skipped)
        self._plan_cache: _Plan | None = None

    def __repr__(self) -> str:
        return f"RuleSet({len(self.rules)} rules, {len(self.unsupported)} unsupported, {len(self.skipped)} skipped)"

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
            for index in plan.candidates(record):
                rule = plan.rules[index]
                if rule.predicate.evaluate(record):
                    finding = self._finding_from_record(record, rule, session_id)
                    found.append((finding_sort_key(finding), position, finding))
        found.sort(
            key=lambda item: item[:2]
        )  # input order breaks ties (event ids repeat in hand-made fixtures)
        return [finding for _, _, finding in found]

    @staticmethod
    def _finding_from_record(record: dict[str, Any], rule: CompiledRule, session_id: str | None) -> Finding:
        parameters = record.get("requestParameters")
        return Finding(
            event_id=str(record.get("eventID") or ""),
            event_time=_event_time(record.get("eventTime")),
            event_source=str(record.get("eventSource") or ""),
            event_name=str(record.get("eventName") or ""),
            rule_id=rule.rule_id,
            title=rule.title,
            severity=rule.severity,
            session_id=session_id,
            aws_region=_text(record.get("awsRegion")),
            source_ip=_text(record.get("sourceIPAddress")),
            user_agent=_text(record.get("userAgent")),
            request_parameters=parameters if isinstance(parameters, dict) else None,
            error_code=_text(record.get("errorCode")),
            recipient_account_id=_text(record.get("recipientAccountId")),
        )

    # -- tables -------------------------------------------------------------------------------------------------

    def evaluate_table(self, table: pa.Table) -> list[Finding]:
        """Findings for a table of EVENT_SCHEMA (nested documents as JSON text), sorted by time."""
        missing = [name for name in REQUIRED_COLUMNS if name not in table.column_names]
        if missing:
            raise ValueError(f"not an events table: missing column(s) {', '.join(missing)}")
        plan = self._plan()
        if table.num_rows == 0 or not plan.rules:
            return []
        source = _Source(table)
        whole = _Frame(source, None)
        certain: list[tuple[pa.Array, int]] = []  # (original rows, rule index)
        maybe: list[tuple[int, int]] = []

        # Rules that name their calls: only rows with such a call are looked at.
        candidate: Mask = False
        for driver in plan.drivers:
            if not (driver.exact or driver.patterns):
                continue
            indices, values = whole.encoded(TYPED_COLUMNS[driver.path])
            lookup = [bool(driver.rules_for(value)) for value in values] + [False]
            if any(lookup):
                candidate = _or(candidate, pc.take(pa.array(lookup, pa.bool_()), indices))
        frames: list[tuple[_Frame, list[int]]] = []
        if candidate is not False and plan.indexed:
            row_ids = None if candidate is True else pc.indices_nonzero(candidate)
            frames.append((whole if row_ids is None else _Frame(source, row_ids), plan.indexed))
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
                narrow = _Frame(source, undecided, with_json=True)
                lower, upper = narrow.bounds(predicate)
                rows = narrow.rows(lower)
                if len(rows):
                    certain.append((rows, index))
                maybe.extend((row, index) for row in narrow.rows(_and(upper, _not(lower))).to_pylist())

        extra_rules: pa.Array | None = None  # rule of each row decided in Python (the -1 entry of `certain`)
        if maybe:
            rows = sorted({row for row, _ in maybe})
            views = dict(zip(rows, map(RowView, _rows(source.take(pa.array(rows, pa.int64())))), strict=True))
            decided = [
                (row, index) for row, index in maybe if plan.rules[index].predicate.evaluate(views[row])
            ]
            if decided:
                certain.append((pa.array([row for row, _ in decided], pa.int64()), -1))
                extra_rules = pa.array([index for _, index in decided], pa.int32())
        return _findings(source, plan, certain, extra_rules)


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


def _pylist(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    """to_pylist, without Arrow's slow path for dictionary arrays (50x slower than indexing the values)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(array.type):
        values = array.dictionary.to_pylist()
        return [None if index is None else values[index] for index in array.indices.to_pylist()]
    return array.to_pylist()


def _times(column: pa.ChunkedArray | pa.Array) -> list[datetime]:
    """Aware UTC datetimes of a timestamp column (Arrow's own conversion is ~3 s per million)."""
    if not pa.types.is_timestamp(column.type):
        return [_event_time(value) for value in _pylist(column)]
    scale = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}[column.type.unit]
    micros = pc.cast(column, pa.int64()).to_pylist()
    return [
        _EPOCH + timedelta(microseconds=value * scale) if value is not None else _EPOCH for value in micros
    ]


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as dicts, converted column by column (see :func:`_pylist`)."""
    columns = {
        name: _times(table.column(name))
        if pa.types.is_timestamp(table.schema.field(name).type)
        else _pylist(table.column(name))
        for name in table.column_names
    }
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def _findings(
    source: _Source, plan: _Plan, matches: list[tuple[pa.Array, int]], extra_rules: pa.Array | None
) -> list[Finding]:
    """Findings for (rows, rule) matches, built column-wise: a rule that matches every event of a night must not
    cost more than the reading did (frozen dataclass __init__ and Arrow's timestamp to_pylist are the slow parts)."""
    if not matches:
        return []
    row_arrays = [rows.cast(pa.int64()) for rows, _ in matches]
    rule_arrays = [
        extra_rules if index == -1 else pa.repeat(pa.scalar(index, pa.int32()), len(rows))
        for rows, index in matches
    ]
    rows = pa.concat_arrays(row_arrays)
    rules = pa.concat_arrays(rule_arrays)
    data = source.take(rows, _FINDING_COLUMNS)
    severity = pa.array([-SEVERITY_RANK.get(rule.severity, 0) for rule in plan.rules], pa.int32())
    rule_ids = pa.array([rule.rule_id for rule in plan.rules], pa.string())
    order = pc.sort_indices(
        pa.table(
            {
                "time": data.column("eventTime"),
                "event": data.column("eventID"),
                "severity": pc.take(severity, rules),
                "rule": pc.take(rule_ids, rules),
                "row": rows,
            }
        ),
        sort_keys=[(name, "ascending") for name in ("time", "event", "severity", "rule", "row")],
    )
    data = data.take(order)
    rules_list = pc.take(rules, order).to_pylist()
    rows_list = pc.take(rows, order).to_pylist()

    def column(name: str) -> list[Any]:
        return _pylist(data.column(name)) if name in data.column_names else [None] * data.num_rows

    times = _times(data.column("eventTime"))
    event_ids, sources, names = column("eventID"), column("eventSource"), column("eventName")
    sessions, regions, ips, agents = (
        column("session_id"),
        column("awsRegion"),
        column("sourceIPAddress"),
        column("userAgent"),
    )
    parameters, errors, accounts = (
        column("requestParameters"),
        column("errorCode"),
        column("recipientAccountId"),
    )
    rule_objects = plan.rules
    findings: list[Finding] = []
    append = findings.append
    last_row, last_parameters = -1, None
    new = object.__new__
    with _gc_paused():
        for position, (row, index) in enumerate(zip(rows_list, rules_list, strict=True)):
            if row != last_row:  # one event's findings are adjacent after the sort: parse its parameters once
                document = _parse_document(parameters[position])
                last_row, last_parameters = row, document if isinstance(document, dict) else None
            rule = rule_objects[index]
            finding = new(Finding)
            # Finding is frozen; filling its __dict__ directly is what __init__ does, minus 14 object.__setattr__ calls.
            finding.__dict__.update(
                event_id=event_ids[position] or "",
                event_time=times[position],
                event_source=sources[position] or "",
                event_name=names[position] or "",
                rule_id=rule.rule_id,
                title=rule.title,
                severity=rule.severity,
                session_id=sessions[position],
                aws_region=regions[position],
                source_ip=ips[position],
                user_agent=agents[position],
                request_parameters=last_parameters,
                error_code=errors[position],
                recipient_account_id=accounts[position],
            )
            append(finding)
    return findings


# ---------------------------------------------------------------------------------------------------------------
# Loading


def pack_folder() -> Path:
    """The project's own rule pack (package data, so it ships in the wheel)."""
    return Path(str(importlib_resources.files("elevation.audit") / "rulepack"))


def _ruleset(result: LoadResult) -> RuleSet:
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
    return RuleSet(seen.values(), result.unsupported, skipped)


def load_rules(
    extra_folders: Sequence[Path] = (), include_pack: bool = True, disabled: Iterable[str] = ()
) -> RuleSet:
    """The pack plus configured folders. `disabled` lists rule ids (or titles) a team has switched off."""
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
    if off:
        kept = [rule for rule in result.rules if rule.rule_id not in off and rule.title not in off]
        result.skipped.extend(
            UnsupportedRule(rule.path, rule.title, "disabled by configuration")
            for rule in result.rules
            if rule not in kept
        )
        result.rules = kept
    return _ruleset(result)


def load_rules_from_yaml(text: str) -> RuleSet:
    """Rules from one YAML text (one or several documents): for tests and ad-hoc rules."""
    return _ruleset(compile_yaml(text, "<yaml>"))


def read_events(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    """Read an extract Parquet file, low-cardinality columns as Arrow dictionaries (cheaper to read and to audit)."""
    names = pq.read_schema(path).names
    return pq.read_table(
        path,
        columns=list(columns) if columns else None,
        read_dictionary=[n for n in DICTIONARY_COLUMNS if n in names],
    )
