"""Plays a Plan against a fresh organization and queue, checks the invariants after every step, settles the day.

Time is a fake clock: runs act as of the simulated moment (`as_of`), their `clock`, `sleep` and `monotonic`
read and advance it, so polling and backoff cost no real time. A run's process is killed by raising
SimulatedCrash (a BaseException: no `except Exception` in the code can swallow it) from the AWS-call hook
(`Runtime.record_aws_call`) or from a `before_cursor_execute` listener before a chosen write; a dropped database
connection is the DB-API's own OperationalError raised there. A killed run leaves its claims behind, like a dead
worker; the next run is a new worker unless the plan retries the killed try with its worker id.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any
from unittest import mock

import sqlalchemy as sa
from botocore.exceptions import ClientError, ReadTimeoutError

from elevation import aws
from elevation.access.grants import run_grants
from elevation.access.intake import run_intake
from elevation.access.revocations import RevocationOverdue, run_revocations
from elevation.config import ElevationConfig
from elevation.devkit.emulator import AwsEmulator
from elevation.devkit.world import ACCOUNTS, World, build_world, policy_document, standing_assignments
from elevation.runtime import Runtime, identity_center_from_airflow
from elevation.store import queue
from elevation.store.database import create_engine_for_url
from elevation.store.tables import actions, events, requests, sessions

from . import invariants
from .invariants import Knowledge, Violation
from .observe import EventLog, Names, Snapshot, Triple, aws_requests, snapshot
from .plan import DAY_START, Act, ByHand, Crash, Fault, FileRequest, HostileRow, Now, Plan, Run, Step, when

JOBS = {"intake": run_intake, "grants": run_grants, "revocations": run_revocations}
#: Small poll settings: a held creation gives up within a simulated minute.
GRANT_SETTINGS = {"status_poll_initial": "1s", "status_poll_max": "5s", "status_wait_bound": "60s"}
THREAD_TIMEOUT = 120  # real seconds a run may take before the day is declared hung


class SimulatedCrash(BaseException):
    """The task's process dies here."""


class SimClock:
    """The simulated now, shared by every run of the day (and their threads)."""

    def __init__(self, start: datetime) -> None:
        self._origin = start
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=max(seconds, 0))

    def monotonic(self) -> float:
        return (self.now() - self._origin).total_seconds()

    def advance_to(self, when: datetime) -> None:
        with self._lock:
            self._now = max(self._now, when)


@dataclass
class Tripwire:
    """Where one run's process dies; counts the run's AWS calls and writes until then."""

    crash: Crash
    dbapi_error: type[Exception]
    aws_calls: int = 0
    writes: int = 0
    fired: str | None = None

    def aws_call(self, operation: str, *, recorded: bool) -> None:
        """Called before and after each AWS call's event is written; counts each call once, where it strikes."""
        where, target = self.crash.where, self.crash.target
        if self.fired or not where.startswith("aws") or recorded == (where == "aws-unrecorded"):
            return
        if target is not None and operation != target:
            return
        self.aws_calls += 1
        if self.aws_calls == self.crash.n:
            self.fired = f"{self.crash.describe()} ({operation})"
            raise SimulatedCrash(self.fired)

    def write(self, statement: str) -> None:
        if self.fired or not self.crash.where.startswith("db"):
            return
        if self.crash.target is not None and self.crash.target not in statement[:60]:
            return
        self.writes += 1
        if self.writes < self.crash.n:
            return
        self.fired = f"{self.crash.describe()} ({' '.join(statement.split()[:3])})"
        if self.crash.where == "db-write":
            raise SimulatedCrash(self.fired)
        raise self.dbapi_error("server closed the connection unexpectedly (simulated)")


@dataclass
class SimRuntime(Runtime):
    """A Runtime whose process can be killed right after an AWS call (before or after its event is written)."""

    tripwire: Tripwire | None = None

    def record_aws_call(self, operation: str, attempt: int, error: BaseException | None) -> None:
        if self.tripwire:
            self.tripwire.aws_call(operation, recorded=False)
        super().record_aws_call(operation, attempt, error)
        if self.tripwire:
            self.tripwire.aws_call(operation, recorded=True)


_current = threading.local()  # the tripwire of the run executing on this thread


def _arm_listener(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        wire = getattr(_current, "tripwire", None)
        if wire is not None and statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
            wire.write(statement)


@dataclass(frozen=True)
class Entry:
    """One line of the day's log, and the requests the step touched (to show a violation's own history)."""

    step: int
    text: str
    requests: frozenset[int] = frozenset()


@dataclass
class DayResult:
    seed: int
    plan: Plan
    entries: list[Entry]
    violations: list[Violation]  # the first of each key, in the order they appeared
    repeats: Counter[str]  # key -> steps it was seen again
    seconds: float
    final: Counter[str]  # requests by final status
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def log(self) -> list[str]:
        return [entry.text for entry in self.entries]

    def report(self, replay: str, before: int = 3, most: int = 30) -> str:
        """What a person needs to act on a failure: seed, replay command, and for each kind of violation its first
        occurrence with the rows involved and the steps that led there (those touching its requests, and the few
        just before it)."""
        kinds: dict[tuple[str, str], list[Violation]] = {}
        for v in self.violations:
            kinds.setdefault((v.invariant, v.signature), []).append(v)
        lines = [
            f"seed {self.seed}: {len(self.violations)} invariant violation(s) of {len(kinds)} kind(s) in "
            f"{len(self.plan.steps)} steps ({self.seconds:.1f}s); replay: {replay}",
        ]
        for (invariant, signature), found in kinds.items():
            first = found[0]
            again = self.repeats.get(first.key, 0)
            lines.append(
                f"\n[{invariant}] {signature}: {len(found)} time(s); first at step #{first.step:03d} "
                f"({when(first.at)}): {first.message}"
                + (f" (seen again at {again} later check(s))" if again else "")
            )
            if first.rows:
                lines.append(first.rows)
            for other in found[1:4]:
                lines.append(f"  also at step #{other.step:03d}: {other.message[:300]}")
            if len(found) > 4:
                lines.append(f"  ... and {len(found) - 4} more")
            involved = set(first.request_ids)
            steps = [
                e for e in self.entries
                if e.step <= first.step and (e.requests & involved or e.step > first.step - before)
            ]
            lines.append(f"  steps that led there (touching requests {sorted(involved)}, and the last {before}):")
            lines += [f"    {e.text[:400]}" for e in steps[-most:]]
        lines.append(f"\nfinal statuses: {dict(self.final)}; {self.counts}")
        return "\n".join(lines)


class Simulation:
    """One simulated day: a fresh world, the plan's steps, invariants after each, then the day settled."""

    def __init__(self, emulator: AwsEmulator, plan: Plan, database_url: str) -> None:
        """`database_url`: an empty, migrated queue for this day alone."""
        self.emulator = emulator
        self.plan = plan
        self.database_url = database_url
        self.clock = SimClock(DAY_START)
        self.entries: list[Entry] = []
        self.touched: set[int] = set()  # requests the current step touched
        self.violations: dict[str, Violation] = {}
        self.repeats: Counter[str] = Counter()
        self.labels: dict[str, int] = {}
        self.killed: dict[str, str] = {}  # job -> worker id of its last killed try
        self.workers = 0
        self.step_index = 0
        self.counts: Counter[str] = Counter()

    # --- set-up -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """A fresh organization and queue for the day (what `run` does first; tests of the harness call it)."""
        self.emulator.reset()
        self.world: World = build_world(self.emulator)
        self.config = ElevationConfig.model_validate({"policy": policy_document(self.world, grants=GRANT_SETTINGS)})
        self.engine = create_engine_for_url(self.database_url)  # what the runs use: crashes strike here
        _arm_listener(self.engine)
        # What the simulation writes and reads with (the same dialect settings; no ping: nothing drops it).
        self.reader = create_engine_for_url(self.database_url)
        self.reader.pool._pre_ping = False
        self.sqlite = self.engine.dialect.name == "sqlite"
        self.clients = aws.AwsClients(
            sso_admin=self.emulator.client("sso-admin", aws.CLIENT_CONFIG),
            identitystore=self.emulator.client("identitystore", aws.CLIENT_CONFIG),
            organizations=self.emulator.client("organizations", aws.CLIENT_CONFIG),
        )
        self.lost: Counter[str] = Counter()  # operation -> answers still to lose
        self._lost_lock = threading.Lock()
        self.clients.sso_admin.meta.events.register("after-call.sso-admin", self._lose_answer)
        # The production factory, with clients built once per day instead of from an Airflow connection per run.
        self._patch = mock.patch.object(aws, "clients_from_airflow", lambda conn_id, region=None: self.clients)
        self._patch.start()
        world = self.world
        self.know = Knowledge(
            names=Names(world),
            policy=self.config.policy,
            account_ous={
                account_id: [world.ous[ACCOUNTS[name]], world.root_id] for name, account_id in world.accounts.items()
            },
            margin=self.config.policy.revocation.overdue_margin,
            standing={self._triple(*item) for item in standing_assignments()},
            baseline={item.request_id for item in aws_requests(self.emulator)},
        )
        self.events = EventLog()

    def _lose_answer(self, model: Any, **_: Any) -> None:
        """botocore's after-call hook: AWS acted on the call; the answer never reaches the caller."""
        with self._lost_lock:
            if self.lost[model.name] <= 0:
                return
            self.lost[model.name] -= 1
        raise ReadTimeoutError(endpoint_url=f"emulator ({model.name}: answer lost by the simulation)")

    def stop(self) -> None:
        """Undo what `start` set up."""
        self._patch.stop()
        self.engine.dispose()
        self.reader.dispose()

    def _triple(self, principal_type: str, principal: str, permission_set: str, account: str) -> Triple:
        ids = self.world.users if principal_type == "USER" else self.world.groups
        return Triple(
            self.world.accounts[account], self.world.permission_sets[permission_set], principal_type, ids[principal]
        )

    def _account(self, name: object) -> object:
        if name == "management":
            return self.world.management_account_id
        return self.world.accounts.get(name, name) if isinstance(name, str) else name

    # --- the day ------------------------------------------------------------------------------------------

    def run(self) -> DayResult:
        started = time.monotonic()
        saved = random.getstate()  # the day seeds the global generator (the retry jitter); others' tests keep theirs
        self.start()
        try:
            for step in self.plan.steps:
                self.play(step)
            self.settle()
            final = Counter(row["status"] for row in self.snapshot().requests.values())
        finally:
            self.stop()
            random.setstate(saved)
        return DayResult(
            seed=self.plan.seed,
            plan=self.plan,
            entries=self.entries,
            violations=list(self.violations.values()),
            repeats=self.repeats,
            seconds=time.monotonic() - started,
            final=final,
            counts=dict(self.counts),
        )

    def play(self, step: Step) -> None:
        """One step at its simulated moment, logged with what it did, then every per-step invariant."""
        self.step_index = step.index
        self.clock.advance_to(step.at)
        random.seed(self.plan.seed * 1_000_003 + step.index)  # the retry jitter: same day, same sleeps
        action = step.action
        handler = {
            FileRequest: self._file,
            HostileRow: self._hostile,
            Act: self._act,
            ByHand: self._by_hand,
            Fault: self._fault,
            Run: self._run,
        }[type(action)]
        self.touched = set()
        outcome = handler(action)  # type: ignore[operator]
        self.entries.append(Entry(step.index, f"{step.describe()} -> {outcome}", frozenset(self.touched)))
        self.check(invariants.AFTER_EVERY_STEP)

    # --- steps --------------------------------------------------------------------------------------------

    def _file(self, request: FileRequest) -> str:
        now = self.clock.now()
        values: dict[str, Any] = {
            "requester": request.requester,
            "account_id": self._account(request.account),
            "permission_set": request.permission_set,
            "principal_group": request.principal_group,
            "duration_minutes": request.duration,
            "start_at": None if request.start is None else DAY_START + timedelta(minutes=request.start),
            "justification": request.justification,
            "ticket": request.ticket,
            "status": request.status,
            "approver": request.approver,
            "client_request_id": request.client_request_id,
            "created_at": now,
        }
        try:
            with self.reader.begin() as conn:
                request_id = queue.insert_request(conn, **values)
        except sa.exc.DBAPIError as error:
            self.counts["innocent rows refused"] += 1
            return f"refused by the database: {error.orig}"
        self.labels[request.label] = request_id
        self.touched.add(request_id)
        self.know.initial_status[request_id] = request.status
        self.know.innocent.add(request_id)
        return f"request {request_id}"

    def _hostile(self, row: HostileRow) -> str:
        now = self.clock.now()
        columns: dict[str, Any] = {"created_at": now, **row.columns}
        for key, value in columns.items():
            if isinstance(value, Now):
                value = now + timedelta(minutes=value.minutes)
            if isinstance(value, datetime):  # as a foreign writer would spell it
                value = value.strftime("%Y-%m-%d %H:%M:%S.%f" + ("" if self.sqlite else "+00:00"))
            columns[key] = self._account(value) if key == "account_id" else value
        names = ", ".join(columns)
        marks = ", ".join(f":{key}" for key in columns)
        try:
            with self.reader.begin() as conn:
                conn.execute(sa.text(f"INSERT INTO elevation_request ({names}) VALUES ({marks})"), columns)
                request_id = conn.execute(sa.text("SELECT max(id) FROM elevation_request")).scalar_one()
        except sa.exc.DBAPIError as error:
            self.counts["hostile rows refused"] += 1
            return f"refused by the database: {str(error.orig)[:100]}"
        self.counts["hostile rows accepted"] += 1
        self.labels[row.label] = request_id
        self.touched.add(request_id)
        self.know.initial_status[request_id] = str(columns.get("status") or "pending")
        return f"request {request_id} accepted"

    def _act(self, act: Act) -> str:
        request_id = self.labels.get(act.request, 10**6)  # a refused row: a request that does not exist
        self.touched.add(request_id)
        ids = []
        comment = act.comment if act.comment is not None else f"sim step {self.step_index}"
        try:
            with self.reader.begin() as conn:
                for _ in range(act.copies):
                    ids.append(queue.insert_action(conn, request_id, act.action, act.actor, comment))
        except sa.exc.DBAPIError as error:
            self.counts["actions refused"] += act.copies
            return f"refused by the database: {str(error.orig)[:100]}"
        self.counts["actions"] += len(ids)
        return f"action(s) {ids} on request {request_id}"

    def _by_hand(self, step: ByHand) -> str:
        triple = self._triple(step.principal_type, step.principal, step.permission_set, step.account)
        snap = self.snapshot()
        if triple in snap.present or snap.sessions_on(triple):
            return "skipped: the system already touched that assignment"
        sso = self.emulator.client("sso-admin")
        for attempt in range(1, 21):  # an administrator retries through whatever faults the day injected
            try:
                answer = sso.create_account_assignment(
                    InstanceArn=self.world.instance_arn,
                    TargetId=triple.account_id,
                    TargetType="AWS_ACCOUNT",
                    PermissionSetArn=triple.permission_set_arn,
                    PrincipalType=triple.principal_type,
                    PrincipalId=triple.principal_id,
                )
            except ClientError:
                continue
            request_id = answer["AccountAssignmentCreationStatus"]["RequestId"]
            self.know.by_hand_ids.add(request_id)
            history = aws_requests(self.emulator)
            made = next(item for item in history if item.request_id == request_id)
            if not made.failed:
                self.know.by_hand[triple] = len(history) - 1
                return f"created (attempt {attempt})"
        return "gave up: Identity Center kept refusing"

    def _fault(self, fault: Fault) -> str:
        faults, control = self.emulator.faults, self.emulator.identity_center
        if fault.kind == "inject":
            assert fault.operation and fault.code
            faults.inject(fault.operation, fault.code, http_status=fault.http_status, times=fault.times,
                          message="injected by the simulation")
        elif fault.kind == "delay":
            assert fault.operation
            faults.delay(fault.operation, fault.seconds, times=fault.times)
        elif fault.kind == "lose_answers":
            assert fault.operation
            with self._lost_lock:
                self.lost[fault.operation] += fault.times
        elif fault.kind == "hold_creations":
            control.hold_creations(fault.polls)
        elif fault.kind == "hold_deletions":
            control.hold_deletions(fault.polls)
        elif fault.kind == "fail_creations":
            control.fail_next_creations(times=fault.times)
        elif fault.kind == "fail_deletions":
            control.fail_next_deletions(times=fault.times)
        elif fault.kind == "omit_status":
            control.omit_status_next_creations()
        else:
            control.hold_creations(1)
            control.hold_deletions(1)
        return "armed"

    def _runtime(self, run: Run, job: str, first: bool) -> SimRuntime:
        """The Runtime of one task: a new worker, or the killed try's worker id for an Airflow retry; the plan's
        kill goes to the run's first task only."""
        if run.retry and first and job in self.killed:
            worker = self.killed[job]
        else:
            self.workers += 1
            worker = f"{job}/worker-{self.workers}"
        tripwire = None
        if run.crash is not None and first:
            tripwire = Tripwire(run.crash, self.engine.dialect.loaded_dbapi.OperationalError)
        return SimRuntime(
            config=self.config,
            engine=self.engine,
            identity_center_factory=identity_center_from_airflow,
            as_of=self.clock.now() - timedelta(minutes=run.late),
            actor=f"dag:{job}/step-{self.step_index}",
            clock=self.clock.now,
            sleep=self.clock.sleep,
            monotonic=self.clock.monotonic,
            worker=worker,
            tripwire=tripwire,
        )

    def _run(self, run: Run) -> str:
        """Run the step's tasks (one, the same job twice, or two jobs at once, each on its own thread)."""
        as_of = self.clock.now() - timedelta(minutes=run.late)
        jobs = [run.job] * run.copies + ([run.alongside] if run.alongside else [])
        clean = len(jobs) == 1 and run.crash is None and self.emulator.faults.remaining == 0 and not any(self.lost.values())
        before, held = self._rows_and_claims(self.clock.now()) if jobs == ["intake"] else (set(), set())
        tasks = [(job, self._runtime(run, job, index == 0)) for index, job in enumerate(jobs)]
        outcomes: list[tuple[str, str]] = [("", "")] * len(tasks)

        def run_task(index: int) -> None:
            job, runtime = tasks[index]
            outcomes[index] = self._execute(job, runtime)

        if len(tasks) == 1:
            run_task(0)
        else:
            threads = [threading.Thread(target=run_task, args=(index,), daemon=True) for index in range(len(tasks))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(THREAD_TIMEOUT)
                if thread.is_alive():
                    raise RuntimeError(f"step {self.step_index}: a run did not finish in {THREAD_TIMEOUT}s: hung")
        first = tasks[0][1]
        notes = []
        if first.worker == self.killed.get(run.job):
            notes.append("an Airflow retry of the killed try: same worker id")
            del self.killed[run.job]
        if first.tripwire is not None and not first.tripwire.fired:
            notes.append("the kill never came")
        with self.reader.connect() as conn:  # what a killed try still holds, or a finished one left claimed
            self.touched |= set(
                conn.execute(
                    sa.select(requests.c.id).where(requests.c.claimed_by.in_([rt.worker for _, rt in tasks]))
                ).scalars()
            )
        for (job, runtime), (kind, _) in zip(tasks, outcomes, strict=True):
            self.counts[f"{job} {kind}"] += 1
            if kind == "killed":
                self.killed[job] = runtime.worker
            if job == "revocations":
                self.know.revocation_runs.append((as_of, kind))
        if clean and jobs == ["intake"]:
            snap = self.snapshot()
            kind, detail = outcomes[0]
            if kind == "ok":
                self._record(invariants.clean_intake_judges_every_row(snap, self.know, before - held), snap)
            else:
                self._record([invariants.clean_intake_failed(detail)], snap)
        done = "; ".join(
            f"{runtime.worker}: {kind} {detail}".rstrip() for (_, runtime), (kind, detail) in zip(tasks, outcomes, strict=True)
        )
        return done + "".join(f" ({note})" for note in notes)

    def _execute(self, job: str, runtime: SimRuntime) -> tuple[str, str]:
        """Run one task to its end: (ok|overdue|failed|killed, what it did or why it stopped)."""
        _current.tripwire = runtime.tripwire
        try:
            summary = JOBS[job](runtime)
        except SimulatedCrash as crash:
            return "killed", str(crash)
        except RevocationOverdue as error:
            return "overdue", _one_line(error)
        except Exception as error:
            return "failed", f"{type(error).__name__}: {_one_line(error)}"
        finally:
            _current.tripwire = None
        text, ids = _summarise(summary)
        self.touched |= ids
        return "ok", text

    # --- after the day ------------------------------------------------------------------------------------

    def settle(self) -> None:
        """Faults stop, time runs past every end (and every lease), and clean rounds run: everything must end."""
        self._calm()
        index = self.plan.steps[-1].index + 1 if self.plan.steps else 0
        self.entries.append(Entry(index, f"#{index:03d} --- the day is over: faults stop, time runs past every end ---"))
        latest = self.clock.now()
        for row in self.snapshot().requests.values():
            for moment in (row["end_at"], row["start_at"], row["created_at"]):
                if isinstance(moment, datetime) and moment.year < 2200:
                    latest = max(latest, moment + timedelta(minutes=min(int(row["duration_minutes"] or 0), 10**4)))
        settle_at = min(latest, DAY_START + timedelta(days=10)) + self.know.margin + timedelta(minutes=30)
        for round_ in range(4):
            self.clock.advance_to(settle_at + timedelta(minutes=20 * round_))
            for job in ("intake", "grants", "revocations"):
                index += 1
                self.step_index = index
                self.touched = set()
                outcome = self._run(Run(job))
                text = f"#{index:03d} {when(self.clock.now())} settle: run {job} -> {outcome}"
                self.entries.append(Entry(index, text, frozenset(self.touched)))
                self.check(invariants.AFTER_EVERY_STEP)
        self.check(invariants.AFTER_THE_DAY)

    def _calm(self) -> None:
        """Identity Center healthy again: no faults, no holds, no pending failures, held requests released."""
        emulator, control = self.emulator, self.emulator.identity_center
        with self._lost_lock:
            self.lost.clear()
        if hasattr(emulator, "reset_controls"):
            emulator.reset_controls()
        else:
            emulator.faults.clear()
            control.hold_creations(1)
            control.hold_deletions(1)
            with emulator._lock:
                control._creation_failures.clear()
                control._deletion_failures.clear()
                control._omit_status_creations = 0
        with emulator._lock:
            for item in control._requests.values():
                if not item.terminal and item.polls_left is None:
                    item.polls_left = 1

    # --- checking -----------------------------------------------------------------------------------------

    def _rows_and_claims(self, now: datetime) -> tuple[set[int], set[int]]:
        """Every request, and those a worker holds right now (a killed one's claim lasts until its lease ends)."""
        with self.reader.connect() as conn:
            rows = conn.execute(sa.select(requests.c.id, requests.c.claimed_until)).all()
        held = {row.id for row in rows if isinstance(row.claimed_until, datetime) and row.claimed_until > now}
        return {row.id for row in rows}, held

    def snapshot(self) -> Snapshot:
        return snapshot(self.reader, self.emulator, self.events, self.clock.now())

    def check(self, checks: tuple[invariants.Check, ...]) -> None:
        """Run `checks` on the state right now; record each new violation (by key) with the rows it involves."""
        snap = self.snapshot()
        self.know.note_preexisting(snap)
        for check in checks:
            self._record(check(snap, self.know), snap)

    def _record(self, found: list[Violation], snap: Snapshot) -> None:
        for violation in found:
            if violation.key in self.violations:
                self.repeats[violation.key] += 1
                continue
            violation.step = self.step_index
            violation.at = snap.at
            violation.rows = self._rows(violation.request_ids)
            self.violations[violation.key] = violation

    def _rows(self, request_ids: tuple[int, ...]) -> str:
        """The rows a violation involves, as they are when it is first seen."""
        try:
            return self._read_rows(request_ids)
        except Exception as error:  # a row the database driver cannot even hand over
            return f"    (rows of requests {sorted(request_ids)} could not be read: {type(error).__name__}: {error})"

    def _read_rows(self, request_ids: tuple[int, ...]) -> str:
        lines = []
        with self.reader.connect() as conn:
            for request_id in sorted(set(request_ids))[:4]:
                row = conn.execute(sa.select(requests).where(requests.c.id == request_id)).mappings().first()
                if row is None:
                    continue
                lines.append(f"    request {request_id}: {_pick(row, REQUEST_COLUMNS)}")
                session = conn.execute(
                    sa.select(sessions).where(sessions.c.request_id == request_id)
                ).mappings().first()
                if session is not None:
                    lines.append(f"      session: {_pick(session, SESSION_COLUMNS)}")
                for event in conn.execute(
                    sa.select(events).where(events.c.request_id == request_id, events.c.kind != "aws_call")
                    .order_by(events.c.id)
                ).mappings():
                    lines.append(
                        f"      event {event['id']} {when(event['at'])} {event['kind']} {event['from_status'] or ''}"
                        f"->{event['to_status'] or ''} {event['reason_code'] or ''} by {event['actor']} "
                        f"{(event['detail'] or '')[:140]}"
                    )
                for action in conn.execute(
                    sa.select(actions).where(actions.c.request_id == request_id).order_by(actions.c.id)
                ).mappings():
                    lines.append(f"      action: {_pick(action, ACTION_COLUMNS)}")
        return "\n".join(lines)


REQUEST_COLUMNS = (
    "status", "reason_code", "status_reason", "requester", "account_id", "permission_set", "principal_group",
    "start_at", "end_at", "created_at", "validated_at", "revoke_requested_at", "claimed_by", "claimed_until",
)
SESSION_COLUMNS = (
    "principal_type", "principal_name", "creation_sent_at", "creation_request_id", "creation_status",
    "granted_at", "deletion_request_id", "deletion_status", "assignment_removed_at", "kept_because",
    "assignment_preexisted", "last_error",
)
ACTION_COLUMNS = ("id", "action", "actor", "processed_at", "outcome", "outcome_reason")


def _pick(row: Any, columns: tuple[str, ...]) -> str:
    parts = []
    for column in columns:
        value = row.get(column)
        if value is None:
            continue
        if isinstance(value, datetime):
            value = when(value)
        text = str(value)
        parts.append(f"{column}={text[:90] + '...' if len(text) > 90 else text}")
    return ", ".join(parts)


def _summarise(summary: object) -> tuple[str, set[int]]:
    """A run's summary in one line (the ids it moved, by kind), and those ids."""
    parts, ids = [], set()
    for key, value in asdict(summary).items():  # type: ignore[call-overload]
        if isinstance(value, list) and value:
            moved = [item[0] if isinstance(item, list | tuple) else item for item in value]
            if not key.startswith("action"):  # those are action ids
                ids |= {item for item in moved if isinstance(item, int)}
            parts.append(f"{key}={moved}")
        elif isinstance(value, int) and value:
            parts.append(f"{key}={value}")
    return " ".join(parts) or "nothing to do", ids


def _one_line(error: BaseException, limit: int = 160) -> str:
    """An exception's message on one line of the day's log (SQLAlchemy's span several: statement, parameters)."""
    return " ".join(str(error).split())[:limit]
