"""Benchmark: audit N generated CloudTrail events from Parquet with 100+ Sigma rules, against two yardsticks.

(a) the floor: reading the file exactly as the audit reads it (``read_events``: every column, the repetitive ones
    as Arrow dictionaries) and doing nothing else. Reading with pyarrow's default settings (every column as plain
    text) is printed too, for context only: it is several times slower, so it is not the floor;
(b) the audit: ``read_events`` plus ``RuleSet.findings_table`` (every finding, as an Arrow table) with the
    project's rule pack and SigmaHQ's AWS CloudTrail rules, twice: as the product is configured by default (without
    SigmaHQ's "AWS STS AssumeRole Misuse": it fires on every event of an Identity Center session, since every such
    event is an assumed role) and with every rule. Also printed: the same with a Python
    ``Finding`` object made for every finding (``evaluate_table``), what a caller pays that wants them all;
(c) the write-up's method as a plain per-event Python loop: hide Get/Describe/List, warn on a fixed list of 33 calls,
    over the file's rows as dicts (pyarrow iter_batches + to_pylist, default reader settings). Also printed: the
    same loop over only the columns the write-up shows, and the method on the eventName column alone (a lower
    bound for any Python loop: it never builds an event).

Every measurement is the best of --repeat runs (5), the reader and the audits taking turns. Target: (b) within 2x of (a), and at least 20x faster than (c).

SigmaHQ's rules come from the shared data (``$ELEVATION_SHARED_DATA/sigma/rules/cloud/aws/cloudtrail``, the variable
defaulting to ``../shared/data`` beside the repository) or --sigma. Without them the benchmark refuses to run (exit 2)
rather than time fewer rules than it says: the pack alone is not the rule set BENCHMARKS.md records.
Usage:

    python benchmarks/bench_audit.py [--events 1000000] [--sigma DIR] [--keep FILE] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from elevation.audit.engine import load_rules, pack_folder, read_events
from elevation.audit.settings import AuditSettings
from elevation.cloudtrail.schema import EVENT_SCHEMA, record_to_row, row_to_record
from elevation.extract.writer import ROW_GROUP_ROWS

#: The shared corpora, as the tests find them: ELEVATION_SHARED_DATA, by default ../shared/data beside the repository.
SHARED_DATA_ENV = "ELEVATION_SHARED_DATA"
SHARED_DATA = Path(
    os.environ.get(SHARED_DATA_ENV) or Path(__file__).resolve().parents[2] / "shared" / "data"
).expanduser()
SIGMA_DEFAULT = SHARED_DATA / "sigma" / "rules" / "cloud" / "aws" / "cloudtrail"
#: What this benchmark claims to time (the docstring, BENCHMARKS.md): 100+ rules, the pack's and SigmaHQ's.
MIN_RULES = 100
EXIT_REFUSED = 2

#: The write-up's hard-coded list (seed/, handleFilter): 33 calls.
_WRITEUP_LIST = """CreateUser DeleteUser AttachUserPolicy DetachUserPolicy PutUserPolicy CreateRole DeleteRole AttachRolePolicy
    DetachRolePolicy PutRolePolicy CreateAccessKey DeleteAccessKey UpdateAccessKey UpdateUser UpdateLoginProfile
    ChangePassword RunInstances TerminateInstances StopInstances AuthorizeSecurityGroupIngress
    AuthorizeSecurityGroupEgress RevokeSecurityGroupIngress RevokeSecurityGroupEgress PutBucketPolicy
    DeleteBucketPolicy PutBucketAcl DeleteBucket CreateBucket CreateDBInstance DeleteDBInstance ModifyDBInstance
    CreateDBSnapshot DeleteDBSnapshot"""
WRITEUP_DANGEROUS = frozenset(_WRITEUP_LIST.split())

# (eventSource, eventName, readOnly, requestParameters, weight)
READS = [
    ("ec2.amazonaws.com", "DescribeInstances", {"maxResults": 1000}, 120),
    ("ec2.amazonaws.com", "DescribeSecurityGroups", {"groupIds": ["sg-RID"]}, 40),
    ("ec2.amazonaws.com", "DescribeVolumes", {"volumeSet": {"items": [{"volumeId": "vol-RID"}]}}, 30),
    ("ec2.amazonaws.com", "DescribeSubnets", None, 20),
    ("s3.amazonaws.com", "ListBuckets", None, 15),
    ("s3.amazonaws.com", "GetBucketPolicy", {"bucketName": "app-logs", "policy": ""}, 20),
    ("s3.amazonaws.com", "GetBucketAcl", {"bucketName": "app-logs", "acl": ""}, 20),
    ("iam.amazonaws.com", "GetRole", {"roleName": "app-role"}, 25),
    ("iam.amazonaws.com", "ListAttachedRolePolicies", {"roleName": "app-role"}, 15),
    ("iam.amazonaws.com", "ListRoles", None, 10),
    ("lambda.amazonaws.com", "ListFunctions20150331", None, 20),
    ("lambda.amazonaws.com", "GetFunction20150331v2", {"functionName": "orders"}, 15),
    ("rds.amazonaws.com", "DescribeDBInstances", None, 25),
    (
        "monitoring.amazonaws.com",
        "GetMetricData",
        {
            "startTime": "RID",
            "metricDataQueries": [
                {
                    "id": "m1",
                    "metricStat": {
                        "metric": {"namespace": "AWS/EC2", "metricName": "CPUUtilization"},
                        "period": 60,
                        "stat": "Average",
                    },
                }
            ],
        },
        60,
    ),
    ("monitoring.amazonaws.com", "DescribeAlarms", None, 30),
    ("logs.amazonaws.com", "DescribeLogGroups", None, 30),
    ("logs.amazonaws.com", "FilterLogEvents", {"logGroupName": "/aws/lambda/orders"}, 30),
    ("sts.amazonaws.com", "GetCallerIdentity", None, 20),
    (
        "kms.amazonaws.com",
        "Decrypt",
        {
            "encryptionAlgorithm": "SYMMETRIC_DEFAULT",
            "encryptionContext": {
                "aws:lambda:FunctionArn": "arn:aws:lambda:eu-west-1:111122223333:function:RID"
            },
        },
        40,
    ),
    ("cloudformation.amazonaws.com", "DescribeStacks", None, 25),
    ("dynamodb.amazonaws.com", "DescribeTable", {"tableName": "orders"}, 20),
    ("ssm.amazonaws.com", "DescribeInstanceInformation", None, 15),
    ("ecs.amazonaws.com", "DescribeTaskDefinition", {"taskDefinition": "web:12"}, 10),
    ("cloudtrail.amazonaws.com", "LookupEvents", None, 10),
]
WRITES = [
    ("ec2.amazonaws.com", "CreateTags", {"resourcesSet": {"items": [{"resourceId": "i-RID"}]}}, 20),
    ("ec2.amazonaws.com", "StartInstances", {"instancesSet": {"items": [{"instanceId": "i-RID"}]}}, 5),
    ("ec2.amazonaws.com", "RebootInstances", {"instancesSet": {"items": [{"instanceId": "i-RID"}]}}, 3),
    (
        "lambda.amazonaws.com",
        "UpdateFunctionConfiguration20150331v2",
        {"functionName": "orders", "timeout": 30},
        4,
    ),
    ("cloudformation.amazonaws.com", "UpdateStack", {"stackName": "web"}, 4),
    ("ssm.amazonaws.com", "PutParameter", {"name": "/app/flag", "type": "String", "overwrite": True}, 4),
    ("logs.amazonaws.com", "CreateLogStream", {"logGroupName": "/app", "logStreamName": "RID"}, 10),
    ("s3.amazonaws.com", "PutBucketTagging", {"bucketName": "app-logs"}, 2),
    (
        "autoscaling.amazonaws.com",
        "UpdateAutoScalingGroup",
        {"autoScalingGroupName": "web", "desiredCapacity": 4},
        5,
    ),
    ("dynamodb.amazonaws.com", "UpdateTable", {"tableName": "orders"}, 2),
    ("rds.amazonaws.com", "ModifyDBInstance", {"dBInstanceIdentifier": "db1", "allocatedStorage": 200}, 1),
    ("ecs.amazonaws.com", "UpdateService", {"cluster": "web", "service": "api", "desiredCount": 3}, 5),
]
DANGEROUS = [
    (
        "ec2.amazonaws.com",
        "AuthorizeSecurityGroupIngress",
        {
            "groupId": "sg-RID",
            "ipPermissions": {
                "items": [
                    {
                        "ipProtocol": "tcp",
                        "fromPort": 22,
                        "toPort": 22,
                        "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]},
                    }
                ]
            },
        },
        1,
    ),
    ("iam.amazonaws.com", "CreateAccessKey", {"userName": "deploy"}, 1),
    (
        "iam.amazonaws.com",
        "AttachRolePolicy",
        {"roleName": "app-role", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"},
        1,
    ),
    ("cloudtrail.amazonaws.com", "StopLogging", {"name": "org-trail"}, 1),
    ("secretsmanager.amazonaws.com", "GetSecretValue", {"secretId": "prod/db"}, 2),
    ("ec2.amazonaws.com", "GetPasswordData", {"instanceId": "i-RID"}, 1),
    ("ssm.amazonaws.com", "GetParameter", {"name": "/prod/db/password", "withDecryption": True}, 2),
    (
        "ec2.amazonaws.com",
        "ModifySnapshotAttribute",
        {"snapshotId": "snap-RID", "createVolumePermission": {"add": {"items": [{"group": "all"}]}}},
        1,
    ),
    ("lambda.amazonaws.com", "UpdateFunctionCode20150331v2", {"functionName": "orders"}, 1),
    ("ssm.amazonaws.com", "SendCommand", {"documentName": "AWS-RunShellScript"}, 1),
    (
        "s3.amazonaws.com",
        "PutBucketVersioning",
        {"bucketName": "app-logs", "VersioningConfiguration": {"Status": "Suspended"}},
        1,
    ),
    ("ec2.amazonaws.com", "DescribeInstanceAttribute", {"instanceId": "i-RID", "attribute": "userData"}, 1),
    ("s3.amazonaws.com", "PutBucketPolicy", {"bucketName": "app-logs", "bucketPolicy": {"Statement": []}}, 1),
]
USER_AGENTS = [
    "aws-cli/2.15.30 Python/3.11.8 Linux/6.1 exe/x86_64.ubuntu.22 prompt/off command/ec2.describe-instances",
    "console.amazonaws.com",
    "Boto3/1.34.69 md/Botocore#1.34.69 ua/2.0 os/linux#6.1 md/arch#x86_64 lang/python#3.11.8",
    "aws-sdk-go-v2/1.25.2 os/linux lang/go#1.22.1 md/GOOS#linux api/ec2#1.150.0",
    "Terraform/1.7.5 (+https://www.terraform.io) terraform-provider-aws/5.42.0",
]


def _template_rows() -> tuple[list[dict[str, Any]], list[float]]:
    rows: list[dict[str, Any]] = []
    weights: list[float] = []
    groups = ((READS, True, 85.0), (WRITES, False, 14.0), (DANGEROUS, None, 1.0))
    for calls, read_only, share in groups:
        total = sum(call[-1] for call in calls)
        for source, name, parameters, weight in calls:
            is_read = read_only if read_only is not None else name.startswith(("Get", "Describe"))
            for error in (None, "AccessDenied"):
                record = {
                    "eventVersion": "1.09",
                    "eventID": "template",
                    "eventTime": "2026-01-01T00:00:00Z",
                    "eventSource": source,
                    "eventName": name,
                    "awsRegion": "eu-west-1",
                    "requestParameters": parameters,
                    "responseElements": None if is_read else {"requestId": "RID"},
                    "readOnly": is_read,
                    "eventType": "AwsApiCall",
                    "managementEvent": True,
                    "eventCategory": "Management",
                    "recipientAccountId": "111122223333",
                    "errorCode": error,
                    "errorMessage": "User is not authorized to perform this operation" if error else None,
                    "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256"},
                }
                rows.append(record_to_row(record, "template"))
                weights.append(share * weight / total * (0.02 if error else 0.98))
    return rows, weights


def generate(count: int, path: Path, seed: int = 7) -> None:
    """Write `count` events of 1,000-event sessions (SSO assumed roles) into a Parquet file laid out as the
    extract writes one (EVENT_SCHEMA, zstd, its row group size)."""
    rng = random.Random(seed)
    templates, weights = _template_rows()
    template_table = pa.Table.from_pylist(templates, schema=EVENT_SCHEMA)
    picks = rng.choices(range(len(templates)), weights=weights, k=count)
    table = template_table.take(pa.array(picks, pa.int32()))
    sessions = max(1, count // 1000)
    session_rows = []
    for number in range(sessions):
        user = f"user{number % 300:03d}@example.com"
        role = f"AWSReservedSSO_{rng.choice(['AdministratorAccess', 'PowerUserAccess', 'DBAdmin'])}_{number:016x}"
        identity = {
            "type": "AssumedRole",
            "principalId": f"AROAEXAMPLE{number:08d}:{user}",
            "arn": f"arn:aws:sts::111122223333:assumed-role/{role}/{user}",
            "accountId": "111122223333",
            "accessKeyId": f"ASIAEXAMPLE{number:09d}",
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": "AROAEXAMPLE",
                    "accountId": "111122223333",
                    "arn": f"arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/{role}",
                    "userName": role,
                },
                "attributes": {"creationDate": "2026-01-01T00:00:00Z", "mfaAuthenticated": "false"},
            },
        }
        row = record_to_row(
            {
                "eventID": "x",
                "eventTime": "2026-01-01T00:00:00Z",
                "userIdentity": identity,
                "sourceIPAddress": f"198.51.100.{number % 250}",
                "userAgent": USER_AGENTS[number % len(USER_AGENTS)],
            },
            f"session-{number:05d}",
        )
        session_rows.append(row)
    session_table = pa.Table.from_pylist(session_rows, schema=EVENT_SCHEMA)
    owner = pa.array([min(index // 1000, sessions - 1) for index in range(count)], pa.int32())
    per_session = session_table.take(owner)
    replaced = {
        "session_id": per_session.column("session_id"),
        "sourceIPAddress": per_session.column("sourceIPAddress"),
        "userAgent": per_session.column("userAgent"),
        "userIdentity": per_session.column("userIdentity"),
        **{
            column: per_session.column(column)
            for column in EVENT_SCHEMA.names
            if column.startswith("userIdentity_")
        },
        "eventID": pa.array(
            [f"{index:08x}-5b1c-4d2e-9f00-{rng.getrandbits(48):012x}" for index in range(count)]
        ),
        "requestID": pa.array([f"req-{index:010d}" for index in range(count)]),
        "eventTime": pa.array(
            [1_767_225_600_000_000 + index * 86_400_000_000 // count for index in range(count)], pa.int64()
        ).cast(pa.timestamp("us", tz="UTC")),
    }
    # Per-event resource ids in the documents, so the file is as varied (and as costly to read) as a real night.
    for name in ("requestParameters", "responseElements"):
        texts = [row[name] for row in templates]
        replaced[name] = pa.array(
            [
                None if texts[pick] is None else texts[pick].replace("RID", f"{rng.getrandbits(40):010x}")
                for pick in picks
            ]
        )
    columns = [replaced.get(name, table.column(name)) for name in EVENT_SCHEMA.names]
    # Row groups as the extract writes them (the chunks the audit then works through).
    pq.write_table(
        pa.Table.from_arrays(columns, schema=EVENT_SCHEMA), path, compression="zstd", row_group_size=ROW_GROUP_ROWS
    )


def writeup_method(names: Iterable[str]) -> tuple[int, list[str]]:
    """The write-up's audit (seed/, handleFilter) of the events with these names: hide the names starting with
    Describe, List or Get, warn on the fixed list. Returns how many events it shows and the names it warns about."""
    shown = 0
    warned: list[str] = []
    for name in names:
        if name in WRITEUP_DANGEROUS:
            warned.append(name)
        if not name.startswith(("Describe", "List", "Get")):
            shown += 1
    return shown, warned


def writeup_loop(path: Path, columns: list[str] | None = None) -> tuple[int, int]:
    """(c): the write-up's method per event in plain Python, over the file's rows as dicts (pyarrow's own
    iter_batches + to_pylist, default reader settings: the fastest way pyarrow gives rows; with the audit's
    dictionary columns its to_pylist is about three times slower). `columns`: only these fields in each dict."""
    shown = warned = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536, columns=columns):
        batch_shown, batch_warned = writeup_method(event["eventName"] for event in batch.to_pylist())
        shown += batch_shown
        warned += len(batch_warned)
    return shown, warned


def writeup_names(path: Path) -> tuple[int, int]:
    """The write-up's method on the eventName column alone: a bound on any per-event Python loop (it reads one
    column and makes one string per event), not a per-event audit (no event is there to show)."""
    names = pq.read_table(path, columns=["eventName"]).column("eventName").to_pylist()
    shown, warned = writeup_method(names)
    return shown, len(warned)


def writeup_loop_records(path: Path) -> tuple[int, int]:
    """The same loop over full CloudTrail records (rebuilt from the rows), as per-event code over events would see them."""
    shown = warned = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536):
        records = (row_to_record(row) for row in batch.to_pylist())
        batch_shown, batch_warned = writeup_method(record["eventName"] for record in records)
        shown += batch_shown
        warned += len(batch_warned)
    return shown, warned


def best_of(repeat: int, action: Callable[[], Any]) -> tuple[float, Any]:
    return interleaved(repeat, {"only": action})["only"]


def interleaved(repeat: int, actions: dict[str, Callable[[], Any]]) -> dict[str, tuple[float, Any]]:
    """Best time (and last result) of each action over `repeat` rounds, the actions taking turns in each round: on
    a shared, noisy machine a slow spell then hits all of them alike, so their ratios hold."""
    best = dict.fromkeys(actions, float("inf"))
    results: dict[str, Any] = dict.fromkeys(actions)
    for _ in range(repeat):
        for name, action in actions.items():
            results[name] = None  # the previous run's result must not weigh on this one
            gc.collect()
            started = time.perf_counter()
            results[name] = action()
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: (best[name], results[name]) for name in actions}


#: What the product switches off by default: SigmaHQ's "AWS STS AssumeRole Misuse" fires on every event of an
#: Identity Center session (an SSO session *is* an assumed role). Timed with and without it.
DISABLED_BY_DEFAULT = tuple(AuditSettings().disabled_rules)

#: The columns the write-up's table shows (seed/: COLUMN_DEFINITIONS).
WRITEUP_COLUMNS = ["eventID", "eventName", "eventSource", "eventTime"]


def peak_memory(path: Path, mode: str, sigma: Path) -> dict[str, float]:
    """Peak RSS of a fresh interpreter that reads the file (mode "read") or reads and audits it ("audit"), so the
    number is that work's alone; the interpreter with the imports and the rules loaded is measured as the base."""
    result = subprocess.run(
        [sys.executable, __file__, "--memory-child", mode, str(path), "--sigma", str(sigma)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def memory_child(mode: str, path: Path, sigma: Path) -> None:
    rules = load_rules([sigma], disabled=DISABLED_BY_DEFAULT)  # the parent checked the folder
    # Linux carries the parent's peak over a fork (the benchmark's own is gigabytes): reset it, then read VmHWM.
    Path("/proc/self/clear_refs").write_text("5")
    base = _peak_rss_mb()
    table = read_events(path)
    findings = rules.findings_table(table) if mode == "audit" else None
    peak = _peak_rss_mb()
    print(json.dumps({"base_mb": round(base), "peak_mb": round(peak), "findings": findings.num_rows if findings else 0}))


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{os.cpu_count()} CPU(s) ({len(os.sched_getaffinity(0))} usable), {model}; "
        f"Python {platform.python_version()}, pyarrow {pa.__version__}, {platform.platform()}; load average {load}"
    )


def refuse(reason: str) -> int:
    """Say why the benchmark will not run, on stderr, and give the exit status: numbers over fewer rules or less data
    than the benchmark says it uses would be misleading, so there are none."""
    print(f"bench_audit: refusing to run: {reason}", file=sys.stderr)
    return EXIT_REFUSED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="how many events to generate")
    parser.add_argument(
        "--sigma", type=Path, default=SIGMA_DEFAULT, help="SigmaHQ AWS CloudTrail rule folder"
    )
    parser.add_argument(
        "--keep", type=Path, help="write the generated Parquet here (default: a temporary file)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="best of N runs for every measurement")
    parser.add_argument(
        "--records-loop",
        action="store_true",
        help="also time the loop over full records (slow: ~1 min per million)",
    )
    parser.add_argument("--memory-child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child[0], Path(args.memory_child[1]), args.sigma)
        return 0

    if not args.sigma.is_dir():
        return refuse(
            f"SigmaHQ's AWS CloudTrail rules not found at {args.sigma}: set {SHARED_DATA_ENV} to the folder holding "
            "sigma/ (and cloudtrail/), or pass --sigma DIR"
        )
    print(f"machine: {machine()}")
    everything = load_rules([args.sigma])
    tuned = load_rules([args.sigma], disabled=DISABLED_BY_DEFAULT)
    pack_rules = sum(1 for rule in everything.rules if Path(rule.path).is_relative_to(pack_folder()))
    sigma_rules = len(everything.rules) - pack_rules
    print(
        f"rules: {len(everything.rules)} ({pack_rules} from the pack, {sigma_rules} from "
        f"{args.sigma}); {len(everything.unsupported)} unsupported"
    )
    if pack_rules == 0 or sigma_rules == 0:
        return refuse(f"{pack_rules} rules from the pack and {sigma_rules} from {args.sigma}: it times both")
    if len(everything.rules) < MIN_RULES:
        return refuse(f"{len(everything.rules)} rules in all, fewer than the {MIN_RULES}+ it claims to time")
    if len(tuned.rules) == len(everything.rules):
        return refuse(
            f"none of the rules disabled by default ({', '.join(DISABLED_BY_DEFAULT)}) is in {args.sigma}: "
            "the default and all-rules timings would be the same rules"
        )

    repeat = args.repeat
    with tempfile.TemporaryDirectory() as scratch:
        path = args.keep or Path(scratch) / "events.parquet"
        started = time.perf_counter()
        generate(args.events, path)
        metadata = pq.ParquetFile(path).metadata
        print(
            f"generated {args.events:,} events in {time.perf_counter() - started:.1f}s "
            f"({path.stat().st_size / 1e6:.0f} MB, {metadata.num_row_groups} row group(s))"
        )

        timed = interleaved(
            repeat,
            {
                "floor": lambda: read_events(path).num_rows,
                "plain_read": lambda: pq.read_table(path).num_rows,
                "tuned": lambda: tuned.findings_table(read_events(path)),
                "all": lambda: everything.findings_table(read_events(path)),
                "objects": lambda: len(tuned.evaluate_table(read_events(path))),
            },
        )
        (floor, rows), (plain_read, _) = timed["floor"], timed["plain_read"]
        (audit_tuned, findings), (audit_all, findings_all) = timed["tuned"], timed["all"]
        objects_tuned = timed["objects"][0]
        del timed
        titles = pc.value_counts(findings_all.column("title").cast(pa.string()))
        by_rule = dict(zip(titles.field("values").to_pylist(), titles.field("counts").to_pylist(), strict=True))
        count_tuned, count_all = findings.num_rows, findings_all.num_rows
        del findings, findings_all
        loop, (shown, warned) = best_of(repeat, lambda: writeup_loop(path))
        loop_shown = best_of(repeat, lambda: writeup_loop(path, WRITEUP_COLUMNS))[0]
        names = best_of(repeat, lambda: writeup_names(path))[0]
        records_loop = best_of(1, lambda: writeup_loop_records(path))[0] if args.records_loop else None
        memory = {mode: peak_memory(path, mode, args.sigma) for mode in ("read", "audit")}

    off = ", ".join(rule.title for rule in everything.rules if rule.rule_id in DISABLED_BY_DEFAULT)
    print(f"findings: {count_all:,} with every rule, {count_tuned:,} without {off or 'the rules disabled by default'}")
    print(f"write-up method: {shown:,} events shown (not Get/Describe/List), {warned:,} warnings")
    for title, count in sorted(by_rule.items(), key=lambda item: -item[1])[:6]:
        print(f"    {count:>9,}  {title}")

    def line(label: str, seconds: float) -> None:
        print(f"{label:<66}{seconds:8.3f}s {rows / seconds:>12,.0f} events/s")

    print(f"best of {repeat}:")
    line("(a) floor: read_events, the audit's reader (all columns, dictionaries)", floor)
    line("    context: pq.read_table with default settings (all columns as text)", plain_read)
    line(f"(b) read_events + findings_table, {len(tuned.rules)} rules (as configured by default)", audit_tuned)
    line(f"    read_events + findings_table, {len(everything.rules)} rules (all)", audit_all)
    line(f"    read_events + evaluate_table (Finding objects), {len(tuned.rules)} rules", objects_tuned)
    line("(c) write-up loop per event, rows as dicts (all columns)", loop)
    line(f"    write-up loop per event, rows as dicts ({len(WRITEUP_COLUMNS)} columns it shows)", loop_shown)
    line("    write-up method on the eventName column only (no events)", names)
    if records_loop is not None:
        line("    write-up loop per event (full records)", records_loop)
    read_mb, audit_mb = (memory[mode]["peak_mb"] - memory[mode]["base_mb"] for mode in ("read", "audit"))
    print(
        f"peak RSS over the loaded interpreter ({memory['read']['base_mb']} MB), fresh process each: reading "
        f"{read_mb} MB; reading + auditing ({len(tuned.rules)} rules) {audit_mb} MB ({audit_mb / read_mb:.2f}x)"
    )
    for label, audit in (("default", audit_tuned), ("all rules", audit_all)):
        print(
            f"ratios, {label}: {audit / floor:.2f}x the floor (target <= 2x); "
            f"{loop / audit:.1f}x faster than the loop (target >= 20x); "
            f"{loop_shown / audit:.1f}x faster than the loop over the shown columns; "
            f"the eventName-only method takes {names / audit:.2f}x its time"
            + (f"; {records_loop / audit:.1f}x faster than the full-record loop" if records_loop else "")
        )
    print(
        json.dumps(
            {
                "events": rows,
                "repeat": repeat,
                "machine": machine(),
                "rules_all": len(everything.rules),
                "rules_tuned": len(tuned.rules),
                "floor_s": round(floor, 3),
                "plain_read_s": round(plain_read, 3),
                "audit_tuned_s": round(audit_tuned, 3),
                "audit_all_s": round(audit_all, 3),
                "audit_tuned_objects_s": round(objects_tuned, 3),
                "loop_s": round(loop, 3),
                "loop_shown_columns_s": round(loop_shown, 3),
                "names_only_s": round(names, 3),
                "records_loop_s": round(records_loop, 3) if records_loop else None,
                "peak_rss_read_mb": read_mb,
                "peak_rss_read_audit_mb": audit_mb,
                "findings_all": count_all,
                "findings_tuned": count_tuned,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
