"""The AWS emulator behaves like AWS where the lifecycle code depends on it, and its faults reach the wire."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError

from elevation.devkit.emulator import AwsEmulator, EmulatorControl

NO_RETRY = Config(retries={"mode": "standard", "total_max_attempts": 1})
ACCOUNT_A = "111111111111"
ACCOUNT_B = "222222222222"
ACCOUNT_C = "333333333333"


@pytest.fixture(scope="module")
def running() -> Iterator[AwsEmulator]:
    """One emulator for the whole module: starting moto's Flask apps costs more than a reset."""
    with AwsEmulator() as emulator:
        yield emulator


@pytest.fixture
def emu(running: AwsEmulator) -> AwsEmulator:
    running.reset()
    return running


@dataclass
class IdentityCenter:
    """The minimum a grant needs: an instance, a permission set and a user."""

    sso: Any
    instance_arn: str
    identity_store_id: str
    permission_set_arn: str
    user_id: str

    def assignment(self, account: str = ACCOUNT_A, principal: str | None = None, **kw: str) -> dict[str, str]:
        return {
            "InstanceArn": self.instance_arn,
            "TargetId": account,
            "TargetType": "AWS_ACCOUNT",
            "PermissionSetArn": kw.get("permission_set_arn", self.permission_set_arn),
            "PrincipalType": "USER",
            "PrincipalId": principal or self.user_id,
        }

    def listed(self, account: str = ACCOUNT_A, permission_set_arn: str | None = None) -> list[dict[str, str]]:
        paginator = self.sso.get_paginator("list_account_assignments")
        pages = paginator.paginate(
            InstanceArn=self.instance_arn,
            AccountId=account,
            PermissionSetArn=permission_set_arn or self.permission_set_arn,
        )
        return [a for page in pages for a in page["AccountAssignments"]]

    def creation(self, request_id: str) -> dict[str, Any]:
        return self.sso.describe_account_assignment_creation_status(
            InstanceArn=self.instance_arn, AccountAssignmentCreationRequestId=request_id
        )["AccountAssignmentCreationStatus"]

    def deletion(self, request_id: str) -> dict[str, Any]:
        return self.sso.describe_account_assignment_deletion_status(
            InstanceArn=self.instance_arn, AccountAssignmentDeletionRequestId=request_id
        )["AccountAssignmentDeletionStatus"]

    def new_permission_set(self, name: str) -> str:
        return self.sso.create_permission_set(
            Name=name, InstanceArn=self.instance_arn, SessionDuration="PT1H"
        )["PermissionSet"]["PermissionSetArn"]


@pytest.fixture
def ic(emu: AwsEmulator) -> IdentityCenter:
    sso = emu.client("sso-admin", NO_RETRY)
    instance = sso.list_instances()["Instances"][0]
    ps = sso.create_permission_set(Name="Admin", InstanceArn=instance["InstanceArn"], SessionDuration="PT2H")
    user = emu.client("identitystore").create_user(
        IdentityStoreId=instance["IdentityStoreId"],
        UserName="alice",
        DisplayName="Alice",
        Name={"GivenName": "Alice", "FamilyName": "Liddell"},
    )
    return IdentityCenter(
        sso,
        instance["InstanceArn"],
        instance["IdentityStoreId"],
        ps["PermissionSet"]["PermissionSetArn"],
        user["UserId"],
    )


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


# --------------------------------------------------------------------------- async assignment status


def test_assignment_round_trip_is_asynchronous(ic: IdentityCenter) -> None:
    created = ic.sso.create_account_assignment(**ic.assignment())["AccountAssignmentCreationStatus"]
    assert created["Status"] == "IN_PROGRESS"
    assert {created["TargetId"], created["PrincipalId"], created["PrincipalType"]} == {
        ACCOUNT_A,
        ic.user_id,
        "USER",
    }
    assert created["PermissionSetArn"] == ic.permission_set_arn and created["TargetType"] == "AWS_ACCOUNT"
    assert "CreatedDate" in created

    first, second = ic.creation(created["RequestId"]), ic.creation(created["RequestId"])
    assert (first["Status"], second["Status"]) == ("IN_PROGRESS", "SUCCEEDED")
    assert second["RequestId"] == created["RequestId"] and "FailureReason" not in second
    assert ic.listed() == [
        {
            "AccountId": ACCOUNT_A,
            "PermissionSetArn": ic.permission_set_arn,
            "PrincipalType": "USER",
            "PrincipalId": ic.user_id,
        }
    ]

    deleted = ic.sso.delete_account_assignment(**ic.assignment())["AccountAssignmentDeletionStatus"]
    assert deleted["Status"] == "IN_PROGRESS"
    assert deleted["RequestId"] != created["RequestId"]  # moto reuses the creation id
    assert [ic.deletion(deleted["RequestId"])["Status"] for _ in range(2)] == ["IN_PROGRESS", "SUCCEEDED"]
    assert ic.listed() == []
    # The creation stays describable after the assignment is gone, as in AWS.
    assert ic.creation(created["RequestId"])["Status"] == "SUCCEEDED"


def test_describe_unknown_request_is_resource_not_found(ic: IdentityCenter) -> None:
    with pytest.raises(ClientError) as exc:
        ic.creation("00000000-0000-0000-0000-000000000000")
    assert error_code(exc) == "ResourceNotFoundException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    created = ic.sso.create_account_assignment(**ic.assignment())["AccountAssignmentCreationStatus"]
    with pytest.raises(ClientError) as exc:  # a creation id is not a deletion id
        ic.deletion(created["RequestId"])
    assert error_code(exc) == "ResourceNotFoundException"


def test_fail_next_creations_reports_failed_and_creates_nothing(emu: AwsEmulator, ic: IdentityCenter) -> None:
    emu.identity_center.fail_next_creations("Received a 404 status error: Not supported policy x", times=1)
    failed = ic.sso.create_account_assignment(**ic.assignment())["AccountAssignmentCreationStatus"]
    assert failed["Status"] == "IN_PROGRESS"
    assert ic.creation(failed["RequestId"])["Status"] == "IN_PROGRESS"
    final = ic.creation(failed["RequestId"])
    assert final["Status"] == "FAILED"
    assert final["FailureReason"] == "Received a 404 status error: Not supported policy x"
    assert ic.listed() == []
    assert (
        ic.sso.list_permission_sets_provisioned_to_account(InstanceArn=ic.instance_arn, AccountId=ACCOUNT_A)[
            "PermissionSets"
        ]
        == []
    )

    # Only `times` creations fail: the next one lands.
    ok = ic.sso.create_account_assignment(**ic.assignment())["AccountAssignmentCreationStatus"]
    assert [ic.creation(ok["RequestId"])["Status"] for _ in range(2)] == ["IN_PROGRESS", "SUCCEEDED"]
    assert len(ic.listed()) == 1


def test_omit_status_lacks_status_forever(emu: AwsEmulator, ic: IdentityCenter) -> None:
    emu.identity_center.omit_status_next_creations(times=1)
    odd = ic.sso.create_account_assignment(**ic.assignment())["AccountAssignmentCreationStatus"]
    answers = [ic.creation(odd["RequestId"]) for _ in range(4)]
    assert all("Status" not in a for a in answers)
    assert all(a["RequestId"] == odd["RequestId"] for a in answers)
    assert len(ic.listed()) == 1  # the creation itself went through

    normal = ic.sso.create_account_assignment(**ic.assignment(ACCOUNT_B))["AccountAssignmentCreationStatus"]
    assert ic.creation(normal["RequestId"])["Status"] == "IN_PROGRESS"


def test_hold_forever_and_polls_zero(emu: AwsEmulator, ic: IdentityCenter) -> None:
    emu.identity_center.hold_creations(polls=None)
    held = ic.sso.create_account_assignment(**ic.assignment())["AccountAssignmentCreationStatus"]
    assert {ic.creation(held["RequestId"])["Status"] for _ in range(6)} == {"IN_PROGRESS"}
    assert emu.identity_center.creations_in_flight == 1

    emu.identity_center.hold_creations(polls=0)
    quick = ic.sso.create_account_assignment(**ic.assignment(ACCOUNT_B))["AccountAssignmentCreationStatus"]
    assert quick["Status"] == "IN_PROGRESS"
    assert ic.creation(quick["RequestId"])["Status"] == "SUCCEEDED"
    # The earlier request keeps the hold it was created under.
    assert ic.creation(held["RequestId"])["Status"] == "IN_PROGRESS"


def test_deletion_hold_and_failure(emu: AwsEmulator, ic: IdentityCenter) -> None:
    emu.identity_center.hold_creations(polls=0)
    ic.creation(
        ic.sso.create_account_assignment(**ic.assignment())["AccountAssignmentCreationStatus"]["RequestId"]
    )

    emu.identity_center.fail_next_deletions("boom", times=1)
    failed = ic.sso.delete_account_assignment(**ic.assignment())["AccountAssignmentDeletionStatus"]
    pending = ic.deletion(failed["RequestId"])
    assert (pending["Status"], pending.get("FailureReason")) == ("IN_PROGRESS", None)
    final = ic.deletion(failed["RequestId"])
    assert (final["Status"], final["FailureReason"]) == ("FAILED", "boom")
    assert len(ic.listed()) == 1  # a failed deletion leaves the assignment in place

    emu.identity_center.hold_deletions(polls=None)
    held = ic.sso.delete_account_assignment(**ic.assignment())["AccountAssignmentDeletionStatus"]
    assert {ic.deletion(held["RequestId"])["Status"] for _ in range(3)} == {"IN_PROGRESS"}
    assert ic.listed() == []  # the deletion itself reached moto at once

    with pytest.raises(ClientError) as exc:
        ic.sso.delete_account_assignment(**ic.assignment())
    assert error_code(exc) == "ResourceNotFoundException"


def test_max_creations_in_flight(emu: AwsEmulator, ic: IdentityCenter) -> None:
    control = emu.identity_center
    request_ids = [
        ic.sso.create_account_assignment(**ic.assignment(account))["AccountAssignmentCreationStatus"][
            "RequestId"
        ]
        for account in (ACCOUNT_A, ACCOUNT_B, ACCOUNT_C)
    ]
    assert (control.creations_in_flight, control.max_creations_in_flight) == (3, 3)
    for request_id in request_ids:
        assert ic.creation(request_id)["Status"] == "IN_PROGRESS"
    assert control.creations_in_flight == 3
    for request_id in request_ids:
        assert ic.creation(request_id)["Status"] == "SUCCEEDED"
        ic.creation(request_id)  # describing a finished request again must not count twice
    assert (control.creations_in_flight, control.max_creations_in_flight) == (0, 3)

    # One at a time never raises the peak.
    emu.reset()
    ic2 = _fresh(emu)
    for account in (ACCOUNT_A, ACCOUNT_B):
        rid = ic2.sso.create_account_assignment(**ic2.assignment(account))["AccountAssignmentCreationStatus"][
            "RequestId"
        ]
        while ic2.creation(rid)["Status"] == "IN_PROGRESS":
            pass
    assert (control.creations_in_flight, control.max_creations_in_flight) == (0, 1)


def _fresh(emu: AwsEmulator) -> IdentityCenter:
    sso = emu.client("sso-admin", NO_RETRY)
    instance = sso.list_instances()["Instances"][0]
    ps = sso.create_permission_set(Name="Fresh", InstanceArn=instance["InstanceArn"])["PermissionSet"]
    return IdentityCenter(
        sso, instance["InstanceArn"], instance["IdentityStoreId"], ps["PermissionSetArn"], "u-1"
    )


def test_assignments_are_not_deduplicated(emu: AwsEmulator, ic: IdentityCenter) -> None:
    for _ in range(2):
        ic.sso.create_account_assignment(**ic.assignment())
    assert len(ic.listed()) == 2  # a double create stays visible
    ic.sso.delete_account_assignment(**ic.assignment())
    assert len(ic.listed()) == 1  # and one delete removes one copy


def test_create_assignment_validates_like_aws(ic: IdentityCenter) -> None:
    missing_ps = ic.permission_set_arn.rsplit("/", 1)[0] + "/ps-0000000000000000"
    with pytest.raises(ClientError) as exc:
        ic.sso.create_account_assignment(**ic.assignment(permission_set_arn=missing_ps))
    assert error_code(exc) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as exc:
        ic.sso.create_account_assignment(**{**ic.assignment(), "PrincipalType": "ROLE"})
    assert error_code(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:
        ic.sso.create_account_assignment(**ic.assignment(account="12345678901x"))
    assert error_code(exc) == "ValidationException"
    assert ic.listed() == []


# --------------------------------------------------------------------------- wire faults


def test_injected_errors_raise_client_error_and_are_consumed(emu: AwsEmulator, ic: IdentityCenter) -> None:
    emu.faults.inject("CreateAccountAssignment", "ThrottlingException", message="Rate exceeded", times=2)
    assert emu.faults.remaining == 2
    for _ in range(2):
        with pytest.raises(ClientError) as exc:
            ic.sso.create_account_assignment(**ic.assignment())
        assert error_code(exc) == "ThrottlingException"
        assert exc.value.response["Error"]["Message"] == "Rate exceeded"
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert (
            exc.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == "ThrottlingException"
        )
    assert ic.listed() == []  # faulted calls never reached moto
    assert emu.faults.remaining == 0

    ic.sso.create_account_assignment(**ic.assignment())
    assert len(ic.listed()) == 1
    assert emu.calls.count("CreateAccountAssignment") == 3

    emu.faults.inject("DeleteAccountAssignment", "ConflictException", message="in progress")
    with pytest.raises(ClientError) as exc:
        ic.sso.delete_account_assignment(**ic.assignment())
    assert error_code(exc) == "ConflictException"
    assert len(ic.listed()) == 1


def test_server_error_fault_and_botocore_retry(emu: AwsEmulator, ic: IdentityCenter) -> None:
    emu.faults.inject("ListInstances", "InternalServerException", http_status=500)
    with pytest.raises(ClientError) as exc:
        ic.sso.list_instances()
    assert error_code(exc) == "InternalServerException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500

    # With botocore's default retries a single 503 is absorbed, and the call log sees both attempts.
    emu.calls.clear()
    emu.faults.inject("ListPermissionSets", "ServiceUnavailable", http_status=503)
    retrying = emu.client("sso-admin", Config(retries={"mode": "standard", "total_max_attempts": 3}))
    assert retrying.list_permission_sets(InstanceArn=ic.instance_arn)["PermissionSets"] == [
        ic.permission_set_arn
    ]
    assert emu.calls.count("ListPermissionSets") == 2
    assert emu.faults.remaining == 0


def test_delay_provokes_read_timeout_but_the_call_lands(emu: AwsEmulator, ic: IdentityCenter) -> None:
    emu.faults.delay("CreatePermissionSet", 0.6)
    impatient = emu.client(
        "sso-admin", Config(read_timeout=0.2, connect_timeout=1, retries={"total_max_attempts": 1})
    )
    with pytest.raises(ReadTimeoutError):
        impatient.create_permission_set(Name="Late", InstanceArn=ic.instance_arn)
    assert emu.faults.remaining == 0
    deadline = time.monotonic() + 3
    names: set[str] = set()
    while "Late" not in names and time.monotonic() < deadline:
        time.sleep(0.05)
        arns = ic.sso.list_permission_sets(InstanceArn=ic.instance_arn)["PermissionSets"]
        names = {
            ic.sso.describe_permission_set(InstanceArn=ic.instance_arn, PermissionSetArn=a)["PermissionSet"][
                "Name"
            ]
            for a in arns
        }
    assert "Late" in names  # the write landed after the client gave up, as it can in AWS


def test_reset_drops_a_delayed_call(emu: AwsEmulator, ic: IdentityCenter) -> None:
    """A call still sleeping in an injected delay must not land in the next test's fresh state."""
    emu.faults.delay("CreatePermissionSet", 0.5)
    impatient = emu.client("sso-admin", Config(read_timeout=0.1, retries={"total_max_attempts": 1}))
    with pytest.raises(ReadTimeoutError):
        impatient.create_permission_set(Name="Late", InstanceArn=ic.instance_arn)
    emu.reset()
    time.sleep(0.7)
    # moto does not check the instance ARN, so a late create would show up under the old one.
    assert ic.sso.list_permission_sets(InstanceArn=ic.instance_arn)["PermissionSets"] == []


def test_query_protocol_fault_is_xml(emu: AwsEmulator) -> None:
    sts = emu.client("sts", NO_RETRY)
    emu.faults.inject("GetCallerIdentity", "Throttling", message="Rate exceeded")
    with pytest.raises(ClientError) as exc:
        sts.get_caller_identity()
    assert (error_code(exc), exc.value.response["Error"]["Message"]) == ("Throttling", "Rate exceeded")
    assert sts.get_caller_identity()["Account"] == emu.account_id


def test_concurrent_clients_are_served_consistently(emu: AwsEmulator, ic: IdentityCenter) -> None:
    principals = [f"user-{i:02d}" for i in range(24)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(
            pool.map(
                lambda p: ic.sso.create_account_assignment(**ic.assignment(principal=p))[
                    "AccountAssignmentCreationStatus"
                ],
                principals,
            )
        )
    assert len({s["RequestId"] for s in statuses}) == 24
    assert sorted(a["PrincipalId"] for a in ic.listed()) == principals
    assert emu.identity_center.max_creations_in_flight == 24
    assert emu.calls.count("CreateAccountAssignment") == 24


def test_unimplemented_operation_is_a_clean_501(ic: IdentityCenter) -> None:
    with pytest.raises(ClientError) as exc:
        ic.sso.list_account_assignment_creation_status(InstanceArn=ic.instance_arn)
    assert error_code(exc) == "NotImplemented"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501


# --------------------------------------------------------------------------- paging and provisioning


def test_list_account_assignments_pages_every_item_once(ic: IdentityCenter) -> None:
    principals = [f"user-{i:02d}" for i in range(23)]
    for principal in principals:
        ic.sso.create_account_assignment(**ic.assignment(principal=principal))
    ic.sso.create_account_assignment(**ic.assignment(principal="user-09"))  # a duplicate at a page boundary

    first = ic.sso.list_account_assignments(
        InstanceArn=ic.instance_arn, AccountId=ACCOUNT_A, PermissionSetArn=ic.permission_set_arn
    )
    assert len(first["AccountAssignments"]) == 10 and "NextToken" in first  # the documented default page

    listed = [a["PrincipalId"] for a in ic.listed()]
    assert sorted(listed) == sorted([*principals, "user-09"])

    pages = ic.sso.get_paginator("list_account_assignments").paginate(
        InstanceArn=ic.instance_arn,
        AccountId=ACCOUNT_A,
        PermissionSetArn=ic.permission_set_arn,
        PaginationConfig={"PageSize": 7},
    )
    sizes = [len(page["AccountAssignments"]) for page in pages]
    assert sizes == [7, 7, 7, 3]

    with pytest.raises(ClientError) as exc:
        ic.sso.list_account_assignments(
            InstanceArn=ic.instance_arn,
            AccountId=ACCOUNT_A,
            PermissionSetArn=ic.permission_set_arn,
            MaxResults=101,
        )
    assert error_code(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:  # a token only pages the request it came from
        ic.sso.list_account_assignments(
            InstanceArn=ic.instance_arn,
            AccountId=ACCOUNT_B,
            PermissionSetArn=ic.permission_set_arn,
            NextToken=first["NextToken"],
        )
    assert error_code(exc) == "ValidationException"


def test_list_permission_sets_and_instances_page(ic: IdentityCenter) -> None:
    created = [ic.new_permission_set(f"ps-{i}") for i in range(11)]
    first = ic.sso.list_permission_sets(InstanceArn=ic.instance_arn)
    assert len(first["PermissionSets"]) == 10 and "NextToken" in first
    pages = ic.sso.get_paginator("list_permission_sets").paginate(InstanceArn=ic.instance_arn)
    everything = [arn for page in pages for arn in page["PermissionSets"]]
    assert everything == [ic.permission_set_arn, *created]

    instances = ic.sso.list_instances(MaxResults=1)
    assert len(instances["Instances"]) == 1 and "NextToken" not in instances  # moto has exactly one instance
    with pytest.raises(ClientError) as exc:
        ic.sso.list_instances(MaxResults=500)
    assert error_code(exc) == "ValidationException"


def test_permission_sets_are_provisioned_per_account(emu: AwsEmulator, ic: IdentityCenter) -> None:
    sso = ic.sso
    explicit = ic.permission_set_arn
    via_assignment = ic.new_permission_set("ViaAssignment")
    never = ic.new_permission_set("Never")

    status = sso.provision_permission_set(
        InstanceArn=ic.instance_arn, PermissionSetArn=explicit, TargetType="AWS_ACCOUNT", TargetId=ACCOUNT_A
    )["PermissionSetProvisioningStatus"]
    assert (status["Status"], status["AccountId"]) == ("IN_PROGRESS", ACCOUNT_A)
    described = sso.describe_permission_set_provisioning_status(
        InstanceArn=ic.instance_arn, ProvisionPermissionSetRequestId=status["RequestId"]
    )["PermissionSetProvisioningStatus"]
    assert described["Status"] == "SUCCEEDED"

    sso.create_account_assignment(**ic.assignment(ACCOUNT_B, permission_set_arn=via_assignment))
    emu.identity_center.fail_next_creations()
    sso.create_account_assignment(**ic.assignment(ACCOUNT_C, permission_set_arn=never))
    sso.provision_permission_set(
        InstanceArn=ic.instance_arn, PermissionSetArn=never, TargetType="ALL_PROVISIONED_ACCOUNTS"
    )

    def provisioned(account: str) -> list[str]:
        return sso.list_permission_sets_provisioned_to_account(
            InstanceArn=ic.instance_arn, AccountId=account
        )["PermissionSets"]

    assert provisioned(ACCOUNT_A) == [explicit]
    assert provisioned(ACCOUNT_B) == [via_assignment]
    assert (
        provisioned(ACCOUNT_C) == []
    )  # a failed creation provisions nothing; ALL_PROVISIONED adds no account
    assert sso.list_accounts_for_provisioned_permission_set(
        InstanceArn=ic.instance_arn, PermissionSetArn=via_assignment
    )["AccountIds"] == [ACCOUNT_B]

    many = [ic.new_permission_set(f"many-{i}") for i in range(11)]
    for arn in many:
        sso.provision_permission_set(
            InstanceArn=ic.instance_arn, PermissionSetArn=arn, TargetType="AWS_ACCOUNT", TargetId=ACCOUNT_A
        )
    first = sso.list_permission_sets_provisioned_to_account(InstanceArn=ic.instance_arn, AccountId=ACCOUNT_A)
    assert len(first["PermissionSets"]) == 10 and "NextToken" in first
    pages = sso.get_paginator("list_permission_sets_provisioned_to_account").paginate(
        InstanceArn=ic.instance_arn, AccountId=ACCOUNT_A
    )
    assert [arn for page in pages for arn in page["PermissionSets"]] == [explicit, *many]

    sso.delete_permission_set(InstanceArn=ic.instance_arn, PermissionSetArn=explicit)
    assert explicit not in provisioned(ACCOUNT_A)


# --------------------------------------------------------------------------- what the product uses from moto


def test_permission_set_fields_survive(ic: IdentityCenter) -> None:
    sso = ic.sso
    sso.attach_managed_policy_to_permission_set(
        InstanceArn=ic.instance_arn,
        PermissionSetArn=ic.permission_set_arn,
        ManagedPolicyArn="arn:aws:iam::aws:policy/ReadOnlyAccess",
    )
    policies = sso.list_managed_policies_in_permission_set(
        InstanceArn=ic.instance_arn, PermissionSetArn=ic.permission_set_arn
    )["AttachedManagedPolicies"]
    assert [p["Name"] for p in policies] == ["ReadOnlyAccess"]

    sso.update_permission_set(
        InstanceArn=ic.instance_arn, PermissionSetArn=ic.permission_set_arn, Description="ops"
    )
    described = sso.describe_permission_set(
        InstanceArn=ic.instance_arn, PermissionSetArn=ic.permission_set_arn
    )
    assert described["PermissionSet"]["SessionDuration"] == "PT2H"  # moto would reset it to 3600
    assert described["PermissionSet"]["Description"] == "ops"

    default = sso.create_permission_set(Name="Default", InstanceArn=ic.instance_arn)["PermissionSet"]
    assert default["SessionDuration"] == "PT1H"
    with pytest.raises(ClientError) as exc:
        sso.create_permission_set(Name="TooLong", InstanceArn=ic.instance_arn, SessionDuration="PT13H")
    assert error_code(exc) == "ValidationException"


def test_identity_store_and_organizations(emu: AwsEmulator, ic: IdentityCenter) -> None:
    store = emu.client("identitystore", NO_RETRY)
    group_id = store.create_group(IdentityStoreId=ic.identity_store_id, DisplayName="oncall")["GroupId"]
    store.create_group_membership(
        IdentityStoreId=ic.identity_store_id, GroupId=group_id, MemberId={"UserId": ic.user_id}
    )
    user = store.get_user_id(
        IdentityStoreId=ic.identity_store_id,
        AlternateIdentifier={"UniqueAttribute": {"AttributePath": "userName", "AttributeValue": "alice"}},
    )
    group = store.get_group_id(
        IdentityStoreId=ic.identity_store_id,
        AlternateIdentifier={"UniqueAttribute": {"AttributePath": "displayName", "AttributeValue": "oncall"}},
    )
    assert (user["UserId"], group["GroupId"]) == (ic.user_id, group_id)
    members = store.list_group_memberships(IdentityStoreId=ic.identity_store_id, GroupId=group_id)[
        "GroupMemberships"
    ]
    assert [m["MemberId"]["UserId"] for m in members] == [ic.user_id]
    with pytest.raises(ClientError) as exc:
        store.get_user_id(
            IdentityStoreId=ic.identity_store_id,
            AlternateIdentifier={
                "UniqueAttribute": {"AttributePath": "userName", "AttributeValue": "mallory"}
            },
        )
    assert error_code(exc) == "ResourceNotFoundException"

    org = emu.client("organizations", NO_RETRY)
    org.create_organization(FeatureSet="ALL")
    root = org.list_roots()["Roots"][0]["Id"]
    ou = org.create_organizational_unit(ParentId=root, Name="prod")["OrganizationalUnit"]["Id"]
    account = org.create_account(Email="prod@example.com", AccountName="prod")["CreateAccountStatus"][
        "AccountId"
    ]
    org.move_account(AccountId=account, SourceParentId=root, DestinationParentId=ou)
    assert org.list_parents(ChildId=account)["Parents"] == [{"Id": ou, "Type": "ORGANIZATIONAL_UNIT"}]


def test_list_parents_of_a_child_outside_the_organization_is_child_not_found(emu: AwsEmulator) -> None:
    """botocore's organizations model: ListParents answers ChildNotFoundException (moto: AccountNotFound...)."""
    org = emu.client("organizations", NO_RETRY)
    assert "ChildNotFoundException" in [
        shape.name for shape in org.meta.service_model.operation_model("ListParents").error_shapes
    ]
    with pytest.raises(ClientError) as exc:  # AWS checks for the organization first
        org.list_parents(ChildId=ACCOUNT_A)
    assert error_code(exc) == "AWSOrganizationsNotInUseException"

    org.create_organization(FeatureSet="ALL")
    root = org.list_roots()["Roots"][0]["Id"]
    member = org.create_account(Email="member@example.com", AccountName="member")["CreateAccountStatus"][
        "AccountId"
    ]
    assert org.list_parents(ChildId=member)["Parents"] == [{"Id": root, "Type": "ROOT"}]

    for stranger in (ACCOUNT_A, "ou-abcd-12345678"):  # an account and an OU that are not in the organization
        with pytest.raises(org.exceptions.ChildNotFoundException) as exc:
            org.list_parents(ChildId=stranger)
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert exc.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == (
            "ChildNotFoundException"
        )
        assert "ChildId" in exc.value.response["Error"]["Message"]

    with pytest.raises(org.exceptions.InvalidInputException) as exc:  # neither an account id nor an OU id
        org.list_parents(ChildId="not-a-child")
    assert exc.value.response["Reason"] == "INVALID_PATTERN"


# --------------------------------------------------------------------------- lifecycle of the emulator itself


def test_reset_wipes_everything(emu: AwsEmulator, ic: IdentityCenter) -> None:
    created = ic.sso.create_account_assignment(**ic.assignment())["AccountAssignmentCreationStatus"]
    emu.faults.inject("ListInstances", "ThrottlingException", times=5)
    emu.faults.delay("ListPermissionSets", 5)
    emu.identity_center.hold_creations(polls=None)
    emu.identity_center.fail_next_creations(times=3)
    assert emu.identity_center.max_creations_in_flight == 1

    emu.reset()

    assert emu.faults.remaining == 0
    assert emu.calls.operations() == []
    assert (emu.identity_center.creations_in_flight, emu.identity_center.max_creations_in_flight) == (0, 0)
    instances = ic.sso.list_instances()["Instances"]  # no throttling left
    assert instances[0]["InstanceArn"] != ic.instance_arn  # moto made a fresh instance
    assert ic.sso.list_permission_sets(InstanceArn=instances[0]["InstanceArn"])["PermissionSets"] == []
    with pytest.raises(ClientError) as exc:
        ic.creation(created["RequestId"])
    assert error_code(exc) == "ResourceNotFoundException"

    fresh = _fresh(emu)  # defaults are back: one IN_PROGRESS, then SUCCEEDED, no pending failure
    rid = fresh.sso.create_account_assignment(**fresh.assignment())["AccountAssignmentCreationStatus"][
        "RequestId"
    ]
    assert [fresh.creation(rid)["Status"] for _ in range(2)] == ["IN_PROGRESS", "SUCCEEDED"]
    assert emu.calls.operations()[:2] == ["ListInstances", "ListPermissionSets"]


def test_environment_and_airflow_connection(emu: AwsEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    connection = json.loads(emu.airflow_connection_json())
    assert connection == {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": emu.endpoint_url, "region_name": "us-east-1"},
    }
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in emu.environment().items():
        monkeypatch.setenv(name, value)
    plain = boto3.session.Session().client("sso-admin")  # code that builds its own client
    assert plain.list_instances()["Instances"][0]["OwnerAccountId"] == emu.account_id
    assert emu.calls.operations() == ["ListInstances"]


def test_start_is_idempotent(running: AwsEmulator) -> None:
    url = running.endpoint_url
    assert running.start() is running and running.endpoint_url == url


def test_a_busy_port_raises_instead_of_exiting(running: AwsEmulator) -> None:
    """werkzeug exits the process when the port is taken; the emulator is a library and raises OSError."""
    port = int(running.endpoint_url.rsplit(":", 1)[1])
    with pytest.raises(OSError, match="is in use"):
        AwsEmulator(port=port).start()


def test_command_line_serves_in_the_foreground() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "elevation.devkit.emulator", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        endpoint = proc.stdout.readline().strip()
        assert endpoint.startswith("http://127.0.0.1:")
        client = boto3.session.Session().client(
            "sso-admin",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        assert len(client.list_instances()["Instances"]) == 1
        printed = [proc.stdout.readline().strip() for _ in range(5)]
        assert printed[-1].startswith(f"# control endpoint: {endpoint}/_emulator")
        assert EmulatorControl(endpoint).calls().operations == ["ListInstances"]  # reachable from this process
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
