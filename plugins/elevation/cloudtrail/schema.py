"""The columnar shape of a CloudTrail event, shared by the extract (writer) and the audit (reader).

Parquet keeps the whole event: the fields that queries filter on are typed columns, the nested documents
(requestParameters, responseElements, resources, additionalEventData, userIdentity, and everything else
that a record carries) are JSON strings, so nothing CloudTrail wrote is lost and any reader can rebuild
the original record with :func:`row_to_record`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

#: (column, CloudTrail path) for the flattened userIdentity fields.
USER_IDENTITY_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("userIdentity_type", ("type",)),
    ("userIdentity_principalId", ("principalId",)),
    ("userIdentity_arn", ("arn",)),
    ("userIdentity_accountId", ("accountId",)),
    ("userIdentity_accessKeyId", ("accessKeyId",)),
    ("userIdentity_userName", ("userName",)),
    ("userIdentity_invokedBy", ("invokedBy",)),
    ("userIdentity_sessionIssuer_type", ("sessionContext", "sessionIssuer", "type")),
    ("userIdentity_sessionIssuer_arn", ("sessionContext", "sessionIssuer", "arn")),
    ("userIdentity_sessionIssuer_userName", ("sessionContext", "sessionIssuer", "userName")),
    ("userIdentity_sessionIssuer_accountId", ("sessionContext", "sessionIssuer", "accountId")),
    ("userIdentity_mfaAuthenticated", ("sessionContext", "attributes", "mfaAuthenticated")),
    ("userIdentity_onBehalfOf_userId", ("onBehalfOf", "userId")),
)

#: Top-level fields kept as typed string columns.
STRING_FIELDS: tuple[str, ...] = (
    "eventID",
    "eventVersion",
    "eventSource",
    "eventName",
    "awsRegion",
    "sourceIPAddress",
    "userAgent",
    "errorCode",
    "errorMessage",
    "eventCategory",
    "eventType",
    "recipientAccountId",
    "requestID",
    "sharedEventID",
    "vpcEndpointId",
)
BOOL_FIELDS: tuple[str, ...] = ("readOnly", "managementEvent")
#: Nested documents stored as JSON text.
JSON_FIELDS: tuple[str, ...] = (
    "userIdentity",
    "requestParameters",
    "responseElements",
    "resources",
    "additionalEventData",
)
#: Any other top-level field of the record (tlsDetails, serviceEventDetails, ...) lands here, as one JSON object.
OTHER_FIELDS_COLUMN = "otherFields"

EVENT_SCHEMA = pa.schema(
    [pa.field("session_id", pa.string(), nullable=False)]
    + [pa.field("eventTime", pa.timestamp("us", tz="UTC"), nullable=False)]
    + [pa.field(name, pa.string()) for name in STRING_FIELDS]
    + [pa.field(name, pa.bool_()) for name in BOOL_FIELDS]
    + [pa.field(column, pa.string()) for column, _ in USER_IDENTITY_COLUMNS]
    + [pa.field(name, pa.string()) for name in JSON_FIELDS]
    + [pa.field(OTHER_FIELDS_COLUMN, pa.string())]
)

_KNOWN_TOP_LEVEL = {"eventTime", *STRING_FIELDS, *BOOL_FIELDS, *JSON_FIELDS}


def parse_event_time(value: Any) -> datetime:
    """CloudTrail writes `2024-07-31T13:06:24Z`; Lake returns `2024-07-31 13:06:24.000`. Both become aware UTC."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).strip().replace(" ", "T")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _dig(document: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def _as_bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    return str(value).strip().lower() == "true"


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


#: json.dumps(value, ensure_ascii=False, sort_keys=True, default=str), without building an encoder per call.
_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, default=str)


def _as_json(value: Any) -> str | None:
    return None if value is None else _JSON_ENCODER.encode(value)


def record_to_row(record: dict[str, Any], session_id: str) -> dict[str, Any]:
    """Flatten one CloudTrail record into a row of :data:`EVENT_SCHEMA`. Raises KeyError/ValueError on a record
    without eventID or with an unparseable eventTime, so callers can report it and move on."""
    identity = record.get("userIdentity") or {}
    row: dict[str, Any] = {
        "session_id": session_id,
        "eventTime": parse_event_time(record["eventTime"]),
    }
    for name in STRING_FIELDS:
        row[name] = _as_text(record.get(name))
    if not row["eventID"]:
        raise KeyError("eventID")
    for name in BOOL_FIELDS:
        row[name] = _as_bool(record.get(name))
    for column, path in USER_IDENTITY_COLUMNS:
        row[column] = _as_text(_dig(identity, path))
    for name in JSON_FIELDS:
        row[name] = _as_json(record.get(name))
    others = {key: value for key, value in record.items() if key not in _KNOWN_TOP_LEVEL}
    row[OTHER_FIELDS_COLUMN] = _as_json(others) if others else None
    return row


def row_to_record(row: dict[str, Any]) -> dict[str, Any]:
    """Rebuild the CloudTrail record (nested documents included) from a row of :data:`EVENT_SCHEMA`."""
    event_time = row["eventTime"]
    record: dict[str, Any] = {
        "eventTime": event_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if isinstance(event_time, datetime)
        else event_time
    }
    for name in (*STRING_FIELDS, *BOOL_FIELDS):
        if row.get(name) is not None:
            record[name] = row[name]
    for name in JSON_FIELDS:
        text = row.get(name)
        record[name] = json.loads(text) if text else None
    if row.get(OTHER_FIELDS_COLUMN):
        record.update(json.loads(row[OTHER_FIELDS_COLUMN]))
    return record
