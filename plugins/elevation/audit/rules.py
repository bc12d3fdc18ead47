"""Sigma rules for CloudTrail: load them with pySigma, compile each detection into a predicate over an event.

pySigma parses the YAML, applies the field modifiers and resolves the condition into a tree; this module turns that
tree into small predicate objects (:class:`Node`) that evaluate a CloudTrail record (nested dicts, as CloudTrail
writes it). The engine (:mod:`elevation.audit.engine`) evaluates the same predicates on Arrow tables, vectorised.

Supported (everything SigmaHQ's AWS CloudTrail rules use, except the old aggregation syntax):

* ``logsource: product: aws, service: cloudtrail`` only; rules for other log sources are skipped (``RuleSet.skipped``).
* Field names are CloudTrail paths with dots (``requestParameters.ipPermissions.items.ipRanges.items.cidrIp``,
  ``userIdentity.sessionContext.sessionIssuer.type``). Lists met on the way are traversed: the test holds if any
  element matches. A path that ends on an object or a list of scalars is matched element-wise; an object is matched
  as its JSON text (``json.dumps(sort_keys=True)``), so ``requestParameters|contains: 'Suspended'`` works.
* Values: strings (case-insensitive, as the Sigma spec says; ``|cased`` makes them case-sensitive) with wildcards
  ``*`` and ``?`` (``\\`` escapes), numbers, booleans (``true`` matches the JSON boolean and the text "true"),
  ``null`` (the field is absent, null or an empty list).
* Lists of values are OR (AND with ``|all``); maps are AND; a list of maps is OR.
* Modifiers: ``contains``, ``startswith``, ``endswith``, ``all``, ``re`` (Python ``re.search``, case-sensitive unless
  ``|i``; ``|m`` and ``|s`` flags), ``cidr`` (IPv4 and IPv6), ``exists``, ``cased``, ``fieldref`` (equal to another
  field, also with ``startswith``/``endswith``), ``gt``/``gte``/``lt``/``lte``, ``neq``, and the value expansions
  ``windash``, ``base64``, ``base64offset``, ``wide``/``utf16*`` (matched literally, which is rarely useful here).
* ``keywords`` (values without a field): case-insensitive substring match against every scalar value of the event.
* Conditions: ``and``, ``or``, ``not``, parentheses, ``1 of x*``, ``any of x*``, ``all of x*``, ``1 of them``,
  ``all of them``; a list of conditions is OR.
* ``eventName`` is compared both as written and with a trailing API version stripped (``20\\d{6}(v\\d+)?``):
  Lambda logs ``UpdateFunctionCode20150331v2``, which matches ``UpdateFunctionCode``, ``UpdateFunctionCode*`` and
  ``UpdateFunctionCode20150331v2``. Exact rule values on ``eventName`` are normalised the same way.
* Severity comes from ``level`` (informational, low, medium, high, critical; a rule without level is medium).
* Report-card metadata: ``description``, ``falsepositives``, ATT&CK technique tags (:attr:`CompiledRule.attack_ids`)
  and the custom top-level key ``next_step:`` (one line: what to check next; :attr:`CompiledRule.next_step`).

Not supported, listed in ``RuleSet.unsupported`` with the reason, never a crash: the pipe aggregation syntax
(``selection | count() > 5``, ``| near``), ``timeframe`` (it only means something for correlation), correlation
rules, Sigma filters (meta rules), placeholders (``|expand``), timestamp-part modifiers (``|minute`` ...), YAML or
rule errors pySigma reports (unknown modifiers, invalid regular expressions).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from sigma.collection import SigmaCollection
from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule
from sigma.types import (
    CompareOperators,
    Placeholder,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaQueryExpression,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaTimestampPart,
    SigmaType,
    SpecialChars,
)

SEVERITIES: tuple[str, ...] = ("informational", "low", "medium", "high", "critical")
#: Higher is worse; used to sort findings and sessions.
SEVERITY_RANK: dict[str, int] = {name: rank for rank, name in enumerate(SEVERITIES)}
DEFAULT_SEVERITY = "medium"


def effective_severity(rule_severity: str, error_code: str | None) -> str:
    """A finding's severity: the rule's level, one step lower for a call that failed (any errorCode): six
    AccessDenied DeleteBucket calls are not six high findings, a StopLogging that failed is not critical.
    Informational stays informational; an unknown level is returned as it is."""
    if not error_code:
        return rule_severity
    rank = SEVERITY_RANK.get(rule_severity)
    if rank is None:
        return rule_severity
    return SEVERITIES[max(rank - 1, 0)]

_VERSION_SUFFIX = re.compile(r"20\d{6}(?:v\d+)?$")


def normalize_event_name(name: str) -> str:
    """`UpdateFunctionCode20150331v2` -> `UpdateFunctionCode`: Lambda (and a few others) log API versions."""
    stripped = _VERSION_SUFFIX.sub("", name)
    return stripped or name


class RuleNotSupported(Exception):
    """A rule uses a Sigma feature this evaluator does not implement; the message says which."""


class EventLike(Protocol):
    """What a predicate needs of an event: the top-level fields by name (a dict, or a lazy row view)."""

    def get(self, key: str, default: Any = None) -> Any: ...


# ---------------------------------------------------------------------------------------------------------------
# Values of an event at a path


def resolve(event: EventLike, path: tuple[str, ...]) -> list[Any]:
    """All values at `path`, traversing lists on the way (and a list at the end); [] when the path is absent."""
    current: list[Any] = [event.get(path[0])]
    for key in path[1:]:
        following: list[Any] = []
        for value in current:
            if isinstance(value, dict):
                if key in value:
                    following.append(value[key])
            elif isinstance(value, list):
                following.extend(item[key] for item in value if isinstance(item, dict) and key in item)
        current = following
        if not current:
            return current
    values: list[Any] = []
    for value in current:
        if isinstance(value, list):
            values.extend(value)
        else:
            values.append(value)
    return values


def as_text(value: Any) -> str:
    """The text a string test sees: JSON spelling for booleans and containers, so rows and records agree."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return str(value)


def iter_scalars(value: Any) -> Iterator[Any]:
    """Every scalar inside a document (for keyword search)."""
    if isinstance(value, dict):
        for item in value.values():
            yield from iter_scalars(item)
    elif isinstance(value, list):
        for item in value:
            yield from iter_scalars(item)
    elif value is not None:
        yield value


# ---------------------------------------------------------------------------------------------------------------
# Value tests: one Sigma value (after modifiers) against one value of the event


class ValueTest:
    """A test of one (non-null) value. `key` identifies equal tests, so vectorised masks can be shared."""

    key: tuple[Any, ...]

    def matches(self, value: Any) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class StringTest(ValueTest):
    """A Sigma string with wildcards, compiled to the cheapest check that is exact."""

    pattern: str  # the plain text when kind is exact/prefix/suffix/contains, a regex otherwise
    kind: str  # exact | prefix | suffix | contains | any | regex
    cased: bool
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @cached_property
    def key(self) -> tuple[Any, ...]:  # type: ignore[override]
        return ("str", self.kind, self.pattern, self.cased)

    def matches(self, value: Any) -> bool:
        text = as_text(value)
        if not self.cased:
            text = text.lower()
        kind = self.kind
        if kind == "exact":
            return text == self.pattern
        if kind == "prefix":
            return text.startswith(self.pattern)
        if kind == "suffix":
            return text.endswith(self.pattern)
        if kind == "contains":
            return self.pattern in text
        if kind == "any":
            return True
        assert self._regex is not None
        return self._regex.fullmatch(text) is not None


def compile_string(value: SigmaString) -> StringTest:
    """Wildcards become prefix/suffix/contains checks where they can, a regex otherwise."""
    cased = isinstance(value, SigmaCasedString)
    parts = list(value.s)
    for part in parts:
        if isinstance(part, Placeholder):
            raise RuleNotSupported(f"placeholder %{part.name}% (the expand modifier) is not supported")

    def fold(text: str) -> str:
        return text if cased else text.lower()

    plain = [part for part in parts if isinstance(part, str)]
    specials = [part for part in parts if isinstance(part, SpecialChars)]
    if not specials:
        return StringTest(fold("".join(plain)), "exact", cased)
    if SpecialChars.WILDCARD_SINGLE not in specials and len(plain) <= 1:
        text = fold(plain[0]) if plain else ""
        starts = parts[0] == SpecialChars.WILDCARD_MULTI
        ends = parts[-1] == SpecialChars.WILDCARD_MULTI
        inner_wildcards = len(specials) - int(starts) - int(ends)
        if not plain:
            return StringTest("", "any", cased)
        if inner_wildcards == 0:
            if starts and ends:
                return StringTest(text, "contains", cased)
            if ends:
                return StringTest(text, "prefix", cased)
            if starts:
                return StringTest(text, "suffix", cased)
    pieces = []
    for part in parts:
        if part == SpecialChars.WILDCARD_MULTI:
            pieces.append(".*")
        elif part == SpecialChars.WILDCARD_SINGLE:
            pieces.append(".")
        else:
            pieces.append(re.escape(fold(str(part))))
    regex = "".join(pieces)
    return StringTest(regex, "regex", cased, re.compile(regex, re.DOTALL))


def searchable(pattern: str, flags: int = 0) -> str:
    """A pattern that ``search`` finds in exactly the texts `pattern` is found in, minus a leading greedy ``.+`` or
    ``.*``: with one, search tries every start and backtracks over the rest of the text (quadratic; 13 µs per
    100-character ARN for SigmaHQ's ``.+:assumed-role/aws:.+``). ``.+X`` is found where ``.X`` is, ``.*X`` where
    ``X`` is; a leading alternative is the only one it binds to, so alternatives after it are unaffected."""
    if flags & re.VERBOSE or len(pattern) < 2 or pattern[0] != "." or pattern[1] not in "+*":
        return pattern
    if pattern[2:3] and pattern[2] in "?+*{":  # lazy, possessive or a quantifier on the quantifier: leave it be
        return pattern
    return ("." if pattern[1] == "+" else "") + pattern[2:]


@dataclass(frozen=True)
class RegexTest(ValueTest):
    """`|re`: Python regular expression, searched (not anchored), on the value's text."""

    pattern: str
    flags: int
    _regex: re.Pattern[str] = field(compare=False, repr=False)

    @cached_property
    def key(self) -> tuple[Any, ...]:  # type: ignore[override]
        return ("re", self.pattern, self.flags)

    def matches(self, value: Any) -> bool:
        return self._regex.search(as_text(value)) is not None


@dataclass(frozen=True)
class CidrTest(ValueTest):
    """`|cidr`: the value is an IP address inside the network (text that is not an address never matches)."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network

    @cached_property
    def key(self) -> tuple[Any, ...]:  # type: ignore[override]
        return ("cidr", str(self.network))

    def matches(self, value: Any) -> bool:
        try:
            address = ipaddress.ip_address(as_text(value).strip())
        except ValueError:
            return False
        return address.version == self.network.version and address in self.network


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


@dataclass(frozen=True)
class NumberTest(ValueTest):
    """A number, or a comparison (`|gt`, `|lte` ...); numeric text in the event counts as a number."""

    number: float
    op: str  # eq | lt | lte | gt | gte | neq

    @cached_property
    def key(self) -> tuple[Any, ...]:  # type: ignore[override]
        return ("num", self.op, self.number)

    def matches(self, value: Any) -> bool:
        number = _as_number(value)
        if number is None:
            return False
        return {
            "eq": number == self.number,
            "lt": number < self.number,
            "lte": number <= self.number,
            "gt": number > self.number,
            "gte": number >= self.number,
            "neq": number != self.number,
        }[self.op]


@dataclass(frozen=True)
class BoolTest(ValueTest):
    """`true`/`false`: the JSON boolean or its text (CloudTrail writes both, e.g. requestParameters.enable)."""

    value: bool

    @cached_property
    def key(self) -> tuple[Any, ...]:  # type: ignore[override]
        return ("bool", self.value)

    def matches(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value is self.value
        return isinstance(value, str) and value.strip().lower() == ("true" if self.value else "false")


@dataclass(frozen=True)
class AnyOfTests(ValueTest):
    """Several alternatives for one value (modifier expansions, eventName with and without its API version)."""

    tests: tuple[ValueTest, ...]

    @cached_property
    def key(self) -> tuple[Any, ...]:  # type: ignore[override]
        return ("any", tuple(test.key for test in self.tests))

    def matches(self, value: Any) -> bool:
        return any(test.matches(value) for test in self.tests)


# ---------------------------------------------------------------------------------------------------------------
# Predicate nodes


class Node:
    """A compiled condition: evaluates to True/False on one event."""

    def evaluate(self, event: EventLike) -> bool:
        raise NotImplementedError

    def fields(self) -> Iterator[FieldTest]:
        """Every field test of the tree (for indexing)."""
        return iter(())


@dataclass(frozen=True)
class AllOf(Node):
    children: tuple[Node, ...]

    def evaluate(self, event: EventLike) -> bool:
        return all(child.evaluate(event) for child in self.children)

    def fields(self) -> Iterator[FieldTest]:
        for child in self.children:
            yield from child.fields()


@dataclass(frozen=True)
class AnyOf(Node):
    children: tuple[Node, ...]

    def evaluate(self, event: EventLike) -> bool:
        return any(child.evaluate(event) for child in self.children)

    def fields(self) -> Iterator[FieldTest]:
        for child in self.children:
            yield from child.fields()


@dataclass(frozen=True)
class Not(Node):
    child: Node

    def evaluate(self, event: EventLike) -> bool:
        return not self.child.evaluate(event)

    def fields(self) -> Iterator[FieldTest]:
        yield from self.child.fields()


@dataclass(frozen=True)
class FieldTest(Node):
    """One field against one Sigma value. `mode` says how the field's values are judged:

    value: any non-null value passes `test`; null: no non-null value; exists / missing: some / no non-null value;
    fieldref: some value equals (or starts/ends with) some value of `ref_path`, case-insensitively.
    """

    field: str
    path: tuple[str, ...]
    mode: str
    test: ValueTest | None = None
    ref_path: tuple[str, ...] = ()
    ref_match: str = "equal"  # equal | prefix | suffix

    @cached_property
    def key(self) -> tuple[Any, ...]:
        return (self.path, self.mode, self.test.key if self.test else None, self.ref_path, self.ref_match)

    def _expand(self, values: list[Any]) -> list[Any]:
        if self.path == ("eventName",):
            return [*values, *(normalize_event_name(v) for v in values if isinstance(v, str))]
        return values

    def values_of(self, event: EventLike) -> list[Any]:
        return self._expand(resolve(event, self.path))

    def judge_value(self, value: Any) -> bool:
        """The verdict for an event whose field holds exactly `value` (None: absent), as a typed column stores it."""
        return self.judge(self._expand([] if value is None else [value]))

    def evaluate(self, event: EventLike) -> bool:
        if self.mode == "fieldref":
            return self._fieldref(self.values_of(event), resolve(event, self.ref_path))
        return self.judge(self.values_of(event))

    def checker(
        self, values_at: Callable[[Any, tuple[str, ...]], list[Any]] = resolve
    ) -> Callable[[EventLike], bool]:
        """:meth:`evaluate` as one closure, same verdicts in fewer calls (for evaluating many events). `values_at`
        is :func:`resolve` or an equivalent that remembers paths (many tests of a rule read the same one)."""
        if self.mode == "fieldref" or self.path == ("eventName",):
            return self.evaluate
        path = self.path
        if self.mode == "value":
            assert self.test is not None
            matches = self.test.matches

            def check(event: EventLike) -> bool:
                for value in values_at(event, path):  # noqa: SIM110 (judge(), mode "value", without a generator)
                    if value is not None and matches(value):
                        return True
                return False

            return check
        judge = self.judge
        return lambda event: judge(values_at(event, path))

    def judge(self, values: Sequence[Any]) -> bool:
        """The verdict on the field's values alone (all modes but fieldref)."""
        mode = self.mode
        if mode == "value":
            test = self.test
            assert test is not None
            return any(value is not None and test.matches(value) for value in values)
        present = any(value is not None for value in values)
        if mode in ("null", "missing"):
            return not present
        if mode == "exists":
            return present
        raise ValueError(f"judge() does not apply to mode {mode}")

    def _fieldref(self, values: list[Any], references: list[Any]) -> bool:
        left = [as_text(value).lower() for value in values if value is not None]
        right = [as_text(value).lower() for value in references if value is not None]
        if self.ref_match == "prefix":
            return any(a.startswith(b) for a in left for b in right)
        if self.ref_match == "suffix":
            return any(a.endswith(b) for a in left for b in right)
        return bool(set(left) & set(right))

    def fields(self) -> Iterator[FieldTest]:
        yield self


@dataclass(frozen=True)
class KeywordTest(Node):
    """A value without a field: case-insensitive substring of any scalar value of the event."""

    test: StringTest

    def evaluate(self, event: EventLike) -> bool:
        materialize: Callable[[], dict[str, Any]] | None = getattr(event, "materialize", None)
        record = materialize() if materialize else event
        return any(self.test.matches(value) for value in iter_scalars(record))


# ---------------------------------------------------------------------------------------------------------------
# Compiling pySigma's condition tree


def _path(field_name: str) -> tuple[str, ...]:
    return tuple(field_name.split("."))


def _value_test(value: SigmaType, field_name: str | None) -> ValueTest:
    if isinstance(value, SigmaString):
        test: ValueTest = compile_string(value)
        if field_name == "eventName" and isinstance(test, StringTest) and test.kind == "exact":
            normalized = normalize_event_name(test.pattern)
            if normalized != test.pattern:
                test = AnyOfTests((test, StringTest(normalized, "exact", test.cased)))
        return test
    if isinstance(value, SigmaRegularExpression):
        flags = 0
        for flag in value.flags:
            flags |= SigmaRegularExpression.sigma_to_python_flags[flag]
        pattern = str(value.regexp)
        if SigmaRegularExpressionFlag.IGNORECASE in value.flags:
            flags |= re.IGNORECASE
        return RegexTest(pattern, flags, re.compile(searchable(pattern, flags), flags))
    if isinstance(value, SigmaCIDRExpression):
        return CidrTest(value.network)
    if isinstance(value, SigmaBool):
        return BoolTest(bool(value.boolean))
    if isinstance(value, SigmaTimestampPart):
        raise RuleNotSupported(
            f"timestamp part modifier ({value.timestamp_part.name.lower()}) is not supported"
        )
    if isinstance(value, SigmaCompareExpression):
        ops = {
            CompareOperators.LT: "lt",
            CompareOperators.LTE: "lte",
            CompareOperators.GT: "gt",
            CompareOperators.GTE: "gte",
            CompareOperators.NEQ: "neq",
        }
        return NumberTest(float(value.number.number), ops[value.op])
    if isinstance(value, SigmaNumber):
        return NumberTest(float(value.number), "eq")
    if isinstance(value, SigmaExpansion):
        return AnyOfTests(tuple(_value_test(item, field_name) for item in value.values))
    if isinstance(value, SigmaQueryExpression):
        raise RuleNotSupported("query expressions (placeholders resolved by a pipeline) are not supported")
    raise RuleNotSupported(f"value type {type(value).__name__} is not supported")


def _leaf(item: ConditionFieldEqualsValueExpression | ConditionValueExpression) -> Node:
    value = item.value
    if isinstance(item, ConditionValueExpression):
        if not isinstance(value, SigmaString):
            raise RuleNotSupported(f"keyword of type {type(value).__name__} is not supported")
        test = compile_string(value)
        if test.kind == "exact":  # keywords are full-text searches: a plain word is found inside a value
            test = StringTest(test.pattern, "contains", test.cased)
        elif test.kind == "regex":
            test = StringTest(
                ".*" + test.pattern + ".*",
                "regex",
                test.cased,
                re.compile(".*" + test.pattern + ".*", re.DOTALL),
            )
        return KeywordTest(test)
    field_name = item.field
    path = _path(field_name)
    if isinstance(value, SigmaNull):
        return FieldTest(field_name, path, "null")
    if isinstance(value, SigmaExists):
        return FieldTest(field_name, path, "exists" if value.exists else "missing")
    if isinstance(value, SigmaFieldReference):
        match = "prefix" if value.starts_with else "suffix" if value.ends_with else "equal"
        return FieldTest(field_name, path, "fieldref", ref_path=_path(value.field), ref_match=match)
    return FieldTest(field_name, path, "value", _value_test(value, field_name))


def compile_condition(tree: Any) -> Node:
    """pySigma's post-processed condition tree -> :class:`Node`."""
    if isinstance(tree, ConditionAND):
        return AllOf(tuple(compile_condition(arg) for arg in tree.args))
    if isinstance(tree, ConditionOR):
        return AnyOf(tuple(compile_condition(arg) for arg in tree.args))
    if isinstance(tree, ConditionNOT):
        return Not(compile_condition(tree.args[0]))
    if isinstance(tree, (ConditionFieldEqualsValueExpression, ConditionValueExpression)):
        return _leaf(tree)
    raise RuleNotSupported(f"condition element {type(tree).__name__} is not supported")


# ---------------------------------------------------------------------------------------------------------------
# Rules


@dataclass(frozen=True)
class UnsupportedRule:
    """A rule that was not loaded, and why (shown to the security team, so they know what is not watched)."""

    path: str
    title: str
    reason: str


@dataclass(frozen=True)
class CompiledRule:
    """A loaded rule: metadata for the reports, and the predicate."""

    rule_id: str
    title: str
    severity: str
    path: str
    predicate: Node
    description: str = ""
    tags: tuple[str, ...] = ()
    falsepositives: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    #: One line for the report card: what to check next (the rule's custom top-level ``next_step:`` key).
    next_step: str = ""

    @property
    def attack_ids(self) -> tuple[str, ...]:
        """The ATT&CK technique ids of the rule's tags, in tag order: ``attack.t1098.003`` -> ``T1098.003``
        (tactics such as ``attack.persistence`` and groups or software are not techniques)."""
        found: list[str] = []
        for tag in self.tags:
            match = _TECHNIQUE_TAG.fullmatch(tag.strip())
            if match:
                technique = match.group(1).upper()
                if technique not in found:
                    found.append(technique)
        return tuple(found)

    def matches(self, event: EventLike) -> bool:
        return self.predicate.evaluate(event)


_TECHNIQUE_TAG = re.compile(r"attack\.(t\d{4}(?:\.\d{3})?)", re.IGNORECASE)


@dataclass
class LoadResult:
    """What a set of YAML documents produced."""

    rules: list[CompiledRule] = field(default_factory=list)
    unsupported: list[UnsupportedRule] = field(default_factory=list)
    skipped: list[UnsupportedRule] = field(default_factory=list)

    def extend(self, other: LoadResult) -> None:
        self.rules.extend(other.rules)
        self.unsupported.extend(other.unsupported)
        self.skipped.extend(other.skipped)


def _is_cloudtrail(rule: SigmaRule) -> bool:
    source = rule.logsource
    return (source.product or "").lower() == "aws" and (source.service or "").lower() == "cloudtrail"


def compile_rule(rule: SigmaRule, path: str) -> CompiledRule:
    """One SigmaRule -> CompiledRule; raises RuleNotSupported (or a SigmaError) with the reason."""
    if rule.errors:
        raise RuleNotSupported("; ".join(str(error) for error in rule.errors))
    if any("|" in condition for condition in rule.detection.condition):
        raise RuleNotSupported("aggregation in the condition (old pipe syntax: count()/near), not supported")
    if "timeframe" in rule.detection.detections:
        raise RuleNotSupported("timeframe: needs correlation over several events, not supported")
    conditions = rule.detection.parsed_condition
    compiled = [compile_condition(condition.parsed) for condition in conditions]
    predicate = compiled[0] if len(compiled) == 1 else AnyOf(tuple(compiled))
    level = rule.level.name.lower() if rule.level is not None else DEFAULT_SEVERITY
    return CompiledRule(
        rule_id=str(rule.id) if rule.id else (rule.name or Path(path).stem),
        title=rule.title,
        severity=level if level in SEVERITY_RANK else DEFAULT_SEVERITY,
        path=path,
        predicate=predicate,
        description=(rule.description or "").strip(),
        tags=tuple(str(tag) for tag in rule.tags),
        falsepositives=tuple(str(item) for item in rule.falsepositives),
        references=tuple(str(item) for item in rule.references),
        next_step=_next_step(rule),
    )


def _next_step(rule: SigmaRule) -> str:
    """The custom ``next_step:`` key (pySigma keeps unknown top-level keys in ``custom_attributes``), one line."""
    value = (getattr(rule, "custom_attributes", None) or {}).get("next_step")
    return " ".join(str(value).split()) if value is not None else ""


def compile_yaml(text: str, path: str = "<yaml>") -> LoadResult:
    """All rules of one YAML text (one file); never raises for a bad rule, lists it instead."""
    result = LoadResult()
    try:
        collection = SigmaCollection.from_yaml(text, collect_errors=True, resolve_references=False)
    except Exception as error:  # pySigma raises YAML, Sigma and plain errors; none of them may stop a load
        result.unsupported.append(UnsupportedRule(path, Path(path).stem, f"cannot parse: {error}"))
        return result
    rule_errors = {str(error) for rule in collection.rules for error in getattr(rule, "errors", ())}
    for collection_error in collection.errors:
        if str(collection_error) in rule_errors:
            continue  # reported below, with the rule's title
        result.unsupported.append(UnsupportedRule(path, Path(path).stem, f"cannot parse: {collection_error}"))
    for rule in collection.rules:
        title = getattr(rule, "title", None) or Path(path).stem
        if isinstance(rule, SigmaCorrelationRule):
            result.unsupported.append(UnsupportedRule(path, title, "correlation rules are not supported"))
            continue
        if not isinstance(rule, SigmaRule):
            result.unsupported.append(
                UnsupportedRule(path, title, f"{type(rule).__name__} (Sigma filters) are not supported")
            )
            continue
        if not _is_cloudtrail(rule):
            source = rule.logsource
            result.skipped.append(
                UnsupportedRule(
                    path, title, f"logsource is {source.product}/{source.service}, not aws/cloudtrail"
                )
            )
            continue
        try:
            result.rules.append(compile_rule(rule, path))
        except (RuleNotSupported, SigmaError) as error:
            reason = str(error)
            if "pipe syntax" in reason:
                reason = "aggregation in the condition (old pipe syntax: count()/near), not supported"
            result.unsupported.append(UnsupportedRule(path, title, reason))
        except Exception as error:  # a pySigma bug on odd input must not stop the other rules
            result.unsupported.append(UnsupportedRule(path, title, f"{type(error).__name__}: {error}"))
    return result


RULE_SUFFIXES = (".yml", ".yaml")


def rule_files(folder: Path) -> list[Path]:
    """Rule files under a folder, recursively, sorted (hidden files and folders ignored)."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and path.suffix.lower() in RULE_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def compile_folder(folder: Path) -> LoadResult:
    """Every rule file of a folder; unreadable files are listed, not raised."""
    result = LoadResult()
    for path in rule_files(folder):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            result.unsupported.append(UnsupportedRule(str(path), path.stem, f"cannot read: {error}"))
            continue
        result.extend(compile_yaml(text, str(path)))
    return result


def __getattr__(name: str) -> Any:
    """`from elevation.audit.rules import load_rules` works too (the loader lives in the engine module)."""
    if name in {"load_rules", "load_rules_from_yaml", "RuleSet", "Finding"}:
        from elevation.audit import engine

        return getattr(engine, name)
    raise AttributeError(name)
