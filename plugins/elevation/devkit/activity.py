"""CloudTrail activity for the demo and the nightly tests: what people do with their elevated sessions.

Writes, per session, a realistic mix (mostly reads, some writes, now and then something dangerous), a call made
with the session's credentials after the assignment was removed (the credential tail), and other principals'
background noise, as trail log files in the emulator's S3 bucket. Uses the same record shapes as the extract's
tests (`trail_events`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from elevation.cloudtrail.sessions import SessionIdentity
from elevation.devkit.trail_events import make_event, sso_identity, upload_trail

ROUTINE = [
    ("DescribeInstances", "ec2.amazonaws.com", None),
    ("ListBuckets", "s3.amazonaws.com", None),
    ("GetCallerIdentity", "sts.amazonaws.com", None),
    ("DescribeDBInstances", "rds.amazonaws.com", None),
    ("ListFunctions20150331", "lambda.amazonaws.com", None),
    ("DescribeAlarms", "monitoring.amazonaws.com", None),
    ("RebootInstances", "ec2.amazonaws.com", {"instancesSet": {"items": [{"instanceId": "i-0abc1234def567890"}]}}),
    ("UpdateService", "ecs.amazonaws.com", {"cluster": "checkout", "service": "api", "desiredCount": 6}),
    ("PutBucketTagging", "s3.amazonaws.com", {"bucketName": "media-assets", "Tagging": {"TagSet": []}}),
]
DANGEROUS = [
    ("AuthorizeSecurityGroupIngress", "ec2.amazonaws.com", {"groupId": "sg-0123456789abcdef0", "ipPermissions": {
        "items": [{"ipProtocol": "tcp", "fromPort": 22, "toPort": 22,
                   "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]}}]}}),
    ("GetSecretValue", "secretsmanager.amazonaws.com", {"secretId": "prod/checkout/db-password"}),
    ("CreateAccessKey", "iam.amazonaws.com", {"userName": "deploy-bot"}),
    ("StopLogging", "cloudtrail.amazonaws.com", {"name": "org-trail"}),
]
#: A user agent an attacker controls: the reports must show it as text.
HOSTILE_AGENT = '"><img src=x onerror="document.title=\'PWNED\'"><script>window.__pwned=1</script>'


def session_activity(session: SessionIdentity, rng: random.Random, *, dangerous: bool) -> list[dict[str, Any]]:
    """Events a session's user(s) make between grant and end, plus one with leftover credentials afterwards."""
    start = session.granted_at
    end = session.ended_at or session.planned_end
    span = max((end - start).total_seconds(), 60.0)
    records = []
    for user in session.user_names:
        identity = sso_identity(session.account_id, session.permission_set_name, user,
                                access_key_id=f"ASIA{rng.getrandbits(64):016X}")
        for _ in range(rng.randint(12, 30)):
            name, source, request = rng.choice(ROUTINE)
            moment = start + timedelta(seconds=rng.uniform(5, span - 5))
            records.append(make_event(identity, name, source, moment, recipient_account=session.account_id,
                                      request=request))
        if dangerous:
            for name, source, request in rng.sample(DANGEROUS, 2):
                moment = start + timedelta(seconds=rng.uniform(5, span - 5))
                event = make_event(identity, name, source, moment, recipient_account=session.account_id,
                                   request=request, read_only=name.startswith("Get"))
                event["userAgent"] = HOSTILE_AGENT
                records.append(event)
            for _ in range(6):  # a burst of denied calls
                moment = start + timedelta(seconds=span / 2 + rng.uniform(0, 60))
                records.append(make_event(identity, "DeleteBucket", "s3.amazonaws.com", moment,
                                          recipient_account=session.account_id,
                                          request={"bucketName": "media-archive"}, error_code="AccessDenied"))
        if session.ended_at is not None:  # credentials outlive the assignment
            records.append(make_event(identity, "ListBuckets", "s3.amazonaws.com", end + timedelta(minutes=7),
                                      recipient_account=session.account_id))
    return records


def background(accounts: Sequence[str], start: datetime, end: datetime, rng: random.Random, count: int) -> list[dict]:
    """Other principals' calls in the same accounts: what the extract must leave out."""
    records = []
    for index in range(count):
        account = rng.choice(list(accounts))
        identity = sso_identity(account, "ReadOnlyAccess", f"someone{index % 7}")
        moment = start + timedelta(seconds=rng.uniform(0, (end - start).total_seconds()))
        name, source, request = rng.choice(ROUTINE)
        records.append(make_event(identity, name, source, moment, recipient_account=account, request=request))
    return records


def activity_records(sessions: Sequence[SessionIdentity], *, seed: int = 7) -> tuple[list[dict], dict[str, int]]:
    """The sessions' activity (every other session does something dangerous) plus noise, and events per session."""
    rng = random.Random(seed)
    records, counts = [], {}
    for index, session in enumerate(sessions):
        mine = session_activity(session, rng, dangerous=index % 2 == 0)
        counts[session.session_id] = len(mine)
        records += mine
    if sessions:
        first = min(session.granted_at for session in sessions)
        last = max((session.ended_at or session.planned_end) for session in sessions)
        records += background(sorted({session.account_id for session in sessions}), first, last, rng, 300)
    return records, counts


def write_activity(s3: Any, bucket: str, sessions: Sequence[SessionIdentity], *, seed: int = 7) -> dict[str, int]:
    """Upload the sessions' activity as trail files; events per session."""
    records, counts = activity_records(sessions, seed=seed)
    upload_trail(s3, bucket, records)
    return counts
