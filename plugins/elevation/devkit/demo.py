"""`make demo`: a simulated day of temporary access in an emulated AWS organization, through the real DAGs.

Starts the AWS emulator, builds the demo organization, writes a configuration file and a SQLite queue under
`.demo/`, files realistic requests (overlapping ones, a group grant, an early revocation, bad ones), and drives
the real DAGs with `dag.test()` at chosen logical times over the next 26 hours. Then drift is made behind the
system's back (a console grant, a lost revoke) and `elevation_reconcile` finds it in report mode and removes it in
enforce mode. Airflow's own logs go to `.demo/airflow.log`; the terminal gets a short summary. Nothing here is a demo-only branch of the lifecycle: the
DAGs run exactly as in production, against the emulator instead of AWS.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Planned:
    """A request the demo files, and what it shows."""

    label: str
    values: dict[str, Any]
    offset: timedelta = timedelta(0)  # start, from the beginning of the day


def airflow_environment(home: Path) -> dict[str, str]:
    """What Airflow needs to run this repository's DAGs from `home` (set before Airflow is first imported)."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
    }


@contextlib.contextmanager
def _output_to(log: TextIO) -> Iterator[None]:
    """Send everything written to stdout/stderr (Airflow's task logs included) to the log file."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def plan(hour: timedelta = timedelta(hours=1)) -> list[Planned]:
    minute = timedelta(minutes=1)
    ja = "本番DBの接続数が急増。原因調査と一時的な設定変更のため（障害チケット INC-2041）"
    return [
        Planned("on-call break-glass, auto-approved", {"requester": "dave", "account_id": "media-prod",
                "permission_set": "AdministratorAccess", "duration_minutes": 90,
                "justification": "PagerDuty: checkout latency", "ticket": "INC-2040"}),
        Planned("overlapping session #1", {"requester": "alice", "account_id": "media-prod",
                "permission_set": "AdministratorAccess", "duration_minutes": 60,
                "justification": "failover drill", "ticket": "CHG-311"}, hour),
        Planned("overlapping session #2 (same user, set, account)", {"requester": "alice",
                "account_id": "media-prod", "permission_set": "AdministratorAccess", "duration_minutes": 90,
                "justification": "failover drill, part 2", "ticket": "CHG-311"}, hour + 30 * minute),
        Planned("approved by bob in the queue", {"requester": "erin", "account_id": "ec-prod",
                "permission_set": "PowerUserAccess", "duration_minutes": 120,
                "justification": "release 4.2", "ticket": "CHG-315"}, 2 * hour),
        Planned("Japanese justification, approved by bob", {"requester": "hanako@example.co.jp",
                "account_id": "media-stg", "permission_set": "PowerUserAccess", "duration_minutes": 240,
                "justification": ja, "ticket": "INC-2041"}, 3 * hour),
        Planned("group grant, inserted approved", {"requester": "bob", "account_id": "ec-prod",
                "permission_set": "PowerUserAccess", "principal_group": "platform", "duration_minutes": 60,
                "justification": "quarterly IAM review", "status": "approved", "approver": "carol"}, 4 * hour),
        Planned("on top of a standing assignment", {"requester": "dave", "account_id": "ec-prod",
                "permission_set": "PowerUserAccess", "duration_minutes": 60, "justification": "cache flush",
                "status": "approved", "approver": "bob"}, 4 * hour),
        Planned("ended early by the requester", {"requester": "alice", "account_id": "ec-prod",
                "permission_set": "AdministratorAccess", "duration_minutes": 120,
                "justification": "incident follow-up"}, 5 * hour),
        Planned("AWS refuses the creation", {"requester": "dave", "account_id": "ec-prod",
                "permission_set": "AdministratorAccess", "duration_minutes": 30,
                "justification": "restart workers"}, 8 * hour),
        Planned("never decided", {"requester": "carol", "account_id": "media-prod",
                "permission_set": "PowerUserAccess", "duration_minutes": 240,
                "justification": "capacity planning"}, 22 * hour),
        Planned("bad: unknown person", {"requester": "mallory", "account_id": "media-prod",
                "permission_set": "AdministratorAccess", "duration_minutes": 60, "justification": "trust me"}),
        Planned("bad: self-approval", {"requester": "bob", "account_id": "media-prod",
                "permission_set": "AdministratorAccess", "duration_minutes": 60, "justification": "fix",
                "status": "approved", "approver": "bob"}),
        Planned("bad: management account", {"requester": "dave", "account_id": "management",
                "permission_set": "AdministratorAccess", "duration_minutes": 60, "justification": "fix"}),
        Planned("bad: unknown permission set", {"requester": "erin", "account_id": "media-stg",
                "permission_set": "SuperAdmin", "duration_minutes": 60, "justification": "x"}),
        Planned("bad: not eligible", {"requester": "hanako", "account_id": "media-prod",
                "permission_set": "AdministratorAccess", "duration_minutes": 60, "justification": "curious"}),
        Planned("bad: account not in the organization", {"requester": "erin", "account_id": "999988887777",
                "permission_set": "PowerUserAccess", "duration_minutes": 60, "justification": "x"}),
        Planned("bad: SQL and HTML in the text, and too long", {"requester": "erin", "account_id": "media-stg",
                "permission_set": "PowerUserAccess", "duration_minutes": 30,
                "justification": "'); DROP TABLE elevation_request; -- <script>alert(1)</script>" * 80}),
    ]


def main() -> int:
    started = time.monotonic()
    out = sys.stdout
    workdir = REPO / ".demo"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    os.environ.update(airflow_environment(workdir / "airflow"))
    log_path = workdir / "airflow.log"
    log = log_path.open("w", encoding="utf-8")

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    say("elevation demo: a simulated day of temporary access in an emulated AWS organization")
    with _output_to(log):
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=log, stderr=log)

    from elevation.devkit.emulator import AwsEmulator
    from elevation.devkit.world import build_world, nightly_sections, write_config
    from elevation.store import queue
    from elevation.store.database import create_engine_for_url
    from elevation.store.migrations import upgrade

    emulator = AwsEmulator().start()
    world = build_world(emulator)
    emulator.calls.clear()
    config_path = write_config(
        world,
        workdir / "elevation.yaml",
        **nightly_sections(workdir),
        reconcile=reconcile_section(world, "report"),
    )
    queue_path = workdir / "queue.db"
    os.environ.update(
        {
            "ELEVATION_CONFIG": str(config_path),
            "AIRFLOW_CONN_AWS_DEFAULT": emulator.airflow_connection_json(),
            "AIRFLOW_CONN_ELEVATION_DB": json.dumps({"conn_type": "sqlite", "host": str(queue_path)}),
        }
    )
    engine = create_engine_for_url(f"sqlite:///{queue_path}")
    upgrade(engine)
    say(f"  AWS emulator   {emulator.endpoint_url} (moto, Identity Center extended)")
    say(f"  organization   {', '.join(f'{name} {number}' for name, number in world.accounts.items())}")
    say(f"  people         {', '.join(sorted(world.users))}; groups {', '.join(sorted(world.groups))}")
    say(f"  configuration  {config_path.relative_to(REPO)}; queue {queue_path.relative_to(REPO)}")

    day = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    labels: dict[int, str] = {}
    for item in plan():
        values = dict(item.values)
        account = values["account_id"]
        values["account_id"] = world.management_account_id if account == "management" else world.accounts.get(account, account)
        values["start_at"] = day + item.offset
        with engine.begin() as conn:
            labels[queue.insert_request(conn, **values)] = item.label
    say(f"  filed          {len(labels)} requests (7 of them bad on purpose)")

    from airflow.dag_processing.dagbag import DagBag

    with _output_to(log):
        bag = DagBag(str(REPO / "dags"))
    if bag.import_errors:
        say(f"DAG import errors: {bag.import_errors}")
        return 1
    every_minute = ("elevation_intake", "elevation_grants", "elevation_revocations")

    def tick(offset: timedelta, note: str = "") -> list[str]:
        at = day + offset
        with _output_to(log):
            states = {dag_id: bag.get_dag(dag_id).test(logical_date=at).state for dag_id in every_minute}
        return [f"{dag_id} failed" for dag_id, state in states.items() if state != "success"]

    def act(request_label: str, action: str, actor: str) -> None:
        request_id = next(key for key, value in labels.items() if value == request_label)
        with engine.begin() as conn:
            queue.insert_action(conn, request_id, action, actor, f"demo: {action}")

    say("")
    say("  time (UTC)        what happened")
    hour = timedelta(hours=1)
    minute = timedelta(minutes=1)
    schedule: list[tuple[timedelta, str]] = [(timedelta(0), "first runs: intake checks every request")]
    schedule += [(15 * minute, "")]
    schedule += [(30 * minute, "bob approves erin's and hanako's requests (action rows)")]
    schedule += [(offset * hour + extra, "") for offset in range(1, 27) for extra in (timedelta(0), 31 * minute)]
    events_seen = 0
    for offset, note in sorted(set(schedule)):
        if offset == 30 * minute:
            act("approved by bob in the queue", "approve", "bob")
            act("Japanese justification, approved by bob", "approve", "bob")
        if offset == 5 * hour + 31 * minute:
            act("ended early by the requester", "revoke", "alice")
            note = "alice ends her ec-prod session early (action row)"
        if offset == 8 * hour:
            emulator.identity_center.fail_next_creations(reason="Received a 404 status error: Not supported")
            emulator.faults.inject("CreateAccountAssignment", "ThrottlingException", message="Rate exceeded", times=2)
            note = "AWS throttles twice, then refuses one creation (injected on the wire)"
        problems = tick(offset, note)
        with engine.connect() as conn:
            transitions = conn.execute(
                queue.events.select().where(queue.events.c.kind == "transition", queue.events.c.id > events_seen)
                .order_by(queue.events.c.id)
            ).mappings().all()
            events_seen = conn.execute(queue.sa.select(queue.sa.func.max(queue.events.c.id))).scalar() or events_seen
        moves = Counter(event["to_status"] for event in transitions)
        if moves or note or problems:
            stamp = (day + offset).strftime("%a %H:%M")
            text = ", ".join(f"{count} {status}" for status, count in sorted(moves.items()))
            say(f"  {stamp:<16}  {text}{' - ' + note if note else ''}{' ! ' + ', '.join(problems) if problems else ''}")

    _summary(say, engine, labels, world, emulator)
    _drift(say, bag, engine, labels, world, day, config_path, log)
    _nights(say, bag, emulator, day, log)
    say("")
    say(f"  Airflow's logs: {log_path.relative_to(REPO)}   finished in {time.monotonic() - started:.0f} s")
    emulator.stop()
    return 0


def reconcile_section(world: Any, mode: str) -> dict[str, Any]:
    """Reconcile over the demo organization: its three OUs and its three permission sets, nobody protected."""
    return {"mode": mode, "ous": [world.ous[name] for name in sorted(world.ous)],
            "permission_sets": sorted(world.permission_sets)}


def _drift(say: Any, bag: Any, engine: Any, labels: dict[int, str], world: Any, day: datetime, config_path: Path,
           log: TextIO) -> None:
    """Drift made behind the system's back, found by elevation_reconcile in report mode, removed in enforce mode."""
    from elevation.devkit.world import nightly_sections, write_config
    from elevation.store import drift as drift_store
    from elevation.store import queue

    sso = world.emulator.client("sso-admin")
    names = {number: name for name, number in world.accounts.items()}

    def assign(user: str, permission_set: str, account: str) -> None:
        """As an administrator would in the console: CreateAccountAssignment, straight to Identity Center."""
        sso.create_account_assignment(
            InstanceArn=world.instance_arn, TargetId=world.accounts[account], TargetType="AWS_ACCOUNT",
            PermissionSetArn=world.permission_sets[permission_set], PrincipalType="USER",
            PrincipalId=world.users[user])

    lost = next(key for key, value in labels.items() if value == "approved by bob in the queue")
    with engine.connect() as conn:
        request = queue.get_request(conn, lost)
        session = conn.execute(queue.sessions.select().where(queue.sessions.c.request_id == lost)).mappings().one()
    assert request is not None and session["assignment_removed_at"] is not None, "the session did not end normally"
    assign("carol", "AdministratorAccess", "ec-prod")
    assign(request["requester"], request["permission_set"], names[request["account_id"]])
    say("")
    say("  drift, made behind the system's back in the emulator:")
    say("    someone grants carol AdministratorAccess on ec-prod in the console (no request, no session)")
    say(f"    a lost revoke: #{lost}'s assignment ({request['requester']} {request['permission_set']} on "
        f"{names[request['account_id']]}) was removed and confirmed at its end; it is back")
    for step, (mode, offset) in enumerate((("report", timedelta(hours=27)), ("enforce", timedelta(hours=27, minutes=5)))):
        if step:
            write_config(world, config_path, **nightly_sections(config_path.parent), reconcile=reconcile_section(world, mode))
        with _output_to(log):
            run = bag.get_dag("elevation_reconcile").test(logical_date=day + offset)
        result = _task_result(run, "reconcile")
        stamp = (day + offset).strftime("%a %H:%M")
        if run.state != "success" or not result.get("report"):
            say(f"  {stamp:<16}  elevation_reconcile ({mode}) {run.state} (see the log)")
            continue
        report = json.loads(Path(result["report"]).with_suffix(".json").read_text(encoding="utf-8"))
        calls = sum(result["calls"].values())
        if mode == "report":
            say(f"  {stamp:<16}  elevation_reconcile (report mode): {report['counts']['open']} drift items open, "
                f"nothing changed; {report['scope']['pairs_listed']} provisioned pairs listed, {calls} AWS calls")
            items = report["open"]
        else:
            say(f"  {stamp:<16}  elevation_reconcile (enforce mode): {report['counts']['removed']} removed, each "
                f"confirmed through its deletion status; {report['counts']['open']} drift items open")
            items = report["fixed_this_run"]
        for item in items:
            request_text = f" (request #{item['request_id']})" if item["request_id"] is not None else ""
            say(f"      {item['kind']:<10} {item['principal_type'].lower()} {item['principal_name']} "
                f"{item['permission_set_name']} on {item['account_name'] or item['account_id']}{request_text}: "
                f"{item['action']}")
        say(f"      report: {Path(result['report']).relative_to(REPO)}")
    with engine.connect() as conn:
        still_open = drift_store.open_items(conn)
    left, standing = _assignments_left(world)
    say(f"  drift items open now: {len(still_open)}; assignments left in Identity Center: {len(left)}, "
        f"exactly the standing ones: {left == standing}")


def _nights(say: Any, bag: Any, emulator: Any, day: datetime, log: TextIO) -> None:
    """The sessions leave CloudTrail activity in the trail bucket; the nightly extract and audit run on it."""
    from elevation.config import load_config
    from elevation.devkit.activity import write_activity
    from elevation.devkit.world import TRAIL_BUCKET
    from elevation.nightly import session_identities
    from elevation.runtime import Runtime, identity_center_from_airflow
    from elevation.store.database import create_engine_for_url, url_from_airflow_connection

    config = load_config()
    engine = create_engine_for_url(url_from_airflow_connection(config.connections.database))
    runtime = Runtime(config=config, engine=engine, identity_center_factory=identity_center_from_airflow,
                      as_of=day, actor="demo")
    sessions = session_identities(runtime)
    counts = write_activity(emulator.client("s3"), TRAIL_BUCKET, sessions)
    say("")
    say(f"  CloudTrail: {sum(counts.values())} events of {len(sessions)} sessions (plus other people's noise) "
        f"written as trail files to s3://{TRAIL_BUCKET}/AWSLogs/")
    first_night = day.date()
    for night in (first_night, first_night + timedelta(days=1)):
        run_at = datetime.combine(night + timedelta(days=1), datetime.min.time(), tzinfo=UTC) + timedelta(minutes=30)
        with _output_to(log):
            extract_run = bag.get_dag("elevation_extract").test(logical_date=run_at)
            audit_run = bag.get_dag("elevation_audit").test(logical_date=run_at)
        extracted = _task_result(extract_run, "extract")
        audited = _task_result(audit_run, "audit")
        if extract_run.state != "success" or audit_run.state != "success":
            say(f"  night {night}: extract {extract_run.state}, audit {audit_run.state} (see the log)")
            continue
        per_session = ", ".join(f"#{key} {value}" for key, value in extracted["events_per_session"].items())
        say(f"  night {night}: extracted {extracted['events_written']} events ({per_session or 'no sessions'}); "
            f"{extracted['objects_read']} trail files read, {len(extracted['warnings'])} warnings")
        for session_id, result in audited["sessions"].items():
            findings = ", ".join(f"{count} {severity}" for severity, count in result["findings"].items() if count)
            say(f"      session #{session_id:<3} {result['state']:<11} {result['events']:>3} events, "
                f"findings: {findings or 'none'}")
        say(f"      index: {Path(audited['index']).relative_to(REPO)}")


def _task_result(dag_run: Any, task_id: str) -> dict[str, Any]:
    """The return value (XCom) of a task of a finished `dag.test()` run."""
    for instance in dag_run.get_task_instances():
        if instance.task_id == task_id:
            return instance.xcom_pull(task_ids=task_id) or {}
    return {}


def _summary(say: Any, engine: Any, labels: dict[int, str], world: Any, emulator: Any) -> None:
    from elevation.store import queue

    with engine.connect() as conn:
        rows = conn.execute(queue.requests.select().order_by(queue.requests.c.id)).mappings().all()
    names = {number: name for name, number in world.accounts.items()}
    names[world.management_account_id] = "management"
    say("")
    say("  requests by final state")
    by_state: dict[str, list[Any]] = {}
    for row in rows:
        by_state.setdefault(row["status"], []).append(row)
    for status in sorted(by_state):
        say(f"    {status} ({len(by_state[status])})")
        for row in by_state[status]:
            who = row["principal_group"] and f"group {row['principal_group']}" or row["requester"]
            reason = (row["status_reason"] or "").replace("\n", " ")
            reason = reason if len(reason) <= 90 else reason[:87] + "..."
            say(f"      #{row['id']:<3} {who[:20]:<20} {row['permission_set'][:19]:<19} "
                f"{names.get(row['account_id'], row['account_id'])[:10]:<10}  {labels[row['id']]}"
                + (f"\n           {reason}" if reason else ""))
    with engine.connect() as conn:
        sessions = conn.execute(queue.sessions.select()).mappings().all()
    created = sum(1 for session in sessions if session["creation_status"] == "SUCCEEDED")
    removed = sum(1 for session in sessions if session["assignment_removed_at"] is not None)
    kept = sum(1 for session in sessions if session["kept_because"])
    calls = emulator.calls
    say("")
    say(f"  Identity Center: {created} assignments created and confirmed, {removed} removed and confirmed, "
        f"{kept} kept for another need; {calls.count('CreateAccountAssignment')} create calls, "
        f"{calls.count('DeleteAccountAssignment')} delete calls, "
        f"{calls.count('DescribeAccountAssignmentCreationStatus') + calls.count('DescribeAccountAssignmentDeletionStatus')}"
        " status checks")
    left, standing = _assignments_left(world)
    say(f"  assignments left in Identity Center: {len(left)}, exactly the standing ones: {left == standing}")


def _assignments_left(world: Any) -> tuple[set[Any], set[Any]]:
    """(what exists in Identity Center, the standing assignments), comparable: the demo's final check."""
    from elevation.devkit.world import standing_assignments

    left = {
        (principal, world.permission_sets[permission_set], world.accounts[account])
        for account in world.accounts
        for permission_set in world.permission_sets
        for principal in world.assignments(account, permission_set)
    }
    standing = {
        ((kind, (world.users if kind == "USER" else world.groups)[name]), world.permission_sets[ps], world.accounts[acc])
        for kind, name, ps, acc in standing_assignments()
    }
    return left, standing


if __name__ == "__main__":
    sys.exit(main())
