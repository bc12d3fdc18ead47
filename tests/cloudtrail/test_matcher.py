"""Matching records to sessions: by the SSO role, the user and the audit window, never by the receiving account."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from elevation.cloudtrail.matcher import (
    SessionMatcher,
    permission_set_of_role,
    principal_of,
)
from elevation.cloudtrail.sessions import SessionIdentity
from elevation.devkit.trail_events import assume_role_event, make_event, restamp, role_identity, sso_identity

T0 = datetime(2024, 8, 1, 10, tzinfo=UTC)
HOUR = timedelta(hours=1)
PROD = "111111111111"


def session(
    user: str = "alice@example.com",
    permission_set: str = "AdministratorAccess",
    account: str = PROD,
    session_id: str = "s1",
    *,
    start: datetime = T0,
    end: datetime = T0 + HOUR,
    duration: timedelta = HOUR,
    users: tuple[str, ...] | None = None,
) -> SessionIdentity:
    return SessionIdentity(session_id, account, permission_set, users or (user,), start, end, end, duration)


def event_by(
    identity: dict[str, Any], moment: datetime, event_id: str = "e1", **kwargs: Any
) -> dict[str, Any]:
    return make_event(
        identity,
        "CreateUser",
        "iam.amazonaws.com",
        moment,
        recipient_account=PROD,
        event_id=event_id,
        **kwargs,
    )


def sso_records(real_records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in real_records if "AWSReservedSSO_" in str(r.get("userIdentity"))]


@pytest.mark.parametrize(
    ("role", "permission_set"),
    [
        ("AWSReservedSSO_DevAdmin_635426549a280cc6", "DevAdmin"),
        ("AWSReservedSSO_developer_admin_asdf", "developer_admin"),
        ("AWSReservedSSO_AdminReadOnly_0123456789abcdef", "AdminReadOnly"),
        ("AWSReservedSSO_Admin", "Admin"),
        ("MyRole_Admin_abc", None),
        ("AWSReservedSSOrandoml3I7nL6f7BmB@gmail.com", None),
        (None, None),
    ],
)
def test_the_permission_set_is_everything_between_the_prefix_and_the_hash(
    role: str | None, permission_set: str | None
) -> None:
    assert permission_set_of_role(role) == permission_set


def test_real_identity_center_records_are_matched_to_their_session(
    real_records: list[dict[str, Any]],
) -> None:
    """Every real AWSReservedSSO record of the Panther fixtures (role paths with and without a region) is matched
    by a session built from what an operator knows: account, permission set, user name, time."""
    records = [
        r
        for r in sso_records(real_records)
        if str(r["userIdentity"].get("accountId", "")).isdigit()
        and len(r["userIdentity"]["accountId"]) == 12
        and r["userIdentity"].get("type") == "AssumedRole"
    ]
    issuer_arns = {
        r["userIdentity"].get("sessionContext", {}).get("sessionIssuer", {}).get("arn", "") for r in records
    }
    assert len(records) >= 10
    assert any("/sso.amazonaws.com/us-west-2/" in arn for arn in issuer_arns)
    assert any(arn.endswith("/sso.amazonaws.com/AWSReservedSSO_DevAdmin_abc123") for arn in issuer_arns)
    for index, record in enumerate(records):
        principal = principal_of(record)
        assert principal is not None
        when = datetime.fromisoformat(record["eventTime"].replace(" ", "T").replace("Z", "+00:00"))
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        mine = session(
            principal.session_name or "",
            permission_set_of_role(principal.role_name) or "",
            principal.account_id or "",
            f"s{index}",
            start=when - HOUR,
            end=when,
        )
        other_user = session(
            "someone.else",
            mine.permission_set_name,
            mine.account_id,
            "x",
            start=mine.granted_at,
            end=mine.planned_end,
        )
        assert [m.session_id for m in SessionMatcher([mine, other_user]).match(record)] == [f"s{index}"]


def test_developer_does_not_match_developer_admin(real_records: list[dict[str, Any]]) -> None:
    (record,) = [
        r for r in sso_records(real_records) if "developer_admin" in r["userIdentity"].get("arn", "")
    ]
    clash = copy.deepcopy(record)
    for path in (("arn",),):
        clash["userIdentity"][path[0]] = clash["userIdentity"][path[0]]
    when = datetime(2022, 3, 29, 17, tzinfo=UTC)
    clash["eventTime"] = "2022-03-29T17:16:36Z"
    clash["userIdentity"]["accountId"] = PROD
    clash["userIdentity"]["arn"] = (
        f"arn:aws:sts::{PROD}:assumed-role/AWSReservedSSO_developer_admin_asdf/foo@bar.com"
    )
    developer = session("foo@bar.com", "developer", start=when, end=when + HOUR)
    developer_admin = session("foo@bar.com", "developer_admin", session_id="s2", start=when, end=when + HOUR)
    assert SessionMatcher([developer]).match(clash) == []
    assert [m.session_id for m in SessionMatcher([developer, developer_admin]).match(clash)] == ["s2"]


def test_admin_does_not_match_admin_read_only_and_users_do_not_match_by_prefix() -> None:
    matcher = SessionMatcher([session("bob", "Admin")])
    assert matcher.match(event_by(sso_identity(PROD, "AdminReadOnly", "bob"), T0 + HOUR / 2)) == []
    assert matcher.match(event_by(sso_identity(PROD, "Admin", "bob.smith"), T0 + HOUR / 2)) == []
    assert matcher.match(event_by(sso_identity(PROD, "Admin", "bo"), T0 + HOUR / 2)) == []
    assert len(matcher.match(event_by(sso_identity(PROD, "Admin", "bob"), T0 + HOUR / 2))) == 1


def test_the_account_of_the_role_counts_not_the_account_that_received_the_call() -> None:
    matcher = SessionMatcher([session()])
    elsewhere = event_by(sso_identity(PROD, "AdministratorAccess", "alice@example.com"), T0 + HOUR / 2)
    elsewhere["recipientAccountId"] = "999999999999"
    assert len(matcher.match(elsewhere)) == 1
    other_account = event_by(sso_identity("222222222222", "AdministratorAccess", "alice@example.com"), T0)
    assert matcher.match(other_account) == []


@pytest.mark.parametrize(
    ("offset", "matched"),
    [
        (-timedelta(seconds=1), False),
        (timedelta(0), True),
        (HOUR, True),
        (HOUR * 1.99, True),
        (HOUR * 2.01, False),
    ],
    ids=["before-grant", "at-grant", "at-revoke", "credential-tail", "after-tail"],
)
def test_the_audit_window_covers_the_credentials_tail_after_the_revoke(
    offset: timedelta, matched: bool
) -> None:
    matcher = SessionMatcher([session(end=T0 + HOUR, duration=HOUR)])
    record = event_by(sso_identity(PROD, "AdministratorAccess", "alice@example.com"), T0 + offset)
    assert bool(matcher.match(record)) is matched


def test_overlapping_sessions_of_a_user_each_get_the_event_and_group_members_all_match() -> None:
    first = session(session_id="a", start=T0, end=T0 + HOUR)
    second = session(session_id="b", start=T0 + HOUR / 2, end=T0 + 2 * HOUR)
    group = session(session_id="g", users=("carol", "bob"), start=T0, end=T0 + HOUR)
    matcher = SessionMatcher([first, second, group])
    shared = event_by(
        sso_identity(PROD, "AdministratorAccess", "alice@example.com"), T0 + 45 * timedelta(minutes=1)
    )
    assert sorted(m.session_id for m in matcher.match(shared)) == ["a", "b"]
    for user in ("bob", "carol"):
        assert [
            m.session_id for m in matcher.match(event_by(sso_identity(PROD, "AdministratorAccess", user), T0))
        ] == ["g"]


def test_identity_variants() -> None:
    matcher = SessionMatcher([session()])
    full = sso_identity(PROD, "AdministratorAccess", "alice@example.com")
    no_arn = copy.deepcopy(full)
    del no_arn["arn"]
    assert len(matcher.match(event_by(no_arn, T0))) == 1, "sessionIssuer + principalId suffice"
    no_issuer_user_name = copy.deepcopy(full)
    del no_issuer_user_name["sessionContext"]["sessionIssuer"]["userName"]
    del no_issuer_user_name["arn"]
    assert len(matcher.match(event_by(no_issuer_user_name, T0))) == 1, (
        "the issuer ARN's last component is the role"
    )
    service = {"type": "AWSService", "invokedBy": "cloudformation.amazonaws.com"}
    assert matcher.match(event_by(service, T0)) == []
    assert matcher.match(event_by(None, T0)) == []
    forwarded = copy.deepcopy(full) | {"invokedBy": "cloudformation.amazonaws.com"}
    assert len(matcher.match(event_by(forwarded, T0))) == 1, "calls a service made on the session's behalf"
    cross_account = {"type": "AWSAccount", "principalId": full["principalId"], "accountId": PROD}
    assert len(matcher.match(event_by(cross_account, T0, event_id="x"))) == 1, (
        "role id learnt from earlier events"
    )


def test_role_id_records_seen_before_the_role_id_was_learnt_are_read_again() -> None:
    matcher = SessionMatcher([session()])
    full = sso_identity(PROD, "AdministratorAccess", "alice@example.com")
    cross_account = {"type": "AWSAccount", "principalId": full["principalId"], "accountId": PROD}
    assert matcher.match(event_by(cross_account, T0), locator="file-a") == []
    matcher.match(event_by(full, T0), locator="file-b")
    assert matcher.locators_to_reread() == {"file-a"}
    assert len(matcher.match(event_by(cross_account, T0), locator="file-a")) == 1


def test_assumed_role_credentials_are_followed_one_hop_until_they_expire() -> None:
    matcher = SessionMatcher([session()])
    caller = sso_identity(PROD, "AdministratorAccess", "alice@example.com")
    assume = assume_role_event(
        caller,
        T0 + timedelta(minutes=5),
        target_account="333333333333",
        role="deploy",
        session_name="alice-deploy",
        access_key_id="ASIAHOP1",
        expiration=T0 + HOUR,
    )
    chained = role_identity("333333333333", "deploy", "alice-deploy", "ASIAHOP1")
    assert [m.via for m in matcher.match(assume)] == ["direct"]
    (derived,) = matcher.derived
    assert (derived.access_key_id, derived.expires_at) == ("ASIAHOP1", T0 + HOUR)
    used = event_by(chained, T0 + timedelta(minutes=30), event_id="used")
    assert [m.via for m in matcher.match(used)] == [
        "assumed-role:arn:aws:sts::333333333333:assumed-role/deploy/alice-deploy"
    ]
    assert matcher.match(event_by(chained, T0 + HOUR + timedelta(seconds=1))) == [], "expired"
    stranger = role_identity("333333333333", "deploy", "alice-deploy", "ASIAOTHER")
    assert len(matcher.match(event_by(stranger, T0 + timedelta(minutes=30)))) == 1, (
        "same ARN, inside lifetime"
    )
    assert matcher.match(event_by(stranger, T0 + 2 * HOUR)) == []
    # A second hop is not followed with follow_hops=1.
    second = assume_role_event(
        chained,
        T0 + timedelta(minutes=10),
        target_account="444444444444",
        role="x",
        session_name="hop2",
        access_key_id="ASIAHOP2",
    )
    assert len(matcher.match(second)) == 1
    assert [d.access_key_id for d in matcher.derived] == ["ASIAHOP1"]
    deeper = SessionMatcher([session()], follow_hops=2)
    deeper.match(assume)
    deeper.match(second)
    assert [d.access_key_id for d in deeper.derived] == ["ASIAHOP1", "ASIAHOP2"]


def test_a_failed_assume_role_gives_no_credentials() -> None:
    matcher = SessionMatcher([session()])
    caller = sso_identity(PROD, "AdministratorAccess", "alice@example.com")
    denied = assume_role_event(
        caller, T0, target_account="333333333333", role="r", session_name="s", access_key_id="ASIADENIED"
    ) | {"errorCode": "AccessDenied"}
    assert len(matcher.match(denied)) == 1
    assert matcher.derived == []


def test_chained_records_seen_before_their_assume_role_are_read_again() -> None:
    matcher = SessionMatcher([session()])
    chained = role_identity("333333333333", "deploy", "alice-deploy", "ASIAHOP1")
    assert matcher.match(event_by(chained, T0 + timedelta(minutes=30)), locator="s3://b/early.json.gz") == []
    matcher.match(
        event_by(role_identity("333333333333", "other", "x", "ASIAX"), T0), locator="s3://b/unrelated"
    )
    caller = sso_identity(PROD, "AdministratorAccess", "alice@example.com")
    matcher.match(
        assume_role_event(
            caller,
            T0 + timedelta(minutes=5),
            target_account="333333333333",
            role="deploy",
            session_name="alice-deploy",
            access_key_id="ASIAHOP1",
        ),
        locator="s3://b/late",
    )
    assert matcher.locators_to_reread() == {"s3://b/early.json.gz"}
    assert matcher.locators_to_reread() == set()


def test_minted_credentials_are_listed_for_the_audit(real_records: list[dict[str, Any]]) -> None:
    identity = sso_identity(PROD, "AdministratorAccess", "alice@example.com")
    minting = [
        r
        for r in real_records
        if r.get("eventName")
        in ("CreateAccessKey", "CreateLoginProfile", "UpdateLoginProfile", "GetFederationToken")
    ]
    assert {r["eventName"] for r in minting} >= {
        "CreateAccessKey",
        "CreateLoginProfile",
        "GetFederationToken",
    }
    matcher = SessionMatcher([session()])
    for index, record in enumerate(minting):
        assert matcher.match(restamp(record, identity, T0 + timedelta(minutes=index % 50), f"m{index}"))
    kinds = {(m.event_name, m.kind) for m in matcher.minted}
    assert ("CreateAccessKey", "access key") in kinds and ("GetFederationToken", "federation token") in kinds
    assert ("CreateLoginProfile", "console password") in kinds
    assert len(matcher.minted) == len(minting)
    keys = [m for m in matcher.minted if m.kind == "access key" and m.succeeded]
    assert keys and all(m.detail for m in keys), "the new access key id (or user) is reported"


def test_real_records_restamped_with_a_session_identity_all_match_and_the_originals_do_not(
    real_records: list[dict[str, Any]],
) -> None:
    identity = sso_identity(PROD, "AdministratorAccess", "alice@example.com", region_in_path="eu-central-1")
    matcher = SessionMatcher([session(end=T0 + 10 * HOUR)])
    originals = [r for r in real_records if r.get("eventTime")]
    restamped = [restamp(r, identity, T0 + timedelta(seconds=i), f"r{i}") for i, r in enumerate(originals)]
    assert all(matcher.match(record) for record in restamped)
    assert not any(SessionMatcher([session(end=T0 + 10 * HOUR)]).match(record) for record in originals)
