"""The emulator's controls are reachable over HTTP, from another process, under /_emulator on its own port."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from elevation.devkit.emulator import AwsEmulator, EmulatorControl, EmulatorControlError

NO_RETRY = Config(retries={"mode": "standard", "total_max_attempts": 1})
ACCOUNT_A = "111111111111"
ACCOUNT_B = "222222222222"


@pytest.fixture(scope="module")
def running() -> Iterator[AwsEmulator]:
    with AwsEmulator() as emulator:
        yield emulator


@pytest.fixture
def emu(running: AwsEmulator) -> AwsEmulator:
    running.reset()
    return running


@pytest.fixture
def control(emu: AwsEmulator) -> EmulatorControl:
    return EmulatorControl(emu.endpoint_url)


@dataclass
class Grants:
    """Create and describe assignments with a plain boto3 client, as the code under test would."""

    sso: Any
    instance_arn: str
    permission_set_arn: str

    def assignment(self, account: str = ACCOUNT_A, principal: str = "u-alice") -> dict[str, str]:
        return {
            "InstanceArn": self.instance_arn,
            "TargetId": account,
            "TargetType": "AWS_ACCOUNT",
            "PermissionSetArn": self.permission_set_arn,
            "PrincipalType": "USER",
            "PrincipalId": principal,
        }

    def create(self, account: str = ACCOUNT_A, principal: str = "u-alice") -> str:
        return self.sso.create_account_assignment(**self.assignment(account, principal))[
            "AccountAssignmentCreationStatus"
        ]["RequestId"]

    def delete(self, account: str = ACCOUNT_A, principal: str = "u-alice") -> str:
        return self.sso.delete_account_assignment(**self.assignment(account, principal))[
            "AccountAssignmentDeletionStatus"
        ]["RequestId"]

    def creation(self, request_id: str) -> dict[str, Any]:
        return self.sso.describe_account_assignment_creation_status(
            InstanceArn=self.instance_arn, AccountAssignmentCreationRequestId=request_id
        )["AccountAssignmentCreationStatus"]

    def deletion(self, request_id: str) -> dict[str, Any]:
        return self.sso.describe_account_assignment_deletion_status(
            InstanceArn=self.instance_arn, AccountAssignmentDeletionRequestId=request_id
        )["AccountAssignmentDeletionStatus"]


@pytest.fixture
def grants(emu: AwsEmulator) -> Grants:
    sso = emu.client("sso-admin", NO_RETRY)
    instance_arn = sso.list_instances()["Instances"][0]["InstanceArn"]
    permission_set_arn = sso.create_permission_set(Name="Admin", InstanceArn=instance_arn)["PermissionSet"][
        "PermissionSetArn"
    ]
    return Grants(sso, instance_arn, permission_set_arn)


def raw(emu: AwsEmulator, method: str, route: str, body: bytes | None = None) -> tuple[int, dict[str, Any]]:
    """A control request without the client, to see the status code and the JSON the endpoint answers."""
    request = urllib.request.Request(emu.control_url + route, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# --------------------------------------------------------------------------- Identity Center controls


def test_a_held_creation_stays_in_progress_until_released(control: EmulatorControl, grants: Grants) -> None:
    control.hold_creations(polls=None)
    held = grants.create()
    assert {grants.creation(held)["Status"] for _ in range(5)} == {"IN_PROGRESS"}
    assert control.status()["creations_in_flight"] == 1

    assert control.release_creations() == 1
    assert grants.creation(held)["Status"] == "SUCCEEDED"
    assert control.status()["creations_in_flight"] == 0
    assert control.release_creations() == 0  # nothing left to release

    # The hold itself stays for new creations until it is changed.
    later = grants.create(ACCOUNT_B)
    assert {grants.creation(later)["Status"] for _ in range(3)} == {"IN_PROGRESS"}
    assert control.release_creations(polls=2) == 1
    assert [grants.creation(later)["Status"] for _ in range(3)] == ["IN_PROGRESS", "IN_PROGRESS", "SUCCEEDED"]


def test_failed_and_statusless_creations(control: EmulatorControl, grants: Grants) -> None:
    control.hold_creations(polls=0)
    control.fail_next_creations(reason="Received a 404 status error: Not supported policy x")
    failed = grants.creation(grants.create())
    assert (failed["Status"], failed["FailureReason"]) == (
        "FAILED",
        "Received a 404 status error: Not supported policy x",
    )
    control.omit_status_next_creations(times=1)
    assert "Status" not in grants.creation(grants.create(ACCOUNT_B))
    assert grants.creation(grants.create(ACCOUNT_A, "u-bob"))["Status"] == "SUCCEEDED"  # both were used up


def test_deletion_controls(control: EmulatorControl, grants: Grants) -> None:
    control.hold_creations(polls=0)
    grants.creation(grants.create())
    control.fail_next_deletions(reason="boom", times=1)
    control.hold_deletions(polls=0)
    failed = grants.deletion(grants.delete())
    assert (failed["Status"], failed["FailureReason"]) == ("FAILED", "boom")
    assert len(control.assignments()) == 1  # a failed deletion leaves the assignment

    control.hold_deletions(polls=None)
    held = grants.delete()
    assert grants.deletion(held)["Status"] == "IN_PROGRESS"
    assert control.release_deletions() == 1
    assert grants.deletion(held)["Status"] == "SUCCEEDED"
    assert control.assignments() == []


# --------------------------------------------------------------------------- wire faults


def test_injected_errors_reach_the_wire_and_are_consumed(
    emu: AwsEmulator, control: EmulatorControl, grants: Grants
) -> None:
    control.inject("CreateAccountAssignment", "ThrottlingException", message="Rate exceeded", times=2)
    control.inject("ListPermissionSets", "ServiceUnavailable", http_status=503)
    assert control.status()["faults_remaining"] == 3
    for _ in range(2):
        with pytest.raises(ClientError) as exc:
            grants.create()
        assert exc.value.response["Error"] == {"Code": "ThrottlingException", "Message": "Rate exceeded"}
    with pytest.raises(ClientError) as exc:
        grants.sso.list_permission_sets(InstanceArn=grants.instance_arn)
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert control.status()["faults_remaining"] == 0
    grants.create()
    assert len(control.assignments()) == 1

    control.inject("DeleteAccountAssignment", "ConflictException", times=5)
    control.clear_faults()
    grants.delete()  # nothing injected is left
    assert control.assignments() == []


def test_an_injected_delay_holds_the_answer_back(control: EmulatorControl, grants: Grants) -> None:
    control.delay("ListPermissionSets", 0.4)
    started = time.monotonic()
    grants.sso.list_permission_sets(InstanceArn=grants.instance_arn)
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    grants.sso.list_permission_sets(InstanceArn=grants.instance_arn)
    assert time.monotonic() - started < 0.4  # times=1: only the first call waited


# --------------------------------------------------------------------------- reads


def test_calls_are_read_in_order_from_an_index(emu: AwsEmulator, control: EmulatorControl) -> None:
    sts = emu.client("sts", NO_RETRY)
    sso = emu.client("sso-admin", NO_RETRY)
    sts.get_caller_identity()
    sso.list_instances()
    first = control.calls()
    assert (first.since, first.next, first.operations) == (0, 2, ["GetCallerIdentity", "ListInstances"])

    sso.list_instances()
    later = control.calls(since=first.next)
    assert (later.operations, later.next) == (["ListInstances"], 3)
    assert control.calls().counts == {"GetCallerIdentity": 1, "ListInstances": 2}
    assert raw(emu, "GET", "/calls?since=1")[1]["counts"] == {"ListInstances": 2}
    assert control.calls(since=99).operations == []
    # Control requests are not AWS calls: reading the log never adds to it.
    assert control.calls().next == 3 and control.status()["calls_recorded"] == 3

    control.clear_calls()
    assert control.calls().operations == []


def test_wait_for_call_returns_once_the_operation_is_seen(emu: AwsEmulator, control: EmulatorControl) -> None:
    with pytest.raises(TimeoutError):
        control.wait_for_call("ListInstances", timeout=0.2)
    emu.client("sso-admin", NO_RETRY).list_instances()
    assert control.wait_for_call("ListInstances", timeout=2).count("ListInstances") == 1
    with pytest.raises(TimeoutError):  # only calls at or after `since` count
        control.wait_for_call("ListInstances", since=1, timeout=0.2)


def test_assignments_are_those_that_exist_now(emu: AwsEmulator, control: EmulatorControl, grants: Grants) -> None:
    org = emu.client("organizations", NO_RETRY)
    org.create_organization(FeatureSet="ALL")
    member = org.create_account(Email="member@example.com", AccountName="member")["CreateAccountStatus"][
        "AccountId"
    ]
    sso = grants.sso
    grants.create(ACCOUNT_A)  # an account outside the organization is found too
    grants.create(ACCOUNT_A)  # a duplicate stays visible, as the emulator keeps both copies
    grants.create(member, "u-bob")
    expected_a = {
        "InstanceArn": grants.instance_arn,
        "AccountId": ACCOUNT_A,
        "PermissionSetArn": grants.permission_set_arn,
        "PrincipalType": "USER",
        "PrincipalId": "u-alice",
    }
    everything = control.assignments()
    assert sorted(everything, key=json.dumps) == sorted(
        [expected_a, expected_a, {**expected_a, "AccountId": member, "PrincipalId": "u-bob"}], key=json.dumps
    )
    assert control.assignments(PrincipalId="u-bob", AccountId=member) == [
        {**expected_a, "AccountId": member, "PrincipalId": "u-bob"}
    ]
    assert control.assignments(PrincipalId="u-bob", AccountId=ACCOUNT_A) == []
    assert emu.assignments() == everything  # the same read in process

    sso.delete_account_assignment(**grants.assignment(member, "u-bob"))
    assert control.assignments(AccountId=member) == []
    assert "ListAccountAssignments" not in control.calls().operations  # the read is not an AWS call


# --------------------------------------------------------------------------- reset


def test_reset_keeping_aws_state_restores_only_the_controls(control: EmulatorControl, grants: Grants) -> None:
    grants.create()
    control.hold_creations(polls=None)
    control.fail_next_creations(times=3)
    control.inject("ListInstances", "ThrottlingException", times=4)
    control.reset(keep_aws_state=True)

    assert control.status()["faults_remaining"] == 0
    assert len(control.assignments()) == 1 and control.calls().count("CreateAccountAssignment") == 1
    fresh = grants.create(ACCOUNT_B)  # default hold again (one IN_PROGRESS), no pending failure
    assert [grants.creation(fresh)["Status"] for _ in range(2)] == ["IN_PROGRESS", "SUCCEEDED"]

    control.reset()
    assert control.assignments() == []
    assert control.calls().operations == []
    assert control.status()["max_creations_in_flight"] == 0


# --------------------------------------------------------------------------- the endpoint itself


def test_bad_control_requests_are_refused_with_a_reason(emu: AwsEmulator) -> None:
    hold = "/identity-center/hold-creations"
    assert raw(emu, "POST", hold, b'{"poll": 2}') == (400, {"error": "unknown field(s): poll"})
    assert raw(emu, "POST", hold, b'{"polls": "2"}') == (400, {"error": '"polls" must be int or null, not "2"'})
    assert raw(emu, "POST", hold, b'{"polls": -1}') == (400, {"error": "polls must be None or >= 0"})
    assert raw(emu, "POST", hold, b"[1]") == (400, {"error": "the body must be a JSON object"})
    assert raw(emu, "POST", hold, b"{")[0] == 400
    assert raw(emu, "POST", "/faults/errors", b'{"operation": "X"}') == (400, {"error": '"error_code" is required'})
    assert raw(emu, "GET", "/calls?since=x")[0] == 400
    assert raw(emu, "GET", "/assignments?Principal=u-1") == (
        400,
        {"error": "unknown query parameter(s): Principal"},
    )

    status, body = raw(emu, "POST", "/hold-creations")
    assert status == 404 and "POST /_emulator/identity-center/hold-creations" in body["routes"]
    assert raw(emu, "GET", hold) == (405, {"error": "/_emulator/identity-center/hold-creations answers POST"})
    with pytest.raises(EmulatorControlError) as exc:
        EmulatorControl(emu.endpoint_url).inject("ListInstances", "Throttling", times=0)
    assert exc.value.status == 400 and "times must be >= 1" in str(exc.value)
    assert emu.faults.remaining == 0 and emu.calls.operations() == []  # nothing refused took effect


def test_the_index_lists_every_route(emu: AwsEmulator) -> None:
    status, body = raw(emu, "GET", "")
    assert status == 200
    assert "GET /_emulator/calls" in body["routes"] and "POST /_emulator/reset" in body["routes"]
    assert raw(emu, "GET", "/")[1] == body


def test_s3_keys_under_the_prefix_still_reach_s3(emu: AwsEmulator) -> None:
    """Only the first path segment is reserved; a bucket name cannot start with "_", a key can."""
    s3 = emu.client("s3", NO_RETRY)
    s3.create_bucket(Bucket="trail")
    s3.put_object(Bucket="trail", Key="_emulator/status", Body=b"mine")
    assert s3.get_object(Bucket="trail", Key="_emulator/status")["Body"].read() == b"mine"


def test_an_emulator_that_is_not_there_is_a_control_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(EmulatorControlError) as exc:
        EmulatorControl(f"http://127.0.0.1:{port}", timeout=2).status()
    assert exc.value.status is None


def test_the_endpoint_is_bound_to_loopback_only(running: AwsEmulator) -> None:
    assert running.control_url.startswith("http://127.0.0.1:")
    assert running._server is not None and running._server.server_address[0] == "127.0.0.1"
