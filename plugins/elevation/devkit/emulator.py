"""AWS emulator for the tests and the demo: moto in server mode behind a WSGI middleware.

This module is the ONE place where moto is extended. moto (5.2.x) serves the
AWS APIs from a background thread of the current process, on a free loopback
port. Every request passes through ``_EmulatorApp``, a WSGI middleware that
records it, injects faults on the wire and answers the Identity Center calls
where moto is thinner than AWS; under ``/_emulator`` it serves the controls to
other processes (see "The control endpoint" below). The middleware never
patches moto's code: it only talks to moto over WSGI, so a moto upgrade cannot
silently change what the emulator does.

Deviations from plain moto, and why
-----------------------------------
1. Asynchronous account assignments (sso-admin). moto answers every
   CreateAccountAssignment / DeleteAccountAssignment with ``SUCCEEDED``. Its
   deletion RequestId is the creation RequestId, and describing a creation
   fails once the assignment has been deleted. AWS answers ``IN_PROGRESS``, and
   the caller must poll DescribeAccountAssignmentCreationStatus /
   DeletionStatus. The emulator gives every Create/Delete its own RequestId and
   answers ``IN_PROGRESS``. The two Describe calls are answered from the
   emulator's own request table: ``Status``, ``RequestId``, ``TargetId``,
   ``TargetType``, ``PermissionSetArn``, ``PrincipalType``, ``PrincipalId``,
   ``CreatedDate``, and ``FailureReason`` on ``FAILED``. An unknown request id
   gets ResourceNotFoundException (HTTP 400). ``IdentityCenterControl``
   controls this behaviour: how many describes stay ``IN_PROGRESS``, injected
   ``FAILED`` outcomes and missing ``Status`` keys. The default, after
   ``start()`` and after ``reset()``, is one ``IN_PROGRESS`` describe and then
   ``SUCCEEDED``. A successful create or delete reaches moto at once, so a
   list shows the change even while its status is still ``IN_PROGRESS``.
   Failed creations never reach moto. Failed deletions leave the assignment
   in moto.
2. Per-account provisioning. moto ignores TargetType/TargetId in
   ProvisionPermissionSet and AccountId in ListPermissionSetsProvisionedToAccount,
   so every provisioned permission set appears in every account. It also never
   provisions on CreateAccountAssignment, and its
   ListAccountsForProvisionedPermissionSet always answers its own account. The
   emulator keeps an (instance, account) -> permission sets map and answers
   ProvisionPermissionSet, ListPermissionSetsProvisionedToAccount and
   ListAccountsForProvisionedPermissionSet from that map. The map is filled by
   ProvisionPermissionSet with TargetType AWS_ACCOUNT, and by every
   CreateAccountAssignment that reaches moto. As in AWS,
   ALL_PROVISIONED_ACCOUNTS re-provisions only the accounts that already have
   the permission set, and adds none. DeletePermissionSet removes the
   permission set from the map. ProvisionPermissionSet answers ``IN_PROGRESS``,
   and DescribePermissionSetProvisioningStatus (which moto lacks) answers
   ``SUCCEEDED``.
3. Paging. moto does not page ListInstances,
   ListPermissionSetsProvisionedToAccount or
   ListAccountsForProvisionedPermissionSet. It pages the other list calls 100
   items at a time, and its cursors are keyed on item fields: a duplicated
   assignment at a page boundary is served twice, and deleting the item that a
   token points to breaks the next page. The emulator pages these six calls
   itself: ListAccountAssignments, ListAccountAssignmentsForPrincipal,
   ListPermissionSets, ListPermissionSetsProvisionedToAccount,
   ListAccountsForProvisionedPermissionSet and ListInstances. It uses opaque
   offset tokens bound to the request parameters. Without ``MaxResults`` the
   page holds ``DEFAULT_PAGE_SIZE`` (10) items, so that paging bugs show up
   with a dozen items. ``MaxResults`` outside 1..100 and foreign or garbled
   tokens get ValidationException.
4. CreateAccountAssignment validation. moto accepts anything. Like AWS, the
   emulator requires an existing permission set of the given instance
   (ResourceNotFoundException), TargetType ``AWS_ACCOUNT``, PrincipalType
   ``USER``/``GROUP`` and a 12-digit TargetId (ValidationException).
   DeleteAccountAssignment on a missing assignment gets
   ResourceNotFoundException with a message (moto sends an empty message).
5. Permission sets. Without SessionDuration, moto stores the integer 3600,
   where AWS has "PT1H". The emulator sends "PT1H" and rejects durations that
   are not ISO-8601 between 1 and 12 hours (ValidationException). moto's
   UpdatePermissionSet resets the fields the caller leaves out; the emulator
   keeps them, as AWS does.
6. Operations that moto does not implement (for example CreateInstance,
   ListAccountAssignmentCreationStatus) answer HTTP 501 with the JSON error
   ``NotImplemented``. moto answers an HTML 500, and botocore would retry it.
7. Fault injection and a call log (``FaultInjector``, ``CallLog``). Both apply
   to every service and match on the bare operation name: the X-Amz-Target
   suffix for JSON protocols, ``Action`` for query protocols, and
   ``"METHOD /path"`` for REST calls. Faults are real HTTP error responses:
   JSON ``{"__type", "message"}`` with ``x-amzn-ErrorType`` (XML
   ``ErrorResponse`` for query protocols). botocore therefore raises a genuine
   ``ClientError``, and retries it as it would retry AWS.
8. ListParents for a child that is not in the organization. moto answers
   AccountNotFoundException or OrganizationalUnitNotFoundException (by the
   kind of id); AWS, per botocore's organizations model, answers
   ChildNotFoundException (HTTP 400). The emulator answers that, and like AWS
   checks the organization first (AWSOrganizationsNotInUseException) and
   answers InvalidInputException (``Reason`` INVALID_PATTERN) for a ChildId
   that is neither a 12-digit account id nor an OU id.

The control endpoint
--------------------
The controls above are reachable from outside the process, so a test can
drive a real ``airflow dags test`` subprocess and anyone can rehearse an
outage against the sandbox. They are served on the emulator's own port (it
binds 127.0.0.1 only) under ``/_emulator``, a prefix no AWS protocol uses
(JSON and query calls post to ``/``, and an S3 bucket name cannot begin with
``_``). Control requests are neither recorded in the call log nor faulted.
Bodies are JSON objects; absent fields take the defaults of the Python
methods; an unknown field, a wrong type or a refused value gets HTTP 400
``{"error": "..."}``; an unknown route 404 (with the list of routes), a
wrong method 405. Successful writes answer ``{"ok": true}``.

GET    /_emulator
    ``{"routes": [...]}``.
GET    /_emulator/status
    endpoint_url, region, account_id, calls_recorded, faults_remaining,
    creations_in_flight, max_creations_in_flight.
GET    /_emulator/calls?since=N
    ``{"since", "next", "operations": [...], "counts": {operation: n}}``: the
    operations recorded from index N (default 0) on, in arrival order, and
    their counts; ask from ``next`` next time. reset() restarts the indexes.
DELETE /_emulator/calls
    Clear the call log.
GET    /_emulator/assignments?AccountId=...&PrincipalId=...
    ``{"assignments": [{InstanceArn, AccountId, PermissionSetArn,
    PrincipalType, PrincipalId}]}``: the assignments that exist now in the
    emulator's region, duplicates included. Query fields (any of those five)
    filter by exact value.
POST   /_emulator/identity-center/hold-creations     ``{"polls": 1}``
POST   /_emulator/identity-center/hold-deletions     ``{"polls": 1}``
    New requests answer IN_PROGRESS for that many describes; null: forever.
POST   /_emulator/identity-center/release-creations  ``{"polls": 0}``
POST   /_emulator/identity-center/release-deletions  ``{"polls": 0}``
    Requests already made and still IN_PROGRESS (a hold applies to the
    requests made under it) end after that many more describes. Answers
    ``{"ok": true, "released": n}``.
POST   /_emulator/identity-center/fail-creations     ``{"reason": "...", "times": 1}``
POST   /_emulator/identity-center/fail-deletions     ``{"reason": "...", "times": 1}``
POST   /_emulator/identity-center/omit-status-creations  ``{"times": 1}``
POST   /_emulator/faults/errors
    ``{"operation": "...", "error_code": "...", "http_status": 400,
    "message": "injected fault", "times": 1}``
POST   /_emulator/faults/delays
    ``{"operation": "...", "seconds": 1.5, "times": 1}``
POST   /_emulator/faults/clear
    Drop every injected error and delay not yet consumed.
POST   /_emulator/reset  ``{"keep_aws_state": false}``
    Everything, as ``AwsEmulator.reset()`` (moto state too: in the sandbox
    that wipes the demo organization); with true, only the controls
    (``reset_controls()``: default holds, no faults or pending failures).

For example, against the sandbox (``python -m elevation.devkit.sandbox``)::

    curl -s -X POST 127.0.0.1:5000/_emulator/identity-center/hold-creations -d '{"polls": null}'
    curl -s -X POST 127.0.0.1:5000/_emulator/faults/errors \\
        -d '{"operation": "DeleteAccountAssignment", "error_code": "ThrottlingException", "times": 3}'
    curl -s '127.0.0.1:5000/_emulator/calls?since=0'
    curl -s '127.0.0.1:5000/_emulator/assignments?AccountId=123456789012'

From Python, ``EmulatorControl(endpoint_url)`` wraps these routes with the
method names and defaults of the in-process controls (plus ``wait_for_call``).

Kept as in moto, on purpose
---------------------------
* Assignments are NOT de-duplicated: creating the same assignment twice leaves
  two copies (tests can see a double create), and one delete removes one copy.

moto quirks the lifecycle code must not rely on
-----------------------------------------------
* moto state is process-global. Two emulators in one process share it, and
  ``reset()`` wipes moto state for the whole process. Never mix ``mock_aws``
  with the emulator: it intercepts boto3 in process and resets moto too.
* moto creates one Identity Center instance per account and region on first
  use. Its ARN and IdentityStoreId change after every ``reset()``, so read them
  with ``list_instances``. CreateInstance is not implemented.
* CreateAccountAssignment does not check that the principal exists in the
  identity store, or that the account exists in Organizations. identitystore
  accepts any IdentityStoreId.
* Organizations CreateAccount is ``SUCCEEDED`` at once; AWS is asynchronous.
* A permission set stays provisioned after its last assignment in an account
  is deleted. AWS may deprovision it.
* List results come in insertion order; AWS promises no order. Offset tokens
  may skip or repeat items when the list changes between pages.
* A delayed call still reaches moto after its client has timed out (as an AWS
  write may still land after a timeout), unless ``reset()``/``stop()`` happens
  first; then the call is dropped.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import io
import json
import logging
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode
from xml.sax.saxutils import escape

import boto3
import botocore.session
from botocore.config import Config
from moto.moto_api._internal.models import moto_api_backend
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

__all__ = [
    "AwsEmulator",
    "CallLog",
    "EmulatorControl",
    "EmulatorControlError",
    "FaultInjector",
    "IdentityCenterControl",
    "RecordedCalls",
]

log = logging.getLogger(__name__)

DUMMY_CREDENTIAL = "testing"
# moto maps every unknown access key (such as "testing") to this account.
MOTO_ACCOUNT_ID = "123456789012"
LOOPBACK = "127.0.0.1"
# The control endpoint's path prefix. No AWS protocol uses it: JSON and query calls post to "/", REST paths
# start with a version or a resource, and an S3 bucket name cannot begin with "_".
CONTROL_PREFIX = "/_emulator"

SSO_ADMIN_TARGET = "SWBExternalService"
ORGANIZATIONS_TARGET = "AWSOrganizationsV20161128"
JSON_CONTENT_TYPE = "application/x-amz-json-1.1"

IN_PROGRESS, SUCCEEDED, FAILED = "IN_PROGRESS", "SUCCEEDED", "FAILED"
DEFAULT_CREATION_FAILURE = (
    "Received a 404 status error: Not supported policy arn:aws:iam::aws:policy/EmulatorInjectedFailure."
)
DEFAULT_DELETION_FAILURE = (
    "Received a 500 status error: Internal failure while removing the account assignment "
    "(injected by the emulator)."
)

# Page size when the caller sends no MaxResults: small, so that paging bugs show up with a dozen items.
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100  # the AWS limit of MaxResults for every paged sso-admin call below
PAGING_KEYS = ("MaxResults", "NextToken")
# Asked of moto when the emulator fetches a whole list to page it itself.
_FETCH_ALL = 1_000_000

_ASSIGNMENT_FIELDS = ("TargetId", "TargetType", "PermissionSetArn", "PrincipalType", "PrincipalId")
_ACCOUNT_ID = re.compile(r"^\d{12}$")
# botocore's ChildId pattern, anchored as AWS means it (the model's "^a|b$" binds the anchors to one side each).
_CHILD_ID = re.compile(r"^(?:\d{12}|ou-[0-9a-z]{4,32}-[a-z0-9]{8,32})$")
_SESSION_DURATION = re.compile(r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?$")

RequestKind = Literal["creation", "deletion"]


# --------------------------------------------------------------------------- wire helpers


class _AwsError(Exception):
    """An AWS-shaped error that a middleware handler answers with instead of a result."""

    def __init__(self, code: str, message: str, status: int = 400, **fields: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.fields = fields  # modeled members beyond the message, such as Organizations' "Reason"


@dataclass
class _Reply:
    """A complete HTTP answer, buffered so the middleware can inspect or rewrite it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"{}")

    def send(self, start_response: Callable[..., Any]) -> list[bytes]:
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Unknown"
        headers = [(k, v) for k, v in self.headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(self.body))))
        start_response(f"{self.status} {phrase}", headers)
        return [self.body]


def _json_reply(payload: dict[str, Any], status: int = 200) -> _Reply:
    headers = [("Content-Type", JSON_CONTENT_TYPE), ("x-amzn-RequestId", str(uuid.uuid4()))]
    return _Reply(status, headers, json.dumps(payload).encode())


def _error_reply(
    protocol: str, code: str, message: str, status: int, fields: dict[str, str] | None = None
) -> _Reply:
    """An error in the shape botocore parses for the protocol, so the client raises ClientError(code)."""
    request_id = str(uuid.uuid4())
    if protocol == "query":
        kind = "Receiver" if status >= 500 else "Sender"
        xml = (
            f"<ErrorResponse><Error><Type>{kind}</Type><Code>{escape(code)}</Code>"
            f"<Message>{escape(message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        return _Reply(status, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], xml.encode())
    headers = [
        ("Content-Type", JSON_CONTENT_TYPE),
        ("x-amzn-RequestId", request_id),
        ("x-amzn-ErrorType", code),
    ]
    payload = {"__type": code, "message": message, **(fields or {})}
    return _Reply(status, headers, json.dumps(payload).encode())


@dataclass
class _Call:
    """One incoming request, parsed once: protocol, service prefix, operation and JSON parameters."""

    environ: dict[str, Any]
    body: bytes
    protocol: str  # "json" | "query" | "rest"
    target_prefix: str
    operation: str
    params: dict[str, Any]

    @classmethod
    def parse(cls, environ: dict[str, Any], body: bytes) -> _Call:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target:
            prefix, _, operation = target.rpartition(".")
            try:
                params = json.loads(body) if body else {}
            except ValueError:
                params = {}
            return cls(environ, body, "json", prefix, operation, params if isinstance(params, dict) else {})
        if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
            action = parse_qs(body.decode("utf-8", "replace")).get("Action", [""])[0]
            if action:
                return cls(environ, body, "query", "", action, {})
        operation = f"{environ.get('REQUEST_METHOD', 'GET')} {environ.get('PATH_INFO', '/')}"
        return cls(environ, body, "rest", "", operation, {})


def _read_body(environ: dict[str, Any]) -> bytes:
    """Read the request body once and put it back, so moto can read it again."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > 0:
        body = stream.read(length)
    elif environ.get("wsgi.input_terminated"):
        body = stream.read()
    else:
        body = b""
    environ["wsgi.input"] = io.BytesIO(body)
    return body


# --------------------------------------------------------------------------- public controls


@dataclass
class _ErrorRule:
    error_code: str
    http_status: int
    message: str
    remaining: int


@dataclass
class _DelayRule:
    seconds: float
    remaining: int


class FaultInjector:
    """Wire-level faults: the next calls of an operation answer an AWS error, or answer late."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._errors: dict[str, deque[_ErrorRule]] = {}
        self._delays: dict[str, deque[_DelayRule]] = {}

    def inject(
        self,
        operation: str,
        error_code: str,
        *,
        http_status: int = 400,
        message: str = "injected fault",
        times: int = 1,
    ) -> None:
        """Answer the next `times` calls of `operation` with this error; they never reach moto."""
        if times < 1:
            raise ValueError("times must be >= 1")
        if not 400 <= http_status <= 599:
            raise ValueError("http_status must be an HTTP error status (400..599)")
        with self._lock:
            self._errors.setdefault(operation, deque()).append(
                _ErrorRule(error_code, http_status, message, times)
            )

    def delay(self, operation: str, seconds: float, *, times: int = 1) -> None:
        """Sleep before handling the next `times` calls of `operation` (the call still reaches moto)."""
        if times < 1:
            raise ValueError("times must be >= 1")
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        with self._lock:
            self._delays.setdefault(operation, deque()).append(_DelayRule(seconds, times))

    def clear(self) -> None:
        with self._lock:
            self._errors.clear()
            self._delays.clear()

    @property
    def remaining(self) -> int:
        """Injected errors and delays not yet consumed by a call."""
        with self._lock:
            errors = sum(r.remaining for q in self._errors.values() for r in q)
            delays = sum(r.remaining for q in self._delays.values() for r in q)
            return errors + delays

    def _take_delay(self, operation: str) -> float | None:
        with self._lock:
            queue = self._delays.get(operation)
            if not queue:
                return None
            rule = queue[0]
            rule.remaining -= 1
            if rule.remaining == 0:
                queue.popleft()
            return rule.seconds

    def _take_error(self, operation: str) -> _ErrorRule | None:
        with self._lock:
            queue = self._errors.get(operation)
            if not queue:
                return None
            rule = queue[0]
            rule.remaining -= 1
            if rule.remaining == 0:
                queue.popleft()
            return rule


class CallLog:
    """Every request that reached the emulator, faulted ones included, in arrival order."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._operations: list[str] = []

    def count(self, operation: str) -> int:
        with self._lock:
            return sum(1 for op in self._operations if op == operation)

    def operations(self) -> list[str]:
        with self._lock:
            return list(self._operations)

    def counts(self) -> Counter[str]:
        """All counts at once (handy in assertion messages)."""
        with self._lock:
            return Counter(self._operations)

    def since(self, index: int = 0) -> tuple[list[str], int]:
        """The operations recorded from position `index` on, and the index to ask from next time."""
        if index < 0:
            raise ValueError("index must be >= 0")
        with self._lock:
            return self._operations[index:], len(self._operations)

    def clear(self) -> None:
        with self._lock:
            self._operations.clear()

    def _record(self, operation: str) -> None:
        with self._lock:
            self._operations.append(operation)


@dataclass
class _StatusRequest:
    """One Create/DeleteAccountAssignment request and the status its describes will report."""

    kind: RequestKind
    request_id: str
    instance_arn: str
    assignment: dict[str, str]
    created_date: float
    polls_left: int | None  # describes still answering IN_PROGRESS; None = forever
    failure_reason: str | None
    omit_status: bool
    terminal: bool = False

    def summary(self, status: str) -> dict[str, Any]:
        out: dict[str, Any] = {"Status": status, "RequestId": self.request_id, **self.assignment}
        out["CreatedDate"] = self.created_date
        if status == FAILED and self.failure_reason is not None:
            out["FailureReason"] = self.failure_reason
        return out


class IdentityCenterControl:
    """Controls the asynchronous assignment statuses, and holds the per-account provisioning state.

    The hold decides WHEN a request turns terminal (after how many IN_PROGRESS describes, taken when the
    request is created); fail_next_*/omit_status_* decide WHAT it looks like then. A failing creation under
    hold(polls=None) therefore never shows FAILED. A creation counts as in flight from its Create until the
    describe at which it turns terminal (also when that describe omits "Status").
    """

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._reset_state()

    def _reset_state(self) -> None:
        with self._lock:
            self._restore_defaults()
            self._requests: dict[str, _StatusRequest] = {}
            self._in_flight = 0
            self._max_in_flight = 0
            # (instance ARN, account id) -> permission set ARNs, in provisioning order
            self._provisioned: dict[tuple[str, str], dict[str, None]] = {}
            self._provisioning_requests: dict[str, dict[str, Any]] = {}

    def _restore_defaults(self) -> None:
        """The default holds, no pending failure or missing status; requests already made keep theirs."""
        with self._lock:
            self._creation_polls: int | None = 1
            self._deletion_polls: int | None = 1
            self._creation_failures: deque[str] = deque()
            self._deletion_failures: deque[str] = deque()
            self._omit_status_creations = 0

    # -- public controls

    def hold_creations(self, polls: int | None = 1) -> None:
        """New creations answer IN_PROGRESS for `polls` describes, then their outcome (None: forever)."""
        _check_polls(polls)
        with self._lock:
            self._creation_polls = polls

    def fail_next_creations(self, reason: str = DEFAULT_CREATION_FAILURE, times: int = 1) -> None:
        """The next `times` creations end FAILED with `reason`; they never reach moto."""
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._creation_failures.extend([reason] * times)

    def omit_status_next_creations(self, times: int = 1) -> None:
        """Describes of the next `times` creations lack the "Status" key, for good."""
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._omit_status_creations += times

    def hold_deletions(self, polls: int | None = 1) -> None:
        """Same as hold_creations, for DeleteAccountAssignment."""
        _check_polls(polls)
        with self._lock:
            self._deletion_polls = polls

    def fail_next_deletions(self, reason: str = DEFAULT_DELETION_FAILURE, times: int = 1) -> None:
        """The next `times` deletions end FAILED with `reason`; the assignment stays in moto."""
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._deletion_failures.extend([reason] * times)

    def release_creations(self, polls: int = 0) -> int:
        """Creations already made and still IN_PROGRESS turn terminal after `polls` more describes.

        A hold only applies to the requests made under it, so this is how a held creation is let through
        (for example after the worker that waited on it was killed). Returns how many were released.
        """
        return self._release("creation", polls)

    def release_deletions(self, polls: int = 0) -> int:
        """Same as release_creations, for DeleteAccountAssignment."""
        return self._release("deletion", polls)

    def _release(self, kind: RequestKind, polls: int) -> int:
        if polls is None or polls < 0:
            raise ValueError("polls must be >= 0")
        with self._lock:
            pending = [r for r in self._requests.values() if r.kind == kind and not r.terminal]
            for request in pending:
                request.polls_left = polls
            return len(pending)

    @property
    def creations_in_flight(self) -> int:
        """Creations accepted whose terminal status no describe has reported yet."""
        with self._lock:
            return self._in_flight

    @property
    def max_creations_in_flight(self) -> int:
        """Peak of creations_in_flight since start/reset."""
        with self._lock:
            return self._max_in_flight

    # -- used by the middleware (always under the shared lock)

    def _take_outcome(self, kind: RequestKind) -> tuple[str | None, bool]:
        """Consume the pending injected outcome for the next request: (failure reason, omit status)."""
        failures = self._creation_failures if kind == "creation" else self._deletion_failures
        reason = failures.popleft() if failures else None
        omit = False
        if kind == "creation" and self._omit_status_creations > 0:
            self._omit_status_creations -= 1
            omit = True
        return reason, omit

    def _open_request(
        self,
        kind: RequestKind,
        instance_arn: str,
        assignment: dict[str, str],
        failure_reason: str | None,
        omit_status: bool,
    ) -> _StatusRequest:
        polls = self._creation_polls if kind == "creation" else self._deletion_polls
        request = _StatusRequest(
            kind=kind,
            request_id=str(uuid.uuid4()),
            instance_arn=instance_arn,
            assignment=assignment,
            created_date=time.time(),
            polls_left=polls,
            failure_reason=failure_reason,
            omit_status=omit_status,
        )
        self._requests[request.request_id] = request
        if kind == "creation":
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        return request

    def _describe(self, kind: RequestKind, request_id: str, instance_arn: str) -> dict[str, Any]:
        request = self._requests.get(request_id)
        if request is None or request.kind != kind or request.instance_arn != instance_arn:
            noun = (
                "AccountAssignmentCreationRequest"
                if kind == "creation"
                else "AccountAssignmentDeletionRequest"
            )
            raise _AwsError("ResourceNotFoundException", f"{noun} with id {request_id} was not found.")
        if request.polls_left is None:
            status = IN_PROGRESS
        elif request.polls_left > 0:
            request.polls_left -= 1
            status = IN_PROGRESS
        else:
            status = FAILED if request.failure_reason is not None else SUCCEEDED
        if status != IN_PROGRESS and not request.terminal:
            request.terminal = True
            if kind == "creation":
                self._in_flight -= 1
        summary = request.summary(status)
        if request.omit_status:
            del summary["Status"]
        return summary

    def _provision(self, instance_arn: str, account_id: str, permission_set_arn: str) -> None:
        self._provisioned.setdefault((instance_arn, account_id), {})[permission_set_arn] = None

    def _permission_sets_of(self, instance_arn: str, account_id: str) -> list[str]:
        return list(self._provisioned.get((instance_arn, account_id), {}))

    def _accounts_of(self, instance_arn: str, permission_set_arn: str) -> list[str]:
        return [
            account
            for (instance, account), sets in self._provisioned.items()
            if instance == instance_arn and permission_set_arn in sets
        ]

    def _forget_permission_set(self, instance_arn: str, permission_set_arn: str) -> None:
        for (instance, _), sets in self._provisioned.items():
            if instance == instance_arn:
                sets.pop(permission_set_arn, None)


def _check_polls(polls: int | None) -> None:
    if polls is not None and polls < 0:
        raise ValueError("polls must be None or >= 0")


# --------------------------------------------------------------------------- the middleware


class _EmulatorApp:
    """WSGI middleware in front of moto: call log, wire faults, Identity Center gap fillers.

    All moto work and all emulator state changes run under one lock: moto's backends are not
    thread-safe, and the werkzeug server is threaded. Injected delays are slept outside the lock.
    """

    def __init__(
        self,
        inner: Callable[..., Iterable[bytes]],
        lock: threading.RLock,
        faults: FaultInjector,
        control: IdentityCenterControl,
        calls: CallLog,
        region: str,
    ) -> None:
        self._inner = inner
        self._lock = lock
        self._faults = faults
        self._control = control
        self._calls = calls
        self._region = region
        self.port = 0  # set once the server is bound; used by the emulator's own reads of moto
        self.control_endpoint: Callable[[dict[str, Any], bytes], _Reply] | None = None
        self._generation = 0
        self._wake = threading.Event()
        sso_handlers: dict[str, Callable[[_Call], _Reply]] = {
            "CreateAccountAssignment": self._create_account_assignment,
            "DeleteAccountAssignment": self._delete_account_assignment,
            "DescribeAccountAssignmentCreationStatus": self._describe_creation,
            "DescribeAccountAssignmentDeletionStatus": self._describe_deletion,
            "ProvisionPermissionSet": self._provision_permission_set,
            "DescribePermissionSetProvisioningStatus": self._describe_provisioning,
            "ListPermissionSetsProvisionedToAccount": self._list_provisioned_to_account,
            "ListAccountsForProvisionedPermissionSet": self._list_accounts_for_permission_set,
            "CreatePermissionSet": self._create_permission_set,
            "UpdatePermissionSet": self._update_permission_set,
            "DeletePermissionSet": self._delete_permission_set,
            "ListAccountAssignments": self._paged_from_moto("AccountAssignments"),
            "ListAccountAssignmentsForPrincipal": self._paged_from_moto("AccountAssignments"),
            "ListPermissionSets": self._paged_from_moto("PermissionSets"),
            "ListInstances": self._paged_from_moto("Instances"),
        }
        self._handlers: dict[tuple[str, str], Callable[[_Call], _Reply]] = {
            **{(SSO_ADMIN_TARGET, operation): handler for operation, handler in sso_handlers.items()},
            (ORGANIZATIONS_TARGET, "ListParents"): self._list_parents,
        }

    def interrupt_delays(self) -> None:
        """Wake and drop every delayed request (on reset/stop), so none lands in the next test's state."""
        with self._lock:
            self._generation += 1
            self._wake.set()
            self._wake = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/moto-api") or path == "/favicon.ico":
            with self._lock:
                return self._call_inner(environ, "rest").send(start_response)
        if (path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/")) and self.control_endpoint:
            # Not an AWS call: neither recorded nor faulted. The controls take the shared lock themselves.
            return self.control_endpoint(environ, _read_body(environ)).send(start_response)

        call = _Call.parse(environ, _read_body(environ))
        self._calls._record(call.operation)

        generation, wake = self._generation, self._wake
        seconds = self._faults._take_delay(call.operation)
        if seconds is not None and (wake.wait(seconds) or generation != self._generation):
            return _error_reply(
                call.protocol, "ServiceUnavailable", "emulator reset or stopped during an injected delay", 503
            ).send(start_response)

        rule = self._faults._take_error(call.operation)
        if rule is not None:
            reply = _error_reply(call.protocol, rule.error_code, rule.message, rule.http_status)
            return reply.send(start_response)

        with self._lock:
            return self._dispatch(call).send(start_response)

    def _dispatch(self, call: _Call) -> _Reply:
        handler = self._handlers.get((call.target_prefix, call.operation))
        try:
            return handler(call) if handler else self._forward(call)
        except _AwsError as exc:
            return _error_reply(call.protocol, exc.code, exc.message, exc.status, exc.fields)
        except Exception as exc:  # an emulator bug must still answer in the AWS shape
            log.exception("emulator failed on %s", call.operation)
            return _error_reply(call.protocol, "InternalFailure", f"emulator raised {exc!r}", 500)

    # -- talking to moto

    def _call_inner(self, environ: dict[str, Any], protocol: str) -> _Reply:
        captured: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"] = int(status.split(" ", 1)[0])
            captured["headers"] = list(headers)
            return lambda data: None

        try:
            result = self._inner(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except NotImplementedError as exc:
            return _error_reply(protocol, "NotImplemented", f"{exc} (moto lacks it; see {__name__})", 501)
        except Exception as exc:  # a moto bug must answer like a server error, not kill the connection
            log.exception("moto failed on %s", environ.get("HTTP_X_AMZ_TARGET") or environ.get("PATH_INFO"))
            return _error_reply(protocol, "InternalFailure", f"moto raised {type(exc).__name__}: {exc}", 500)
        return _Reply(captured["status"], captured["headers"], body)

    def _forward(self, call: _Call) -> _Reply:
        environ = {k: v for k, v in call.environ.items() if k != "werkzeug.request"}
        environ["wsgi.input"] = io.BytesIO(call.body)
        return self._call_inner(environ, call.protocol)

    def _moto(self, call: _Call, operation: str, params: dict[str, Any]) -> _Reply:
        """Send an sso-admin request to moto on behalf of `call` (same account, region, credentials)."""
        data = json.dumps(params).encode()
        environ = {k: v for k, v in call.environ.items() if k != "werkzeug.request"}
        environ.update(
            {
                "wsgi.input": io.BytesIO(data),
                "CONTENT_LENGTH": str(len(data)),
                "HTTP_X_AMZ_TARGET": f"{call.target_prefix}.{operation}",
            }
        )
        return self._call_inner(environ, "json")

    def _moto_ok(self, call: _Call, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        reply = self._moto(call, operation, params)
        if reply.status != 200:
            raise _reply_error(reply)
        return reply.json()

    def _moto_list(self, call: _Call, operation: str, params: dict[str, Any], result_key: str) -> list[Any]:
        """The whole list from moto, following moto's own tokens defensively."""
        items: list[Any] = []
        token: str | None = None
        for _ in range(10_000):
            request = {**params, "MaxResults": _FETCH_ALL}
            if token:
                request["NextToken"] = token
            data = self._moto_ok(call, operation, request)
            items.extend(data.get(result_key) or [])
            token = data.get("NextToken")
            if not token:
                return items
        raise _AwsError("InternalFailure", f"moto never finished paging {operation}", 500)

    # -- paging

    def _page(self, call: _Call, items: list[Any], result_key: str) -> _Reply:
        params = {k: v for k, v in call.params.items() if k not in PAGING_KEYS}
        scope = hashlib.sha256(
            json.dumps([call.operation, params], sort_keys=True, default=str).encode()
        ).hexdigest()[:16]
        size = call.params.get("MaxResults")
        if size is None:
            size = DEFAULT_PAGE_SIZE
        elif not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_PAGE_SIZE:
            raise _AwsError(
                "ValidationException",
                f"1 validation error detected: Value '{size}' at 'maxResults' failed to satisfy constraint: "
                f"Member must have value between 1 and {MAX_PAGE_SIZE}",
            )
        offset = _decode_token(call.params.get("NextToken"), scope)
        payload: dict[str, Any] = {result_key: items[offset : offset + size]}
        if offset + size < len(items):
            payload["NextToken"] = _encode_token(offset + size, scope)
        return _json_reply(payload)

    def _paged_from_moto(self, result_key: str) -> Callable[[_Call], _Reply]:
        def handler(call: _Call) -> _Reply:
            params = {k: v for k, v in call.params.items() if k not in PAGING_KEYS}
            items = self._moto_list(call, call.operation, params, result_key)
            return self._page(call, items, result_key)

        return handler

    # -- assignments

    def _create_account_assignment(self, call: _Call) -> _Reply:
        p = call.params
        instance_arn = _required(p, "InstanceArn")
        assignment = {name: _required(p, name) for name in _ASSIGNMENT_FIELDS}
        _validate_assignment(assignment)
        # AWS refuses a permission set that does not exist in this instance; moto does not check.
        self._moto_ok(
            call,
            "DescribePermissionSet",
            {"InstanceArn": instance_arn, "PermissionSetArn": assignment["PermissionSetArn"]},
        )
        reason, omit = self._control._take_outcome("creation")
        if reason is None:
            self._moto_ok(call, "CreateAccountAssignment", p)
            self._control._provision(instance_arn, assignment["TargetId"], assignment["PermissionSetArn"])
        request = self._control._open_request("creation", instance_arn, assignment, reason, omit)
        return _json_reply({"AccountAssignmentCreationStatus": request.summary(IN_PROGRESS)})

    def _delete_account_assignment(self, call: _Call) -> _Reply:
        p = call.params
        instance_arn = _required(p, "InstanceArn")
        assignment = {name: _required(p, name) for name in _ASSIGNMENT_FIELDS}
        existing = self._moto_list(
            call,
            "ListAccountAssignments",
            {
                "InstanceArn": instance_arn,
                "AccountId": assignment["TargetId"],
                "PermissionSetArn": assignment["PermissionSetArn"],
            },
            "AccountAssignments",
        )
        if not any(
            a.get("PrincipalId") == assignment["PrincipalId"]
            and a.get("PrincipalType") == assignment["PrincipalType"]
            for a in existing
        ):
            raise _AwsError(
                "ResourceNotFoundException",
                f"Account assignment for {assignment['PrincipalType']} {assignment['PrincipalId']} "
                f"with permission set {assignment['PermissionSetArn']} in account {assignment['TargetId']} "
                "does not exist.",
            )
        reason, _ = self._control._take_outcome("deletion")
        if reason is None:
            self._moto_ok(call, "DeleteAccountAssignment", p)
        request = self._control._open_request("deletion", instance_arn, assignment, reason, False)
        return _json_reply({"AccountAssignmentDeletionStatus": request.summary(IN_PROGRESS)})

    def _describe_creation(self, call: _Call) -> _Reply:
        request_id = _required(call.params, "AccountAssignmentCreationRequestId")
        instance_arn = _required(call.params, "InstanceArn")
        summary = self._control._describe("creation", request_id, instance_arn)
        return _json_reply({"AccountAssignmentCreationStatus": summary})

    def _describe_deletion(self, call: _Call) -> _Reply:
        request_id = _required(call.params, "AccountAssignmentDeletionRequestId")
        instance_arn = _required(call.params, "InstanceArn")
        summary = self._control._describe("deletion", request_id, instance_arn)
        return _json_reply({"AccountAssignmentDeletionStatus": summary})

    # -- provisioning

    def _provision_permission_set(self, call: _Call) -> _Reply:
        p = call.params
        instance_arn = _required(p, "InstanceArn")
        permission_set_arn = _required(p, "PermissionSetArn")
        target_type = _required(p, "TargetType")
        target_id = p.get("TargetId")
        if target_type == "AWS_ACCOUNT":
            if not isinstance(target_id, str) or not _ACCOUNT_ID.match(target_id):
                raise _AwsError(
                    "ValidationException", "TargetId must be a 12-digit account id for AWS_ACCOUNT."
                )
        elif target_type != "ALL_PROVISIONED_ACCOUNTS":
            raise _AwsError(
                "ValidationException", "TargetType must be one of AWS_ACCOUNT, ALL_PROVISIONED_ACCOUNTS."
            )
        self._moto_ok(
            call,
            "DescribePermissionSet",
            {"InstanceArn": instance_arn, "PermissionSetArn": permission_set_arn},
        )
        if target_type == "AWS_ACCOUNT":
            self._control._provision(instance_arn, target_id, permission_set_arn)
        status: dict[str, Any] = {
            "Status": IN_PROGRESS,
            "RequestId": str(uuid.uuid4()),
            "PermissionSetArn": permission_set_arn,
            "CreatedDate": time.time(),
        }
        if target_type == "AWS_ACCOUNT":
            status["AccountId"] = target_id
        self._control._provisioning_requests[status["RequestId"]] = {
            **status,
            "InstanceArn": instance_arn,
        }
        return _json_reply({"PermissionSetProvisioningStatus": status})

    def _describe_provisioning(self, call: _Call) -> _Reply:
        request_id = _required(call.params, "ProvisionPermissionSetRequestId")
        instance_arn = _required(call.params, "InstanceArn")
        stored = self._control._provisioning_requests.get(request_id)
        if stored is None or stored["InstanceArn"] != instance_arn:
            raise _AwsError(
                "ResourceNotFoundException",
                f"ProvisionPermissionSetRequest with id {request_id} was not found.",
            )
        status = {k: v for k, v in stored.items() if k != "InstanceArn"}
        status["Status"] = SUCCEEDED
        return _json_reply({"PermissionSetProvisioningStatus": status})

    def _list_provisioned_to_account(self, call: _Call) -> _Reply:
        instance_arn = _required(call.params, "InstanceArn")
        account_id = _required(call.params, "AccountId")
        items = self._control._permission_sets_of(instance_arn, account_id)
        if call.params.get("ProvisioningStatus") == "LATEST_PERMISSION_SET_NOT_PROVISIONED":
            items = []  # the emulator provisions instantly, so nothing is ever stale
        return self._page(call, items, "PermissionSets")

    def _list_accounts_for_permission_set(self, call: _Call) -> _Reply:
        instance_arn = _required(call.params, "InstanceArn")
        permission_set_arn = _required(call.params, "PermissionSetArn")
        self._moto_ok(
            call,
            "DescribePermissionSet",
            {"InstanceArn": instance_arn, "PermissionSetArn": permission_set_arn},
        )
        items = self._control._accounts_of(instance_arn, permission_set_arn)
        if call.params.get("ProvisioningStatus") == "LATEST_PERMISSION_SET_NOT_PROVISIONED":
            items = []
        return self._page(call, items, "AccountIds")

    # -- permission sets

    def _create_permission_set(self, call: _Call) -> _Reply:
        params = dict(call.params)
        params.setdefault("SessionDuration", "PT1H")
        _validate_session_duration(params["SessionDuration"])
        return self._moto(call, "CreatePermissionSet", params)

    def _update_permission_set(self, call: _Call) -> _Reply:
        params = dict(call.params)
        if "SessionDuration" in params:
            _validate_session_duration(params["SessionDuration"])
        current = self._moto_ok(
            call,
            "DescribePermissionSet",
            {"InstanceArn": params.get("InstanceArn"), "PermissionSetArn": params.get("PermissionSetArn")},
        )["PermissionSet"]
        for key in ("Description", "SessionDuration", "RelayState"):
            if key not in params and current.get(key) is not None:
                params[key] = current[key]
        return self._moto(call, "UpdatePermissionSet", params)

    def _delete_permission_set(self, call: _Call) -> _Reply:
        reply = self._forward(call)
        if reply.status == 200:
            self._control._forget_permission_set(
                call.params.get("InstanceArn", ""), call.params.get("PermissionSetArn", "")
            )
        return reply

    # -- the emulator's own reads of moto (control endpoint): not recorded, never faulted

    def _own_call(self, signing_name: str, target_prefix: str) -> _Call:
        """A stand-in request to base moto calls on: the emulator's region, moto's default account."""
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "POST",
            "SCRIPT_NAME": "",
            "PATH_INFO": "/",
            "QUERY_STRING": "",
            "SERVER_NAME": LOOPBACK,
            "SERVER_PORT": str(self.port),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": LOOPBACK,
            "HTTP_HOST": f"{LOOPBACK}:{self.port}",
            "CONTENT_TYPE": JSON_CONTENT_TYPE,
            # moto reads the service and region from the credential scope, and the account from the key.
            "HTTP_AUTHORIZATION": (
                f"AWS4-HMAC-SHA256 Credential={DUMMY_CREDENTIAL}/20250101/{self._region}/{signing_name}/"
                "aws4_request, SignedHeaders=host;x-amz-target, Signature=0"
            ),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        return _Call(environ, b"", "json", target_prefix, "", {})

    def existing_assignments(self) -> list[dict[str, str]]:
        """Every account assignment moto holds in the emulator's region, duplicates included.

        moto lists assignments per (account, permission set) only, so the accounts asked about are those the
        emulator saw an assignment or a provisioning for, plus every account of the organization.
        """
        sso = self._own_call("sso", SSO_ADMIN_TARGET)
        organizations = self._own_call("organizations", ORGANIZATIONS_TARGET)
        with self._lock:
            try:
                members = [a["Id"] for a in self._moto_list(organizations, "ListAccounts", {}, "Accounts")]
            except _AwsError:  # no organization
                members = []
            found: list[dict[str, str]] = []
            for instance in self._moto_list(sso, "ListInstances", {}, "Instances"):
                instance_arn = instance["InstanceArn"]
                for permission_set_arn in self._moto_list(
                    sso, "ListPermissionSets", {"InstanceArn": instance_arn}, "PermissionSets"
                ):
                    accounts = self._control._accounts_of(instance_arn, permission_set_arn) + members
                    for account in dict.fromkeys(accounts):
                        listed = self._moto_list(
                            sso,
                            "ListAccountAssignments",
                            {
                                "InstanceArn": instance_arn,
                                "AccountId": account,
                                "PermissionSetArn": permission_set_arn,
                            },
                            "AccountAssignments",
                        )
                        found += [{"InstanceArn": instance_arn, **item} for item in listed]
            return found

    # -- organizations

    def _list_parents(self, call: _Call) -> _Reply:
        """AWS's errors for a child it cannot find: moto names the kind of id instead (Account/OU not found)."""
        reply = self._forward(call)
        if reply.status == 200:
            return reply
        error = _reply_error(reply)
        if error.code not in ("AccountNotFoundException", "OrganizationalUnitNotFoundException"):
            return reply
        organization = self._moto(call, "DescribeOrganization", {})
        if organization.status != 200:  # moto checks the child before the organization; AWS the other way round
            raise _reply_error(organization)
        if not _CHILD_ID.match(str(call.params.get("ChildId", ""))):
            raise _AwsError(
                "InvalidInputException",
                "You provided a value that does not match the required pattern.",
                Reason="INVALID_PATTERN",
            )
        raise _AwsError(
            "ChildNotFoundException",
            "We can't find an organizational unit (OU) or AWS account with the ChildId that you specified.",
        )


def _reply_error(reply: _Reply) -> _AwsError:
    """Turn moto's error answer into an _AwsError, so the handler can stop and pass it on."""
    try:
        body = reply.json()
    except ValueError:
        body = {}
    code = str(body.get("__type") or "InternalFailure").rsplit("#", 1)[-1]
    message = str(body.get("message") or body.get("Message") or "")
    return _AwsError(code, message, reply.status)


def _required(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise _AwsError(
            "ValidationException", f"1 validation error detected: {name} must not be null or empty."
        )
    return value


def _validate_assignment(assignment: dict[str, str]) -> None:
    if assignment["TargetType"] != "AWS_ACCOUNT":
        raise _AwsError("ValidationException", "TargetType must be AWS_ACCOUNT.")
    if assignment["PrincipalType"] not in ("USER", "GROUP"):
        raise _AwsError("ValidationException", "PrincipalType must be one of USER, GROUP.")
    if not _ACCOUNT_ID.match(assignment["TargetId"]):
        raise _AwsError("ValidationException", "TargetId must be a 12-digit AWS account id.")


def _validate_session_duration(value: Any) -> None:
    match = _SESSION_DURATION.match(value) if isinstance(value, str) else None
    seconds = 0
    if match and any(match.groups()):
        hours, minutes, secs = (int(g) if g else 0 for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if not 3600 <= seconds <= 12 * 3600:
        raise _AwsError(
            "ValidationException",
            f"SessionDuration '{value}' must be an ISO-8601 duration between PT1H and PT12H.",
        )


def _encode_token(offset: int, scope: str) -> str:
    raw = json.dumps({"offset": offset, "scope": scope}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_token(token: Any, scope: str) -> int:
    if token is None:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(str(token).encode()))
        offset = int(data["offset"])
        valid = data["scope"] == scope and offset >= 0
    except (ValueError, TypeError, KeyError, binascii.Error):
        valid = False
    if not valid:
        raise _AwsError("ValidationException", "The NextToken is invalid or belongs to another request.")
    return offset


# --------------------------------------------------------------------------- the control endpoint


class _BadControlRequest(Exception):
    """A control request the endpoint refuses (HTTP 400 unless told otherwise), with a message that says why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


_REQUIRED: Any = object()


class _Body:
    """A control request's JSON object, read one typed field at a time; a field nobody read is a typo."""

    def __init__(self, raw: bytes) -> None:
        try:
            data = json.loads(raw) if raw.strip() else {}
        except ValueError as error:
            raise _BadControlRequest(f"the body is not JSON: {error}") from None
        if not isinstance(data, dict):
            raise _BadControlRequest("the body must be a JSON object")
        self._data: dict[str, Any] = data
        self._read: set[str] = set()

    def field(self, name: str, kinds: tuple[type, ...], default: Any = _REQUIRED, nullable: bool = False) -> Any:
        self._read.add(name)
        if name not in self._data:
            if default is _REQUIRED:
                raise _BadControlRequest(f'"{name}" is required')
            return default
        value = self._data[name]
        if value is None and nullable:
            return None
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            expected = " or ".join(kind.__name__ for kind in kinds) + (" or null" if nullable else "")
            raise _BadControlRequest(f'"{name}" must be {expected}, not {json.dumps(value)}')
        return value

    def check_all_read(self) -> None:
        unknown = sorted(set(self._data) - self._read)
        if unknown:
            raise _BadControlRequest(f"unknown field(s): {', '.join(unknown)}")


_Route = Callable[[_Body, dict[str, list[str]]], dict[str, Any]]


class _ControlEndpoint:
    """The emulator's controls over HTTP, JSON in and out, under CONTROL_PREFIX on the emulator's own port."""

    def __init__(self, emulator: AwsEmulator) -> None:
        self._emulator = emulator
        ic = "/identity-center"
        self._routes: dict[tuple[str, str], _Route] = {
            ("GET", ""): self._index,
            ("GET", "/status"): self._status,
            ("GET", "/calls"): self._calls,
            ("DELETE", "/calls"): self._clear_calls,
            ("GET", "/assignments"): self._assignments,
            ("POST", f"{ic}/hold-creations"): self._hold("creations"),
            ("POST", f"{ic}/hold-deletions"): self._hold("deletions"),
            ("POST", f"{ic}/release-creations"): self._release("creations"),
            ("POST", f"{ic}/release-deletions"): self._release("deletions"),
            ("POST", f"{ic}/fail-creations"): self._fail("creations"),
            ("POST", f"{ic}/fail-deletions"): self._fail("deletions"),
            ("POST", f"{ic}/omit-status-creations"): self._omit_status,
            ("POST", "/faults/errors"): self._inject,
            ("POST", "/faults/delays"): self._delay,
            ("POST", "/faults/clear"): self._clear_faults,
            ("POST", "/reset"): self._reset,
        }

    def __call__(self, environ: dict[str, Any], body: bytes) -> _Reply:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")[len(CONTROL_PREFIX) :].rstrip("/")
        allowed = sorted(m for m, p in self._routes if p == path)
        if not allowed:
            return _control_reply({"error": f"no control route {CONTROL_PREFIX}{path}", **self._index()}, 404)
        if method not in allowed:
            reply = _control_reply({"error": f"{CONTROL_PREFIX}{path} answers {', '.join(allowed)}"}, 405)
            reply.headers.append(("Allow", ", ".join(allowed)))
            return reply
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        try:
            parsed = _Body(body)
            payload = self._routes[(method, path)](parsed, query)
            parsed.check_all_read()
        except _BadControlRequest as error:
            return _control_reply({"error": str(error)}, error.status)
        except ValueError as error:  # a control refused the value (times < 1, polls < 0, ...)
            return _control_reply({"error": str(error)}, 400)
        return _control_reply(payload)

    # -- reads

    def _index(self, *_: object) -> dict[str, Any]:
        return {"routes": [f"{method} {CONTROL_PREFIX}{path}" for method, path in self._routes]}

    def _status(self, *_: object) -> dict[str, Any]:
        emulator = self._emulator
        return {
            "endpoint_url": emulator.endpoint_url,
            "region": emulator.region,
            "account_id": emulator.account_id,
            "calls_recorded": len(emulator.calls.operations()),
            "faults_remaining": emulator.faults.remaining,
            "creations_in_flight": emulator.identity_center.creations_in_flight,
            "max_creations_in_flight": emulator.identity_center.max_creations_in_flight,
        }

    def _calls(self, body: _Body, query: dict[str, list[str]]) -> dict[str, Any]:
        _only_query(query, {"since"})
        raw = query.get("since", ["0"])[-1]
        if not raw.isdigit():
            raise _BadControlRequest(f'"since" must be an index >= 0, not {raw!r}')
        since = int(raw)
        operations, following = self._emulator.calls.since(since)
        return {"since": since, "next": following, "operations": operations, "counts": Counter(operations)}

    def _clear_calls(self, *_: object) -> dict[str, Any]:
        self._emulator.calls.clear()
        return {"ok": True}

    def _assignments(self, body: _Body, query: dict[str, list[str]]) -> dict[str, Any]:
        filters = {"InstanceArn", "AccountId", "PermissionSetArn", "PrincipalType", "PrincipalId"}
        _only_query(query, filters)
        wanted = {key: values[-1] for key, values in query.items()}
        found = [
            item
            for item in self._emulator.assignments()
            if all(item.get(key) == value for key, value in wanted.items())
        ]
        return {"assignments": found}

    # -- controls

    def _hold(self, kind: str) -> _Route:
        def route(body: _Body, query: dict[str, list[str]]) -> dict[str, Any]:
            polls = body.field("polls", (int,), default=1, nullable=True)
            control = self._emulator.identity_center
            (control.hold_creations if kind == "creations" else control.hold_deletions)(polls)
            return {"ok": True}

        return route

    def _release(self, kind: str) -> _Route:
        def route(body: _Body, query: dict[str, list[str]]) -> dict[str, Any]:
            polls = body.field("polls", (int,), default=0)
            control = self._emulator.identity_center
            release = control.release_creations if kind == "creations" else control.release_deletions
            return {"ok": True, "released": release(polls)}

        return route

    def _fail(self, kind: str) -> _Route:
        def route(body: _Body, query: dict[str, list[str]]) -> dict[str, Any]:
            default = DEFAULT_CREATION_FAILURE if kind == "creations" else DEFAULT_DELETION_FAILURE
            reason = body.field("reason", (str,), default=default)
            times = body.field("times", (int,), default=1)
            control = self._emulator.identity_center
            (control.fail_next_creations if kind == "creations" else control.fail_next_deletions)(reason, times)
            return {"ok": True}

        return route

    def _omit_status(self, body: _Body, query: dict[str, list[str]]) -> dict[str, Any]:
        self._emulator.identity_center.omit_status_next_creations(body.field("times", (int,), default=1))
        return {"ok": True}

    def _inject(self, body: _Body, query: dict[str, list[str]]) -> dict[str, Any]:
        self._emulator.faults.inject(
            body.field("operation", (str,)),
            body.field("error_code", (str,)),
            http_status=body.field("http_status", (int,), default=400),
            message=body.field("message", (str,), default="injected fault"),
            times=body.field("times", (int,), default=1),
        )
        return {"ok": True}

    def _delay(self, body: _Body, query: dict[str, list[str]]) -> dict[str, Any]:
        self._emulator.faults.delay(
            body.field("operation", (str,)),
            body.field("seconds", (int, float)),
            times=body.field("times", (int,), default=1),
        )
        return {"ok": True}

    def _clear_faults(self, *_: object) -> dict[str, Any]:
        self._emulator.faults.clear()
        return {"ok": True}

    def _reset(self, body: _Body, query: dict[str, list[str]]) -> dict[str, Any]:
        if body.field("keep_aws_state", (bool,), default=False):
            self._emulator.reset_controls()
        else:
            self._emulator.reset()
        return {"ok": True}


def _only_query(query: dict[str, list[str]], known: set[str]) -> None:
    unknown = sorted(set(query) - known)
    if unknown:
        raise _BadControlRequest(f"unknown query parameter(s): {', '.join(unknown)}")


def _control_reply(payload: dict[str, Any], status: int = 200) -> _Reply:
    return _Reply(status, [("Content-Type", "application/json")], json.dumps(payload).encode())


# --------------------------------------------------------------------------- the server


class _QuietRequestHandler(MotoRequestHandler):
    """moto's request handler without one access-log line per request."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


def emulator_client(session: Any, service: str, endpoint_url: str, region: str, config: Config | None = None) -> Any:
    """A client of `session` for `service` at an emulator's endpoint, with the dummy credentials it accepts."""
    return session.client(
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=DUMMY_CREDENTIAL,
        aws_secret_access_key=DUMMY_CREDENTIAL,
        config=config,
    )


class AwsEmulator:
    """moto on a free loopback port in a background thread, behind the gap-filling, fault-injecting middleware."""

    region: str = "us-east-1"
    account_id: str = MOTO_ACCOUNT_ID

    def __init__(self, port: int = 0, region: str = "us-east-1") -> None:
        self.region = region
        self._port = port
        self._lock = threading.RLock()
        self._start_lock = threading.Lock()
        self.faults = FaultInjector(self._lock)
        self.identity_center = IdentityCenterControl(self._lock)
        self.calls = CallLog(self._lock)
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._app: _EmulatorApp | None = None
        self._endpoint_url: str | None = None
        self._verbose = False
        self._client_lock = threading.Lock()
        self._session: boto3.session.Session | None = None

    @property
    def endpoint_url(self) -> str:
        """http://127.0.0.1:<port> of the running emulator."""
        if self._endpoint_url is None:
            raise RuntimeError("AwsEmulator is not started; call start() first")
        return self._endpoint_url

    def start(self) -> AwsEmulator:
        """Serve in a daemon thread; idempotent. The emulator's controls start fresh; moto state is kept."""
        with self._start_lock:
            if self._server is not None:
                return self
            self.faults.clear()
            self.identity_center._reset_state()
            self.calls.clear()
            app = _EmulatorApp(
                DomainDispatcherApplication(create_backend_app),
                self._lock,
                self.faults,
                self.identity_center,
                self.calls,
                self.region,
            )
            app.control_endpoint = _ControlEndpoint(self)
            handler = MotoRequestHandler if self._verbose else _QuietRequestHandler
            try:
                server = make_server(LOOPBACK, self._port, app, threaded=True, request_handler=handler)
            except SystemExit:  # werkzeug prints "Port ... is in use" and exits; a library raises instead
                raise OSError(f"{LOOPBACK}:{self._port} is in use") from None
            app.port = server.server_port
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="aws-emulator", daemon=True
            )
            thread.start()
            self._app, self._server, self._thread = app, server, thread
            self._endpoint_url = f"http://{LOOPBACK}:{server.server_port}"
            return self

    def stop(self) -> None:
        """Stop serving, and drop any delayed request still waiting."""
        with self._start_lock:
            if self._server is None:
                return
            assert self._app is not None and self._thread is not None
            self._app.interrupt_delays()
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = self._thread = self._app = None

    @property
    def control_url(self) -> str:
        """The control endpoint: http://127.0.0.1:<port>/_emulator (see the module docstring)."""
        return self.endpoint_url + CONTROL_PREFIX

    def __enter__(self) -> AwsEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Wipe all moto state (process-wide), fault rules, holds, counters and the call log."""
        with self._lock:
            if self._app is not None:
                self._app.interrupt_delays()
            moto_api_backend.reset()
            self.faults.clear()
            self.identity_center._reset_state()
            self.calls.clear()

    def reset_controls(self) -> None:
        """Back to the default holds, without faults or pending failures; AWS state and the call log stay.

        Requests already made keep the hold they were made under (release them with release_creations).
        """
        with self._lock:
            self.faults.clear()
            self.identity_center._restore_defaults()

    def assignments(self) -> list[dict[str, str]]:
        """The account assignments that exist now (InstanceArn, AccountId, PermissionSetArn, PrincipalType,
        PrincipalId), duplicates included; read without being recorded or faulted."""
        if self._app is None:
            raise RuntimeError("AwsEmulator is not started; call start() first")
        return self._app.existing_assignments()

    def client(self, service: str, config: Config | None = None) -> Any:
        """A boto3 client for `service` pointed at the emulator, with dummy credentials."""
        # One shared session caches the service models (a fresh one costs ~0.1 s per client); boto3
        # sessions are not thread-safe, hence the lock.
        with self._client_lock:
            if self._session is None:
                self._session = boto3.session.Session(botocore_session=botocore.session.Session())
            return emulator_client(self._session, service, self.endpoint_url, self.region, config)

    def environment(self) -> dict[str, str]:
        """Environment variables for code that builds its own boto3 clients."""
        return {
            "AWS_ACCESS_KEY_ID": DUMMY_CREDENTIAL,
            "AWS_SECRET_ACCESS_KEY": DUMMY_CREDENTIAL,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint_url,
        }

    def airflow_connection_json(self) -> str:
        """An Airflow connection (conn_type "aws") that points at the emulator, in JSON form."""
        return json.dumps(
            {
                "conn_type": "aws",
                "login": DUMMY_CREDENTIAL,
                "password": DUMMY_CREDENTIAL,
                "extra": {"endpoint_url": self.endpoint_url, "region_name": self.region},
            }
        )


# --------------------------------------------------------------------------- the control client


class EmulatorControlError(RuntimeError):
    """The control endpoint refused a request (bad field, unknown route) or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RecordedCalls:
    """Operations the emulator recorded from index `since` on, in arrival order; ask from `next` next time."""

    since: int
    next: int
    operations: list[str]

    def count(self, operation: str) -> int:
        return self.operations.count(operation)

    @property
    def counts(self) -> Counter[str]:
        return Counter(self.operations)


class EmulatorControl:
    """The emulator's controls from another process (a test driving a subprocess, a script, a shell).

    A thin client of the HTTP control endpoint: the same names and defaults as IdentityCenterControl,
    FaultInjector and CallLog in process. `endpoint_url` is the emulator's (http://127.0.0.1:<port>).
    """

    def __init__(self, endpoint_url: str, timeout: float = 10.0) -> None:
        self.url = endpoint_url.rstrip("/") + CONTROL_PREFIX
        self.timeout = timeout

    def _request(
        self, method: str, route: str, body: dict[str, Any] | None = None, query: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        url = self.url + route + (f"?{urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            try:
                message = json.loads(error.read()).get("error", error.reason)
            except ValueError:
                message = error.reason
            raise EmulatorControlError(f"{method} {url}: {error.code} {message}", error.code) from None
        except (urllib.error.URLError, OSError) as error:
            raise EmulatorControlError(f"{method} {url}: {error}") from None

    # -- reads

    def status(self) -> dict[str, Any]:
        """Endpoint, region, account, and the counters (calls recorded, faults remaining, creations in flight)."""
        return self._request("GET", "/status")

    def calls(self, since: int = 0) -> RecordedCalls:
        data = self._request("GET", "/calls", query={"since": since})
        return RecordedCalls(data["since"], data["next"], data["operations"])

    def clear_calls(self) -> None:
        self._request("DELETE", "/calls")

    def wait_for_call(
        self, operation: str, *, since: int = 0, timeout: float = 30.0, interval: float = 0.1
    ) -> RecordedCalls:
        """Poll until `operation` has been recorded at or after index `since`; the calls seen by then."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.calls(since)
            if seen.count(operation):
                return seen
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{operation} not called within {timeout} s (saw {dict(seen.counts)})")
            time.sleep(interval)

    def assignments(self, **filters: str) -> list[dict[str, str]]:
        """Assignments that exist now; filters by exact field (AccountId=..., PrincipalId=..., ...)."""
        return self._request("GET", "/assignments", query=filters)["assignments"]

    # -- Identity Center

    def hold_creations(self, polls: int | None = 1) -> None:
        self._request("POST", "/identity-center/hold-creations", {"polls": polls})

    def hold_deletions(self, polls: int | None = 1) -> None:
        self._request("POST", "/identity-center/hold-deletions", {"polls": polls})

    def release_creations(self, polls: int = 0) -> int:
        return int(self._request("POST", "/identity-center/release-creations", {"polls": polls})["released"])

    def release_deletions(self, polls: int = 0) -> int:
        return int(self._request("POST", "/identity-center/release-deletions", {"polls": polls})["released"])

    def fail_next_creations(self, reason: str | None = None, times: int = 1) -> None:
        body: dict[str, Any] = {"times": times, **({"reason": reason} if reason is not None else {})}
        self._request("POST", "/identity-center/fail-creations", body)

    def fail_next_deletions(self, reason: str | None = None, times: int = 1) -> None:
        body: dict[str, Any] = {"times": times, **({"reason": reason} if reason is not None else {})}
        self._request("POST", "/identity-center/fail-deletions", body)

    def omit_status_next_creations(self, times: int = 1) -> None:
        self._request("POST", "/identity-center/omit-status-creations", {"times": times})

    # -- wire faults

    def inject(
        self,
        operation: str,
        error_code: str,
        *,
        http_status: int = 400,
        message: str = "injected fault",
        times: int = 1,
    ) -> None:
        body = {
            "operation": operation,
            "error_code": error_code,
            "http_status": http_status,
            "message": message,
            "times": times,
        }
        self._request("POST", "/faults/errors", body)

    def delay(self, operation: str, seconds: float, *, times: int = 1) -> None:
        self._request("POST", "/faults/delays", {"operation": operation, "seconds": seconds, "times": times})

    def clear_faults(self) -> None:
        self._request("POST", "/faults/clear", {})

    def reset(self, *, keep_aws_state: bool = False) -> None:
        """Everything, as AwsEmulator.reset(); or, with keep_aws_state, the controls only (reset_controls)."""
        self._request("POST", "/reset", {"keep_aws_state": keep_aws_state})


# --------------------------------------------------------------------------- command line


@contextlib.contextmanager
def _terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so the foreground emulator stops cleanly."""

    def raise_interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, raise_interrupt)
    except ValueError:  # not in the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """Run the emulator in the foreground until Ctrl-C (for manual use and the demo)."""
    parser = argparse.ArgumentParser(
        prog="python -m elevation.devkit.emulator", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO)
    emulator = AwsEmulator(port=args.port, region=args.region)
    emulator._verbose = args.verbose
    with _terminate_on_sigterm():
        emulator.start()
        try:
            print(emulator.endpoint_url, flush=True)
            for name, value in emulator.environment().items():
                print(f"export {name}={value}", flush=True)
            print(f"# control endpoint: {emulator.control_url} (see {__name__})", flush=True)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
