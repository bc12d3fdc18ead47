"""Grant throughput: N approved requests granted and confirmed in one run, against the AWS emulator.

Reports wall time, requests per second, and AWS calls per grant (what counts against Identity Center's
shared ~20 requests/s). The emulator answers each creation IN_PROGRESS once, then SUCCEEDED, like AWS.
Run: `.venv/bin/python benchmarks/bench_grants.py --requests 200`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-grants-"))
    os.environ["AIRFLOW_HOME"] = str(workdir / "airflow")

    from elevation.access.grants import run_grants
    from elevation.config import load_config
    from elevation.devkit.emulator import AwsEmulator
    from elevation.devkit.world import build_world, policy_document, write_config
    from elevation.runtime import Runtime, identity_center_from_airflow
    from elevation.store import queue
    from elevation.store.database import create_engine_for_url
    from elevation.store.migrations import upgrade

    with AwsEmulator() as emulator:
        world = build_world(emulator)
        identity = emulator.client("identitystore")
        os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = emulator.airflow_connection_json()
        # One on-call person per request, so every grant is a distinct assignment.
        policy = policy_document(world)
        for index in range(args.requests):
            login = f"oncall{index:04d}"
            user = identity.create_user(
                IdentityStoreId=world.identity_store_id,
                UserName=login,
                DisplayName=login,
                Name={"GivenName": "On", "FamilyName": "Call"},
            )["UserId"]
            identity.create_group_membership(
                IdentityStoreId=world.identity_store_id,
                GroupId=world.groups["oncall"],
                MemberId={"UserId": user},
            )
            policy["people"].append({"login": login, "identity_center_user": login})
        policy["grants"] = {
            "status_poll_initial": "0.2s",
            "status_poll_max": "1s",
            "status_wait_bound": "60s",
        }
        config = write_config(world, workdir / "elevation.yaml", policy=policy)
        engine = create_engine_for_url(f"sqlite:///{workdir}/queue.db")
        upgrade(engine)
        now = datetime.now(UTC)
        with engine.begin() as conn:
            for index in range(args.requests):
                request_id = queue.insert_request(
                    conn,
                    requester=f"oncall{index:04d}",
                    account_id=world.accounts["media-prod"],
                    permission_set="AdministratorAccess",
                    duration_minutes=60,
                    justification="bench",
                    start_at=now,
                    status="approved",
                    approver="bob",
                )
                queue.update_request(conn, request_id, validated_at=now, end_at=now + timedelta(hours=1))
        emulator.calls.clear()
        runtime = Runtime(
            config=load_config(config),
            engine=engine,
            identity_center_factory=identity_center_from_airflow,
            as_of=now,
            actor="bench",
        )
        started = time.perf_counter()
        summary = run_grants(runtime)
        elapsed = time.perf_counter() - started
        calls = Counter(emulator.calls.operations())
        assert len(summary.activated) == args.requests, summary
        print(
            f"{args.requests} grants confirmed in {elapsed:.1f} s: {args.requests / elapsed:.1f} grants/s; "
            f"peak creations in flight {emulator.identity_center.max_creations_in_flight}"
        )
        print(
            f"AWS calls per grant: {sum(calls.values()) / args.requests:.2f} "
            + ", ".join(f"{name}={count}" for name, count in calls.most_common())
        )


if __name__ == "__main__":
    main()
