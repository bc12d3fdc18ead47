"""A CloudTrail Lake test double that speaks the real CloudTrail JSON 1.1 protocol (moto has no Lake).

boto3 pointed at :attr:`CloudTrailLakeDouble.endpoint_url` exercises the project's real client code: request
serialization, error parsing (botocore raises the genuine ``ClientError`` codes), paging with NextToken. StartQuery
takes the query as Lake would, in Trino's dialect, parses it strictly as Trino with sqlglot, translates it to DuckDB
and runs it over a table of events with Lake's column names and types (``useridentity`` a struct,
``requestparameters`` a ``map(varchar, varchar)`` of JSON texts, ``resources`` a list of structs, ...).

Controls (:meth:`next_query`, :meth:`reject_starts`) make the next query stay RUNNING for N polls, FAIL with a
message, be CANCELLED, TIME OUT, or make StartQuery raise MaxConcurrentQueriesException. BytesScanned is the size
of the events inside the query's eventtime bounds (the whole table when unbounded), as Lake bills the scan, not
the result. Null cells are left out of a result row. For the tests and the demo only.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from elevation.cloudtrail.lake import event_data_store_id
from elevation.cloudtrail.schema import parse_event_time

TARGET_PREFIX = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101."
DEFAULT_EVENT_DATA_STORE_ARN = (
    "arn:aws:cloudtrail:us-east-1:111122223333:eventdatastore/a1b2c3d4-5678-90ab-cdef-EXAMPLE11111"
)

_STR = pa.string()
_IDENTITY = pa.struct(
    [
        ("type", _STR),
        ("principalid", _STR),
        ("arn", _STR),
        ("accountid", _STR),
        ("accesskeyid", _STR),
        ("username", _STR),
        (
            "sessioncontext",
            pa.struct(
                [
                    (
                        "attributes",
                        pa.struct([("creationdate", pa.timestamp("us")), ("mfaauthenticated", _STR)]),
                    ),
                    (
                        "sessionissuer",
                        pa.struct(
                            [
                                ("type", _STR),
                                ("principalid", _STR),
                                ("arn", _STR),
                                ("accountid", _STR),
                                ("username", _STR),
                            ]
                        ),
                    ),
                    ("sourceidentity", _STR),
                ]
            ),
        ),
        ("onbehalfof", pa.struct([("userid", _STR), ("identitystorearn", _STR)])),
        ("invokedby", _STR),
        ("identityprovider", _STR),
    ]
)
_MAP = pa.map_(_STR, _STR)
#: Lake's columns (lower case, as in the Lake SQL schema) and their types.
LAKE_COLUMNS: tuple[tuple[str, str, pa.DataType], ...] = (
    ("eventversion", "eventVersion", _STR),
    ("useridentity", "userIdentity", _IDENTITY),
    ("eventtime", "eventTime", pa.timestamp("us")),
    ("eventsource", "eventSource", _STR),
    ("eventname", "eventName", _STR),
    ("awsregion", "awsRegion", _STR),
    ("sourceipaddress", "sourceIPAddress", _STR),
    ("useragent", "userAgent", _STR),
    ("errorcode", "errorCode", _STR),
    ("errormessage", "errorMessage", _STR),
    ("requestparameters", "requestParameters", _MAP),
    ("responseelements", "responseElements", _MAP),
    ("additionaleventdata", "additionalEventData", _MAP),
    ("requestid", "requestID", _STR),
    ("eventid", "eventID", _STR),
    ("readonly", "readOnly", pa.bool_()),
    (
        "resources",
        "resources",
        pa.list_(pa.struct([("accountid", _STR), ("type", _STR), ("arn", _STR), ("arnprefix", _STR)])),
    ),
    ("eventtype", "eventType", _STR),
    ("apiversion", "apiVersion", _STR),
    ("managementevent", "managementEvent", pa.bool_()),
    ("recipientaccountid", "recipientAccountId", _STR),
    ("sharedeventid", "sharedEventID", _STR),
    ("vpcendpointid", "vpcEndpointId", _STR),
    ("serviceeventdetails", "serviceEventDetails", _MAP),
    ("eventcategory", "eventCategory", _STR),
    ("sessioncredentialfromconsole", "sessionCredentialFromConsole", _STR),
)


def _lower_keys(value: Any, data_type: pa.DataType) -> Any:
    """A CloudTrail document shaped for a Lake struct column: keys lower-cased, unknown keys dropped."""
    if value is None:
        return None
    if pa.types.is_struct(data_type):
        if not isinstance(value, dict):
            return None
        lowered = {str(key).lower(): item for key, item in value.items()}
        return {
            data_type.field(i).name: _lower_keys(
                lowered.get(data_type.field(i).name), data_type.field(i).type
            )
            for i in range(data_type.num_fields)
        }
    if pa.types.is_list(data_type):
        return (
            [_lower_keys(item, data_type.value_type) for item in value] if isinstance(value, list) else None
        )
    if pa.types.is_map(data_type):
        if not isinstance(value, dict):
            return None
        return [
            (str(key), item if isinstance(item, str) else json.dumps(item, separators=(",", ":")))
            for key, item in value.items()
            if item is not None
        ]
    if pa.types.is_timestamp(data_type):
        try:
            return parse_event_time(value).astimezone(UTC).replace(tzinfo=None)
        except ValueError:
            return None
    if pa.types.is_boolean(data_type):
        return value if isinstance(value, bool) else str(value).lower() == "true"
    return value if isinstance(value, str) else json.dumps(value)


def records_to_lake_table(records: Iterable[dict[str, Any]]) -> pa.Table:
    """CloudTrail records as a table with Lake's column names and types."""
    rows = list(records)
    columns = {
        column: pa.array([_lower_keys(row.get(name), data_type) for row in rows], type=data_type)
        for column, name, data_type in LAKE_COLUMNS
    }
    return pa.table(columns)


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


class LakeError(Exception):
    """An error answer of the JSON protocol: `code` becomes `__type`, as botocore expects."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass
class QueryPlan:
    """How the next query behaves: RUNNING for `running_polls` describes, then `outcome` (FINISHED, FAILED,
    CANCELLED, TIMED_OUT), with `message` as the ErrorMessage of a FAILED query."""

    running_polls: int = 0
    outcome: str = "FINISHED"
    message: str | None = None


@dataclass
class LakeQuery:
    """A query the double received (kept for the tests' assertions)."""

    query_id: str
    statement: str
    duckdb_sql: str
    plan: QueryPlan
    rows: list[list[dict[str, str]]]
    bytes_scanned: int
    created: float
    polls: int = 0
    status: str = "QUEUED"
    result_fetches: int = 0
    page_tokens: list[str] = field(default_factory=list)


class CloudTrailLakeDouble:
    """A fake CloudTrail Lake endpoint on 127.0.0.1:<free port>; use as a context manager or start()/stop()."""

    def __init__(
        self,
        records: Iterable[dict[str, Any]] = (),
        *,
        event_data_store_arn: str = DEFAULT_EVENT_DATA_STORE_ARN,
        page_size: int = 1000,
        require_eventtime_bound: bool = True,
    ) -> None:
        self.event_data_store_arn = event_data_store_arn
        self.table = event_data_store_id(event_data_store_arn)
        self.page_size = page_size
        self.require_eventtime_bound = require_eventtime_bound
        self.queries: dict[str, LakeQuery] = {}
        self.requests: list[str] = []
        self._plans: deque[QueryPlan] = deque()
        self._rejections = 0
        self._lock = threading.RLock()
        self._db = duckdb.connect()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.load(records)

    # -- controls ---------------------------------------------------------------------------------------------

    def load(self, records: Iterable[dict[str, Any]]) -> None:
        """Replace the event data store's events."""
        rows = list(records)
        table = records_to_lake_table(rows)
        sizes = pa.table(
            {
                "eventtime": table.column("eventtime"),
                "size": pa.array([len(json.dumps(row, default=str)) for row in rows], type=pa.int64()),
            }
        )
        with self._lock:
            self._db.register("incoming", table)
            self._db.register("incoming_sizes", sizes)
            # the table name is a validated event data store id ([A-Za-z0-9-])
            self._db.execute(f'CREATE OR REPLACE TABLE "{self.table}" AS SELECT * FROM incoming')  # noqa: S608
            self._db.execute("CREATE OR REPLACE TABLE __event_sizes AS SELECT * FROM incoming_sizes")
            self._db.unregister("incoming")
            self._db.unregister("incoming_sizes")

    def next_query(
        self, *, running_polls: int = 0, outcome: str = "FINISHED", message: str | None = None
    ) -> None:
        """Queue the behaviour of the next StartQuery (queries without a queued plan finish at the first poll)."""
        if outcome not in ("FINISHED", "FAILED", "CANCELLED", "TIMED_OUT"):
            raise ValueError(outcome)
        with self._lock:
            self._plans.append(QueryPlan(running_polls, outcome, message))

    def reject_starts(self, count: int) -> None:
        """The next `count` StartQuery calls raise MaxConcurrentQueriesException."""
        with self._lock:
            self._rejections = count

    # -- server -----------------------------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        if self._server is None:
            raise RuntimeError("CloudTrailLakeDouble is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> CloudTrailLakeDouble:
        if self._server is not None:
            return self
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                target = self.headers.get("X-Amz-Target", "")
                status, payload, headers = double._handle(target, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="lake-double", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> CloudTrailLakeDouble:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def session(self) -> Any:
        """A boto3 session with dummy credentials (what the DAG gets from AwsBaseHook.get_session())."""
        import boto3

        return boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )

    # -- protocol ---------------------------------------------------------------------------------------------

    def _handle(self, target: str, body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        operation = target.removeprefix(TARGET_PREFIX) if target.startswith(TARGET_PREFIX) else None
        with self._lock:
            self.requests.append(operation or target)
        try:
            if operation is None:
                raise LakeError("UnknownOperationException", f"unknown target {target!r}")
            request = json.loads(body or b"{}")
            handler = {
                "StartQuery": self._start_query,
                "DescribeQuery": self._describe_query,
                "GetQueryResults": self._get_query_results,
                "CancelQuery": self._cancel_query,
            }.get(operation)
            if handler is None:
                raise LakeError(
                    "UnsupportedOperationException", f"{operation} is not supported by the double"
                )
            return 200, handler(request), {}
        except LakeError as error:
            return (
                error.status,
                {"__type": error.code, "message": error.message},
                {"x-amzn-ErrorType": error.code},
            )

    def _check_store(self, request: dict[str, Any]) -> None:
        store = request.get("EventDataStore")
        if store is not None and store not in (self.event_data_store_arn, self.table):
            raise LakeError("EventDataStoreNotFoundException", f"event data store {store} not found")

    def _translate(self, statement: str) -> str:
        try:
            tree = sqlglot.parse_one(statement, read="trino", error_level=sqlglot.ErrorLevel.RAISE)
        except sqlglot.errors.ParseError as error:
            raise LakeError("InvalidQueryStatementException", f"not valid SQL: {error}") from error
        if not isinstance(tree, exp.Select | exp.Union):
            raise LakeError("InvalidQueryStatementException", "only SELECT statements are allowed")
        tables = {table.name for table in tree.find_all(exp.Table)}
        if tables - {self.table}:
            raise LakeError(
                "EventDataStoreNotFoundException", f"unknown event data store(s): {sorted(tables)}"
            )
        where = tree.args.get("where")
        if self.require_eventtime_bound and not (
            where and any(column.name.lower() == "eventtime" for column in where.find_all(exp.Column))
        ):
            raise LakeError("InvalidQueryStatementException", "the double insists on an eventtime bound")
        return tree.sql(dialect="duckdb")

    def _bytes_scanned(self, statement: str) -> int:
        """Lake bills the scan of the eventtime range, whatever the other filters select."""
        tree = sqlglot.parse_one(statement, read="trino")
        where = tree.args.get("where")
        bounds = []
        if where is not None:
            for condition in where.this.flatten() if isinstance(where.this, exp.And) else [where.this]:
                columns = {column.name.lower() for column in condition.find_all(exp.Column)}
                if columns == {"eventtime"}:
                    bounds.append(condition.sql(dialect="duckdb"))
        clause = " AND ".join(bounds) or "TRUE"
        # the clause is the test's own query's eventtime bounds, re-rendered by sqlglot
        sql = f"SELECT coalesce(sum(size), 0) FROM __event_sizes WHERE {clause}"  # noqa: S608
        result = self._db.execute(sql).fetchall()  # all of it: an unfinished result blocks the next load()
        return int(result[0][0]) if result else 0

    def _start_query(self, request: dict[str, Any]) -> dict[str, Any]:
        statement = request.get("QueryStatement")
        if not statement:
            raise LakeError("InvalidParameterException", "QueryStatement is required")
        if len(statement) > 10_000:
            raise LakeError("InvalidParameterException", "QueryStatement is longer than 10000 characters")
        with self._lock:
            if self._rejections > 0:
                self._rejections -= 1
                raise LakeError("MaxConcurrentQueriesException", "You are already running the maximum number")
            duck_sql = self._translate(statement)
            plan = self._plans.popleft() if self._plans else QueryPlan()
            rows: list[list[dict[str, str]]] = []
            try:
                cursor = self._db.execute(duck_sql)
                names = [description[0] for description in cursor.description]
                for values in cursor.fetchall():
                    rows.append(
                        [
                            {name: _cell(value)}
                            for name, value in zip(names, values, strict=True)
                            if value is not None
                        ]
                    )
            except duckdb.Error as error:
                plan = QueryPlan(plan.running_polls, "FAILED", f"query failed: {error}")
            query_id = str(uuid.uuid4())
            self.queries[query_id] = LakeQuery(
                query_id=query_id,
                statement=statement,
                duckdb_sql=duck_sql,
                plan=plan,
                rows=rows,
                bytes_scanned=self._bytes_scanned(statement),
                created=time.time(),
            )
        return {"QueryId": query_id}

    def _query(self, request: dict[str, Any]) -> LakeQuery:
        self._check_store(request)
        query = self.queries.get(request.get("QueryId", ""))
        if query is None:
            raise LakeError("QueryIdNotFoundException", f"query {request.get('QueryId')} not found")
        return query

    def _advance(self, query: LakeQuery) -> None:
        if query.status in ("FINISHED", "FAILED", "CANCELLED", "TIMED_OUT"):
            return
        query.polls += 1
        if query.polls <= query.plan.running_polls:
            query.status = "QUEUED" if query.polls == 1 and query.plan.running_polls > 1 else "RUNNING"
        else:
            query.status = query.plan.outcome

    def _describe_query(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            query = self._query(request)
            self._advance(query)
            finished = query.status == "FINISHED"
            response: dict[str, Any] = {
                "QueryId": query.query_id,
                "QueryString": query.statement,
                "QueryStatus": query.status,
                "QueryStatistics": {
                    "EventsMatched": len(query.rows) if finished else 0,
                    "EventsScanned": len(query.rows),
                    "BytesScanned": query.bytes_scanned if query.status != "QUEUED" else 0,
                    "ExecutionTimeInMillis": 10 * query.polls,
                    "CreationTime": query.created,
                },
            }
            if query.status == "FAILED":
                response["ErrorMessage"] = query.plan.message or "Query failed"
            return response

    def _get_query_results(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            query = self._query(request)
            size = int(request.get("MaxQueryResults") or self.page_size)
            if not 1 <= size <= 1000:
                raise LakeError("InvalidMaxResultsException", "MaxQueryResults must be between 1 and 1000")
            statistics = {
                "ResultsCount": 0,
                "TotalResultsCount": len(query.rows),
                "BytesScanned": query.bytes_scanned,
            }
            if query.status != "FINISHED":
                response: dict[str, Any] = {"QueryStatus": query.status, "QueryStatistics": statistics}
                if query.status == "FAILED":
                    response["ErrorMessage"] = query.plan.message or "Query failed"
                return response
            offset = 0
            token = request.get("NextToken")
            if token:
                try:
                    owner, _, position = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
                    offset = int(position)
                except (ValueError, UnicodeDecodeError) as error:
                    raise LakeError("InvalidNextTokenException", "invalid NextToken") from error
                if owner != query.query_id or not 0 < offset <= len(query.rows):
                    raise LakeError("InvalidNextTokenException", "NextToken does not belong to this query")
            page = query.rows[offset : offset + size]
            query.result_fetches += 1
            statistics["ResultsCount"] = len(page)
            response = {"QueryStatus": "FINISHED", "QueryStatistics": statistics, "QueryResultRows": page}
            if offset + size < len(query.rows):
                next_token = base64.urlsafe_b64encode(f"{query.query_id}:{offset + size}".encode()).decode()
                query.page_tokens.append(next_token)
                response["NextToken"] = next_token
            return response

    def _cancel_query(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            query = self._query(request)
            if query.status in ("FINISHED", "FAILED", "CANCELLED", "TIMED_OUT"):
                raise LakeError("InactiveQueryException", f"query {query.query_id} is {query.status}")
            query.status = "CANCELLED"
            return {"QueryId": query.query_id, "QueryStatus": "CANCELLED"}
