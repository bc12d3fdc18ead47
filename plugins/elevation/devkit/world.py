"""A realistic demo organization in the emulator, and the policy that goes with it.

Used by the demo and by the tests alike (one world, built the same way): an AWS Organization with production,
staging and sandbox OUs, Identity Center users and groups, permission sets, standing assignments, and a
configuration file whose policy names them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from elevation.devkit.emulator import AwsEmulator

PEOPLE = {
    # login: (given, family, email, groups)
    "alice": ("Alice", "Anders", "alice@example.com", ["developers", "oncall"]),
    "bob": ("Bob", "Berg", "bob@example.com", ["platform"]),
    "carol": ("Carol", "Chen", "carol@example.com", ["platform", "security"]),
    "dave": ("Dave", "Dietrich", "dave@example.com", ["oncall"]),
    "erin": ("Erin", "Endo", "erin@example.com", ["developers"]),
    "hanako": ("花子", "山田", "hanako@example.co.jp", ["developers"]),
}
#: People the policy knows who have no Identity Center user (a typo, or someone who left).
GHOSTS = {"frank": "frank@example.com"}
PERMISSION_SETS = {"AdministratorAccess": "PT1H", "PowerUserAccess": "PT4H", "ReadOnlyAccess": "PT8H"}
ACCOUNTS = {
    "media-prod": "Production",
    "ec-prod": "Production",
    "media-stg": "Staging",
    "sandbox-1": "Sandbox",
}


@dataclass
class World:
    emulator: AwsEmulator
    management_account_id: str
    instance_arn: str
    identity_store_id: str
    root_id: str
    ous: dict[str, str] = field(default_factory=dict)  # name -> OU id
    accounts: dict[str, str] = field(default_factory=dict)  # name -> account id
    users: dict[str, str] = field(default_factory=dict)  # user name -> user id
    groups: dict[str, str] = field(default_factory=dict)  # display name -> group id
    permission_sets: dict[str, str] = field(default_factory=dict)  # name -> ARN

    def assignments(self, account: str, permission_set: str) -> list[tuple[str, str]]:
        """(principal type, principal id) of every assignment, duplicates included, as Identity Center lists them."""
        sso = self.emulator.client("sso-admin")
        found: list[tuple[str, str]] = []
        for page in sso.get_paginator("list_account_assignments").paginate(
            InstanceArn=self.instance_arn,
            AccountId=self.accounts.get(account, account),
            PermissionSetArn=self.permission_sets[permission_set],
        ):
            found += [(item["PrincipalType"], item["PrincipalId"]) for item in page["AccountAssignments"]]
        return found

    def has_assignment(self, user: str, account: str, permission_set: str) -> bool:
        return ("USER", self.users[user]) in self.assignments(account, permission_set)


def build_world(emulator: AwsEmulator) -> World:
    """Create the organization, directory and permission sets in a freshly reset emulator."""
    org = emulator.client("organizations")
    management = org.create_organization(FeatureSet="ALL")["Organization"]["MasterAccountId"]
    root_id = org.list_roots()["Roots"][0]["Id"]
    sso = emulator.client("sso-admin")
    instance = sso.list_instances()["Instances"][0]
    world = World(
        emulator=emulator,
        management_account_id=management,
        instance_arn=instance["InstanceArn"],
        identity_store_id=instance["IdentityStoreId"],
        root_id=root_id,
    )
    for ou_name in sorted(set(ACCOUNTS.values())):
        world.ous[ou_name] = org.create_organizational_unit(ParentId=root_id, Name=ou_name)[
            "OrganizationalUnit"
        ]["Id"]
    for account_name, ou_name in ACCOUNTS.items():
        status = org.create_account(AccountName=account_name, Email=f"aws+{account_name}@example.com")
        account_id = status["CreateAccountStatus"]["AccountId"]
        org.move_account(AccountId=account_id, SourceParentId=root_id, DestinationParentId=world.ous[ou_name])
        world.accounts[account_name] = account_id

    store = emulator.client("identitystore")
    store_id = world.identity_store_id
    group_names = sorted({group for *_, groups in PEOPLE.values() for group in groups})
    for group in group_names:
        world.groups[group] = store.create_group(IdentityStoreId=store_id, DisplayName=group)["GroupId"]
    for login, (given, family, email, groups) in PEOPLE.items():
        user_id = store.create_user(
            IdentityStoreId=store_id,
            UserName=login,
            DisplayName=f"{given} {family}",
            Name={"GivenName": given, "FamilyName": family},
            Emails=[{"Value": email, "Type": "work", "Primary": True}],
        )["UserId"]
        world.users[login] = user_id
        for group in groups:
            store.create_group_membership(
                IdentityStoreId=store_id, GroupId=world.groups[group], MemberId={"UserId": user_id}
            )

    for name, duration in PERMISSION_SETS.items():
        arn = sso.create_permission_set(InstanceArn=world.instance_arn, Name=name, SessionDuration=duration)[
            "PermissionSet"
        ]["PermissionSetArn"]
        sso.attach_managed_policy_to_permission_set(
            InstanceArn=world.instance_arn,
            PermissionSetArn=arn,
            ManagedPolicyArn=f"arn:aws:iam::aws:policy/{name}",
        )
        world.permission_sets[name] = arn

    for principal_type, principal, permission_set, account in standing_assignments():
        principal_id = world.users[principal] if principal_type == "USER" else world.groups[principal]
        created = sso.create_account_assignment(
            InstanceArn=world.instance_arn,
            TargetId=world.accounts[account],
            TargetType="AWS_ACCOUNT",
            PermissionSetArn=world.permission_sets[permission_set],
            PrincipalType=principal_type,
            PrincipalId=principal_id,
        )["AccountAssignmentCreationStatus"]
        _wait_for_creation(sso, world.instance_arn, created["RequestId"])
    return world


def _wait_for_creation(sso: Any, instance_arn: str, request_id: str) -> None:
    """Standing assignments are set up the way an administrator would: created, then confirmed."""
    for _ in range(50):
        status = sso.describe_account_assignment_creation_status(
            InstanceArn=instance_arn, AccountAssignmentCreationRequestId=request_id
        )["AccountAssignmentCreationStatus"]
        if status.get("Status") == "SUCCEEDED":
            return
    raise RuntimeError(f"standing assignment {request_id} was not confirmed")


def standing_assignments() -> list[tuple[str, str, str, str]]:
    """(principal type, name, permission set, account name): baseline access that exists outside the system."""
    return [
        ("GROUP", "platform", "ReadOnlyAccess", "media-prod"),
        ("GROUP", "platform", "ReadOnlyAccess", "ec-prod"),
        ("USER", "alice", "ReadOnlyAccess", "media-stg"),
        ("USER", "dave", "PowerUserAccess", "ec-prod"),
    ]


def policy_document(world: World, **overrides: Any) -> dict[str, Any]:
    """The demo policy, as the `policy` section of a configuration file."""
    ous = world.ous
    people = [
        {"login": login, "email": email, "identity_center_user": login}
        for login, (_, _, email, _) in PEOPLE.items()
    ] + [{"login": login, "email": email, "identity_center_user": login} for login, email in GHOSTS.items()]
    policy: dict[str, Any] = {
        # The emulator has no rate limit: pace loosely so tests and the demo stay quick (AWS itself: 20/s).
        "identity_center": {"instance_arn": world.instance_arn, "identity_store_id": world.identity_store_id,
                            "max_calls_per_second": 500},
        "management_account_id": world.management_account_id,
        "people": people,
        "eligibility": [
            {
                "name": "developers-non-prod",
                "principals": {"groups": ["developers"], "users": ["frank"]},
                "ous": [ous["Staging"], ous["Sandbox"]],
                "permission_sets": ["PowerUserAccess", "AdministratorAccess"],
                "max_duration": "8h",
            },
            {
                "name": "operators-prod",
                "principals": {"groups": ["platform", "oncall"], "users": ["erin"]},
                "ous": [ous["Production"]],
                "permission_sets": ["AdministratorAccess", "PowerUserAccess"],
                "max_duration": "4h",
            },
        ],
        "auto_approval": [
            {
                "name": "oncall-break-glass",
                "principals": {"groups": ["oncall"]},
                "ous": [ous["Production"]],
                "permission_sets": ["AdministratorAccess"],
                "max_duration": "2h",
            }
        ],
        "approvers": [
            {"ous": [ous["Production"]], "approvers": ["bob", "carol"]},
            {"ous": [ous["Staging"], ous["Sandbox"]], "approvers": ["bob"]},
        ],
        "standing_assignments": [
            {
                ("user" if kind == "USER" else "group"): name,
                "permission_set": ps,
                "account": world.accounts[account],
            }
            for kind, name, ps, account in standing_assignments()
        ],
        "limits": {"max_duration": "12h", "request_expiry": "24h"},
        "grants": {"status_poll_initial": "0.05s", "status_poll_max": "0.5s", "status_wait_bound": "20s"},
        "revocation": {"overdue_margin": "10m"},
    }
    policy.update(overrides)
    return policy


#: The trail bucket of the emulated organization (the demo writes its sessions' activity there).
TRAIL_BUCKET = "org-trail-logs"


def nightly_sections(folder: Path) -> dict[str, Any]:
    """`extract` and `audit` sections that read the emulator's trail bucket and write under `folder`."""
    return {
        "extract": {"source": "s3", "s3_bucket": TRAIL_BUCKET, "s3_conn_id": "aws_default",
                    "output_location": str(folder / "cloudtrail")},
        "audit": {"reports_location": str(folder / "reports")},
    }


def write_config(world: World, path: Path, **sections: Any) -> Path:
    """Write a configuration file for this world; `sections` replace or add top-level sections."""
    document: dict[str, Any] = {
        "connections": {"aws": "aws_default", "database": "elevation_db"},
        "policy": policy_document(world),
    }
    document.update(sections)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path
