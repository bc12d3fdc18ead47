"""Reconcile on a large organization: how many AWS calls one run makes, and how long it would take on AWS.

On the AWS emulator: an OU of --accounts accounts (100) and --permission-sets permission sets (20), of which only
--provisioned pairs (300 of the 2,000) have assignments, about --per-pair principals each (users and groups):
a few thousand assignments. The policy declares all but --drift of them as standing (an organization's baseline),
so the run finds that many unexpected assignments, in report mode. Printed: the AWS calls by API name, the pages
of each list call, the wall time on the emulator (calls paced at --rate per second, far above AWS's, so the
emulator's own speed shows), and the time the same calls take at Identity Center's ~20 calls per second.

Run: `.venv/bin/python benchmarks/bench_reconcile.py` (about a minute, most of it building the organization).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from bench_audit import machine

AWS_RATE = 20.0  # Identity Center's shared rate, calls per second
LIST_CALLS = ("ListAccountsForParent", "ListOrganizationalUnitsForParent", "ListPermissionSets",
              "ListAccountsForProvisionedPermissionSet", "ListPermissionSetsProvisionedToAccount",
              "ListAccountAssignments")  # one call per page


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--permission-sets", type=int, default=20)
    parser.add_argument("--provisioned", type=int, default=300, help="(account, permission set) pairs with assignments")
    parser.add_argument("--per-pair", type=int, default=10, help="principals per provisioned pair, on average")
    parser.add_argument("--drift", type=int, default=25, help="assignments not declared standing (unexpected)")
    parser.add_argument("--rate", type=float, default=10_000, help="client-side pacing on the emulator, calls/s")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    random.seed(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="bench-reconcile-"))
    os.environ["AIRFLOW_HOME"] = str(workdir / "airflow")

    from elevation.access.reconcile import run_reconcile
    from elevation.config import load_config
    from elevation.devkit.emulator import AwsEmulator
    from elevation.devkit.world import build_world, policy_document, write_config
    from elevation.runtime import Runtime, identity_center_from_airflow
    from elevation.store.database import create_engine_for_url
    from elevation.store.migrations import upgrade

    with AwsEmulator() as emulator:
        world = build_world(emulator)
        os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = emulator.airflow_connection_json()
        org, sso, store = (emulator.client(name) for name in ("organizations", "sso-admin", "identitystore"))
        started = time.perf_counter()
        ou = org.create_organizational_unit(ParentId=world.root_id, Name="Bench")["OrganizationalUnit"]["Id"]
        accounts = []
        for index in range(args.accounts):
            account = org.create_account(AccountName=f"bench-{index:03d}", Email=f"bench-{index}@example.com")[
                "CreateAccountStatus"]["AccountId"]
            org.move_account(AccountId=account, SourceParentId=world.root_id, DestinationParentId=ou)
            accounts.append(account)
        permission_sets = {
            sso.create_permission_set(InstanceArn=world.instance_arn, Name=f"Bench{index:02d}", SessionDuration="PT1H")[
                "PermissionSet"]["PermissionSetArn"]: f"Bench{index:02d}"
            for index in range(args.permission_sets)
        }
        users = {
            store.create_user(IdentityStoreId=world.identity_store_id, UserName=f"user{index:03d}", DisplayName="u",
                              Name={"GivenName": "u", "FamilyName": "v"})["UserId"]: f"user{index:03d}"
            for index in range(300)
        }
        groups = {
            store.create_group(IdentityStoreId=world.identity_store_id, DisplayName=f"team{index:02d}")["GroupId"]:
                f"team{index:02d}"
            for index in range(30)
        }
        principals = [("USER", principal) for principal in users] + [("GROUP", principal) for principal in groups]
        pairs = random.sample([(account, arn) for account in accounts for arn in permission_sets], args.provisioned)
        assignments = [
            (account, arn, kind, principal)
            for account, arn in pairs
            for kind, principal in random.sample(principals, random.randint(args.per_pair // 2,
                                                                            args.per_pair * 3 // 2))
        ]

        def create(assignment: tuple[str, str, str, str]) -> None:
            account, arn, kind, principal = assignment
            sso.create_account_assignment(InstanceArn=world.instance_arn, TargetId=account, TargetType="AWS_ACCOUNT",
                                          PermissionSetArn=arn, PrincipalType=kind, PrincipalId=principal)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, assignments))
        built = time.perf_counter() - started

        unexpected = set(random.sample(range(len(assignments)), args.drift))
        policy = policy_document(world)
        policy["identity_center"]["max_calls_per_second"] = args.rate
        policy["standing_assignments"] = [
            {("user" if kind == "USER" else "group"): (users if kind == "USER" else groups)[principal],
             "permission_set": permission_sets[arn], "account": account}
            for index, (account, arn, kind, principal) in enumerate(assignments) if index not in unexpected
        ]
        reconcile = {"ous": [ou], "permission_sets": sorted(permission_sets.values())}
        config = write_config(world, workdir / "elevation.yaml", policy=policy, reconcile=reconcile,
                              audit={"reports_location": str(workdir / "reports")})
        engine = create_engine_for_url(f"sqlite:///{workdir}/queue.db")
        upgrade(engine)
        runtime = Runtime(config=load_config(config), engine=engine,
                          identity_center_factory=identity_center_from_airflow, as_of=datetime.now(UTC), actor="bench")
        emulator.calls.clear()
        started = time.perf_counter()
        summary = run_reconcile(runtime)
        elapsed = time.perf_counter() - started

    calls = summary.calls
    total = sum(calls.values())
    print(f"machine: {machine()}")
    print(f"organization: {args.accounts} accounts x {args.permission_sets} permission sets = "
          f"{args.accounts * args.permission_sets} pairs, {len(pairs)} provisioned, {len(assignments)} assignments "
          f"({len(assignments) - len(unexpected)} standing, {len(unexpected)} not); built in {built:.0f} s")
    print(f"reconcile (report mode): {summary.accounts} accounts, {summary.permission_sets} permission sets, "
          f"{summary.pairs_listed} pairs listed, {summary.assignments_seen} assignments seen, "
          f"{len(summary.drift)} drift items ({', '.join(sorted({item.kind.value for item in summary.drift}))})")
    print("AWS calls by API name (a list call is one page):")
    for operation, count in sorted(calls.items(), key=lambda item: (-item[1], item[0])):
        print(f"  {operation:<42} {count:>6}{'  pages' if operation in LIST_CALLS else ''}")
    pages = sum(count for operation, count in calls.items() if operation in LIST_CALLS)
    print(f"  {'total':<42} {total:>6}  ({pages} list pages)")
    print(f"ListAccountAssignments: {calls['ListAccountAssignments']} pages for {summary.pairs_listed} provisioned pairs "
          f"(the emulator pages 10 items when no MaxResults is sent); listing every pair would take at least "
          f"{args.accounts * args.permission_sets} calls")
    print(f"wall time on the emulator: {elapsed:.1f} s (paced at {args.rate:g}/s); "
          f"at AWS's {AWS_RATE:g} calls/s the same calls take {total / AWS_RATE:.0f} s ({total / AWS_RATE / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
