"""Which AWS API calls the project makes, which component made each, and whether an IAM policy allows them.

The IAM policy documents in ``deploy/iam/`` say what AWS must allow each component; this module checks them
against reality (``tests/deploy/test_iam_policy.py``):

* **Recording.** :meth:`AwsCallRecorder.install` patches ``botocore.session.Session.__init__`` so that every
  botocore session created afterwards (boto3's, the amazon provider's ``AwsBaseHook``/``S3Hook`` sessions, the
  client factory of ``elevation/aws.py``...) registers one handler on ``provide-client-params``: botocore emits it
  once per API call, from every client of the session, before anything is sent. The handler notes the service, the
  operation (which names the IAM action), the client's region, the request parameters a resource ARN or a
  condition key is derived from, and the component that made the call. Calls on sessions created before
  :meth:`install` are not seen (the project creates its sessions per run). Calls that do not go through botocore
  (pyarrow's own S3 client, which writes the extract's Parquet to an ``s3://`` output location) are not seen either.
* **Attribution.** The calling stack is walked from the innermost frame outwards, and the first frame that decides
  is the caller: a frame of a module of the project (``elevation.*``) is looked up in :data:`COMPONENTS` (by
  ``module:function``, else by module, else by package): a component, or :data:`PLUMBING` (shared code that calls
  AWS for others: the walk goes on outwards), or :data:`NOT_PROJECT` (the devkit: the emulator's world, demo trail
  files). Library frames (the standard library, site-packages) never decide. Any other frame (a test, a fixture,
  conftest) decides that the call is not the project's. A project module the table does not know records the
  component ``None`` with its ``module:function``, and the tests fail on it, naming it.
* **Evaluation.** :func:`authorizations` turns a call into what IAM evaluates (the action, each resource ARN the
  service authorization reference names for it, the condition keys the policies use); :func:`evaluate` checks
  them against policy documents (Allow and Deny statements, ``*``/``?`` wildcards in actions and resources, the
  condition operators the documents use) and reports what no call needed (:class:`Evaluation`).

The recorder costs one dictionary lookup per stack frame per API call (the classification of a code object is
cached), which is noise next to the HTTP request it precedes.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import sysconfig
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

#: The components: each has a policy document ``deploy/iam/<component>.json``.
#:
#: - ``access``: intake, decisions, grants and revocations (the connection ``connections.aws``)
#: - ``reconcile``: drift between Identity Center and the record, and removing it (``connections.aws``)
#: - ``audit``: the nightly audit's reads of the organization (``connections.aws``)
#: - ``notify``: the Slack notifications' reads of the organization (``connections.aws``)
#: - ``extract-s3``: the nightly extract from trail log files in S3 (``extract.s3_conn_id``)
#: - ``extract-lake``: the nightly extract from CloudTrail Lake (``extract.lake_conn_id``)
#: - ``reports``: the audit and reconcile reports in S3, and the audit viewer (``audit.reports_conn_id``)
COMPONENT_NAMES = ("access", "reconcile", "audit", "notify", "extract-s3", "extract-lake", "reports")

#: Shared code that calls AWS on behalf of a component: the walk goes on outwards to its caller.
PLUMBING = "<plumbing>"
#: Not the project's calls: the devkit building the emulator's world or writing demo trail files.
NOT_PROJECT = "<not the project>"

#: ``module:function``, ``module`` or ``package`` -> a component, PLUMBING or NOT_PROJECT. The most specific wins.
COMPONENTS: dict[str, str] = {
    # Identity Center, Identity Store and Organizations, through runtime.identity_center (connections.aws)
    "elevation.aws": PLUMBING,
    "elevation.identity_center": PLUMBING,
    "elevation.runtime": PLUMBING,
    "elevation.access.confirm": PLUMBING,  # polls the statuses for grants, revocations and reconcile
    "elevation.access.intake": "access",
    "elevation.access.checks": "access",
    "elevation.access.approval": "access",
    "elevation.access.grants": "access",
    "elevation.access.revocations": "access",
    "elevation.access.reconcile": "reconcile",
    "elevation.access.reconcile_report": "reconcile",  # names the accounts through runtime.identity_center
    "elevation.nightly": "audit",
    "elevation.notify": "notify",
    # The trail bucket (extract.s3_conn_id) and CloudTrail Lake (extract.lake_conn_id)
    "elevation.cloudtrail.s3_trail": "extract-s3",
    "elevation.cloudtrail.lake": "extract-lake",
    "elevation.cloudtrail.lake_trigger": "extract-lake",
    "elevation.lake_wait": "extract-lake",
    # The reports in S3 (audit.reports_conn_id)
    "elevation.audit.publish": "reports",
    "elevation.access.reconcile_report:_latest_exists": "reports",
    "elevation.web.audit_viewer": "reports",
    # Not the project's calls
    "elevation.devkit": NOT_PROJECT,
}

#: The request parameters kept: those a resource ARN or a condition key is derived from.
KEPT_PARAMETERS = frozenset({
    "InstanceArn", "PermissionSetArn", "TargetId", "AccountId", "IdentityStoreId", "UserId", "GroupId",
    "MemberId", "ChildId", "ParentId", "EventDataStore", "Bucket", "Key", "Prefix", "Delimiter",
})


@dataclass(frozen=True)
class AwsCall:
    """One distinct API call: who made it (component, and the ``module:function`` that decided), what it was."""

    component: str | None  # None: a project module COMPONENTS does not map
    caller: str
    service: str  # botocore's service name: sso-admin, identitystore, organizations, cloudtrail, s3
    operation: str  # the API operation: CreateAccountAssignment, ListObjectsV2...
    signing_name: str  # the IAM service prefix, as a rule: sso for sso-admin
    region: str | None
    params: tuple[tuple[str, str], ...]  # KEPT_PARAMETERS (nested values flattened as MemberId.UserId)

    @property
    def param(self) -> dict[str, str]:
        return dict(self.params)

    def __str__(self) -> str:
        shown = ", ".join(f"{key}={value}" for key, value in self.params)
        return f"{self.component or '?'}: {self.service}.{self.operation}({shown}) by {self.caller}"


class AwsCallRecorder:
    """Records the project's AWS API calls while installed; :meth:`capture` collects those of a block."""

    HANDLER_ID = "elevation.devkit.aws_calls"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[AwsCall, int] = {}
        self._captures: list[dict[AwsCall, int]] = []
        self._installed = 0
        self._discarding = 0  # captures open with keep=False
        self._original_init: Any = None
        self._kinds: dict[Any, tuple[str, str | None, str]] = {}  # code object -> (kind, component, caller)
        self._library = _library_roots()

    # -- installing ---------------------------------------------------------------------------------------

    @property
    def installed(self) -> bool:
        return self._installed > 0

    def install(self) -> None:
        """Register the handler on every botocore session created from now on (nested installs are counted)."""
        import botocore.session

        with self._lock:
            self._installed += 1
            if self._original_init is not None:
                return
            original = botocore.session.Session.__init__
            recorder = self

            def __init__(session: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807
                original(session, *args, **kwargs)
                session.register("provide-client-params", recorder._on_call, unique_id=recorder.HANDLER_ID)

            __init__.__wrapped__ = original  # type: ignore[attr-defined]
            self._original_init = original
            botocore.session.Session.__init__ = __init__  # type: ignore[method-assign]

    def uninstall(self) -> None:
        """Undo one install; the last one restores botocore (sessions made meanwhile stop recording)."""
        import botocore.session

        with self._lock:
            self._installed = max(0, self._installed - 1)
            if self._installed or self._original_init is None:
                return
            botocore.session.Session.__init__ = self._original_init  # type: ignore[method-assign]
            self._original_init = None

    @contextmanager
    def installed_for(self) -> Iterator[AwsCallRecorder]:
        self.install()
        try:
            yield self
        finally:
            self.uninstall()

    # -- what was recorded --------------------------------------------------------------------------------

    def calls(self) -> dict[AwsCall, int]:
        """Every distinct call recorded since install (or :meth:`clear`), with how many times it was made."""
        with self._lock:
            return dict(self._counts)

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()

    @contextmanager
    def capture(self, *, keep: bool = True) -> Iterator[dict[AwsCall, int]]:
        """The calls recorded inside the block, also kept in :meth:`calls` unless `keep` is false (for calls made
        on purpose to test the recorder); installs for the block if needed."""
        captured: dict[AwsCall, int] = {}
        self.install()
        with self._lock:
            self._captures.append(captured)
            if not keep:
                self._discarding += 1
        try:
            yield captured
        finally:
            with self._lock:
                self._captures.remove(captured)
                if not keep:
                    self._discarding -= 1
            self.uninstall()

    # -- the handler --------------------------------------------------------------------------------------

    def _on_call(self, params: Mapping[str, Any] | None = None, model: Any = None, context: Any = None,
                 **_: Any) -> None:
        if not self._installed or model is None:
            return None
        try:
            component, caller = self._attribute(sys._getframe(1))
        except Exception as error:  # never break the call being recorded
            component, caller = None, f"<attribution failed: {error!r}>"
        if component == NOT_PROJECT:
            return None
        service_model = model.service_model
        call = AwsCall(
            component=component,
            caller=caller,
            service=service_model.service_name,
            operation=model.name,
            signing_name=service_model.signing_name or service_model.endpoint_prefix,
            region=(context or {}).get("client_region"),
            params=_kept(params or {}),
        )
        with self._lock:
            if not self._discarding:
                self._counts[call] = self._counts.get(call, 0) + 1
            for captured in self._captures:
                captured[call] = captured.get(call, 0) + 1
        return None

    def _attribute(self, frame: Any) -> tuple[str, str]:
        """(component or NOT_PROJECT or None, the deciding ``module:function``) of the call made from `frame`."""
        kinds = self._kinds
        while frame is not None:
            code = frame.f_code
            known = kinds.get(code)
            if known is None:
                known = kinds[code] = self._classify(code, frame.f_globals.get("__name__") or "")
            kind, component, caller = known
            if kind == "decides":
                return component, caller  # type: ignore[return-value]
            frame = frame.f_back
        return NOT_PROJECT, "<no caller outside the libraries>"

    def _classify(self, code: Any, module: str) -> tuple[str, str | None, str]:
        caller = f"{module}:{code.co_name}"
        if module == __name__:
            return "skip", None, caller
        if module == "elevation" or module.startswith("elevation."):
            component = lookup(module, code.co_name)
            if component == PLUMBING:
                return "skip", None, caller
            return "decides", component, caller
        filename = code.co_filename
        if filename.startswith("<") or any(filename.startswith(root) for root in self._library):
            return "skip", None, caller
        return "decides", NOT_PROJECT, caller  # a test, a fixture, conftest, a DAG file: not a project module


def lookup(module: str, function: str) -> str | None:
    """What :data:`COMPONENTS` says about `function` of `module`: the most specific entry, or None."""
    found = COMPONENTS.get(f"{module}:{function}")
    if found is not None:
        return found
    name = module
    while name:
        if name in COMPONENTS:
            return COMPONENTS[name]
        name = name.rpartition(".")[0]
    return None


def _library_roots() -> tuple[str, ...]:
    """Where the standard library and installed packages live (their frames never decide who called)."""
    paths = sysconfig.get_paths()
    roots = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    roots |= {os.path.dirname(os.__file__)}
    roots |= {path for path in sys.path if path.endswith(("site-packages", "dist-packages"))}
    return tuple(sorted({os.path.join(path, "") for root in roots for path in (root, os.path.realpath(root))}))


def _kept(params: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    kept: list[tuple[str, str]] = []
    for key, value in params.items():
        if key == "QueryStatement" and isinstance(value, str):
            kept.append(("QueryStatement.FROM", ",".join(statement_tables(value))))
        elif key not in KEPT_PARAMETERS:
            continue
        elif isinstance(value, Mapping):
            kept += [(f"{key}.{inner}", str(item)) for inner, item in sorted(value.items())]
        elif value is not None:
            kept.append((key, str(value)))
    return tuple(sorted(kept))


_FROM = re.compile(r"\b(?:FROM|JOIN)\s+\"?([A-Za-z0-9][A-Za-z0-9_-]*)\"?", re.IGNORECASE)


def statement_tables(statement: str) -> list[str]:
    """The event data store ids a CloudTrail Lake statement reads (its FROM and JOIN tables)."""
    return sorted(set(_FROM.findall(statement)))


#: The recorder of this process (the tests install it for the whole session).
RECORDER = AwsCallRecorder()


# --- what IAM evaluates ---------------------------------------------------------------------------------------

#: S3 operations whose IAM action has another name (the service authorization reference).
S3_ACTIONS = {
    "ListObjectsV2": "ListBucket",
    "ListObjects": "ListBucket",
    "HeadBucket": "ListBucket",
    "HeadObject": "GetObject",
    "CreateMultipartUpload": "PutObject",
    "UploadPart": "PutObject",
    "CompleteMultipartUpload": "PutObject",
    "AbortMultipartUpload": "AbortMultipartUpload",
    "DeleteObjects": "DeleteObject",
}


@dataclass(frozen=True)
class Authorization:
    """One thing IAM decides for a call: an action on one resource, with the request's condition keys."""

    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        keys = "".join(f" [{key}={value!r}]" for key, value in self.context)
        return f"{self.action} on {self.resource}{keys}"


class UnknownOperation(LookupError):
    """A call this module does not know how to turn into IAM resources: add it to :func:`authorizations`."""


def iam_action(call: AwsCall) -> str:
    if call.signing_name == "s3":
        return f"s3:{S3_ACTIONS.get(call.operation, call.operation)}"
    return f"{call.signing_name}:{call.operation}"


def authorizations(call: AwsCall, facts: Mapping[str, str] | None = None) -> list[Authorization]:
    """What IAM evaluates for `call`: its action on each resource the service authorization reference names for the
    operation (all must be allowed), with the condition keys the project's policies use.

    `facts` holds what a request does not carry: ``IdentityStoreAccountId`` (the account in an identity store's
    ARN), ``AccountId`` (the account of an event data store named by id alone)."""
    facts = facts or {}
    action, p = iam_action(call), call.param
    resources: list[str]
    context: tuple[tuple[str, str], ...] = ()
    service, operation = call.service, call.operation
    if service == "sso-admin":
        instance = p.get("InstanceArn", "")
        account = f"arn:aws:sso:::account/{p.get('TargetId') or p.get('AccountId', '')}"
        # AWS names a permission set arn:aws:sso:::permissionSet/ssoins-.../ps-... (moto: instance/ssoins-.../ps-...):
        # the resource is built from the two ids, as IAM sees it.
        permission_set = "arn:aws:sso:::permissionSet/" + "/".join(p.get("PermissionSetArn", "").split("/")[-2:])
        resources = {
            "ListInstances": ["*"],
            "ListPermissionSets": [instance],
            "DescribePermissionSet": [instance, permission_set],
            "ListAccountsForProvisionedPermissionSet": [instance, permission_set],
            "ListPermissionSetsProvisionedToAccount": [instance, account],
            "ListAccountAssignments": [instance, permission_set, account],
            "CreateAccountAssignment": [instance, permission_set, account],
            "DeleteAccountAssignment": [instance, permission_set, account],
            "DescribeAccountAssignmentCreationStatus": [instance],
            "DescribeAccountAssignmentDeletionStatus": [instance],
        }.get(operation)  # type: ignore[assignment]
    elif service == "identitystore":
        store_account = facts.get("IdentityStoreAccountId", "")
        store = f"arn:aws:identitystore::{store_account}:identitystore/{p.get('IdentityStoreId', '')}"
        user = f"arn:aws:identitystore:::user/{p.get('UserId') or p.get('MemberId.UserId', '')}"
        group = f"arn:aws:identitystore:::group/{p.get('GroupId', '')}"
        memberships = "arn:aws:identitystore:::membership/*"
        resources = {
            "GetUserId": [store, "arn:aws:identitystore:::user/*"],
            "GetGroupId": [store, "arn:aws:identitystore:::group/*"],
            "DescribeUser": [store, user],
            "DescribeGroup": [store, group],
            "ListGroupMemberships": [store, memberships, group],
            "ListGroupMembershipsForMember": [store, memberships, user],
        }.get(operation)  # type: ignore[assignment]
    elif service == "organizations":
        # The documents grant these reads on "*" (deploy/iam/README.md says why); no ARN is derived.
        known = {"ListAccounts", "DescribeOrganization", "ListParents", "ListAccountsForParent",
                 "ListOrganizationalUnitsForParent", "DescribeAccount", "ListRoots"}
        resources = ["*"] if operation in known else None  # type: ignore[assignment]
    elif service == "cloudtrail":
        def store_arn(name: str) -> str:
            if name.startswith("arn:"):
                return name
            configured = facts.get("EventDataStoreArn", "")
            if configured.endswith(f"/{name}"):
                return configured
            return f"arn:aws:cloudtrail:{call.region or ''}:{facts.get('AccountId', '')}:eventdatastore/{name}"

        if operation == "StartQuery":
            names = [name for name in p.get("QueryStatement.FROM", "").split(",") if name]
            # A statement that names no event data store cannot run (Lake refuses it as invalid): it is counted
            # against the configured store, the only one the project's statements name.
            resources = [store_arn(name) for name in names or [facts.get("EventDataStoreArn", "")] if name]
        elif operation in ("DescribeQuery", "GetQueryResults", "CancelQuery"):
            resources = [store_arn(p.get("EventDataStore", ""))]
        else:
            resources = None  # type: ignore[assignment]
    elif service == "s3":
        bucket, key = p.get("Bucket", ""), p.get("Key")
        if action == "s3:ListBucket":
            resources = [f"arn:aws:s3:::{bucket}"]
            context = tuple((f"s3:{name.lower()}", p[name]) for name in ("Prefix", "Delimiter") if name in p)
        elif key is not None:
            resources = [f"arn:aws:s3:::{bucket}/{key}"]
        else:
            resources = None  # type: ignore[assignment]
    else:
        resources = None  # type: ignore[assignment]
    if not resources:
        raise UnknownOperation(f"no IAM resources known for {service}.{operation} ({call}): add it to authorizations()")
    return [Authorization(action, resource, context) for resource in resources]


# --- policy documents -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    sid: str
    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    conditions: tuple[tuple[str, str, tuple[str, ...]], ...]  # (operator, key, values)

    def matches_action(self, action: str) -> str | None:
        return next((pattern for pattern in self.actions if _action_matches(pattern, action)), None)

    def matches_resource(self, resource: str) -> str | None:
        return next((pattern for pattern in self.resources if _glob(pattern, resource)), None)

    def conditions_hold(self, context: Mapping[str, str]) -> bool:
        return all(_condition(operator, context.get(key), values) for operator, key, values in self.conditions)


SUPPORTED_CONDITIONS = ("StringEquals", "StringNotEquals", "StringLike", "StringNotLike")


def statements(document: Mapping[str, Any]) -> list[Statement]:
    """The statements of an IAM policy document; refuses what the evaluator would get wrong."""
    raw = document.get("Statement")
    if isinstance(raw, Mapping):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ValueError("a policy document needs a Statement list")
    found = []
    for index, item in enumerate(raw):
        unsupported = set(item) - {"Sid", "Effect", "Action", "Resource", "Condition"}
        if unsupported:
            raise ValueError(f"statement {index}: {sorted(unsupported)} are not supported by this evaluator")
        if item.get("Effect") not in ("Allow", "Deny"):
            raise ValueError(f"statement {index}: Effect must be Allow or Deny")
        conditions = []
        for operator, keys in (item.get("Condition") or {}).items():
            if operator not in SUPPORTED_CONDITIONS:
                raise ValueError(f"statement {index}: condition operator {operator} is not supported")
            for key, values in keys.items():
                conditions.append((operator, key, tuple(_strings(values))))
        found.append(Statement(
            sid=str(item.get("Sid") or f"#{index}"),
            effect=item["Effect"],
            actions=tuple(_strings(item.get("Action"))),
            resources=tuple(_strings(item.get("Resource"))),
            conditions=tuple(conditions),
        ))
    return found


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(value)] if isinstance(value, str) else [str(item) for item in value]


def _glob(pattern: str, value: str, *, case: bool = True) -> bool:
    return _compiled(pattern, case).fullmatch(value) is not None


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str, case: bool) -> re.Pattern[str]:
    regex = "".join(".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern)
    return re.compile(regex, re.DOTALL | (0 if case else re.IGNORECASE))


def _action_matches(pattern: str, action: str) -> bool:
    return _glob(pattern, action, case=False)


def _condition(operator: str, value: str | None, values: tuple[str, ...]) -> bool:
    if value is None:
        return False  # a key the request does not have fails every operator (none of ...IfExists is supported)
    if operator == "StringEquals":
        return value in values
    if operator == "StringNotEquals":
        return value not in values
    if operator == "StringLike":
        return any(_glob(pattern, value) for pattern in values)
    if operator == "StringNotLike":
        return not any(_glob(pattern, value) for pattern in values)
    raise ValueError(operator)


@dataclass
class Evaluation:
    """The calls a policy did not allow, and what in it no call needed."""

    denied: list[tuple[AwsCall, Authorization, str]] = field(default_factory=list)  # (call, what, why)
    unused_actions: list[tuple[str, str]] = field(default_factory=list)  # (Sid, action)
    unused_resources: list[tuple[str, str]] = field(default_factory=list)  # (Sid, resource)

    @property
    def ok(self) -> bool:
        return not (self.denied or self.unused_actions or self.unused_resources)

    def describe(self) -> str:
        lines = [f"denied: {what} ({why}) for {call}" for call, what, why in self.denied]
        lines += [f"unused: {sid} allows {action}, which no call needed" for sid, action in self.unused_actions]
        lines += [f"unused: {sid} names {resource}, which no call needed" for sid, resource in self.unused_resources]
        return "\n".join(lines)


def evaluate(document: Mapping[str, Any], calls: Iterable[AwsCall], facts: Mapping[str, str] | None = None
             ) -> Evaluation:
    """Is each call allowed by the document (every resource of it, by an Allow whose action, resource and
    conditions match, and no matching Deny)? And which of the Allow statements' actions and resources did no
    allowed call use?"""
    found = statements(document)
    result = Evaluation()
    used_actions: set[tuple[str, str]] = set()
    used_resources: set[tuple[str, str]] = set()
    for call in calls:
        for what in authorizations(call, facts):
            context = dict(what.context)
            allowing = []
            denying = []
            for statement in found:
                action = statement.matches_action(what.action)
                resource = statement.matches_resource(what.resource)
                if action is None or resource is None or not statement.conditions_hold(context):
                    continue
                (allowing if statement.effect == "Allow" else denying).append((statement.sid, action, resource))
            if denying:
                result.denied.append((call, what, f"denied by {', '.join(sid for sid, _, _ in denying)}"))
            elif not allowing:
                result.denied.append((call, what, _why_not(found, what)))
            else:
                used_actions |= {(sid, action) for sid, action, _ in allowing}
                used_resources |= {(sid, resource) for sid, _, resource in allowing}
    for statement in found:
        if statement.effect != "Allow":
            continue
        result.unused_actions += [(statement.sid, a) for a in statement.actions if (statement.sid, a) not in used_actions]
        result.unused_resources += [(statement.sid, r) for r in statement.resources
                                    if (statement.sid, r) not in used_resources]
    return result


def _why_not(found: list[Statement], what: Authorization) -> str:
    by_action = [s for s in found if s.effect == "Allow" and s.matches_action(what.action)]
    if not by_action:
        return "no statement allows the action"
    by_resource = [s for s in by_action if s.matches_resource(what.resource)]
    if not by_resource:
        return f"{', '.join(s.sid for s in by_action)} allow the action on other resources"
    return f"the conditions of {', '.join(s.sid for s in by_resource)} do not hold"
