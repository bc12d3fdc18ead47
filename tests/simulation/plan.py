"""A simulated day as a list of steps, drawn from a seed before anything runs.

The plan never looks at what the system did: the same seed always gives the same steps, so a failure replays,
and a step can be dropped (to shrink a failure) without changing the others. Steps name requests by label
(`r7`), never by database id; the driver maps labels to ids as rows get inserted.

Names here are the demo organization's (devkit/world.py): people, groups, accounts by name, permission sets.
What the plan believes about a request (valid, who may approve it) only steers the draw towards interesting
days; the invariants judge the system by the real policy, never by these beliefs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

#: The simulated day starts here (fixed, so a replay is the same day; the code never reads the real clock here).
DAY_START = datetime(2030, 6, 3, 6, 0, tzinfo=UTC)

PROD = ("media-prod", "ec-prod")
NON_PROD = ("media-stg", "sandbox-1")
APPROVERS = {"media-prod": ("bob", "carol"), "ec-prod": ("bob", "carol"), "media-stg": ("bob",), "sandbox-1": ("bob",)}
ONCALL = ("alice", "dave")
HOSTILE_TEXT = "本番障害対応'); DROP TABLE elevation_request; -- <script>alert('x')</script> 🚨"

#: Operations whose calls the fault steps break (what intake, grants and revocations call).
FAULTY_OPERATIONS = (
    "CreateAccountAssignment",
    "DeleteAccountAssignment",
    "DescribeAccountAssignmentCreationStatus",
    "DescribeAccountAssignmentDeletionStatus",
    "ListAccountAssignments",
    "GetUserId",
    "GetGroupId",
    "ListGroupMembershipsForMember",
    "ListGroupMemberships",
    "DescribeUser",
    "DescribeGroup",
    "ListParents",
    "ListPermissionSets",
    "DescribePermissionSet",
    "DescribeOrganization",
)
#: Calls whose answer a fault may lose after AWS acted on them. Not CreateAccountAssignment: its retry would make
#: the emulator keep a second copy where AWS keeps one assignment, and the emulator would then disagree with AWS.
LOSABLE_OPERATIONS = (
    "DeleteAccountAssignment",
    "DescribeAccountAssignmentCreationStatus",
    "DescribeAccountAssignmentDeletionStatus",
    "ListAccountAssignments",
)
#: (error code, HTTP status): retryable ones, and one the code must not retry.
FAULTS = (
    ("ThrottlingException", 400),
    ("ConflictException", 409),
    ("InternalServerException", 500),
    ("ServiceUnavailable", 503),
    ("AccessDeniedException", 400),
)


#: Where kills strike (None: any call or write).
AWS_TARGETS = (
    "CreateAccountAssignment",
    "DeleteAccountAssignment",
    "DescribeAccountAssignmentCreationStatus",
    "DescribeAccountAssignmentDeletionStatus",
    "ListAccountAssignments",
    None,
)
DB_TARGETS = ("elevation_session", "elevation_request", "elevation_action", "elevation_event", None)


@dataclass(frozen=True)
class Now:
    """A time relative to the step's simulated moment, resolved when the step runs."""

    minutes: float = 0


# --- the steps ----------------------------------------------------------------------------------------------


@dataclass
class FileRequest:
    """An outside system inserts a well-formed row (valid or not under policy) through the queue API."""

    label: str
    requester: str
    account: str  # an account name of the world, or a raw id
    permission_set: str
    duration: int
    start: float | None  # minutes from DAY_START; None: the row's insertion time
    principal_group: str | None = None
    status: str = "pending"
    approver: str | None = None
    justification: str | None = "incident follow-up"
    ticket: str | None = None
    client_request_id: str | None = None
    note: str = ""

    def describe(self) -> str:
        who = self.requester + (f" for group {self.principal_group}" if self.principal_group else "")
        start = "at insertion" if self.start is None else f"start {_clock(self.start)}"
        extra = f" inserted {self.status} by {self.approver}" if self.status != "pending" else ""
        cid = f" client id {self.client_request_id}" if self.client_request_id else ""
        return (
            f"file {self.label}: {who} {self.permission_set} in {self.account} for {self.duration}m, {start}"
            f"{extra}{cid} ({self.note})"
        )


@dataclass
class HostileRow:
    """An outside writer inserts a row with raw SQL, as nothing stops it from doing; the database may refuse it."""

    label: str
    columns: dict[str, object]  # column -> value; `account_id` may name a world account; Now() is resolved
    note: str

    def describe(self) -> str:
        shown = {key: _short(value) for key, value in self.columns.items()}
        return f"hostile row {self.label} ({self.note}): {shown}"


@dataclass
class Act:
    """Someone inserts `copies` identical action rows (a double click, a retried webhook)."""

    request: str  # a label; one the database refused stands for a request that does not exist
    action: str
    actor: str
    copies: int = 1
    note: str = ""
    comment: str | None = None  # None: a short one naming the step

    def describe(self) -> str:
        copies = f" x{self.copies}" if self.copies > 1 else ""
        return f"{self.action} {self.request} by {self.actor[:20]}{copies} ({self.note})"


@dataclass
class ByHand:
    """An administrator creates an assignment outside the system (only if the system never touched it)."""

    principal_type: str
    principal: str
    permission_set: str
    account: str

    def describe(self) -> str:
        return f"by hand: {self.principal_type} {self.principal} {self.permission_set} in {self.account}"


@dataclass
class Fault:
    """Break Identity Center for a while: wire errors, held or failing creations and deletions."""

    kind: str  # inject | delay | lose_answers | hold_creations | hold_deletions | fail_creations | fail_deletions
    #            | omit_status | normal
    operation: str | None = None
    code: str | None = None
    http_status: int = 400
    times: int = 1
    polls: int | None = 1
    seconds: float = 0.0

    def describe(self) -> str:
        if self.kind == "inject":
            return f"fault: next {self.times} {self.operation} answer {self.code} ({self.http_status})"
        if self.kind == "delay":
            return f"fault: next {self.times} {self.operation} answer {self.seconds:.2f}s late"
        if self.kind == "lose_answers":
            return f"fault: next {self.times} {self.operation} reach AWS but their answers are lost (read timeout)"
        if self.kind in ("hold_creations", "hold_deletions"):
            held = "forever" if self.polls is None else f"for {self.polls} describes"
            return f"fault: new {self.kind.split('_')[1]} stay IN_PROGRESS {held}"
        if self.kind in ("fail_creations", "fail_deletions"):
            return f"fault: next {self.times} {self.kind.split('_')[1]} end FAILED"
        if self.kind == "omit_status":
            return "fault: the next creation's describes lack a Status"
        return "fault: creations and deletions back to normal"


@dataclass(frozen=True)
class Crash:
    """Where a run's process dies: after its nth AWS call (of one operation, or of any), its event written or not
    yet; or at its nth write (to one table, or to any), killed or losing its database connection."""

    where: str  # aws | aws-unrecorded | db-write | db-drop
    n: int
    target: str | None = None  # an operation (aws) or a table (db); None: any

    def describe(self) -> str:
        nth = f"{self.n}{'st' if self.n == 1 else 'nd' if self.n == 2 else 'rd' if self.n == 3 else 'th'}"
        if self.where.startswith("aws"):
            call = f"{nth} {self.target} call" if self.target else f"AWS call {self.n}"
            return f"killed after its {call}" + (", before its event is written" if self.where == "aws-unrecorded" else "")
        write = f"{nth} write to {self.target}" if self.target else f"write {self.n}"
        return ("killed before its " if self.where == "db-write" else "database connection dropped at its ") + write


@dataclass
class Run:
    """A task runs as of the step's moment: one copy, or two at once; maybe killed; maybe retrying a killed try."""

    job: str  # intake | grants | revocations
    copies: int = 1
    crash: Crash | None = None  # strikes the first task
    retry: bool = False  # if this job's last try was killed: retry it with the same worker id (an Airflow retry)
    alongside: str | None = None  # another DAG's task running at the same moment
    late: int = 0  # minutes its logical time lags the clock (a scheduler catching up)

    def describe(self) -> str:
        parts = [f"run {self.job}" + (f" x{self.copies}" if self.copies > 1 else "")]
        if self.alongside:
            parts[0] += f" and {self.alongside}"
        if self.copies > 1 or self.alongside:
            parts[0] += " at once"
        if self.late:
            parts.append(f"as of {self.late} minutes ago")
        if self.crash:
            parts.append(self.crash.describe())
        return ", ".join(parts)


Action = FileRequest | HostileRow | Act | ByHand | Fault | Run


@dataclass
class Step:
    index: int
    minute: float  # from DAY_START
    action: Action

    @property
    def at(self) -> datetime:
        return DAY_START + timedelta(minutes=self.minute)

    def describe(self) -> str:
        return f"#{self.index:03d} {_clock(self.minute)} {self.action.describe()}"


@dataclass
class Plan:
    seed: int
    hours: float
    steps: list[Step]

    def without(self, indexes: set[int]) -> Plan:
        """The same day minus some steps (to shrink a failure); the remaining steps keep their indexes."""
        return Plan(self.seed, self.hours, [step for step in self.steps if step.index not in indexes])


# --- drawing a day ------------------------------------------------------------------------------------------


@dataclass
class _Filed:
    label: str
    requester: str
    account: str
    permission_set: str
    group: str | None
    start: float  # minutes from DAY_START
    duration: int

    @property
    def subject(self) -> tuple[str, str, str, str]:
        kind, name = ("GROUP", self.group) if self.group else ("USER", self.requester)
        return kind, name, self.permission_set, self.account


@dataclass
class _Drawer:
    rng: random.Random
    filed: list[_Filed] = field(default_factory=list)
    labels: int = 0
    client_ids: list[str] = field(default_factory=list)
    follow_ups: list[Action] = field(default_factory=list)

    def label(self) -> str:
        self.labels += 1
        return f"r{self.labels}"

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    # -- requests

    def duration(self, longest: int = 300) -> int:
        roll = self.rng.random()
        if roll < 0.2:
            return self.rng.randint(1, 5)
        if roll < 0.85:
            return self.rng.randint(10, min(120, longest))
        return self.rng.randint(121, max(longest, 122))

    def start(self, minute: float) -> float | None:
        roll = self.rng.random()
        if roll < 0.35:
            return None
        if roll < 0.55:
            return minute
        if roll < 0.9:
            return minute + self.rng.randint(1, 180)
        return minute - self.rng.randint(1, 30)

    def subject(self) -> tuple[str, str, str | None, str, str, int]:
        """(note, requester, group, permission set, account, longest sensible duration)."""
        rng = self.rng
        kind = rng.choices(
            ["break-glass", "prod", "non-prod", "group", "standing", "invalid"], [16, 16, 14, 12, 5, 12]
        )[0]
        if kind == "break-glass":
            return kind, rng.choice(ONCALL), None, "AdministratorAccess", rng.choice(PROD), 120
        if kind == "prod":
            requester = rng.choice(["bob", "carol", "erin", "dave", "alice"])
            return kind, requester, None, rng.choice(["PowerUserAccess", "AdministratorAccess"]), rng.choice(PROD), 240
        if kind == "non-prod":
            requester = rng.choice(["alice", "erin", "hanako"])
            ps = rng.choice(["PowerUserAccess", "AdministratorAccess"])
            return kind, requester, None, ps, rng.choice(NON_PROD), 480
        if kind == "group":
            option = rng.randrange(3)
            if option == 0:
                ps = rng.choice(["PowerUserAccess", "AdministratorAccess"])
                return "group", rng.choice(["bob", "carol"]), "platform", ps, rng.choice(PROD), 240
            if option == 1:
                return "group break-glass", rng.choice(ONCALL), "oncall", "AdministratorAccess", rng.choice(PROD), 120
            return "group", rng.choice(["erin", "hanako"]), "developers", "PowerUserAccess", rng.choice(NON_PROD), 480
        if kind == "standing":
            return "on a standing assignment", "dave", None, "PowerUserAccess", "ec-prod", 240
        return rng.choice(
            [
                ("ineligible", "hanako", None, "AdministratorAccess", rng.choice(PROD), 60),
                ("ineligible", "bob", None, "PowerUserAccess", rng.choice(NON_PROD), 60),
                ("no Identity Center user", "frank", None, "PowerUserAccess", "media-stg", 60),
                ("unknown person", "mallory", None, "AdministratorAccess", "media-prod", 60),
                ("unknown permission set", "erin", None, "SuperAdmin", "media-stg", 60),
                ("unknown group", "alice", "ghosts", "AdministratorAccess", "media-prod", 60),
                ("management account", "dave", None, "AdministratorAccess", "management", 60),
                ("over the maximum", "erin", None, "PowerUserAccess", "media-stg", 900),
            ]
        )

    def file(self, minute: float) -> FileRequest:
        rng = self.rng
        label = self.label()
        if self.filed and self.chance(0.2):
            earlier = rng.choice(self.filed[-10:])
            how = rng.choice(["overlaps", "back-to-back with", "after"])
            offset = {
                "overlaps": rng.uniform(0, earlier.duration),
                "back-to-back with": earlier.duration,
                "after": earlier.duration + rng.randint(1, 30),
            }[how]
            request = FileRequest(
                label,
                earlier.requester,
                earlier.account,
                earlier.permission_set,
                self.duration(),
                round(earlier.start + offset, 2),
                principal_group=earlier.group,
                note=f"{how} {earlier.label}",
            )
        else:
            note, requester, group, permission_set, account, longest = self.subject()
            request = FileRequest(
                label, requester, account, permission_set, self.duration(longest), self.start(minute),
                principal_group=group, note=note,
            )
        if self.chance(0.1):
            self.inserted_approved(request)
        if self.chance(0.08):
            request.justification = HOSTILE_TEXT
            request.ticket = "<b>INC-1</b>"
        if self.chance(0.3):
            if self.client_ids and self.chance(0.15):
                request.client_request_id = rng.choice(self.client_ids)
                request.note += ", reused client id"
            else:
                request.client_request_id = f"ext-{label}"
                self.client_ids.append(request.client_request_id)
        self.remember(request, minute)
        return request

    def inserted_approved(self, request: FileRequest) -> None:
        right = [name for name in APPROVERS.get(request.account, ("bob",)) if name != request.requester]
        request.status = "approved"
        if right and self.chance(0.7):
            request.approver = self.rng.choice(right)
        else:
            request.approver = self.rng.choice([request.requester, "erin", "mallory", None])
        request.note += f", inserted approved ({'right' if request.approver in right else 'wrong'} approver)"

    def remember(self, request: FileRequest, minute: float) -> None:
        start = minute if request.start is None else request.start
        self.filed.append(
            _Filed(
                request.label, request.requester, request.account, request.permission_set,
                request.principal_group, start, request.duration,
            )
        )

    # -- actions

    def act(self) -> Act | None:
        if not self.filed:
            return None
        rng = self.rng
        target = rng.choice(self.filed[-8:]) if self.chance(0.6) else rng.choice(self.filed)
        right = [name for name in APPROVERS.get(target.account, ("bob",)) if name != target.requester] or ["bob"]
        wrong = [name for name in ("erin", "hanako", "mallory", target.requester) if name not in right]
        action = rng.choices(["approve", "reject", "cancel", "revoke", "nonsense"], [35, 8, 15, 22, 3])[0]
        copies = rng.choices([1, 2, 3], [75, 18, 7])[0]
        if action == "nonsense":
            return rng.choice(
                [
                    Act(target.label, "delete", target.requester, copies, "an action that does not exist"),
                    Act(target.label, "revoke", "x" * 10_000, copies, "a 10,000-character actor"),
                    Act(target.label, "cancel", target.requester, copies, "a 100,000-character comment",
                        comment="c" * 100_000),
                    Act("r999999", "approve", "bob", copies, "a request that does not exist"),
                ]
            )
        if action in ("approve", "reject"):
            if self.chance(0.7):
                actor, note = rng.choice(right), "by an approver"
                if self.chance(0.15):
                    actor, note = f"{actor}@example.com".upper(), "by an approver, as an upper-case email"
            else:
                actor, note = rng.choice(wrong), "by someone not entitled"
        elif action == "cancel":
            entitled = self.chance(0.75)
            actor = target.requester if entitled else rng.choice(right + wrong[:-1])
            note = "by the requester" if entitled else "by someone else"
        else:
            roll = rng.random()
            if roll < 0.5:
                actor, note = target.requester, "by the requester"
            elif roll < 0.8:
                actor, note = rng.choice(right), "by an approver"
            else:
                actor, note = rng.choice(["hanako", "mallory"]), "by someone not entitled"
        return Act(target.label, action, actor, copies, note)

    # -- hostile rows

    def hostile(self) -> HostileRow:
        rng = self.rng
        base: dict[str, object] = {
            "requester": "alice",
            "account_id": "media-stg",
            "permission_set": "PowerUserAccess",
            "duration_minutes": 60,
            "justification": "x",
            "start_at": Now(),
        }
        note, changes = rng.choice(
            [
                ("zero duration", {"duration_minutes": 0}),
                ("negative duration", {"duration_minutes": -30}),
                ("absurd duration", {"duration_minutes": 10**9}),
                ("duration in words", {"duration_minutes": "sixty"}),
                ("duration as text", {"duration_minutes": "60"}),
                ("start in 1900", {"start_at": "1900-01-01 00:00:00"}),
                ("start in 9999", {"start_at": "9999-12-31 23:59:59"}),
                ("start in words", {"start_at": "next tuesday"}),
                ("impossible start", {"start_at": "2030-13-45 25:61:00"}),
                ("start with a bad offset", {"start_at": "2030-06-03T08:00:00+99:00"}),
                ("start in 2199", {"start_at": "2199-01-01 00:00:00"}),
                ("unreadable insert time", {"created_at": "yesterday-ish"}),
                ("insert time infinity", {"created_at": "infinity"}),
                ("insert time in year 10000", {"created_at": "10000-01-01 00:00:00+00"}),
                ("start infinity", {"start_at": "infinity"}),
                ("insert time long ago, no start", {"created_at": "2000-01-01 00:00:00", "start_at": None}),
                ("unknown account", {"account_id": "999999999999"}),
                ("account id with letters", {"account_id": "abc"}),
                ("account id with spaces", {"account_id": " 12345678901 "}),
                ("management account", {"account_id": "management"}),
                ("huge requester", {"requester": "x" * 10_000}),
                ("huge justification", {"justification": "j" * 200_000}),
                ("huge permission set name", {"permission_set": "P" * 1_000}),
                ("huge ticket", {"ticket": "T" * 5_000}),
                ("inserted active", {"status": "active"}),
                ("inserted approved without approver", {"status": "approved"}),
                ("inserted approved by the requester", {"status": "approved", "approver": "alice"}),
                ("no requester", {"requester": None}),
                ("unknown group", {"principal_group": "ghosts"}),
            ]
        )
        return HostileRow(self.label(), {**base, **changes}, note)

    # -- faults and runs

    def fault(self) -> Fault:
        rng = self.rng
        kind = rng.choices(
            ["inject", "delay", "lose_answers", "hold_creations", "hold_deletions", "fail_creations",
             "fail_deletions", "omit_status", "normal"],
            [50, 3, 8, 10, 10, 8, 8, 4, 6],
        )[0]
        if kind == "inject":
            code, status = rng.choice(FAULTS)
            times = rng.randint(1, 3) if self.chance(0.75) else rng.randint(8, 12)
            return Fault(kind, rng.choice(FAULTY_OPERATIONS), code, status, times)
        if kind == "delay":
            return Fault(kind, rng.choice(FAULTY_OPERATIONS), times=rng.randint(1, 2), seconds=rng.uniform(0.02, 0.2))
        if kind == "lose_answers":
            return Fault(kind, rng.choice(LOSABLE_OPERATIONS), times=rng.randint(1, 3))
        if kind in ("hold_creations", "hold_deletions"):
            return Fault(kind, polls=rng.choice([None, 0, 2, 4]))
        if kind in ("fail_creations", "fail_deletions"):
            return Fault(kind, times=rng.randint(1, 3))
        return Fault(kind)

    def run(self, job: str, *, extra: bool = False) -> Run:
        """A run of `job`: on the scheduler's tick mostly plain; an extra one (a manual trigger, a catch-up run)
        more often doubled or killed."""
        rng = self.rng
        copies = 2 if self.chance(0.3 if extra else 0.08) else 1
        # The three DAGs are scheduled independently: their tasks often run at the same moment.
        others = [other for other in ("intake", "grants", "revocations") if other != job]
        alongside = rng.choice(others) if self.chance(0.3 if extra else 0.15) else None
        crash = None
        if self.chance(0.4 if extra else 0.2):
            where = rng.choices(["aws", "aws-unrecorded", "db-write", "db-drop"], [35, 15, 35, 15])[0]
            if where.startswith("aws"):  # mostly right after a change in AWS, where a death costs the most
                target = rng.choices(AWS_TARGETS, [30, 20, 10, 10, 5, 25])[0]
            else:
                target = rng.choices(DB_TARGETS, [30, 30, 15, 10, 15])[0]
            crash = Crash(where, rng.randint(1, 2) if target else rng.randint(1, 12), target)
        late = rng.randint(1, 30) if extra and self.chance(0.2) else 0
        return Run(job, copies, crash, retry=self.chance(0.35), alongside=alongside, late=late)

    def by_hand(self, minute: float) -> list[Action]:
        """An assignment made outside the system for a subject the day has not filed yet, then a request for it."""
        candidates = [
            ("USER", "dave", "AdministratorAccess", "ec-prod", "dave", None),
            ("USER", "erin", "PowerUserAccess", "media-stg", "erin", None),
            ("GROUP", "oncall", "AdministratorAccess", "media-prod", "alice", "oncall"),
            ("USER", "bob", "PowerUserAccess", "media-prod", "bob", None),
            ("USER", "hanako", "AdministratorAccess", "sandbox-1", "hanako", None),
        ]
        filed = {item.subject for item in self.filed}
        fresh = [c for c in candidates if c[:4] not in filed]
        if not fresh:
            return []
        kind, principal, permission_set, account, requester, group = self.rng.choice(fresh)
        request = FileRequest(
            self.label(), requester, account, permission_set, self.rng.randint(5, 90), None,
            principal_group=group, note="on an assignment made by hand",
        )
        self.remember(request, minute)
        return [ByHand(kind, principal, permission_set, account), request]


def draw_plan(seed: int, events: int, hours: float, tick: float = 15.0) -> Plan:
    """A day of `hours` simulated hours: the scheduler's ticks (intake, grants, revocations every `tick` minutes
    on average, some doubled, some killed) and `events` random events between them, all drawn from `seed`."""
    drawer = _Drawer(random.Random(seed))
    rng = drawer.rng
    day = hours * 60
    moments: list[tuple[float, str]] = [(rng.uniform(0, day), "event") for _ in range(events)]
    minute = rng.uniform(0, tick)
    while minute < day:
        moments.append((minute, "tick"))
        minute += rng.uniform(tick / 3, tick * 5 / 3)
    out: list[Step] = []

    def add(at: float, action: Action) -> None:
        out.append(Step(len(out), round(at, 2), action))

    for at, kind in sorted(moments):
        if kind == "tick":
            jobs = ["intake", "grants", "revocations"] if drawer.chance(0.5) else ["revocations", "intake", "grants"]
            for job in jobs:
                add(at, drawer.run(job))
            continue
        kind = rng.choices(["run", "file", "act", "fault", "hostile", "by-hand"], [10, 44, 22, 13, 8, 3])[0]
        if kind == "run":
            add(at, drawer.run(rng.choice(["intake", "grants", "revocations"]), extra=True))
        elif kind == "file":  # sometimes a burst: an incident brings several people at once
            for _ in range(rng.choices([1, 2, 3], [70, 20, 10])[0]):
                add(at, drawer.file(at))
        elif kind == "act":
            action = drawer.act()
            if action is not None:
                add(at, action)
                if drawer.chance(0.25):  # decisions racing: two intakes pick the same actions up at once
                    add(at, Run("intake", copies=2))
        elif kind == "fault":
            add(at, drawer.fault())
        elif kind == "hostile":
            add(at, drawer.hostile())
        else:
            for action in drawer.by_hand(at):
                add(at, action)
    return Plan(seed, hours, out)


def _clock(minute: float) -> str:
    return when(DAY_START + timedelta(minutes=minute))


def when(at: object) -> str:
    """A simulated moment as the day's log shows it: 14:05:00, or +1d 07:40:00 after the day."""
    if not isinstance(at, datetime):
        return str(at)
    day = (at.date() - DAY_START.date()).days
    return f"{'+' + str(day) + 'd ' if day else ''}{at:%H:%M:%S}"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}...({len(text)} chars)"
