"""Which elevated session produced a CloudTrail record: by identity and time, never by the receiving account.

An Identity Center session acts as the role `AWSReservedSSO_<permission set>_<hash>` in the granted account, with
the user's name as role session name. Everything here is pure (no I/O): the extract feeds records in, gets matches
out, and reads back the credentials the sessions minted or assumed, so the audit can report them.

Cost: one dictionary look-up per record (index by account, permission set and session name); the event time is
only parsed for records whose identity already matched, because a night can hold millions of records.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from elevation.cloudtrail.credential_calls import CREDENTIAL_CALLS, FOLLOWED_CALLS
from elevation.cloudtrail.schema import parse_event_time
from elevation.cloudtrail.sessions import SessionIdentity

log = logging.getLogger(__name__)

SSO_ROLE_PREFIX = "AWSReservedSSO_"
#: AWS caps role chaining (AssumeRole with role credentials) at one hour; used when the expiration is unreadable.
CHAINED_CREDENTIALS_MAX = timedelta(hours=1)


@dataclass(frozen=True)
class Principal:
    """Who acted, as far as the record says: any field may be missing depending on event type and version."""

    type: str | None
    account_id: str | None
    role_name: str | None
    session_name: str | None
    role_id: str | None
    access_key_id: str | None
    arn: str | None


def permission_set_of_role(role_name: str | None) -> str | None:
    """`AWSReservedSSO_Admin_0123abcd` -> `Admin`: everything between the prefix and the last underscore (the hash
    is hex, permission set names may contain underscores, so `developer_admin_ab12` is `developer_admin`)."""
    if not role_name or not role_name.startswith(SSO_ROLE_PREFIX):
        return None
    rest = role_name[len(SSO_ROLE_PREFIX) :]
    name, separator, _hash = rest.rpartition("_")
    return name if separator and name else rest or None


def _arn_parts(arn: str) -> tuple[str, str, str] | None:
    """(service, account, resource) of an ARN, or None."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        return None
    return parts[2], parts[4], parts[5]


def parse_assumed_role_arn(arn: str | None) -> tuple[str, str, str] | None:
    """`arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION` -> (account, role, session)."""
    if not arn:
        return None
    parts = _arn_parts(arn)
    if parts is None or parts[0] != "sts" or not parts[2].startswith("assumed-role/"):
        return None
    pieces = parts[2].split("/", 2)
    if len(pieces) != 3 or not pieces[1] or not pieces[2]:
        return None
    return parts[1], pieces[1], pieces[2]


def principal_of(record: dict[str, Any]) -> Principal | None:
    """Read the acting principal from whichever identity fields the record has (arn, sessionIssuer, principalId)."""
    identity = record.get("userIdentity")
    if not isinstance(identity, dict):
        return None
    kind = identity.get("type")
    arn = identity.get("arn") or None
    account = identity.get("accountId") or None
    role = session = role_id = None
    assumed = parse_assumed_role_arn(arn)
    if assumed:
        account, role, session = assumed[0], assumed[1], assumed[2]
    context = identity.get("sessionContext")
    issuer = context.get("sessionIssuer") if isinstance(context, dict) else None
    if isinstance(issuer, dict) and issuer.get("type") == "Role":
        issuer_arn = issuer.get("arn") or ""
        if role is None:
            role = issuer.get("userName") or (issuer_arn.rsplit("/", 1)[-1] if "/" in issuer_arn else None)
        if account is None:
            account = issuer.get("accountId") or ((_arn_parts(issuer_arn) or ("", None, ""))[1] or None)
        role_id = issuer.get("principalId") or None
    principal_id = identity.get("principalId")
    if isinstance(principal_id, str) and ":" in principal_id:
        head, _, tail = principal_id.partition(":")
        if head.startswith("AROA"):
            role_id = role_id or head
            session = session or tail or None
    if kind == "AWSService" and not (role or session):
        return None
    return Principal(
        type=kind,
        account_id=account,
        role_name=role,
        session_name=session,
        role_id=role_id,
        access_key_id=identity.get("accessKeyId") or None,
        arn=arn,
    )


@dataclass(frozen=True)
class Match:
    """A record belongs to `session_id`; `via` says how: `direct`, `role-id` or `assumed-role:<arn>`."""

    session_id: str
    via: str


@dataclass(frozen=True)
class DerivedCredential:
    """Role credentials a session obtained with sts AssumeRole; their events until `expires_at` are the session's."""

    session_id: str
    event_id: str
    issued_at: datetime
    expires_at: datetime
    assumed_role_arn: str | None
    access_key_id: str | None
    depth: int


@dataclass(frozen=True)
class MintedCredential:
    """A credential a session created that the extract does not follow (access key, console password, federation
    token, ...): noted in the night's summary; the audit lists them with their use (audit.credentials)."""

    session_id: str
    event_id: str
    event_time: datetime
    kind: str
    event_name: str
    account_id: str | None
    detail: str | None
    succeeded: bool


def _expiration(value: Any, issued: datetime) -> datetime:
    """CloudTrail writes `Mar 21, 2023, 10:15:24 AM` or ISO; unreadable -> the role-chaining maximum."""
    if isinstance(value, str):
        for parse in (parse_event_time, lambda text: datetime.strptime(text, "%b %d, %Y, %I:%M:%S %p")):
            try:
                moment = parse(value)
            except ValueError:
                continue
            return moment if moment.tzinfo else moment.replace(tzinfo=issued.tzinfo)
    return issued + CHAINED_CREDENTIALS_MAX


def _dig(document: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


@dataclass
class _Window:
    session_id: str
    start: datetime
    end: datetime
    via: str
    depth: int = 0


@dataclass
class SessionMatcher:
    """Stateful matcher for one night: feed every record to :meth:`match`.

    It learns as it goes (the role id of each session's SSO role, the credentials each session assumed) and
    remembers, per `locator` (the file a record came from), records that might belong to credentials learnt later:
    :meth:`locators_to_reread` tells the caller which files to read again once it has seen everything.
    """

    sessions: Iterable[SessionIdentity]
    follow_hops: int = 1
    _index: dict[tuple[str, str, str], list[tuple[SessionIdentity, str]]] = field(init=False, repr=False)
    _role_ids: dict[str, tuple[str, str]] = field(init=False, repr=False, default_factory=dict)
    _by_key: dict[str, list[_Window]] = field(
        init=False, repr=False, default_factory=lambda: defaultdict(list)
    )
    _by_arn: dict[str, list[_Window]] = field(
        init=False, repr=False, default_factory=lambda: defaultdict(list)
    )
    _pending: dict[str, set[str]] = field(init=False, repr=False, default_factory=lambda: defaultdict(set))
    _to_reread: set[str] = field(init=False, repr=False, default_factory=set)
    _seen_derivations: set[tuple[str, str]] = field(init=False, repr=False, default_factory=set)
    derived: list[DerivedCredential] = field(init=False, default_factory=list)
    minted: list[MintedCredential] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.sessions = tuple(self.sessions)
        self._index = defaultdict(list)
        for session in self.sessions:
            for user in dict.fromkeys(session.user_names):
                key = (session.account_id, session.permission_set_name, user.casefold())
                self._index[key].append((session, user))

    # -- matching ---------------------------------------------------------------------------------------------

    def match(self, record: dict[str, Any], locator: str | None = None) -> list[Match]:
        """The sessions this record belongs to (several when overlapping sessions share a user)."""
        principal = principal_of(record)
        if principal is None:
            return []
        matches = self._direct(record, principal)
        if not matches and (self._by_key or self._by_arn):
            matches = self._derived(record, principal)
        if matches:
            self._learn(record, principal, matches)
        elif locator is not None:
            self._remember(principal, locator)
        return matches

    def _direct(self, record: dict[str, Any], principal: Principal) -> list[Match]:
        permission_set = permission_set_of_role(principal.role_name)
        via = "direct"
        account = principal.account_id
        if permission_set is None and principal.role_id in self._role_ids and not principal.role_name:
            account, permission_set = self._role_ids[principal.role_id]
            via = "role-id"
        if permission_set is None or account is None or principal.session_name is None:
            return []
        candidates = self._index.get((account, permission_set, principal.session_name.casefold()))
        if not candidates:
            return []
        moment = _event_time(record)
        if moment is None:
            return []
        matches = []
        for session, _user in candidates:
            start, end = session.audit_window
            if start <= moment <= end:
                matches.append(Match(session.session_id, via))
        return matches

    def _derived(self, record: dict[str, Any], principal: Principal) -> list[Match]:
        windows = (self._by_key.get(principal.access_key_id) if principal.access_key_id else None) or (
            self._by_arn.get(principal.arn) if principal.arn else None
        )
        if not windows:
            return []
        moment = _event_time(record)
        if moment is None:
            return []
        seen: dict[str, Match] = {}
        for window in windows:
            if window.start <= moment <= window.end and window.session_id not in seen:
                seen[window.session_id] = Match(window.session_id, window.via)
        return list(seen.values())

    # -- screening many records at once (elevation.cloudtrail.records.screened_records) ---------------------------

    @staticmethod
    def principal_of_identity(identity: dict[str, Any]) -> Principal | None:
        """The principal of a record with this userIdentity (see :func:`principal_of`)."""
        return principal_of({"userIdentity": identity})

    def match_windows(self, principal: Principal | None) -> list[tuple[datetime, datetime]]:
        """When :meth:`match` could give a record of this principal a session: the time windows (inclusive) of
        the sessions and credentials it may be; none means certainly no session's (with what the matcher knows
        now), whatever the record's content."""
        if principal is None:
            return []
        windows: list[tuple[datetime, datetime]] = []
        permission_set = permission_set_of_role(principal.role_name)
        account = principal.account_id
        if permission_set is None and principal.role_id in self._role_ids and not principal.role_name:
            account, permission_set = self._role_ids[principal.role_id]
        session = principal.session_name
        if permission_set is not None and account is not None and session is not None:
            for candidate, _user in self._index.get((account, permission_set, session.casefold()), ()):
                windows.append(candidate.audit_window)
        if principal.access_key_id:
            windows += [(w.start, w.end) for w in self._by_key.get(principal.access_key_id, ())]
        if principal.arn:
            windows += [(w.start, w.end) for w in self._by_arn.get(principal.arn, ())]
        return windows

    def all_windows(self) -> list[tuple[datetime, datetime]]:
        """Every time window :meth:`match_windows` can give (the sessions' and their credentials'): a record
        outside all of them is no session's, whoever made it."""
        windows = {session.audit_window for session in self.sessions}
        for by in (self._by_key, self._by_arn):
            windows.update((w.start, w.end) for found in by.values() for w in found)
        return sorted(windows)

    def remember(self, principal: Principal | None, locator: str) -> None:
        """What :meth:`match` does with a record that is no session's: note where its principal was seen."""
        if principal is not None:
            self._remember(principal, locator)

    def knowledge(self) -> tuple[int, int]:
        """Changes whenever the matcher learns something that can widen :meth:`match_windows`."""
        return len(self._role_ids), len(self.derived)

    # -- learning ---------------------------------------------------------------------------------------------

    def _depth_of(self, principal: Principal) -> int:
        windows = (self._by_key.get(principal.access_key_id or "") or []) + (
            self._by_arn.get(principal.arn or "") or []
        )
        return min((window.depth for window in windows), default=0)

    def _learn(self, record: dict[str, Any], principal: Principal, matches: list[Match]) -> None:
        if matches[0].via == "direct" and principal.role_id and principal.account_id:
            permission_set = permission_set_of_role(principal.role_name)
            if permission_set and principal.role_id not in self._role_ids:
                self._role_ids[principal.role_id] = (principal.account_id, permission_set)
                self._wake(f"roleid:{principal.role_id}")
        source, name = record.get("eventSource"), record.get("eventName")
        if (source, name) in FOLLOWED_CALLS:
            self._learn_assume_role(record, principal, matches)
        elif kind := CREDENTIAL_CALLS.get((str(source), str(name))):
            self._learn_minted(record, principal, matches, kind)

    def _learn_assume_role(self, record: dict[str, Any], principal: Principal, matches: list[Match]) -> None:
        response = record.get("responseElements")
        if not isinstance(response, dict) or record.get("errorCode"):
            return
        derived_caller = matches[0].via.startswith("assumed-role:")
        depth = 1 + self._depth_of(principal) if derived_caller else 1
        if depth > self.follow_hops:
            return
        issued = _event_time(record)
        if issued is None:
            return
        arn = _dig(response, "assumedRoleUser", "arn")
        key = _dig(response, "credentials", "accessKeyId")
        expires = _expiration(_dig(response, "credentials", "expiration"), issued)
        for match in matches:
            # one credential per session, however many copies of its AssumeRole (caller's and role's account)
            marker = (match.session_id, str(key or arn or record.get("eventID")))
            if marker in self._seen_derivations:
                continue
            self._seen_derivations.add(marker)
            credential = DerivedCredential(
                session_id=match.session_id,
                event_id=str(record.get("eventID")),
                issued_at=issued,
                expires_at=expires,
                assumed_role_arn=arn if isinstance(arn, str) else None,
                access_key_id=key if isinstance(key, str) else None,
                depth=depth,
            )
            self.derived.append(credential)
            window = _Window(match.session_id, issued, expires, f"assumed-role:{arn}", depth)
            if credential.access_key_id:
                self._by_key[credential.access_key_id].append(window)
                self._wake(f"key:{credential.access_key_id}")
            if credential.assumed_role_arn:
                self._by_arn[credential.assumed_role_arn].append(window)
                self._wake(f"arn:{credential.assumed_role_arn}")

    def _learn_minted(
        self, record: dict[str, Any], principal: Principal, matches: list[Match], kind: str
    ) -> None:
        moment = _event_time(record)
        if moment is None:
            return
        request, response = record.get("requestParameters"), record.get("responseElements")
        detail = (
            _dig(response, "accessKey", "accessKeyId")
            or _dig(response, "credentials", "accessKeyId")
            or _dig(response, "federatedUser", "arn")
            or _dig(request, "userName")
            or _dig(response, "loginProfile", "userName")
        )
        for match in matches:
            self.minted.append(
                MintedCredential(
                    session_id=match.session_id,
                    event_id=str(record.get("eventID")),
                    event_time=moment,
                    kind=kind,
                    event_name=str(record.get("eventName")),
                    account_id=record.get("recipientAccountId") or principal.account_id,
                    detail=str(detail) if detail is not None else None,
                    succeeded=not record.get("errorCode"),
                )
            )

    # -- records seen before what explains them ---------------------------------------------------------------

    def _remember(self, principal: Principal, locator: str) -> None:
        if principal.access_key_id:
            self._pending[f"key:{principal.access_key_id}"].add(locator)
        if principal.arn and principal.arn.startswith("arn:") and ":assumed-role/" in principal.arn:
            self._pending[f"arn:{principal.arn}"].add(locator)
        if principal.role_id and not principal.role_name:
            self._pending[f"roleid:{principal.role_id}"].add(locator)

    def _wake(self, key: str) -> None:
        locators = self._pending.pop(key, None)
        if locators:
            self._to_reread.update(locators)

    def locators_to_reread(self) -> set[str]:
        """Files holding records seen before the event that made them the session's; clears the list."""
        result, self._to_reread = self._to_reread, set()
        return result


def _event_time(record: dict[str, Any]) -> datetime | None:
    try:
        return parse_event_time(record["eventTime"])
    except (KeyError, ValueError, TypeError):
        return None
