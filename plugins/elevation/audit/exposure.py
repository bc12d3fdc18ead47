"""Organization-aware exposure: who a write lets in, compared with the organization's accounts (pure; no I/O).

A resource policy (S3 bucket policy, KMS key policy, SQS/SNS policy attribute, Secrets Manager and other
``PutResourcePolicy`` calls, ECR repository/registry policy, OpenSearch access policy, Glacier and Backup vault
policy, an IAM role's trust policy on ``UpdateAssumeRolePolicy``/``CreateRole``), a Lambda permission, a snapshot,
image, DB snapshot or SSM document share, or a RAM resource share names who gets access. :func:`assess` collects
those grantees from the event's request parameters (a policy may be JSON text or an object) and rates the event:

* **public** (critical): ``*``, ``all``, ``"AWS": "*"``, ``NotPrincipal`` in an Allow, or a wildcard principal not
  restricted by a condition that names the organization or accounts (``aws:PrincipalOrgID``,
  ``aws:PrincipalOrgPaths``, ``aws:PrincipalAccount``, ``aws:SourceAccount``, ``aws:SourceOwner``,
  ``aws:ResourceAccount``, an account in ``aws:PrincipalArn``/``aws:SourceArn``) or the network
  (``aws:SourceVpc``/``aws:SourceVpce``: treated as inside, the VPC being ours);
* **outside the organization** (high): an account not in ``organization_accounts``, or a public identity provider
  (``accounts.google.com``, Cognito, ...) trusted as a federated principal;
* **another account, organization unknown** (medium): without ``organization_accounts`` an account other than the
  event's own account (``recipientAccountId``) cannot be placed; it is neither trusted nor assumed hostile;
* **inside the organization** (low): only organization accounts (the event's own account always counts as one),
  organization- or VPC-restricted wildcards.

Service principals (``lambda.amazonaws.com``) and S3 canonical user ids are not accounts and are ignored; Deny
statements grant nothing. Removing access (``remove`` lists, ``valuesToRemove``, ``accountIdsToRemove``,
``RemovePermission``, ``DeleteBucketPolicy``...) is not exposure: those events get no verdict. An event whose
grantees cannot be read (no policy, a policy that does not parse, only service principals) gets no verdict either,
and the pack's own Sigma rules for the call still report it.

Each verdict is a pseudo-rule (:data:`EXPOSURE_RULES`, a :class:`CompiledRule` whose predicate never matches on its
own) so findings, tables and report cards treat it as any rule. The accounts are not in the (static) title: read
them from the finding's request parameters, or call :func:`assess` on the event (:attr:`Exposure.outside_accounts`).
Where the engine has judged an event, it drops the findings of :data:`SUPERSEDED_RULE_IDS` on that event: those
pack rules rate the same call without knowing the organization (a portable approximation for other Sigma engines).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from elevation.audit.rules import SEVERITY_RANK, CompiledRule, EventLike, Node, normalize_event_name

PUBLIC = "elevation-exposure-public"
OUTSIDE = "elevation-exposure-outside-organization"
OTHER_ACCOUNT = "elevation-exposure-other-account"
INSIDE = "elevation-exposure-inside-organization"


class _Never(Node):
    """The predicate of a pseudo-rule: the engine, not the Sigma evaluator, decides these findings."""

    def evaluate(self, event: EventLike) -> bool:
        return False

    def fields(self) -> Iterator[Any]:
        return iter(())


_NEVER = _Never()
_PATH = "elevation.audit.exposure"
_FALSEPOSITIVES = (
    "Sharing with a partner, vendor or backup account that is meant to have access (suppress it by account)",
)

#: The exposure pseudo-rules by id, worst first.
EXPOSURE_RULES: dict[str, CompiledRule] = {
    rule.rule_id: rule
    for rule in (
        CompiledRule(
            rule_id=PUBLIC,
            title="Access granted to everyone (public resource policy, share or trust)",
            severity="critical",
            path=_PATH,
            predicate=_NEVER,
            description=(
                "A resource policy, role trust policy, Lambda permission, snapshot or image share, or resource share "
                "grants access to any principal or to the public (\"*\", \"all\", a wildcard without a condition "
                "limiting it to the organization or to accounts). Anyone can read, copy or use the resource."
            ),
            tags=("attack.exfiltration", "attack.persistence", "attack.t1537", "attack.t1098", "attack.t1530"),
            falsepositives=("Deliberately public content (a public website bucket, a public AMI); read the policy",),
            next_step="Read the policy or share in the request parameters and remove the public grant unless intended",
        ),
        CompiledRule(
            rule_id=OUTSIDE,
            title="Access granted to an account outside the organization",
            severity="high",
            path=_PATH,
            predicate=_NEVER,
            description=(
                "A resource policy, role trust policy, Lambda permission, snapshot or image share, or resource share "
                "grants access to an AWS account that is not in the organization, or trusts a public identity "
                "provider. That account can read, copy or assume what was shared; the accounts are in the request "
                "parameters."
            ),
            tags=("attack.exfiltration", "attack.persistence", "attack.t1537", "attack.t1098", "attack.t1098.003"),
            falsepositives=_FALSEPOSITIVES,
            next_step="Find out who owns the outside account and whether the ticket names it; revoke it otherwise",
        ),
        CompiledRule(
            rule_id=OTHER_ACCOUNT,
            title="Access granted to another account (organization not known)",
            severity="medium",
            path=_PATH,
            predicate=_NEVER,
            description=(
                "A resource policy, role trust policy, Lambda permission, snapshot or image share, or resource share "
                "grants access to an AWS account other than the resource's own. The audit was not told the "
                "organization's accounts, so it cannot say whether that account is ours."
            ),
            tags=("attack.exfiltration", "attack.persistence", "attack.t1537", "attack.t1098"),
            falsepositives=_FALSEPOSITIVES,
            next_step="Check whether the account in the request parameters belongs to the organization",
        ),
        CompiledRule(
            rule_id=INSIDE,
            title="Access granted within the organization",
            severity="low",
            path=_PATH,
            predicate=_NEVER,
            description=(
                "A resource policy, role trust policy, Lambda permission, snapshot or image share, or resource share "
                "grants access only to accounts of the organization (or to a wildcard restricted to the "
                "organization or a VPC). Access still changed: worth a look when the ticket does not mention it."
            ),
            tags=("attack.lateral-movement", "attack.persistence", "attack.t1098"),
            falsepositives=("Routine cross-account access between the organization's own accounts",),
            next_step="Check that the accounts given access are the ones the ticket names",
        ),
    )
}
_ORDER = (PUBLIC, OUTSIDE, OTHER_ACCOUNT, INSIDE)

#: Pack rules that rate the same calls without knowing the organization; on an event the exposure check judged,
#: their findings are dropped (the exposure verdict replaces them, worse or milder).
SUPERSEDED_RULE_IDS: frozenset[str] = frozenset(
    {
        "96ffa35a-a0c1-554f-9661-34a2b071362a",  # s3_bucket_policy_public
        "9766dce7-8567-5d7f-be9a-8044eb465973",  # resource_policy_public
        "08c4ff35-1582-5211-aa56-c775beb18725",  # snapshot_or_image_shared
        "91bb3e8f-b44f-5570-8a90-2dd76dfc3e64",  # iam_persistence_update_assume_role_policy
        "b777a48e-1296-57ac-8a05-2071a829419a",  # iam_persistence_role_trust_any_principal
        "16fd84cf-f50c-5171-abda-336e9e291c72",  # lambda_public_invocation
        "380e622d-0de2-5dfa-b3c1-20b094681cbd",  # lambda_access_granted
        "2438182f-9f87-535d-8345-84936e0f02e3",  # iam_create_role
    }
)

#: Calls whose request parameters hold a policy document with principals, and where.
_POLICY_CALLS: frozenset[str] = frozenset(
    {
        "PutBucketPolicy",
        "PutKeyPolicy",
        "CreateKey",
        "SetQueueAttributes",
        "CreateQueue",
        "SetTopicAttributes",
        "CreateTopic",
        "PutResourcePolicy",
        "SetRepositoryPolicy",
        "PutRegistryPolicy",
        "UpdateAssumeRolePolicy",
        "CreateRole",
        "SetVaultAccessPolicy",
        "PutBackupVaultAccessPolicy",
        "CreateElasticsearchDomain",
        "UpdateElasticsearchDomainConfig",
        "CreateDomain",
        "UpdateDomainConfig",
    }
)
_POLICY_KEYS: tuple[tuple[str, ...], ...] = (
    ("bucketPolicy",),
    ("policy",),
    ("policy", "policy"),  # Glacier SetVaultAccessPolicy
    ("policyText",),
    ("policyDocument",),
    ("resourcePolicy",),
    ("accessPolicies",),
    ("assumeRolePolicyDocument",),
    ("attributes", "Policy"),
)
_SHARE_CALLS: frozenset[str] = frozenset(
    {
        "AddPermission",
        "AddLayerVersionPermission",
        "ModifySnapshotAttribute",
        "ModifyImageAttribute",
        "ModifyDBSnapshotAttribute",
        "ModifyDBClusterSnapshotAttribute",
        "ModifyDocumentPermission",
        "CreateResourceShare",
        "AssociateResourceShare",
    }
)
#: Every call :func:`assess` may give a verdict on (event names as the rules see them: API versions stripped).
EXPOSURE_CALLS: frozenset[str] = _POLICY_CALLS | _SHARE_CALLS

_ACCOUNT = re.compile(r"\d{12}")
_PUBLIC = "*"
_ORG = "org"  # restricted to the organization (or a VPC): inside
_RESTRICTING_ORG = ("aws:principalorgid", "aws:principalorgpaths", "aws:sourceorgid", "aws:sourceorgpaths",
                    "aws:resourceorgid", "aws:resourceorgpaths", "aws:sourcevpc", "aws:sourcevpce")
_RESTRICTING_ACCOUNT = ("aws:principalaccount", "aws:sourceaccount", "aws:sourceowner", "aws:resourceaccount")
_RESTRICTING_ARN = ("aws:principalarn", "aws:sourcearn")


@dataclass(frozen=True)
class Exposure:
    """The verdict on one event: the pseudo-rule, and the accounts that decided it."""

    rule_id: str
    outside_accounts: tuple[str, ...] = ()  # accounts not in the organization (or, without one, not the own one)
    external_providers: tuple[str, ...] = ()  # public identity providers trusted as federated principals

    @property
    def rule(self) -> CompiledRule:
        return EXPOSURE_RULES[self.rule_id]

    @property
    def severity(self) -> str:
        return self.rule.severity


def assess(event: EventLike, organization_accounts: Iterable[str] | None = None) -> Exposure | None:
    """The exposure verdict on one CloudTrail event (a record, or anything with ``get``), or None when the event
    grants no principal that is an account, a public identity provider or everyone."""
    name = event.get("eventName")
    if not isinstance(name, str):
        return None
    name = normalize_event_name(name)
    if name not in EXPOSURE_CALLS:
        return None
    parameters = event.get("requestParameters")
    if not isinstance(parameters, dict):
        return None
    grantees = list(_grantees(name, parameters))
    if not grantees:
        return None
    own = _own_accounts(event)
    organization = frozenset(organization_accounts) if organization_accounts is not None else None
    outside: list[str] = []
    providers: list[str] = []
    public = False
    for grantee in grantees:
        if grantee == _PUBLIC:
            public = True
        elif grantee == _ORG or grantee in own:
            continue
        elif grantee.startswith("external:"):
            providers.append(grantee.removeprefix("external:"))
        elif organization is None or grantee not in organization:
            outside.append(grantee)
    outside_accounts, external = tuple(dict.fromkeys(outside)), tuple(dict.fromkeys(providers))
    if public:
        rule_id = PUBLIC
    elif external or (outside_accounts and organization is not None):
        rule_id = OUTSIDE
    elif outside_accounts:
        rule_id = OTHER_ACCOUNT
    else:
        rule_id = INSIDE
    return Exposure(rule_id, outside_accounts, external)


def worst(verdicts: Iterable[Exposure]) -> Exposure | None:
    return max(verdicts, key=lambda item: SEVERITY_RANK[item.severity], default=None)


def _own_accounts(event: EventLike) -> frozenset[str]:
    found = set()
    account = event.get("recipientAccountId")
    if isinstance(account, str) and _ACCOUNT.fullmatch(account):
        found.add(account)
    return frozenset(found)


# ---------------------------------------------------------------------------------------------------------------
# Grantees of one call: "*", "org", 12-digit account ids, "external:<provider>"


def _grantees(name: str, parameters: dict[str, Any]) -> Iterator[str]:
    if name in _POLICY_CALLS:
        for document in _policy_documents(name, parameters):
            yield from _policy_grantees(document)
        return
    if name == "AddPermission":  # Lambda (function policy statement)
        yield from _lambda_permission(parameters)
    elif name == "AddLayerVersionPermission":
        principal = parameters.get("principal")
        if parameters.get("organizationId"):
            yield _ORG
        elif principal is not None:
            yield from _principal_values([principal])
    elif name == "ModifySnapshotAttribute":
        yield from _ec2_permission_items(parameters.get("createVolumePermission"))
    elif name == "ModifyImageAttribute":
        yield from _ec2_permission_items(parameters.get("launchPermission"))
    elif name in ("ModifyDBSnapshotAttribute", "ModifyDBClusterSnapshotAttribute"):
        if str(parameters.get("attributeName", "")).lower() == "restore":
            yield from _account_values(_as_list(parameters.get("valuesToAdd")))
    elif name == "ModifyDocumentPermission":
        if str(parameters.get("permissionType", "Share")).lower() == "share":
            yield from _account_values(_as_list(parameters.get("accountIdsToAdd")))
    elif name in ("CreateResourceShare", "AssociateResourceShare"):
        principals = _as_list(parameters.get("principals"))
        internal_only = parameters.get("allowExternalPrincipals") is False
        for grantee in _principal_values(principals):
            yield _ORG if internal_only and grantee != _PUBLIC else grantee


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, dict) and "items" in value:  # EC2's query-protocol lists
        return _as_list(value["items"])
    return value if isinstance(value, list) else [value]


def _account_values(values: list[Any]) -> Iterator[str]:
    """Values of a share list: "all" is everyone, account ids are accounts."""
    for value in values:
        text = str(value).strip()
        if text.lower() in ("all", "*"):
            yield _PUBLIC
        elif _ACCOUNT.fullmatch(text):
            yield text
        else:
            yield from _principal_values([text])


def _ec2_permission_items(permission: Any) -> Iterator[str]:
    """``{"add": {"items": [{"userId": ...} | {"group": "all"} | {"organizationArn": ...}]}, "remove": ...}``:
    only the additions grant."""
    if not isinstance(permission, dict):
        return
    for item in _as_list(permission.get("add")):
        if not isinstance(item, dict):
            continue
        if str(item.get("group", "")).lower() == "all":
            yield _PUBLIC
        if item.get("userId") is not None:
            yield from _account_values([item["userId"]])
        for key in ("organizationArn", "organizationalUnitArn"):
            if item.get(key):
                yield from _principal_values([item[key]])


def _lambda_permission(parameters: dict[str, Any]) -> Iterator[str]:
    principal = parameters.get("principal")
    if principal is None:
        return
    grantees = list(_principal_values([principal]))
    if _PUBLIC not in grantees and not (isinstance(principal, str) and principal.endswith(".amazonaws.com")):
        yield from grantees
        return
    # "*" or a service principal: restricted to whoever the conditions name.
    restricted: list[str] = []
    if parameters.get("principalOrgID"):
        restricted.append(_ORG)
    if parameters.get("sourceAccount"):
        restricted.extend(_account_values([parameters["sourceAccount"]]))
    source_arn = parameters.get("sourceArn")
    if isinstance(source_arn, str) and (account := _arn_account(source_arn)):
        restricted.append(account)
    if _PUBLIC in grantees:
        yield from restricted or [_PUBLIC]
    else:
        yield from restricted  # a service acting for the named account(s): that account's access


def _policy_documents(name: str, parameters: dict[str, Any]) -> Iterator[dict[str, Any]]:
    seen: list[Any] = []
    candidates: list[Any] = []
    for path in _POLICY_KEYS:
        value: Any = parameters
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        candidates.append(value)
    if name == "SetTopicAttributes" and str(parameters.get("attributeName", "")).lower() == "policy":
        candidates.append(parameters.get("attributeValue"))
    for candidate in candidates:
        document = _parse_policy(candidate)
        if document is not None and document not in seen:
            seen.append(document)
            yield document


def _parse_policy(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("%7B") or text.startswith("%7b"):
            text = unquote(text)
        if not text.startswith("{"):
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return None
    if isinstance(value, dict) and "Statement" in value:
        return value
    return None


def _policy_grantees(document: dict[str, Any]) -> Iterator[str]:
    for statement in _as_list(document.get("Statement")):
        if not isinstance(statement, dict) or str(statement.get("Effect", "")).lower() != "allow":
            continue
        if "NotPrincipal" in statement:
            yield _PUBLIC  # everyone but the named principals
            continue
        if "Principal" not in statement:
            continue
        grantees = list(_principal_values([statement["Principal"]]))
        if _PUBLIC in grantees:
            restricted = _condition_grantees(statement.get("Condition"))
            grantees = [item for item in grantees if item != _PUBLIC] + (restricted or [_PUBLIC])
        yield from grantees


def _condition_grantees(condition: Any) -> list[str]:
    """Who a condition restricts a wildcard principal to: "org" or accounts; [] when it does not."""
    if not isinstance(condition, dict):
        return []
    found: list[str] = []
    for operator, tests in condition.items():
        if not isinstance(tests, dict) or "ifexists" in str(operator).lower() or str(operator).lower().startswith(
            ("stringnot", "arnnot", "null")
        ):
            continue  # negated or optional tests do not restrict who gets in
        for key, values in tests.items():
            key = str(key).lower()
            if key in _RESTRICTING_ORG:
                found.append(_ORG)
            elif key in _RESTRICTING_ACCOUNT:
                found.extend(text for text in map(str, _as_list(values)) if _ACCOUNT.fullmatch(text))
            elif key in _RESTRICTING_ARN:
                found.extend(account for text in map(str, _as_list(values)) if (account := _arn_account(text)))
    return found


def _principal_values(principals: list[Any]) -> Iterator[str]:
    """Grantees of Principal values: "*", {"AWS": ...}, {"Federated": ...}; services and canonical ids skipped."""
    for principal in principals:
        if isinstance(principal, dict):
            for kind, values in principal.items():
                kind = str(kind).lower()
                for value in _as_list(values):
                    text = str(value).strip()
                    if kind == "aws":
                        yield from _principal_values([text])
                    elif kind == "federated":
                        account = _arn_account(text)
                        yield account if account else f"external:{text}"
            continue
        text = str(principal).strip()
        if text == "*":
            yield _PUBLIC
        elif _ACCOUNT.fullmatch(text):
            yield text
        elif account := _arn_account(text):
            yield account


def _arn_account(text: str) -> str | None:
    """The account of an ARN (``arn:aws:iam::123456789012:role/x``; for an organization or OU ARN, the management
    account that owns it), or None."""
    parts = text.split(":")
    if len(parts) >= 6 and parts[0] == "arn" and _ACCOUNT.fullmatch(parts[4]):
        return parts[4]
    return None
