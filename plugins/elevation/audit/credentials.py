"""Credentials a session minted, and where they were used: pure derivation from the session's events.

An elevated session can outlive itself through credentials it creates: an IAM access key (``iam:CreateAccessKey``)
lives until someone deletes it; a role it assumes (``sts:AssumeRole*``) or a federation/session token acts under a
new identity for up to hours. The report lists each of them with the calls then made with them, found in the same
events table: an event whose ``userIdentity.accessKeyId`` is the minted key, or whose ``userIdentity.arn`` is the
assumed-role (or federated-user) session the call returned.

Input: a table of :data:`elevation.cloudtrail.schema.EVENT_SCHEMA` (dictionary-encoded columns are fine).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from elevation.cloudtrail.credential_calls import CREDENTIAL_CALLS, TRACEABLE_KINDS

__all__ = ["CredentialUse", "MintedCredential", "minted_credentials"]

#: Distinct calls listed per credential (the rest are counted in `count`).
MAX_CALLS = 12


@dataclass(frozen=True)
class CredentialUse:
    """The events of the table made with one minted credential."""

    count: int = 0
    calls: tuple[tuple[str, int], ...] = ()  # ("s3:GetObject", 14), most frequent first
    accounts: tuple[str, ...] = ()  # recipientAccountId of those events
    first_time: datetime | None = None
    last_time: datetime | None = None
    errors: int = 0
    distinct_calls: int = 0

    @property
    def more_calls(self) -> int:
        """Distinct calls not listed in `calls`."""
        return max(0, self.distinct_calls - len(self.calls))


@dataclass(frozen=True)
class MintedCredential:
    """One credential created by a call of the session."""

    kind: str  # a kind of elevation.cloudtrail.credential_calls.CREDENTIAL_CALLS
    call: str  # "iam:CreateAccessKey"
    event_id: str
    event_time: datetime
    account_id: str | None  # where it was minted (recipientAccountId)
    access_key_id: str | None
    identity_arn: str | None  # the assumed-role / federated-user session; None for an access key or session token
    owner: str | None  # the IAM user of an access key, the role asked for (roleArn) for an assumed role
    uses: CredentialUse = CredentialUse()


def _plain(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.cast(column, column.type.value_type) if pa.types.is_dictionary(column.type) else column


def _document(text: Any) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    if not isinstance(text, str) or not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _minted(row: dict[str, Any]) -> MintedCredential | None:
    source, name = row.get("eventSource") or "", row.get("eventName") or ""
    kind = CREDENTIAL_CALLS.get((source, name))
    if kind is None or row.get("errorCode"):
        return None
    response = _document(row.get("responseElements"))
    request = _document(row.get("requestParameters"))
    if kind not in TRACEABLE_KINDS:  # a console password, an SSH key, a service-specific credential
        key_id, arn, owner = None, None, _text(request.get("userName"))
    elif kind == "access key":
        key = response.get("accessKey") if isinstance(response.get("accessKey"), dict) else {}
        key_id, arn = _text(key.get("accessKeyId")), None
        owner = _text(key.get("userName")) or _text(request.get("userName"))
    else:
        credentials = response.get("credentials") if isinstance(response.get("credentials"), dict) else {}
        key_id = _text(credentials.get("accessKeyId"))
        user = response.get("assumedRoleUser") or response.get("federatedUser")
        arn = _text(user.get("arn")) if isinstance(user, dict) else None
        owner = _text(request.get("roleArn")) or _text(request.get("name"))
    if kind in TRACEABLE_KINDS and key_id is None and arn is None:  # the response redacted or absent: no trace
        return None
    return MintedCredential(
        kind=kind,
        call=f"{source.removesuffix('.amazonaws.com')}:{name}",
        event_id=str(row.get("eventID") or ""),
        event_time=row["eventTime"],
        account_id=_text(row.get("recipientAccountId")),
        access_key_id=key_id,
        identity_arn=arn,
        owner=owner,
    )


def _uses(rows: list[dict[str, Any]]) -> CredentialUse:
    if not rows:
        return CredentialUse()
    calls = Counter(
        f"{(row.get('eventSource') or '').removesuffix('.amazonaws.com')}:{row.get('eventName') or ''}"
        for row in rows
    )
    times = [row["eventTime"] for row in rows]
    return CredentialUse(
        count=len(rows),
        calls=tuple(sorted(calls.items(), key=lambda item: (-item[1], item[0]))[:MAX_CALLS]),
        accounts=tuple(sorted({row["recipientAccountId"] for row in rows if row.get("recipientAccountId")})),
        first_time=min(times),
        last_time=max(times),
        errors=sum(1 for row in rows if row.get("errorCode")),
        distinct_calls=len(calls),
    )


_MINT_COLUMNS = ("eventID", "eventTime", "eventSource", "eventName", "errorCode", "recipientAccountId",
                 "requestParameters", "responseElements")  # fmt: skip
_USE_COLUMNS = ("eventID", "eventTime", "eventSource", "eventName", "errorCode", "recipientAccountId",
                "userIdentity_accessKeyId", "userIdentity_arn")  # fmt: skip


def minted_credentials(table: pa.Table) -> list[MintedCredential]:
    """The credentials the events of `table` minted (successful calls only), in time order, each with its uses in
    the same table (the minting call itself excluded)."""
    if table.num_rows == 0 or not {"eventSource", "eventName"} <= set(table.column_names):
        return []
    names = pa.array(sorted({name for _, name in CREDENTIAL_CALLS}))
    candidates = table.filter(pc.fill_null(pc.is_in(_plain(table["eventName"]), value_set=names), False))
    present = [name for name in _MINT_COLUMNS if name in candidates.column_names]
    minted = [
        credential
        for row in candidates.select(present).to_pylist()
        if (credential := _minted(row)) is not None
    ]
    if not minted:
        return []
    keys = {credential.access_key_id for credential in minted if credential.access_key_id}
    arns = {credential.identity_arn for credential in minted if credential.identity_arn}
    mask = None
    for column, values in (("userIdentity_accessKeyId", keys), ("userIdentity_arn", arns)):
        if values and column in table.column_names:
            hit = pc.fill_null(pc.is_in(_plain(table[column]), value_set=pa.array(sorted(values))), False)
            mask = hit if mask is None else pc.or_(mask, hit)
    used = table.filter(mask) if mask is not None else table.slice(0, 0)
    rows = used.select([name for name in _USE_COLUMNS if name in used.column_names]).to_pylist()
    result = []
    for credential in sorted(minted, key=lambda item: (item.event_time, item.event_id)):
        mine = [
            row
            for row in rows
            if row.get("eventID") != credential.event_id
            and (
                (credential.access_key_id and row.get("userIdentity_accessKeyId") == credential.access_key_id)
                or (credential.identity_arn and row.get("userIdentity_arn") == credential.identity_arn)
            )
        ]
        result.append(replace(credential, uses=_uses(mine)))
    return result
