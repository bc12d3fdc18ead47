"""IAM Identity Center: resolve names to ids, and create / delete account assignments and read their status.

Assignment creation and deletion are asynchronous in AWS: the call returns a request id, and only
Describe...Status saying SUCCEEDED confirms it. This module answers the raw facts; the grant and revocation
steps decide what they mean. Lookups are cached for the life of one object (one task run), to keep call counts
low against the shared rate limit.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from botocore.exceptions import ClientError

from elevation.access.policy import IdentityCenterSettings
from elevation.aws import AttemptHook, AwsClients, Pacer, RetryPolicy, call_with_retry, error_code

PrincipalType = Literal["USER", "GROUP"]

#: The largest page sso-admin's list calls allow: fewer calls against the shared rate limit.
LIST_PAGE_SIZE = 100


class IdentityCenterError(RuntimeError):
    """A lookup failed in a way the request itself explains (unknown user, permission set...)."""


class AccountNotInOrganization(IdentityCenterError):
    """The account id is well formed but not in the organization: the request is wrong, not AWS unavailable."""


@dataclass(frozen=True)
class PermissionSet:
    arn: str
    name: str
    session_seconds: int


@dataclass(frozen=True)
class AssignmentStatus:
    """One answer of Describe...Status. `status` is None when AWS's answer carried none (never counts as done)."""

    request_id: str | None
    status: str | None
    failure_reason: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"

    @property
    def failed(self) -> bool:
        return self.status == "FAILED"


def iso_duration_seconds(text: str | None, default: int = 3600) -> int:
    """Permission sets give SessionDuration as ISO 8601 (PT1H, PT12H, PT30M)."""
    if not text or not text.startswith("PT"):
        return default
    seconds, number = 0, ""
    for char in text[2:]:
        if char.isdigit():
            number += char
            continue
        seconds += int(number or 0) * {"H": 3600, "M": 60, "S": 1}.get(char, 0)
        number = ""
    return seconds or default


@dataclass
class IdentityCenter:
    clients: AwsClients
    settings: IdentityCenterSettings = field(default_factory=IdentityCenterSettings)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] | None = None
    on_attempt: AttemptHook | None = None
    _user_ids: dict[str, str | None] = field(default_factory=dict, init=False)
    _group_ids: dict[str, str | None] = field(default_factory=dict, init=False)
    _account_ous: dict[str, list[str]] = field(default_factory=dict, init=False)
    _group_names: dict[str, str] = field(default_factory=dict, init=False)
    _user_names: dict[str, str] = field(default_factory=dict, init=False)
    _pacer: Pacer | None = field(default=None, init=False)
    calls: Counter[str] = field(default_factory=Counter, init=False)  # attempts sent, by operation

    def _call(self, operation: str, client: Any, **kwargs: Any) -> Any:
        method = getattr(client, _snake(operation))
        extra = {"sleep": self.sleep} if self.sleep else {}
        if self._pacer is None:
            self._pacer = Pacer(self.settings.max_calls_per_second, sleep=self.sleep or time.sleep)

        def paced() -> Any:
            self._pacer.wait()  # type: ignore[union-attr]
            self.calls[operation] += 1
            return method(**kwargs)

        return call_with_retry(operation, paced, policy=self.retry, on_attempt=self.on_attempt, **extra)

    def _pages(self, operation: str, client: Any, key: str, **kwargs: Any) -> Iterator[Any]:
        token: str | None = None
        while True:
            page = self._call(operation, client, **kwargs, **({"NextToken": token} if token else {}))
            yield from page.get(key, [])
            token = page.get("NextToken")
            if not token:
                return

    # --- the instance -------------------------------------------------------------------------------------

    @cached_property
    def _instance(self) -> dict[str, str]:
        if self.settings.instance_arn and self.settings.identity_store_id:
            return {
                "InstanceArn": self.settings.instance_arn,
                "IdentityStoreId": self.settings.identity_store_id,
            }
        instances = list(self._pages("ListInstances", self.clients.sso_admin, "Instances"))
        if self.settings.instance_arn:
            instances = [item for item in instances if item["InstanceArn"] == self.settings.instance_arn]
        if len(instances) != 1:
            raise IdentityCenterError(
                f"expected one Identity Center instance, found {len(instances)}; set identity_center.instance_arn"
            )
        return instances[0]

    @property
    def instance_arn(self) -> str:
        return self._instance["InstanceArn"]

    @property
    def identity_store_id(self) -> str:
        return self._instance["IdentityStoreId"]

    # --- names to ids -------------------------------------------------------------------------------------

    def user_id(self, user_name: str) -> str | None:
        if user_name not in self._user_ids:
            self._user_ids[user_name] = self._lookup_id("GetUserId", "UserId", "userName", user_name)
        return self._user_ids[user_name]

    def group_id(self, display_name: str) -> str | None:
        if display_name not in self._group_ids:
            self._group_ids[display_name] = self._lookup_id(
                "GetGroupId", "GroupId", "displayName", display_name
            )
        return self._group_ids[display_name]

    def _lookup_id(self, operation: str, key: str, attribute: str, value: str) -> str | None:
        try:
            answer = self._call(
                operation,
                self.clients.identitystore,
                IdentityStoreId=self.identity_store_id,
                AlternateIdentifier={
                    "UniqueAttribute": {"AttributePath": attribute, "AttributeValue": value}
                },
            )
        except ClientError as error:
            if error_code(error) in ("ResourceNotFoundException", "ValidationException"):
                return None
            raise
        return str(answer[key])

    def groups_of_user(self, user_id: str) -> list[str]:
        """Display names of the groups the user belongs to."""
        memberships = self._pages(
            "ListGroupMembershipsForMember",
            self.clients.identitystore,
            "GroupMemberships",
            IdentityStoreId=self.identity_store_id,
            MemberId={"UserId": user_id},
        )
        return sorted(self._group_name(membership["GroupId"]) for membership in memberships)

    def _group_name(self, group_id: str) -> str:
        if group_id not in self._group_names:
            group = self._call(
                "DescribeGroup",
                self.clients.identitystore,
                IdentityStoreId=self.identity_store_id,
                GroupId=group_id,
            )
            self._group_names[group_id] = str(group["DisplayName"])
        return self._group_names[group_id]

    def group_member_names(self, group_id: str) -> list[str]:
        """User names of a group's members, recorded at grant time so the audit can match each of them."""
        memberships = self._pages(
            "ListGroupMemberships",
            self.clients.identitystore,
            "GroupMemberships",
            IdentityStoreId=self.identity_store_id,
            GroupId=group_id,
        )
        names = []
        for membership in memberships:
            user_id = membership.get("MemberId", {}).get("UserId")
            if user_id:
                user = self._call(
                    "DescribeUser",
                    self.clients.identitystore,
                    IdentityStoreId=self.identity_store_id,
                    UserId=user_id,
                )
                names.append(str(user["UserName"]))
        return sorted(names)

    @cached_property
    def permission_sets(self) -> dict[str, PermissionSet]:
        """All permission sets by name (one listing per run)."""
        found = {}
        for arn in self._pages(
            "ListPermissionSets", self.clients.sso_admin, "PermissionSets", InstanceArn=self.instance_arn
        ):
            described = self._call(
                "DescribePermissionSet",
                self.clients.sso_admin,
                InstanceArn=self.instance_arn,
                PermissionSetArn=arn,
            )["PermissionSet"]
            found[described["Name"]] = PermissionSet(
                arn=arn,
                name=described["Name"],
                session_seconds=iso_duration_seconds(described.get("SessionDuration")),
            )
        return found

    def permission_set(self, name: str) -> PermissionSet | None:
        return self.permission_sets.get(name)

    @cached_property
    def management_account_id(self) -> str | None:
        """The organization's management account, forbidden even when the policy forgets to name it."""
        try:
            return str(
                self._call("DescribeOrganization", self.clients.organizations)["Organization"][
                    "MasterAccountId"
                ]
            )
        except ClientError as error:
            if error_code(error) in ("AccessDeniedException", "AWSOrganizationsNotInUseException"):
                return None
            raise

    def account_ous(self, account_id: str) -> list[str]:
        """The account's ancestors (OU ids, then the root id), nearest first. Empty when Organizations is not readable."""
        if account_id in self._account_ous:
            return self._account_ous[account_id]
        chain: list[str] = []
        child = account_id
        try:
            while True:
                parents = self._call("ListParents", self.clients.organizations, ChildId=child).get(
                    "Parents", []
                )
                if not parents:
                    break
                chain.append(parents[0]["Id"])
                if parents[0]["Type"] == "ROOT":
                    break
                child = parents[0]["Id"]
        except ClientError as error:
            if error_code(error) in ("ChildNotFoundException", "AccountNotFoundException"):
                # AWS answers ChildNotFoundException; some emulators AccountNotFoundException. Both: not ours.
                raise AccountNotInOrganization(
                    f"account {account_id} is not in the organization"
                ) from error
            if error_code(error) not in ("AccessDeniedException", "AWSOrganizationsNotInUseException"):
                raise
        self._account_ous[account_id] = chain
        return chain

    def user_name(self, user_id: str) -> str:
        if user_id not in self._user_names:
            user = self._call(
                "DescribeUser", self.clients.identitystore, IdentityStoreId=self.identity_store_id, UserId=user_id
            )
            self._user_names[user_id] = str(user["UserName"])
        return self._user_names[user_id]

    def principal_name(self, principal_type: str, principal_id: str) -> str:
        """A user's name or a group's display name, for people reading a report (the id when it is gone)."""
        try:
            if principal_type == "GROUP":
                return self._group_name(principal_id)
            return self.user_name(principal_id)
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                return principal_id
            raise

    def organization_accounts(self) -> dict[str, str]:
        """Account id -> name of every account of the organization: who is inside (the exposure rules) and what
        the reports call them."""
        return {
            str(item["Id"]): str(item.get("Name") or item["Id"])
            for item in self._pages("ListAccounts", self.clients.organizations, "Accounts")
        }

    def accounts_under(self, parent_id: str) -> list[str]:
        """Every account below an OU (or the root), at any depth."""
        accounts = [
            str(item["Id"])
            for item in self._pages("ListAccountsForParent", self.clients.organizations, "Accounts", ParentId=parent_id)
        ]
        for unit in self._pages(
            "ListOrganizationalUnitsForParent", self.clients.organizations, "OrganizationalUnits", ParentId=parent_id
        ):
            accounts += self.accounts_under(str(unit["Id"]))
        return accounts

    def accounts_provisioned_with(self, permission_set_arn: str) -> set[str]:
        return {
            str(account)
            for account in self._pages(
                "ListAccountsForProvisionedPermissionSet",
                self.clients.sso_admin,
                "AccountIds",
                MaxResults=LIST_PAGE_SIZE,
                InstanceArn=self.instance_arn,
                PermissionSetArn=permission_set_arn,
            )
        }

    def permission_sets_provisioned_to(self, account_id: str) -> set[str]:
        return {
            str(arn)
            for arn in self._pages(
                "ListPermissionSetsProvisionedToAccount",
                self.clients.sso_admin,
                "PermissionSets",
                MaxResults=LIST_PAGE_SIZE,
                InstanceArn=self.instance_arn,
                AccountId=account_id,
            )
        }

    # --- assignments --------------------------------------------------------------------------------------

    def assignments_of_pair(self, account_id: str, permission_set_arn: str) -> set[tuple[str, str]]:
        """(principal type, principal id) of every assignment of the permission set in the account (all pages)."""
        return {
            (str(assignment.get("PrincipalType")), str(assignment.get("PrincipalId")))
            for assignment in self._pages(
                "ListAccountAssignments",
                self.clients.sso_admin,
                "AccountAssignments",
                MaxResults=LIST_PAGE_SIZE,
                InstanceArn=self.instance_arn,
                AccountId=account_id,
                PermissionSetArn=permission_set_arn,
            )
        }

    def assignment_exists(
        self, account_id: str, permission_set_arn: str, principal_type: str, principal_id: str
    ) -> bool:
        return (principal_type, principal_id) in self.assignments_of_pair(account_id, permission_set_arn)

    def _assignment(
        self, account_id: str, permission_set_arn: str, principal_type: str, principal_id: str
    ) -> dict[str, str]:
        return {
            "InstanceArn": self.instance_arn,
            "TargetId": account_id,
            "TargetType": "AWS_ACCOUNT",
            "PermissionSetArn": permission_set_arn,
            "PrincipalType": principal_type,
            "PrincipalId": principal_id,
        }

    def start_creation(
        self, account_id: str, permission_set_arn: str, principal_type: str, principal_id: str
    ) -> AssignmentStatus:
        answer = self._call(
            "CreateAccountAssignment",
            self.clients.sso_admin,
            **self._assignment(account_id, permission_set_arn, principal_type, principal_id),
        )
        return _status(answer.get("AccountAssignmentCreationStatus", {}))

    def creation_status(self, request_id: str) -> AssignmentStatus:
        answer = self._call(
            "DescribeAccountAssignmentCreationStatus",
            self.clients.sso_admin,
            InstanceArn=self.instance_arn,
            AccountAssignmentCreationRequestId=request_id,
        )
        return _status(answer.get("AccountAssignmentCreationStatus", {}), request_id)

    def start_deletion(
        self, account_id: str, permission_set_arn: str, principal_type: str, principal_id: str
    ) -> AssignmentStatus:
        answer = self._call(
            "DeleteAccountAssignment",
            self.clients.sso_admin,
            **self._assignment(account_id, permission_set_arn, principal_type, principal_id),
        )
        return _status(answer.get("AccountAssignmentDeletionStatus", {}))

    def deletion_status(self, request_id: str) -> AssignmentStatus:
        answer = self._call(
            "DescribeAccountAssignmentDeletionStatus",
            self.clients.sso_admin,
            InstanceArn=self.instance_arn,
            AccountAssignmentDeletionRequestId=request_id,
        )
        return _status(answer.get("AccountAssignmentDeletionStatus", {}), request_id)


def _status(document: dict[str, Any], request_id: str | None = None) -> AssignmentStatus:
    return AssignmentStatus(
        request_id=document.get("RequestId") or request_id,
        status=document.get("Status"),
        failure_reason=document.get("FailureReason"),
    )


def _snake(operation: str) -> str:
    out = []
    for index, char in enumerate(operation):
        if char.isupper() and index:
            out.append("_")
        out.append(char.lower())
    return "".join(out)
