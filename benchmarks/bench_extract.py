"""Benchmark: extract a night of generated trail files (moto S3) into Parquet, at several input sizes.

    .venv/bin/python benchmarks/bench_extract.py 250000 1000000

The emulator and the generated bucket live in this process; each extract runs in a fresh subprocess, so its peak
memory (ru_maxrss) is the extract's alone. Memory should stay flat as the input grows: records are streamed
file by file, only the matched (session, eventID) keys are kept.

Each size is read three ways: `records` (ELEVATION_COLUMNAR_READS=0, every record a dict: the path before),
`columnar` (as shipped) and `GET only` (the same listing and GETs, nothing parsed: the emulator's share).
The extract's own cost without any store is `benchmarks/bench_reader.py`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

BUCKET = "bench-cloudtrail"
ACCOUNTS = ["111111111111", "222222222222", "333333333333", "444444444444"]
NIGHT = date(2024, 8, 1)
SESSION_USER = "dave@example.com"
SESSION_SET = "developer_admin"
RECORDS_PER_FILE = 250


def generate_and_upload(s3: Any, count: int, indices: range | None = None) -> tuple[int, int]:
    """Write `count` events in time order as 5-minute trail files (per account and region), as a trail does
    (only the events of `indices`, when given: two processes can write two halves of one night)."""
    from elevation.devkit.trail_events import make_event, role_identity, sso_identity, trail_key

    start = datetime(2024, 8, 1, tzinfo=UTC)
    span = 86_400.0
    actors = [
        lambda a: role_identity(a, "lambda-etl", "etl-fn", "ASIAETL" + a),
        lambda a: sso_identity(a, "ReadOnly", "erin@example.com"),
        lambda a: sso_identity(a, SESSION_SET, SESSION_USER),
        lambda a: sso_identity(a, "AdminReadOnly", "bob@example.com"),
    ]
    slot: datetime | None = None
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    files = size = 0

    def flush() -> None:
        nonlocal files, size
        for (account, region), records in groups.items():
            for part in range(
                0, len(records), RECORDS_PER_FILE
            ):  # constant file size: more input, more files
                body = gzip.compress(
                    json.dumps({"Records": records[part : part + RECORDS_PER_FILE]}).encode(), 6
                )
                key = trail_key("", None, account, region, slot + timedelta(minutes=5), salt=str(files))
                s3.put_object(Bucket=BUCKET, Key=key, Body=body)
                files += 1
                size += len(body)
        groups.clear()

    for index in indices if indices is not None else range(count):
        moment = start + timedelta(seconds=span * index / count)
        current = moment.replace(minute=moment.minute - moment.minute % 5, second=0, microsecond=0)
        if current != slot:
            if slot is not None:
                flush()
            slot = current
        account = ACCOUNTS[(index // 4) % 4]
        region = ("us-east-1", "eu-west-1")[index % 2]
        record = make_event(
            actors[index % 4](account),
            ("DescribeInstances", "PutObject", "CreateUser", "Decrypt")[index % 3],
            "ec2.amazonaws.com",
            moment,
            recipient_account=account,
            region=region,
            event_id=f"ev-{index:09d}",
            request={"instancesSet": {"items": [{"instanceId": f"i-{index:012x}"}]}},
        )
        groups[(account, region)].append(record)
    flush()
    return files, size


def child(endpoint: str, output: str) -> None:
    """One extract, in its own process; prints a JSON line."""
    import boto3

    from elevation.cloudtrail.s3_trail import S3TrailSource
    from elevation.cloudtrail.sessions import SessionIdentity
    from elevation.extract import extract_night, night_window

    s3 = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client("s3", endpoint_url=endpoint)
    start, end = night_window(NIGHT)
    user = os.environ.get("BENCH_USER", SESSION_USER)  # BENCH_USER=nobody: nothing matches (reads only)
    granted = start + timedelta(hours=10)
    ended = granted + timedelta(hours=2)
    sessions = [  # a two-hour session in every account: about 3% of the night's events are the sessions'
        SessionIdentity(
            f"bench-{acct}", acct, SESSION_SET, (user,), granted, ended, ended, timedelta(hours=1)
        )
        for acct in ACCOUNTS
    ]
    if os.environ.get("BENCH_FETCH_ONLY"):  # the store's share: list and GET the same objects, parse nothing
        from elevation.extract.night import DEFAULT_DELIVERY_MARGIN
        from elevation.extract.nights import DEFAULT_LOOKBACK, read_span

        source = S3TrailSource(s3, BUCKET)
        began = time.perf_counter()
        span = read_span(start, end, DEFAULT_DELIVERY_MARGIN, DEFAULT_LOOKBACK)
        objects = sum(1 for _ in source._fetched(source.iter_keys(ACCOUNTS, *span)))
        elapsed = time.perf_counter() - began
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            json.dumps(
                {
                    "records_read": 0,
                    "objects_read": objects,
                    "events_written": 0,
                    "seconds": elapsed,
                    "peak_rss_mb": rss,
                    "output_bytes": 0,
                    "warnings": 0,
                }
            )
        )
        return
    began = time.perf_counter()
    summary = extract_night(sessions, S3TrailSource(s3, BUCKET), start, end, output)
    elapsed = time.perf_counter() - began
    print(
        json.dumps(
            {
                "records_read": summary.records_read,
                "objects_read": summary.objects_read,
                "events_written": summary.events_written,
                "seconds": elapsed,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "output_bytes": summary.output_bytes,
                "warnings": len(summary.warnings),
            }
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[250_000, 1_000_000])
    parser.add_argument("--child", nargs=2, metavar=("ENDPOINT", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    from elevation.devkit.emulator import AwsEmulator

    print(
        f"{'events':>10} {'files':>6} {'input MB':>9} {'read':>9} {'seconds':>8} {'events/s':>9} {'peak RSS MB':>12} "
        f"{'written':>8} {'output MB':>10}"
    )
    with AwsEmulator() as emulator:
        for size in args.sizes:
            emulator.reset()
            s3 = emulator.client("s3")
            s3.create_bucket(Bucket=BUCKET)
            files, input_bytes = generate_and_upload(s3, size)
            modes = {  # the extract record by record (before), as shipped (columnar), and the GETs alone
                "records": {"ELEVATION_COLUMNAR_READS": "0"},
                "columnar": {"ELEVATION_COLUMNAR_READS": "1"},
                "GET only": {"BENCH_FETCH_ONLY": "1"},
            }
            for mode, extra in modes.items():
                with tempfile.TemporaryDirectory() as output:
                    result = subprocess.run(
                        [sys.executable, __file__, "--child", emulator.endpoint_url, output],
                        capture_output=True,
                        text=True,
                        check=True,
                        env={
                            **os.environ,
                            **extra,
                            "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "plugins"),
                        },
                    )
                report = json.loads(result.stdout.strip().splitlines()[-1])
                events = report["records_read"] or size
                print(
                    f"{size:>10,} {files:>6} {input_bytes / 1e6:>9.1f} {mode:>9} {report['seconds']:>8.1f} "
                    f"{events / report['seconds']:>9,.0f} {report['peak_rss_mb']:>12.0f} "
                    f"{report['events_written']:>8,} {report['output_bytes'] / 1e6:>10.2f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
