"""Benchmark: the nightly audit (`elevation.nightly.run_audit`) of one night of N events, in bounded memory.

For each size, a night is built the way production leaves it for the audit: a queue database (SQLite, migrated with
the project's migrations) holding S granted, ended sessions of the night (--per-session events each: 100 sessions at
1M, 400 at 4M; one hour each, starts spread over the night, in the world's accounts and permission sets), the night's
partition written by the extract's own writer (`write_partition`, rows in time order as the extract reads trail
files: the sessions of an hour interleave) with its manifest (`events_per_session`), and a configuration whose
`extract.output_location` and `audit.reports_location` are in a temporary folder. The events are bench_audit's mix
(85% reads, 14% writes, 1% dangerous calls, 2% failed) with each session's own SSO identity, source IP and agent.
Rules: the project's pack plus SigmaHQ's AWS CloudTrail rules (as bench_audit; pack only if they are absent).

Organizations account names come from the project's AWS emulator (`AwsEmulator` with a world from `build_world`), run
in this parent process: the measured processes reach it over HTTP, so moto's memory is not counted in theirs.

Three measurements, each in a fresh interpreter (peak RSS is that run's alone), taking turns in each of --repeat
rounds (best time kept, so a slow spell on a shared machine hits them alike):

  floor   the read floor: the sessions' events read in the very batches run_audit makes (`_batches`,
          `_Partitions.events_of` per batch), nothing else;
  rules   the audit's own work: the same reads plus `RuleSet.findings_table` per batch (rules loaded beforehand);
  audit   the real `run_audit(runtime, night)`: reads, rules (`evaluate_table`), each session's HTML report and CSV/
          Parquet downloads, findings streamed to findings-<night>.jsonl, the queue's bookkeeping, the index.
          Instrumented (wrappers around `_Partitions.events_of`, `evaluate_table`, the report functions) to split its time,
          and to sample the resident set after each batch.

Peak RSS is VmHWM of the child (/proc/self/status), reset after the imports (`clear_refs`): `ru_maxrss` is printed
too, but Linux carries the spawning parent's high-water mark into it over fork/exec, so it is not that run's alone.

Usage:

    python benchmarks/bench_audit_night.py 1000000 4000000 [--repeat 3] [--per-session 10000] [--sigma DIR]
    python benchmarks/bench_audit_night.py 100000          # a quick check (10 sessions, one batch)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED_DATA = Path(os.environ.get("ELEVATION_SHARED_DATA") or REPO.parent / "shared" / "data").expanduser()
SIGMA_DEFAULT = SHARED_DATA / "sigma" / "rules" / "cloud" / "aws" / "cloudtrail"
PERMISSION_SETS = ("AdministratorAccess", "PowerUserAccess", "ReadOnlyAccess")
SESSION_MINUTES = 60
#: Session starts are spread over the first 14.5 hours of the night, so that even an 8-hour ReadOnlyAccess
#: credential tail closes within the night: every session is final (its findings go to the findings file).
START_SPREAD = timedelta(hours=14, minutes=30)
USERS = 300  # distinct people: at 400 sessions some have two sessions (same assignment) that night


# --- the night ------------------------------------------------------------------------------------------------


def _seconds(iso: str) -> int:
    return int(iso.removeprefix("PT").removesuffix("H")) * 3600


def plan_sessions(world: dict[str, Any], count: int, night: date) -> list[dict[str, Any]]:
    """The night's sessions: who, where, when (one hour each)."""
    start = datetime.combine(night, dtime(0), tzinfo=UTC)
    step = START_SPREAD / max(1, count)
    accounts = sorted(world["accounts"].values())
    plans = []
    for number in range(count):
        permission_set = PERMISSION_SETS[number % len(PERMISSION_SETS)]
        begins = start + number * step + timedelta(minutes=1)
        plans.append(
            {
                "number": number,
                "user": f"user{number % USERS:03d}@example.com",
                "account": accounts[number % len(accounts)],
                "permission_set": permission_set,
                "permission_set_arn": world["permission_sets"][permission_set],
                "session_seconds": _seconds(world["durations"][permission_set]),
                "requested": begins - timedelta(minutes=2),
                "granted": begins,
                "ended": begins + timedelta(minutes=SESSION_MINUTES),
            }
        )
    return plans


def fill_queue(path: Path, world: dict[str, Any], plans: list[dict[str, Any]]) -> None:
    """Granted, ended sessions as the lifecycle leaves them (request + session rows), in a migrated SQLite queue."""
    import sqlalchemy as sa

    from elevation.store import queue
    from elevation.store.database import create_engine_for_url
    from elevation.store.migrations import upgrade
    from elevation.store.tables import requests

    engine = create_engine_for_url(f"sqlite:///{path}")
    upgrade(engine)
    with engine.begin() as conn:
        for plan in plans:
            ended = plan["ended"]
            request_id = queue.insert_request(
                conn,
                requester=plan["user"].split("@")[0],
                account_id=plan["account"],
                permission_set=plan["permission_set"],
                start_at=plan["requested"],
                duration_minutes=SESSION_MINUTES,
                justification=f"incident INC-{plan['number']:05d}: investigate",
                ticket=f"OPS-{1000 + plan['number']}",
                status="approved",
                approver="bob",
                decided_by="bob",
                decided_at=plan["requested"],
                created_at=plan["requested"] - timedelta(minutes=1),
                validated_at=plan["requested"],
                end_at=ended,
                granted_at=plan["granted"],
                ended_at=ended,
                updated_at=ended,
            )
            assert request_id == plan["number"] + 1
            # Inserted as approved (the queue's insert guard), then ended as the lifecycle leaves it.
            conn.execute(sa.update(requests).where(requests.c.id == request_id).values(status="ended"))
            queue.create_session(
                conn,
                request_id=request_id,
                instance_arn=world["instance_arn"],
                account_id=plan["account"],
                permission_set_name=plan["permission_set"],
                permission_set_arn=plan["permission_set_arn"],
                permission_set_session_seconds=plan["session_seconds"],
                principal_type="USER",
                principal_id=f"9067{plan['number'] % USERS:06d}-user",
                principal_name=plan["user"],
                creation_request_id=f"create-{request_id}",
                creation_status="SUCCEEDED",
                granted_at=plan["granted"],
                creation_sent_at=plan["granted"] - timedelta(seconds=5),
                deletion_request_id=f"delete-{request_id}",
                deletion_status="SUCCEEDED",
                assignment_removed_at=ended + timedelta(seconds=20),
                assignment_preexisted=False,
            )
    engine.dispose()


def _identity(plan: dict[str, Any]) -> dict[str, Any]:
    account, user = plan["account"], plan["user"]
    role = f"AWSReservedSSO_{plan['permission_set']}_{plan['number'] * 2654435761 % (1 << 64):016x}"
    return {
        "type": "AssumedRole",
        "principalId": f"AROAEXAMPLE{plan['number']:08d}:{user}",
        "arn": f"arn:aws:sts::{account}:assumed-role/{role}/{user}",
        "accountId": account,
        "accessKeyId": f"ASIAEXAMPLE{plan['number']:09d}",
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": "AROAEXAMPLE",
                "accountId": account,
                "arn": f"arn:aws:iam::{account}:role/aws-reserved/sso.amazonaws.com/{role}",
                "userName": role,
            },
            "attributes": {
                "creationDate": plan["granted"].strftime("%Y-%m-%dT%H:%M:%SZ"),
                "mfaAuthenticated": "false",
            },
        },
    }


def night_slices(plans: list[dict[str, Any]], per_session: int, seed: int = 7, rows: int = 100_000) -> Any:
    """Every event of the night in time order, as Arrow tables of EVENT_SCHEMA of `rows` events each (bench_audit's
    mix of calls, each session with its own SSO identity, source IP and agent). Built slice by slice: one string
    column of a 4M-event night would hold more than 2 GB."""
    import pyarrow as pa
    from bench_audit import USER_AGENTS, _template_rows

    from elevation.cloudtrail.schema import EVENT_SCHEMA, record_to_row

    rng = random.Random(seed)
    templates, weights = _template_rows()
    template_table = pa.Table.from_pylist(templates, schema=EVENT_SCHEMA)
    count = per_session * len(plans)
    picks = rng.choices(range(len(templates)), weights=weights, k=count)
    session_table = pa.Table.from_pylist(
        [
            record_to_row(
                {
                    "eventID": "x",
                    "eventTime": "2026-01-01T00:00:00Z",
                    "userIdentity": _identity(plan),
                    "sourceIPAddress": f"198.51.100.{plan['number'] % 250}",
                    "userAgent": USER_AGENTS[plan["number"] % len(USER_AGENTS)],
                    "recipientAccountId": plan["account"],
                },
                str(plan["number"] + 1),
            )
            for plan in plans
        ],
        schema=EVENT_SCHEMA,
    )
    from_session = {
        "session_id",
        "sourceIPAddress",
        "userAgent",
        "userIdentity",
        "recipientAccountId",
        *(name for name in EVENT_SCHEMA.names if name.startswith("userIdentity_")),
    }
    step_us = (SESSION_MINUTES - 1) * 60_000_000 // per_session  # within the session, from 30 s in
    starts = [int(plan["granted"].timestamp() * 1_000_000) + 30_000_000 for plan in plans]
    times = [
        starts[index // per_session] + (index % per_session) * step_us + rng.randrange(step_us)
        for index in range(count)
    ]
    # The night in time order, as the extract writes it: concurrent sessions interleave.
    order = sorted(range(count), key=times.__getitem__)
    texts = {name: [row[name] for row in templates] for name in ("requestParameters", "responseElements")}
    for at in range(0, count, rows):
        chosen = order[at : at + rows]
        kinds = template_table.take(pa.array([picks[index] for index in chosen], pa.int32()))
        owners = session_table.take(pa.array([index // per_session for index in chosen], pa.int32()))
        replaced = {
            "eventID": pa.array(
                [f"{index:08x}-5b1c-4d2e-9f00-{rng.getrandbits(48):012x}" for index in chosen]
            ),
            "requestID": pa.array([f"req-{index:010d}" for index in chosen]),
            "eventTime": pa.array([times[index] for index in chosen], pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
        }
        # Per-event resource ids: as varied (and as costly to read) as a real night.
        for name, values in texts.items():
            replaced[name] = pa.array(
                [
                    None
                    if values[picks[index]] is None
                    else values[picks[index]].replace("RID", f"{rng.getrandbits(40):010x}")
                    for index in chosen
                ],
                pa.string(),
            )
        yield pa.Table.from_arrays(
            [
                replaced[name]
                if name in replaced
                else (owners if name in from_session else kinds).column(name)
                for name in EVENT_SCHEMA.names
            ],
            schema=EVENT_SCHEMA,
        )


def generate(
    folder: Path, world: dict[str, Any], events: int, per_session: int, night: date
) -> dict[str, Any]:
    """The queue, the night's partition (the project's writer) and its manifest under `folder`."""
    from collections import Counter

    from elevation.extract.location import resolve_location
    from elevation.extract.manifest import NightManifest, write_manifest
    from elevation.extract.nights import night_window, read_span
    from elevation.extract.writer import write_partition

    plans = plan_sessions(world, max(1, events // per_session), night)
    fill_queue(folder / "queue.db", world, plans)
    counts: Counter[str] = Counter()

    def rows() -> Any:  # dicts, as the extract hands them to the writer
        for piece in night_slices(plans, per_session):
            counts.update(piece.column("session_id").to_pylist())
            for batch in piece.to_batches(max_chunksize=5_000):
                yield from batch.to_pylist()

    filesystem, base = resolve_location(str(folder / "cloudtrail"))
    written = write_partition(filesystem, base, night, rows())
    start, end = night_window(night)
    span = read_span(start, end, timedelta(minutes=15))
    write_manifest(
        filesystem,
        base,
        night,
        NightManifest(
            night=night.isoformat(),
            source="s3",
            listed_at=(end + timedelta(hours=1)).isoformat(),
            read_start=span[0].isoformat(),
            read_end=span[1].isoformat(),
            events_per_session=dict(counts),
            accounts=sorted({plan["account"] for plan in plans}),
        ),
    )
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(written.path).metadata
    return {
        "events": written.rows,
        "sessions": len(plans),
        "bytes": written.bytes,
        "row_groups": metadata.num_row_groups,
    }


# --- the measured children --------------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _mb(kb: float) -> float:
    return round(kb / 1024, 1)


def child(mode: str, folder: Path, night: date) -> dict[str, Any]:
    import pyarrow as pa  # noqa: F401  (imported before the baseline, as run_audit's process has it)

    import elevation.access.reconcile_report  # noqa: F401  (run_audit's own imports, loaded before the baseline)
    import elevation.audit.findings_file  # noqa: F401
    import elevation.audit.report as report
    import elevation.nightly as nightly
    from elevation.audit import load_rules
    from elevation.audit.engine import RuleSet
    from elevation.config import load_config
    from elevation.extract.manifest import read_manifest
    from elevation.extract.nights import night_window, sessions_for_night
    from elevation.runtime import Runtime, identity_center_from_airflow
    from elevation.store.database import create_engine_for_url

    config = load_config()
    database = folder / "queue.db"
    if mode == "audit":  # every run audits the night as the first time: a pristine queue, no reports yet
        shutil.copyfile(folder / "queue.pristine.db", database)
        shutil.rmtree(folder / "reports", ignore_errors=True)
    engine = create_engine_for_url(f"sqlite:///{database}")
    now = datetime.now(UTC)
    runtime = Runtime(
        config=config,
        engine=engine,
        identity_center_factory=identity_center_from_airflow,
        as_of=now,
        actor="bench_audit_night",
    )
    extract, audit = config.extract, config.audit
    start, end = night_window(night, extract.timezone)
    filesystem, base = nightly._output(extract.output_location)
    # The batches run_audit makes (same functions, same inputs), for the floor and the rules-only run.
    with engine.connect() as conn:
        rows = nightly._session_rows(conn)
    tonight = sessions_for_night([nightly.identity_of(row, end) for row in rows], start, end)
    manifest = read_manifest(filesystem, base, night)
    sizes = dict(manifest.events_per_session) if manifest else {}
    groups = {
        identity.session_id: "|".join(
            (identity.account_id, identity.permission_set_name, *sorted(identity.user_names))
        )
        for identity in tonight
    }
    batches = nightly._batches(tonight, sizes, groups)
    rules = None
    load_s = 0.0
    if mode == "rules":
        started = time.perf_counter()
        rules = load_rules(audit.rule_folders, include_pack=audit.include_pack, disabled=audit.disabled_rules)
        load_s = time.perf_counter() - started

    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark from here on: this run's work alone
    base_kb = _status_kb("VmHWM")
    result: dict[str, Any] = {
        "mode": mode,
        "base_mb": _mb(base_kb),
        "batches": len(batches),
        "sessions": len(tonight),
        "load_rules_s": round(load_s, 3),
    }
    rss_after_batch: list[float] = []
    events = findings = 0
    if mode in ("floor", "rules"):
        started = time.perf_counter()
        partitions = nightly._Partitions(filesystem, base)
        for batch in batches:
            table = partitions.events_of({identity.session_id: nightly._nights_of(identity, end, extract.timezone)
                                          for identity in batch})
            events += table.num_rows
            if rules is not None:
                findings += rules.findings_table(table).num_rows
            del table
            rss_after_batch.append(_mb(_status_kb("VmRSS")))
        result["seconds"] = time.perf_counter() - started
    else:
        spent: dict[str, float] = {"read": 0.0, "rules": 0.0, "summary": 0.0, "render": 0.0, "index": 0.0}
        read_rows = [0]

        def timed(name: str, function: Any, after: Any = None) -> Any:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                began = time.perf_counter()
                value = function(*args, **kwargs)
                spent[name] += time.perf_counter() - began
                if after:
                    after(value)
                return value

            return wrapper

        def on_read(table: Any) -> None:
            read_rows[0] += table.num_rows
            rss_after_batch.append(_mb(_status_kb("VmRSS")))  # the previous batch is gone, this one is in

        nightly._Partitions.events_of = timed("read", nightly._Partitions.events_of, on_read)
        RuleSet.evaluate_table = timed("rules", RuleSet.evaluate_table)
        report.session_summary = timed("summary", report.session_summary)
        report.render_session_report = timed("render", report.render_session_report)
        report.render_index = timed("index", report.render_index)
        started = time.perf_counter()
        summary = nightly.run_audit(runtime, night)
        result["seconds"] = time.perf_counter() - started
        events = read_rows[0]
        findings = summary.findings
        result["findings_written"] = summary.findings_written
        result["final_sessions"] = sum(1 for item in summary.sessions.values() if item["state"] == "final")
        result["split_s"] = {name: round(value, 3) for name, value in spent.items()}
        result["reports_mb"] = round(
            sum(path.stat().st_size for path in (folder / "reports").rglob("*") if path.is_file()) / 1e6, 1
        )
    peak_kb = _status_kb("VmHWM")
    result.update(
        events=events,
        findings=findings,
        seconds=round(result["seconds"], 3),
        peak_mb=_mb(peak_kb),
        work_mb=_mb(peak_kb - base_kb),
        rss_after_batch_mb=rss_after_batch,
        ru_maxrss_mb=_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
    )
    return result


# --- the parent -------------------------------------------------------------------------------------------------


def _run_child(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, *argv], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"child {argv[:2]} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> str:
    import platform

    import pyarrow

    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{os.cpu_count()} vCPUs ({len(os.sched_getaffinity(0))} usable), {model}; Python "
        f"{platform.python_version()}, pyarrow {pyarrow.__version__}; load average {load}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[1_000_000, 4_000_000], help="events per night")
    parser.add_argument("--per-session", type=int, default=10_000, help="events per session")
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds; the best time of each measurement is kept"
    )
    parser.add_argument(
        "--sigma", type=Path, default=SIGMA_DEFAULT, help="SigmaHQ AWS CloudTrail rule folder"
    )
    parser.add_argument("--keep", type=Path, help="build the nights under this folder and keep them")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "FOLDER", "NIGHT"), help=argparse.SUPPRESS)
    parser.add_argument("--world", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, folder, night = args.child[0], Path(args.child[1]), date.fromisoformat(args.child[2])
        if mode == "generate":
            world = json.loads(args.world.read_text())
            print(json.dumps(generate(folder, world, world["events"], args.per_session, night)))
        else:
            print(json.dumps(child(mode, folder, night)))
        return 0

    from elevation.devkit.demo import airflow_environment

    scratch = Path(tempfile.mkdtemp(prefix="bench-audit-night-", dir=args.keep))
    env = {
        **os.environ,
        **airflow_environment(scratch / "airflow"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }
    os.environ.update(env)
    from elevation.devkit.emulator import AwsEmulator
    from elevation.devkit.world import PERMISSION_SETS as DURATIONS
    from elevation.devkit.world import build_world, nightly_sections, write_config

    sigma = args.sigma if args.sigma.is_dir() else None
    night = (datetime.now(UTC) - timedelta(days=2)).date()  # closed, past the delivery margin: final audits
    print(f"machine: {machine()}")
    print(
        f"night {night}; rules: the pack{' + ' + str(sigma) if sigma else ' only (no SigmaHQ rules found)'}; "
        f"best of {args.repeat}, floor / rules / audit taking turns, each in a fresh process"
    )
    results: dict[int, dict[str, Any]] = {}
    with AwsEmulator() as emulator:
        emulator.reset()
        world = build_world(emulator)
        env["AIRFLOW_CONN_AWS_DEFAULT"] = emulator.airflow_connection_json()
        for size in args.sizes:
            folder = scratch / f"night-{size}"
            folder.mkdir(parents=True)
            sections = nightly_sections(folder)
            if sigma:
                sections["audit"]["rule_folders"] = [str(sigma)]
            config = write_config(world, folder / "elevation.yaml", **sections)
            world_file = folder / "world.json"
            world_file.write_text(
                json.dumps(
                    {
                        "accounts": world.accounts,
                        "permission_sets": world.permission_sets,
                        "durations": DURATIONS,
                        "instance_arn": world.instance_arn,
                        "events": size,
                    }
                )
            )
            child_env = {
                **env,
                "ELEVATION_CONFIG": str(config),
                "PYTHONPATH": os.pathsep.join(filter(None, (str(HERE), env.get("PYTHONPATH")))),
            }
            started = time.perf_counter()
            built = _run_child(
                [
                    "--child",
                    "generate",
                    str(folder),
                    night.isoformat(),
                    "--world",
                    str(world_file),
                    "--per-session",
                    str(args.per_session),
                ],
                child_env,
            )
            shutil.copyfile(folder / "queue.db", folder / "queue.pristine.db")
            print(
                f"\n{size:,} events: {built['sessions']} sessions, {built['row_groups']} row groups, "
                f"{built['bytes'] / 1e6:.0f} MB written by write_partition in {time.perf_counter() - started:.0f}s"
            )
            runs: dict[str, list[dict[str, Any]]] = {"floor": [], "rules": [], "audit": []}
            for round_ in range(args.repeat):
                for mode in runs:
                    run = _run_child(["--child", mode, str(folder), night.isoformat()], child_env)
                    runs[mode].append(run)
                    print(
                        f"  round {round_ + 1} {mode:<5} {run['seconds']:8.2f}s  peak {run['peak_mb']:7.1f} MB "
                        f"(+{run['work_mb']:.1f} over {run['base_mb']:.0f} MB)",
                        flush=True,
                    )
            results[size] = {"built": built, "runs": runs}
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    print_report(results, machine())
    return 0


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return min(runs, key=lambda run: run["seconds"])


def print_report(results: dict[int, dict[str, Any]], where: str) -> None:
    print(f"\nmachine: {where}")
    header = (
        f"{'events':>10} {'sess':>5} {'batch':>5} | {'floor s':>8} {'rules s':>8} {'audit s':>8} | "
        f"{'rules/fl':>8} {'audit/fl':>8} {'render%':>7} | {'audit ev/s':>10} | "
        f"{'peak MB floor':>13} {'rules':>6} {'audit':>6} {'base':>5}"
    )
    print(header)
    print("-" * len(header))
    summary: dict[str, Any] = {}
    for size, result in results.items():
        floor, rules, audit = (_best(result["runs"][mode]) for mode in ("floor", "rules", "audit"))
        peaks = {
            mode: max(run["peak_mb"] for run in result["runs"][mode]) for mode in ("floor", "rules", "audit")
        }
        split = audit["split_s"]
        render = split["summary"] + split["render"] + split["index"]
        print(
            f"{size:>10,} {audit['sessions']:>5} {audit['batches']:>5} | {floor['seconds']:8.2f} "
            f"{rules['seconds']:8.2f} {audit['seconds']:8.2f} | {rules['seconds'] / floor['seconds']:7.2f}x "
            f"{audit['seconds'] / floor['seconds']:7.2f}x {100 * render / audit['seconds']:6.0f}% | "
            f"{audit['events'] / audit['seconds']:>10,.0f} | {peaks['floor']:>13.0f} {peaks['rules']:>6.0f} "
            f"{peaks['audit']:>6.0f} {audit['base_mb']:>5.0f}"
        )
        other = audit["seconds"] - sum(split.values())
        print(
            f"{'':>10}   audit's split: read {split['read']:.2f}s, rules (evaluate_table) {split['rules']:.2f}s, "
            f"index lines (session_summary) {split['summary']:.2f}s, reports + downloads {split['render']:.2f}s, "
            f"night index {split['index']:.2f}s, the rest (rules loading, queue, findings file, ...) {other:.2f}s; "
            f"{audit['findings']:,} findings, {audit['findings_written']:,} lines written, "
            f"{audit['final_sessions']} final sessions, reports {audit['reports_mb']} MB; "
            f"rules-only loads its rules in {rules['load_rules_s']:.2f}s (not in its time)"
        )
        print(f"{'':>10}   RSS after each batch (audit, MB): {audit['rss_after_batch_mb']}")
        summary[str(size)] = {
            "events": audit["events"],
            "sessions": audit["sessions"],
            "batches": audit["batches"],
            "floor_s": floor["seconds"],
            "rules_s": rules["seconds"],
            "audit_s": audit["seconds"],
            "audit_split_s": split,
            "render_s": round(render, 3),
            "findings": audit["findings"],
            "findings_written": audit["findings_written"],
            "peak_mb": peaks,
            "base_mb": audit["base_mb"],
            "work_mb": {mode: max(run["work_mb"] for run in result["runs"][mode]) for mode in result["runs"]},
            "ru_maxrss_mb": {
                mode: max(run["ru_maxrss_mb"] for run in result["runs"][mode]) for mode in result["runs"]
            },
            "audit_times_s": [run["seconds"] for run in result["runs"]["audit"]],
            "floor_times_s": [run["seconds"] for run in result["runs"]["floor"]],
            "rules_times_s": [run["seconds"] for run in result["runs"]["rules"]],
            "rss_after_batch_mb": audit["rss_after_batch_mb"],
            "built": result["built"],
        }
    sizes = sorted(results)
    if len(sizes) >= 2:
        small, large = summary[str(sizes[0])], summary[str(sizes[-1])]
        print(
            f"\n{sizes[-1]:,} vs {sizes[0]:,} events ({sizes[-1] / sizes[0]:.0f}x the night): peak RSS of the audit "
            f"{large['peak_mb']['audit'] / small['peak_mb']['audit']:.2f}x (target <= 1.5x; its growth over the "
            f"loaded interpreter {large['work_mb']['audit'] / max(small['work_mb']['audit'], 1):.2f}x); floor time "
            f"{large['floor_s'] / small['floor_s']:.2f}x, audit time {large['audit_s'] / small['audit_s']:.2f}x"
        )
    for size in sizes:
        item = summary[str(size)]
        print(
            f"{size:,}: rules-only {item['rules_s'] / item['floor_s']:.2f}x the floor (target <= 1.5x); the whole "
            f"audit {item['audit_s'] / item['floor_s']:.2f}x, of which report rendering "
            f"{100 * item['render_s'] / item['audit_s']:.0f}%"
        )
    print(json.dumps({"machine": where, "results": summary}))


if __name__ == "__main__":
    sys.exit(main())
