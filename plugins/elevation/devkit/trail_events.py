"""Realistic CloudTrail activity for the tests, the benchmark and the demo: records as an Identity Center session
writes them, and trail log files laid out in S3 as a trail delivers them. Never imported by production code."""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import random
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from elevation.cloudtrail.s3_trail import account_prefix


def _hex(seed: str, length: int) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:length]


def role_hash(account: str, permission_set: str) -> str:
    """The 16-hex suffix AWS gives the role of a permission set in an account (stable per pair here)."""
    return _hex(f"{account}/{permission_set}", 16)


def sso_identity(
    account: str,
    permission_set: str,
    user: str,
    *,
    access_key_id: str | None = None,
    region_in_path: str | None = "us-east-1",
) -> dict[str, Any]:
    """userIdentity of a call made with an Identity Center session's role credentials."""
    role = f"AWSReservedSSO_{permission_set}_{role_hash(account, permission_set)}"
    role_id = "AROA" + _hex(role + account, 17).upper()
    path = f"aws-reserved/sso.amazonaws.com/{region_in_path + '/' if region_in_path else ''}"
    return {
        "type": "AssumedRole",
        "principalId": f"{role_id}:{user}",
        "arn": f"arn:aws:sts::{account}:assumed-role/{role}/{user}",
        "accountId": account,
        "accessKeyId": access_key_id or "ASIA" + _hex(f"{account}{permission_set}{user}", 16).upper(),
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": role_id,
                "arn": f"arn:aws:iam::{account}:role/{path}{role}",
                "accountId": account,
                "userName": role,
            },
            "webIdFederationData": {},
            "attributes": {"creationDate": "2024-07-31T00:00:00Z", "mfaAuthenticated": "false"},
        },
    }


def role_identity(account: str, role: str, session_name: str, access_key_id: str) -> dict[str, Any]:
    """userIdentity of a call made with an ordinary role's credentials (service roles, chained roles)."""
    role_id = "AROA" + _hex(role + account, 17).upper()
    return {
        "type": "AssumedRole",
        "principalId": f"{role_id}:{session_name}",
        "arn": f"arn:aws:sts::{account}:assumed-role/{role}/{session_name}",
        "accountId": account,
        "accessKeyId": access_key_id,
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": role_id,
                "arn": f"arn:aws:iam::{account}:role/{role}",
                "accountId": account,
                "userName": role,
            },
            "attributes": {"creationDate": "2024-07-31T00:00:00Z", "mfaAuthenticated": "false"},
        },
    }


def cloudtrail_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_event(
    identity: dict[str, Any] | None,
    event_name: str,
    event_source: str,
    moment: datetime,
    *,
    recipient_account: str,
    region: str = "us-east-1",
    event_id: str | None = None,
    request: dict[str, Any] | None = None,
    response: dict[str, Any] | None = None,
    error_code: str | None = None,
    read_only: bool | None = None,
) -> dict[str, Any]:
    """A CloudTrail management event record, shaped like a trail writes it."""
    record: dict[str, Any] = {
        "eventVersion": "1.10",
        "userIdentity": identity,
        "eventTime": cloudtrail_time(moment),
        "eventSource": event_source,
        "eventName": event_name,
        "awsRegion": region,
        "sourceIPAddress": "198.51.100.7",
        "userAgent": "aws-cli/2.17.0 Python/3.11.8",
        "requestParameters": request,
        "responseElements": response,
        "requestID": str(uuid.uuid4()),
        "eventID": event_id or str(uuid.uuid4()),
        "readOnly": read_only
        if read_only is not None
        else event_name.startswith(("Get", "Describe", "List")),
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": recipient_account,
        "eventCategory": "Management",
    }
    if error_code:
        record["errorCode"] = error_code
        record["errorMessage"] = f"{error_code} (generated)"
    if identity is None:
        del record["userIdentity"]
    return record


def restamp(
    record: dict[str, Any], identity: dict[str, Any], moment: datetime, event_id: str | None = None
) -> dict[str, Any]:
    """A real record as if the given identity had made it at `moment` (everything else kept)."""
    copied = copy.deepcopy(record)
    copied["userIdentity"] = copy.deepcopy(identity)
    copied["eventTime"] = cloudtrail_time(moment)
    copied["eventID"] = event_id or str(uuid.uuid4())
    copied["recipientAccountId"] = identity.get("accountId", copied.get("recipientAccountId"))
    return copied


def assume_role_event(
    caller: dict[str, Any],
    moment: datetime,
    *,
    target_account: str,
    role: str,
    session_name: str,
    access_key_id: str,
    expiration: datetime | None = None,
) -> dict[str, Any]:
    """sts AssumeRole with the response CloudTrail records (assumed role ARN, access key, expiration)."""
    expires = expiration or moment + timedelta(hours=1)
    return make_event(
        caller,
        "AssumeRole",
        "sts.amazonaws.com",
        moment,
        recipient_account=target_account,
        request={"roleArn": f"arn:aws:iam::{target_account}:role/{role}", "roleSessionName": session_name},
        response={
            "credentials": {
                "accessKeyId": access_key_id,
                "sessionToken": "IQoJb3JpZ2luX2VjEXAMPLE",
                "expiration": expires.strftime("%b %d, %Y, %I:%M:%S %p"),
            },
            "assumedRoleUser": {
                "assumedRoleId": f"AROA{_hex(role, 17).upper()}:{session_name}",
                "arn": f"arn:aws:sts::{target_account}:assumed-role/{role}/{session_name}",
            },
        },
        read_only=True,
    )


def trail_key(
    prefix: str, org_id: str | None, account: str, region: str, delivered: datetime, salt: str = ""
) -> str:
    """The key a trail gives a log file delivered at `delivered`."""
    root = account_prefix(prefix, org_id, account)
    stamp = delivered.astimezone(UTC)
    return (
        f"{root}{region}/{stamp:%Y/%m/%d}/"
        f"{account}_CloudTrail_{region}_{stamp:%Y%m%dT%H%M}Z_{_hex(salt + stamp.isoformat(), 16)}.json.gz"
    )


def trail_files(
    records: Iterable[dict[str, Any]],
    *,
    prefix: str = "",
    org_id: str | None = None,
    delivery_delay: timedelta = timedelta(minutes=5),
    file_period: timedelta = timedelta(minutes=5),
    max_records: int = 5000,
) -> Iterator[tuple[str, bytes]]:
    """(key, gzip body) of trail files holding `records`, grouped as a trail does: per recipient account, region
    and delivery period (the key's day is the delivery day, so late events land in the next day's folder)."""
    groups: dict[tuple[str, str, datetime], list[dict[str, Any]]] = defaultdict(list)
    period = int(file_period.total_seconds())
    for record in records:
        moment = datetime.fromisoformat(record["eventTime"].replace("Z", "+00:00"))
        delivered = moment + delivery_delay
        slot = datetime.fromtimestamp(int(delivered.timestamp()) // period * period + period, tz=UTC)
        groups[(record["recipientAccountId"], record["awsRegion"], slot)].append(record)
    for (account, region, slot), items in sorted(groups.items()):
        for part in range(0, len(items), max_records):
            body = json.dumps({"Records": items[part : part + max_records]}).encode()
            yield trail_key(prefix, org_id, account, region, slot, salt=f"{part}"), gzip.compress(body, 6)


def background_events(
    count: int,
    accounts: list[str],
    start: datetime,
    end: datetime,
    *,
    seed: int = 7,
) -> Iterator[dict[str, Any]]:
    """Activity of everyone else: service roles, other users and permission sets (prefix look-alikes included)."""
    rng = random.Random(seed)
    span = (end - start).total_seconds()
    actors = [
        lambda account: role_identity(
            account, "lambda-etl", "etl-fn", "ASIA" + _hex(account + "etl", 16).upper()
        ),
        lambda account: sso_identity(account, "ReadOnly", "erin@example.com"),
        lambda account: sso_identity(account, "developer_admin", "dave@example.com"),
        lambda account: sso_identity(account, "AdminReadOnly", "bob@example.com"),
    ]
    calls = [
        ("DescribeInstances", "ec2.amazonaws.com"),
        ("GetObject", "s3.amazonaws.com"),
        ("ListBuckets", "s3.amazonaws.com"),
        ("PutItem", "dynamodb.amazonaws.com"),
        ("Decrypt", "kms.amazonaws.com"),
    ]
    for index in range(count):
        account = accounts[index % len(accounts)]
        name, source = calls[rng.randrange(len(calls))]
        moment = start + timedelta(seconds=rng.random() * span)
        yield make_event(
            actors[rng.randrange(len(actors))](account),
            name,
            source,
            moment,
            recipient_account=account,
            region=("us-east-1", "eu-west-1")[rng.randrange(2)],
            event_id=f"bg-{seed}-{index:09d}",
            request={"bucketName": "data", "key": f"k/{index}"}
            if source == "s3.amazonaws.com"
            else {"n": index},
        )


# -- an organization's night, with the answer key ---------------------------------------------------------------

PROD, DEV, SHARED, OTHER = "111111111111", "222222222222", "333333333333", "444444444444"
MIDNIGHT = datetime(2024, 8, 1, tzinfo=UTC)


class Scenario:
    """Sessions of an organization around the midnight of 2024-07-31/08-01 (UTC), their CloudTrail activity
    mixed with everyone else's, and the answer key: `expected[(session_id, eventID)]` is the night that owns it.

    Covered: a window spanning midnight, the credential tail after a revoke, two overlapping sessions of one
    user, a group grant, an event delivered after midnight into the next day's folder, a duplicate delivery,
    chained role credentials (sts AssumeRole) used before and after midnight and after they expired, minted access
    keys, identity records without an ARN, and look-alike roles (developer_admin, AdminReadOnly)."""

    def __init__(self, real_records: list[dict[str, Any]], background: int = 2000) -> None:
        from elevation.cloudtrail.sessions import SessionIdentity

        d = MIDNIGHT
        hour = timedelta(hours=1)
        self.sessions = [
            SessionIdentity(
                "101",
                PROD,
                "AdministratorAccess",
                ("alice@example.com",),
                d - 2 * hour,
                d + hour,
                d + 2 * hour,
                hour,
            ),
            SessionIdentity(
                "102",
                DEV,
                "Admin",
                ("bob@example.com", "carol@example.com"),
                d + 10 * hour,
                None,
                d + 12 * hour,
                2 * hour,
            ),
            SessionIdentity(
                "103",
                PROD,
                "AdministratorAccess",
                ("alice@example.com",),
                d + hour / 2,
                d + 3 * hour,
                d + 3 * hour,
                hour,
            ),
            SessionIdentity(
                "104",
                DEV,
                "developer",
                ("dave@example.com",),
                d + 9 * hour,
                d + 10 * hour,
                d + 10 * hour,
                hour,
            ),
        ]
        self.records: list[dict[str, Any]] = []
        self.expected: dict[tuple[str, str], str] = {}
        self.minted_event_ids: set[str] = set()
        self.duplicate_event_id = ""
        real = [r for r in real_records if r.get("eventName")]
        counter = iter(range(10**6))

        def add(record: dict[str, Any], *sessions: str) -> dict[str, Any]:
            self.records.append(record)
            night = record["eventTime"][:10]
            for session in sessions:
                self.expected[(session, record["eventID"])] = night
            return record

        def alice(moment: datetime, *sessions: str) -> dict[str, Any]:
            identity = sso_identity(
                PROD, "AdministratorAccess", "alice@example.com", region_in_path="us-west-2"
            )
            base = real[next(counter) % len(real)]
            return add(restamp(base, identity, moment, f"alice-{moment:%d%H%M}"), *sessions)

        alice(d - 2.5 * hour)  # before the grant
        alice(d - hour, "101")
        alice(d - timedelta(minutes=2), "101")  # delivered after midnight, in the 08-01 folder
        alice(d + timedelta(minutes=20), "101")
        alice(d + timedelta(minutes=45), "101", "103")  # overlapping sessions share it
        alice(d + 1.5 * hour, "101", "103")  # after 101's revoke, inside its credential tail
        alice(d + 2.5 * hour, "103")
        alice(d + 5 * hour)  # after both windows
        # The same user, recorded without an ARN (sessionIssuer and principalId only).
        bare = sso_identity(PROD, "AdministratorAccess", "alice@example.com")
        del bare["arn"]
        add(
            make_event(
                bare,
                "PutBucketPolicy",
                "s3.amazonaws.com",
                d + timedelta(minutes=25),
                recipient_account=PROD,
                event_id="alice-no-arn",
            ),
            "101",
        )
        # Chained credentials: alice assumes a role in another account before midnight.
        caller = sso_identity(PROD, "AdministratorAccess", "alice@example.com")
        # sts logs a cross-account AssumeRole in both accounts (two events sharing a sharedEventID).
        assume = assume_role_event(
            caller,
            d - timedelta(minutes=30),
            target_account=SHARED,
            role="deploy",
            session_name="alice-deploy",
            access_key_id="ASIAALICEDEPLOY00001",
            expiration=d + timedelta(minutes=30),
        )
        assume |= {"sharedEventID": "shared-assume"}
        add(assume | {"eventID": "alice-assume", "recipientAccountId": PROD}, "101")
        add(assume | {"eventID": "alice-assume-shared", "recipientAccountId": SHARED}, "101")
        chained = role_identity(SHARED, "deploy", "alice-deploy", "ASIAALICEDEPLOY00001")
        add(
            make_event(
                chained,
                "UpdateFunctionCode20150331v2",
                "lambda.amazonaws.com",
                d - timedelta(minutes=20),
                recipient_account=SHARED,
                event_id="chained-before-midnight",
            ),
            "101",
        )
        add(
            make_event(
                chained,
                "PutRolePolicy",
                "iam.amazonaws.com",
                d + timedelta(minutes=10),
                recipient_account=SHARED,
                event_id="chained-after-midnight",
            ),
            "101",
        )
        add(
            make_event(
                chained,
                "DeleteTrail",
                "cloudtrail.amazonaws.com",
                d + timedelta(minutes=50),
                recipient_account=SHARED,
                event_id="chained-expired",
            )
        )
        later = role_identity(SHARED, "deploy", "alice-deploy", "ASIASOMEONEELSE00001")
        add(
            make_event(
                later,
                "GetObject",
                "s3.amazonaws.com",
                d + timedelta(minutes=40),
                recipient_account=SHARED,
                event_id="same-arn-other-key",
            )
        )
        # The group grant: bob and carol, with a look-alike permission set.
        bob = sso_identity(DEV, "Admin", "bob@example.com")
        carol = sso_identity(DEV, "Admin", "carol@example.com")
        add(
            make_event(
                bob,
                "AuthorizeSecurityGroupIngress",
                "ec2.amazonaws.com",
                d + 10.5 * hour,
                recipient_account=DEV,
                event_id="bob-1030",
            ),
            "102",
        )
        add(
            make_event(
                bob,
                "DeleteDBInstance",
                "rds.amazonaws.com",
                d + 13 * hour,
                recipient_account=DEV,
                event_id="bob-1300",
            ),
            "102",
        )
        add(
            make_event(
                bob,
                "DescribeInstances",
                "ec2.amazonaws.com",
                d + 15 * hour,
                recipient_account=DEV,
                event_id="bob-1500",
            )
        )
        add(
            make_event(
                sso_identity(DEV, "AdminReadOnly", "bob@example.com"),
                "GetBucketPolicy",
                "s3.amazonaws.com",
                d + 11 * hour,
                recipient_account=DEV,
                event_id="bob-readonly",
            )
        )
        key = make_event(
            carol,
            "CreateAccessKey",
            "iam.amazonaws.com",
            d + 11 * hour,
            recipient_account=DEV,
            event_id="carol-access-key",
            request={"userName": "backdoor"},
            response={
                "accessKey": {
                    "accessKeyId": "AKIABACKDOOR00000001",
                    "status": "Active",
                    "userName": "backdoor",
                }
            },
        )
        add(key, "102")
        self.minted_event_ids.add("carol-access-key")
        duplicate = add(
            make_event(
                carol,
                "StopLogging",
                "cloudtrail.amazonaws.com",
                d + 11.25 * hour,
                recipient_account=DEV,
                event_id="carol-stoplogging",
            ),
            "102",
        )
        self.duplicate_event_id = duplicate["eventID"]
        self.records.append(copy.deepcopy(duplicate))  # CloudTrail delivered it twice
        add(
            make_event(
                sso_identity(DEV, "developer", "dave@example.com"),
                "UpdateAssumeRolePolicy",
                "iam.amazonaws.com",
                d + 9.5 * hour,
                recipient_account=DEV,
                event_id="dave-dev",
            ),
            "104",
        )
        add(
            make_event(
                sso_identity(DEV, "developer_admin", "dave@example.com"),
                "CreateUser",
                "iam.amazonaws.com",
                d + 9.6 * hour,
                recipient_account=DEV,
                event_id="dave-dev-admin",
            )
        )
        self.records.extend(
            background_events(background, [PROD, DEV, SHARED, OTHER], d - 24 * hour, d + 24 * hour)
        )

    def expected_for(self, night: str) -> set[tuple[str, str]]:
        return {key for key, owner in self.expected.items() if owner == night}


def upload_trail(
    s3: Any,
    bucket: str,
    records: Iterable[dict[str, Any]],
    *,
    prefix: str = "",
    org_id: str | None = None,
    file_period: timedelta = timedelta(minutes=5),
) -> int:
    """Create `bucket` if needed and write `records` into it as trail files; returns the number of files."""
    try:
        s3.head_bucket(Bucket=bucket)
    except Exception:  # missing: create it
        s3.create_bucket(Bucket=bucket)
    count = 0
    for key, body in trail_files(records, prefix=prefix, org_id=org_id, file_period=file_period):
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        count += 1
    return count
