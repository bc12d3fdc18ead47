"""CloudTrail Lake as a source: one Trino-dialect query per night for all sessions, run cheaply and safely.

Two halves. The pure half builds the query text: every value that came from a request or a directory (account
ids, permission set and user names, access key ids) is validated or escaped (string literals with quotes doubled,
LIKE wildcards escaped under an explicit ESCAPE clause), and every query is bounded by `eventtime`, because Lake
bills per byte scanned. The I/O half is :class:`LakeClient`: StartQuery (retrying MaxConcurrentQueriesException),
DescribeQuery with a sleep between polls and a bound on the total wait, GetQueryResults paged to the end, and the
bytes scanned recorded. It is split in start / status / fetch so the wait can be deferred to an Airflow trigger.

How Lake returns an event (assumptions, from the Lake SQL schema documentation): columns are lower case
(`eventid`, `useridentity`), `useridentity` is a struct (so the query selects its leaves one by one, which gives
plain strings whatever the engine's ROW-to-JSON rules are), `requestparameters` / `responseelements` /
`additionaleventdata` / `serviceeventdetails` are `map<string,string>` whose values are the nested JSON documents
as text (so the query casts each map to JSON and :func:`lake_row_to_record` parses values that are JSON objects or
arrays back into documents), `resources` is an array of structs `accountid,type,arn,arnprefix`, booleans come back
as `true`/`false` and timestamps as `2024-07-31 13:06:24.000`. GetQueryResults gives every value as a string.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from elevation.cloudtrail.matcher import DerivedCredential
from elevation.cloudtrail.records import SourceReport
from elevation.cloudtrail.sessions import ACCOUNT_ID, SessionIdentity

log = logging.getLogger(__name__)

TERMINAL_STATUSES = frozenset({"FINISHED", "FAILED", "CANCELLED", "TIMED_OUT"})
EVENT_DATA_STORE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,127}")
LIKE_ESCAPE = "\\"
#: QueryStatement length limit of the StartQuery API.
MAX_STATEMENT_LENGTH = 10_000

#: (Lake column, CloudTrail field) of the plain top-level columns.
SCALAR_COLUMNS: tuple[tuple[str, str], ...] = (
    ("eventid", "eventID"),
    ("eventtime", "eventTime"),
    ("eventversion", "eventVersion"),
    ("eventsource", "eventSource"),
    ("eventname", "eventName"),
    ("awsregion", "awsRegion"),
    ("sourceipaddress", "sourceIPAddress"),
    ("useragent", "userAgent"),
    ("errorcode", "errorCode"),
    ("errormessage", "errorMessage"),
    ("requestid", "requestID"),
    ("sharedeventid", "sharedEventID"),
    ("vpcendpointid", "vpcEndpointId"),
    ("eventtype", "eventType"),
    ("eventcategory", "eventCategory"),
    ("recipientaccountid", "recipientAccountId"),
    ("apiversion", "apiVersion"),
    ("readonly", "readOnly"),
    ("managementevent", "managementEvent"),
    ("sessioncredentialfromconsole", "sessionCredentialFromConsole"),
)
BOOLEAN_FIELDS = frozenset({"readOnly", "managementEvent"})
#: (Lake map column, CloudTrail field): selected as JSON text.
MAP_COLUMNS: tuple[tuple[str, str], ...] = (
    ("requestparameters", "requestParameters"),
    ("responseelements", "responseElements"),
    ("additionaleventdata", "additionalEventData"),
    ("serviceeventdetails", "serviceEventDetails"),
)
#: (Lake struct path, CloudTrail path) of the userIdentity leaves.
IDENTITY_LEAVES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("useridentity.type", ("type",)),
    ("useridentity.principalid", ("principalId",)),
    ("useridentity.arn", ("arn",)),
    ("useridentity.accountid", ("accountId",)),
    ("useridentity.accesskeyid", ("accessKeyId",)),
    ("useridentity.username", ("userName",)),
    ("useridentity.invokedby", ("invokedBy",)),
    ("useridentity.identityprovider", ("identityProvider",)),
    ("useridentity.sessioncontext.sessionissuer.type", ("sessionContext", "sessionIssuer", "type")),
    (
        "useridentity.sessioncontext.sessionissuer.principalid",
        ("sessionContext", "sessionIssuer", "principalId"),
    ),
    ("useridentity.sessioncontext.sessionissuer.arn", ("sessionContext", "sessionIssuer", "arn")),
    ("useridentity.sessioncontext.sessionissuer.accountid", ("sessionContext", "sessionIssuer", "accountId")),
    ("useridentity.sessioncontext.sessionissuer.username", ("sessionContext", "sessionIssuer", "userName")),
    ("useridentity.sessioncontext.attributes.creationdate", ("sessionContext", "attributes", "creationDate")),
    (
        "useridentity.sessioncontext.attributes.mfaauthenticated",
        ("sessionContext", "attributes", "mfaAuthenticated"),
    ),
    ("useridentity.sessioncontext.sourceidentity", ("sessionContext", "sourceIdentity")),
    ("useridentity.onbehalfof.userid", ("onBehalfOf", "userId")),
    ("useridentity.onbehalfof.identitystorearn", ("onBehalfOf", "identityStoreArn")),
)
RESOURCE_KEYS: tuple[tuple[str, str], ...] = (
    ("accountid", "accountId"),
    ("type", "type"),
    ("arn", "ARN"),
    ("arnprefix", "arnPrefix"),
)


# -- query text (pure) ------------------------------------------------------------------------------------------


def validate_account_id(value: str) -> str:
    """12 digits or ValueError: account ids enter the query as literals, so nothing else may pass."""
    if not isinstance(value, str) or not ACCOUNT_ID.fullmatch(value):
        raise ValueError(f"not an AWS account id (12 digits): {value!r}")
    return value


def sql_string(value: str) -> str:
    """A Trino string literal: single quotes doubled (backslash is not an escape character in Trino)."""
    if "\x00" in value:
        raise ValueError("NUL character in a query value")
    return "'" + value.replace("'", "''") + "'"


def like_literal(value: str) -> str:
    """The body of a LIKE pattern matching `value` literally: the escape character, `%` and `_` are escaped."""
    return (
        value.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2)
        .replace("%", LIKE_ESCAPE + "%")
        .replace("_", LIKE_ESCAPE + "_")
    )


def event_data_store_id(arn_or_id: str) -> str:
    """The table name Lake queries use: the id part of the event data store ARN, validated."""
    candidate = arn_or_id.rsplit("/", 1)[-1] if arn_or_id.startswith("arn:") else arn_or_id
    if not EVENT_DATA_STORE_ID.fullmatch(candidate):
        raise ValueError(f"not an event data store ARN or id: {arn_or_id!r}")
    return candidate


def _timestamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("query bounds must be aware datetimes")
    return "TIMESTAMP " + sql_string(moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"))


def select_list() -> str:
    """Every column of the event, in a form that comes back as text we can rebuild the record from."""
    columns = [column for column, _ in SCALAR_COLUMNS]
    columns += [f"{path} AS {_leaf_alias(path)}" for path, _ in IDENTITY_LEAVES]
    columns += [f"json_format(CAST({column} AS JSON)) AS {column}" for column, _ in MAP_COLUMNS]
    columns.append("json_format(CAST(resources AS JSON)) AS resources")
    return ", ".join(columns)


def _leaf_alias(path: str) -> str:
    return "ui_" + path.removeprefix("useridentity.").replace(".", "_")


def _time_bounds(start: datetime, end: datetime) -> str:
    if end <= start:
        raise ValueError(f"empty query window {start} .. {end}")
    return f"eventtime >= {_timestamp(start)} AND eventtime < {_timestamp(end)}"


def _in_list(values: Iterable[str]) -> str:
    return "(" + ", ".join(sql_string(value) for value in values) + ")"


def session_principal_conditions(sessions: Iterable[SessionIdentity]) -> list[str]:
    """The principals of the sessions, compactly (Lake caps a statement at 10,000 characters): per (account,
    permission set) the SSO role's assumed-role ARN prefix and the set of role session names, compared
    case-insensitively; plus cross-account records that carry only `AROA...:user` (type AWSAccount, no ARN).
    A pre-filter: the matcher makes the exact decision on what comes back."""
    groups: dict[tuple[str, str], set[str]] = {}
    for session in sessions:
        key = (validate_account_id(session.account_id), session.permission_set_name)
        groups.setdefault(key, set()).update(user.lower() for user in session.user_names)
    conditions = []
    all_users: set[str] = set()
    for (account, permission_set), users in sorted(groups.items()):
        role_prefix = like_literal(f"AWSReservedSSO_{permission_set}_".lower())
        pattern = f"arn:%:sts::{account}:assumed-role/{role_prefix}%"
        conditions.append(
            f"(lower(useridentity.arn) LIKE {sql_string(pattern)} ESCAPE {sql_string(LIKE_ESCAPE)}"
            f" AND lower(split_part(useridentity.arn, '/', 3)) IN {_in_list(sorted(users))})"
        )
        all_users |= users
    accounts = sorted({account for account, _ in groups})
    if accounts:
        conditions.append(
            f"(useridentity.arn IS NULL AND useridentity.accountid IN {_in_list(accounts)}"
            f" AND lower(split_part(useridentity.principalid, ':', 2)) IN {_in_list(sorted(all_users))})"
        )
    return conditions


def build_sessions_query(
    event_data_store: str, sessions: Sequence[SessionIdentity], start: datetime, end: datetime
) -> str:
    """The night's one query: all sessions' principals, bounded by eventtime on [start, end)."""
    if not sessions:
        raise ValueError("no sessions to query")
    table = event_data_store_id(event_data_store)
    principals = " OR ".join(session_principal_conditions(sessions))
    return f'SELECT {select_list()} FROM "{table}" WHERE {_time_bounds(start, end)} AND ({principals})'  # noqa: S608


def build_sessions_queries(
    event_data_store: str,
    sessions: Sequence[SessionIdentity],
    start: datetime,
    end: datetime,
    max_length: int = MAX_STATEMENT_LENGTH,
) -> list[str]:
    """One query for all sessions when it fits Lake's statement limit (the usual case), else as few as fit:
    sessions are packed greedily, so a night with hundreds of sessions costs a handful of scans, not hundreds."""
    batches: list[list[SessionIdentity]] = []
    current: list[SessionIdentity] = []
    for session in sorted(sessions, key=lambda s: (s.account_id, s.permission_set_name, s.session_id)):
        candidate = [*current, session]
        if current and len(build_sessions_query(event_data_store, candidate, start, end)) > max_length:
            batches.append(current)
            candidate = [session]
        current = candidate
    if current:
        batches.append(current)
    queries = [build_sessions_query(event_data_store, batch, start, end) for batch in batches]
    for query in queries:
        if len(query) > max_length:
            raise ValueError(f"one session's query is longer than {max_length} characters")
    return queries


def build_credentials_query(
    event_data_store: str,
    access_key_ids: Iterable[str],
    assumed_role_arns: Iterable[str],
    start: datetime,
    end: datetime,
) -> str:
    """The follow-up query for credentials the sessions obtained (sts AssumeRole): by access key id or ARN."""
    table = event_data_store_id(event_data_store)
    keys = sorted(set(access_key_ids))
    arns = sorted(set(assumed_role_arns))
    if not keys and not arns:
        raise ValueError("no credentials to query")
    conditions = []
    if keys:
        conditions.append(f"useridentity.accesskeyid IN ({', '.join(sql_string(k) for k in keys)})")
    if arns:
        conditions.append(f"useridentity.arn IN ({', '.join(sql_string(a) for a in arns)})")
    return f'SELECT {select_list()} FROM "{table}" WHERE {_time_bounds(start, end)} AND ({" OR ".join(conditions)})'  # noqa: S608


def build_credentials_queries(
    event_data_store: str,
    access_key_ids: Iterable[str],
    assumed_role_arns: Iterable[str],
    start: datetime,
    end: datetime,
    max_length: int = MAX_STATEMENT_LENGTH,
) -> list[str]:
    """:func:`build_credentials_query` split so that each statement fits Lake's length limit."""
    items = [("key", key) for key in sorted(set(access_key_ids))] + [
        ("arn", arn) for arn in sorted(set(assumed_role_arns))
    ]
    queries: list[str] = []
    batch: list[tuple[str, str]] = []

    def render(chosen: list[tuple[str, str]]) -> str:
        return build_credentials_query(
            event_data_store,
            [value for kind, value in chosen if kind == "key"],
            [value for kind, value in chosen if kind == "arn"],
            start,
            end,
        )

    for item in items:
        if batch and len(render([*batch, item])) > max_length:
            queries.append(render(batch))
            batch = []
        batch.append(item)
    if batch:
        queries.append(render(batch))
    return queries


# -- result conversion (pure) ------------------------------------------------------------------------------------


def _maybe_document(value: str) -> Any:
    text = value.strip()
    if text[:1] in ("{", "[") and text[-1:] in ("}", "]"):
        try:
            return json.loads(text)
        except ValueError:
            return value
    return value


def _map_column(text: str | None) -> dict[str, Any] | None:
    if text in (None, "", "null"):
        return None
    try:
        document = json.loads(text)
    except ValueError:
        return {"_unparsed": text}
    if not isinstance(document, dict):
        return {"_unparsed": text}
    return {
        key: _maybe_document(value) if isinstance(value, str) else value for key, value in document.items()
    }


def _resources(text: str | None) -> list[dict[str, Any]] | None:
    if text in (None, "", "null"):
        return None
    try:
        items = json.loads(text)
    except ValueError:
        return [{"_unparsed": text}]
    result = []
    for item in items or []:
        if isinstance(item, dict):
            lowered = {key.lower(): value for key, value in item.items()}
            entry = {name: lowered.get(column) for column, name in RESOURCE_KEYS}
        elif isinstance(item, list):  # engines that cast ROW to a JSON array (positional fields)
            entry = {name: value for (_, name), value in zip(RESOURCE_KEYS, item, strict=False)}
        else:
            continue
        result.append({key: value for key, value in entry.items() if value is not None})
    return result


def _set(document: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        document = document.setdefault(key, {})
    document[path[-1]] = value


def lake_row_to_record(row: Sequence[dict[str, str]]) -> dict[str, Any]:
    """One GetQueryResults row (a list of one-entry `{column: text}` dicts) back into a CloudTrail record."""
    values: dict[str, str | None] = {}
    for cell in row:
        values.update(cell)
    record: dict[str, Any] = {}
    for column, name in SCALAR_COLUMNS:
        value = values.get(column)
        if value is None or value == "":
            continue
        record[name] = value.lower() == "true" if name in BOOLEAN_FIELDS else value
    identity: dict[str, Any] = {}
    for path, target in IDENTITY_LEAVES:
        value = values.get(_leaf_alias(path))
        if value not in (None, ""):
            _set(identity, target, value)
    if identity:
        record["userIdentity"] = identity
    for column, name in MAP_COLUMNS:
        document = _map_column(values.get(column))
        if document is not None:
            record[name] = document
    resources = _resources(values.get("resources"))
    if resources is not None:
        record["resources"] = resources
    return record


# -- client (I/O) ------------------------------------------------------------------------------------------------


class LakeQueryError(RuntimeError):
    """A Lake query that did not finish: `status` is FAILED, CANCELLED, TIMED_OUT or WAIT_TIMEOUT (ours)."""

    def __init__(self, query_id: str, status: str, message: str | None, bytes_scanned: int = 0) -> None:
        super().__init__(f"CloudTrail Lake query {query_id} {status}: {message or 'no message'}")
        self.query_id = query_id
        self.status = status
        self.message = message
        self.bytes_scanned = bytes_scanned


@dataclass(frozen=True)
class QueryState:
    """What DescribeQuery says: the status, the bytes Lake billed for, the error message of a FAILED query."""

    query_id: str
    status: str
    bytes_scanned: int
    error: str | None
    events_matched: int | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


def _error_code(error: Exception) -> str | None:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return None


class LakeClient:
    """The CloudTrail Lake API calls the extract needs, from a boto3 session the caller owns (never ambient
    hard-coded credentials): the DAG passes `AwsBaseHook(...).get_session()`."""

    def __init__(
        self,
        session: Any,
        event_data_store: str,
        *,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        poll_interval: float = 5.0,
        max_wait: float = 1800.0,
        max_start_attempts: int = 6,
        page_size: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.event_data_store = event_data_store
        self.table = event_data_store_id(event_data_store)
        kwargs: dict[str, Any] = {}
        if region_name:
            kwargs["region_name"] = region_name
        if endpoint_url:
            kwargs["endpoint_url"] = endpoint_url
        self.client = session.client("cloudtrail", **kwargs)
        self.poll_interval = poll_interval
        self.max_wait = max_wait
        self.max_start_attempts = max_start_attempts
        self.page_size = page_size
        self._sleep = sleep
        self._clock = clock

    def start_query(self, statement: str) -> str:
        """StartQuery; MaxConcurrentQueriesException is retried with exponential backoff and jitter."""
        for attempt in range(1, self.max_start_attempts + 1):
            try:
                response = self.client.start_query(QueryStatement=statement)
            except Exception as error:
                if (
                    _error_code(error) != "MaxConcurrentQueriesException"
                    or attempt == self.max_start_attempts
                ):
                    raise
                delay = min(60.0, self.poll_interval * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)  # noqa: S311
                log.warning("Lake: too many concurrent queries, retry %d in %.1fs", attempt, delay)
                self._sleep(delay)
                continue
            query_id = response["QueryId"]
            log.info("Lake query %s started", query_id)
            return query_id
        raise AssertionError("unreachable")

    def query_status(self, query_id: str) -> QueryState:
        """One DescribeQuery."""
        response = self.client.describe_query(EventDataStore=self.event_data_store, QueryId=query_id)
        statistics = response.get("QueryStatistics") or {}
        return QueryState(
            query_id=query_id,
            status=response.get("QueryStatus", "QUEUED"),
            bytes_scanned=int(statistics.get("BytesScanned") or 0),
            error=response.get("ErrorMessage"),
            events_matched=statistics.get("EventsMatched"),
        )

    def wait(self, query_id: str) -> QueryState:
        """Poll until a terminal status, sleeping between polls; past `max_wait` the query is cancelled.
        Returns the FINISHED state or raises :class:`LakeQueryError`."""
        deadline = self._clock() + self.max_wait
        while True:
            state = self.query_status(query_id)
            if state.terminal:
                return raise_unless_finished(state)
            if self._clock() >= deadline:
                self.cancel(query_id)
                raise LakeQueryError(
                    query_id, "WAIT_TIMEOUT", f"not finished after {self.max_wait:.0f}s", state.bytes_scanned
                )
            self._sleep(self.poll_interval)

    def cancel(self, query_id: str) -> None:
        """Best effort: a query we stop waiting for should stop scanning (and billing)."""
        try:
            self.client.cancel_query(EventDataStore=self.event_data_store, QueryId=query_id)
        except Exception as error:  # the query may have just finished; nothing to undo
            log.warning("Lake: could not cancel %s: %s", query_id, error)

    def fetch_results(self, query_id: str) -> Iterator[dict[str, Any]]:
        """Every result row of a FINISHED query as a CloudTrail record, page by page (NextToken to the end)."""
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"EventDataStore": self.event_data_store, "QueryId": query_id}
            if token:
                kwargs["NextToken"] = token
            if self.page_size:
                kwargs["MaxQueryResults"] = self.page_size
            response = self.client.get_query_results(**kwargs)
            status = response.get("QueryStatus")
            if status and status != "FINISHED":
                raise LakeQueryError(query_id, status, response.get("ErrorMessage"))
            for row in response.get("QueryResultRows") or []:
                yield lake_row_to_record(row)
            token = response.get("NextToken")
            if not token:
                return

    def run(self, statement: str) -> tuple[QueryState, Iterator[dict[str, Any]]]:
        """Start, wait, and return the final state and the records (the synchronous path)."""
        query_id = self.start_query(statement)
        state = self.wait(query_id)
        return state, self.fetch_results(query_id)


def raise_unless_finished(state: QueryState) -> QueryState:
    """FINISHED passes; FAILED (with Lake's message), CANCELLED and TIMED_OUT raise :class:`LakeQueryError`."""
    if state.status == "FINISHED":
        return state
    messages = {
        "CANCELLED": "the query was cancelled",
        "TIMED_OUT": "Lake stopped the query (timed out)",
    }
    raise LakeQueryError(
        state.query_id, state.status, state.error or messages.get(state.status), state.bytes_scanned
    )


class LakeSource:
    """CloudTrail Lake behind the extract's source interface.

    `ready_queries` maps a statement to the id of a query already started and FINISHED (the deferrable path:
    the DAG starts the statements of :func:`build_sessions_queries`, waits in :class:`CloudTrailLakeQueryTrigger`,
    then hands the ids here so nothing is scanned twice). Records carry the locator `lake:<query id>`, so a
    re-read fetches the stored results again instead of scanning again.
    """

    def __init__(
        self,
        client: LakeClient,
        *,
        ready_queries: dict[str, tuple[str, int]] | None = None,
    ) -> None:
        self.client = client
        self.ready_queries = dict(ready_queries or {})
        self.report = SourceReport()

    def _run(self, statement: str) -> Iterator[tuple[dict[str, Any], str]]:
        if statement in self.ready_queries:
            query_id, bytes_scanned = self.ready_queries.pop(statement)
        else:
            query_id = self.client.start_query(statement)
            bytes_scanned = self.client.wait(query_id).bytes_scanned
        self.report.queries.append(query_id)
        self.report.bytes_scanned += bytes_scanned
        log.info("Lake query %s scanned %d bytes", query_id, bytes_scanned)
        yield from self._fetch(query_id)

    def _fetch(self, query_id: str) -> Iterator[tuple[dict[str, Any], str]]:
        locator = f"lake:{query_id}"
        for record in self.client.fetch_results(query_id):
            self.report.records_read += 1
            yield record, locator

    def records(
        self, sessions: Sequence[SessionIdentity], start: datetime, end: datetime
    ) -> Iterator[tuple[dict[str, Any], str]]:
        for statement in build_sessions_queries(self.client.event_data_store, sessions, start, end):
            yield from self._run(statement)

    def records_for_credentials(
        self,
        credentials: Sequence[DerivedCredential],
        locators: set[str],
        start: datetime,
        end: datetime,
    ) -> Iterator[tuple[dict[str, Any], str]]:
        """Results already paid for are fetched again; the credentials' own events need a (small) new query."""
        for locator in sorted(locators):
            if locator.startswith("lake:"):
                yield from self._fetch(locator.removeprefix("lake:"))
        keys = [c.access_key_id for c in credentials if c.access_key_id]
        arns = [c.assumed_role_arn for c in credentials if c.assumed_role_arn]
        if keys or arns:
            for statement in build_credentials_queries(self.client.event_data_store, keys, arns, start, end):
                yield from self._run(statement)
