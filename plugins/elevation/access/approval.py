"""Approving in the Airflow UI: a human-in-the-loop task per pending request, answered through the decision path.

`elevation_approval` runs once per request (run id `approval__<request id>`; when that run failed and the request is
still pending, the dispatcher starts `approval__<request id>__2`, and so on, see :func:`approval_attempt`). Its
first task, :class:`AskApprovers` (the standard provider's `HITLOperator`), reads the request and the policy: if the
request is no longer pending it ends at once and asks nobody; else it parks the task (Airflow 3.3: `awaiting_input`)
for the approvers the policy names for the account, as their Airflow users (never the requester unless the policy
allows self-approval), with the request's details in its body, until the request would expire. There is no default: a timeout never approves
(the task ends, and intake expires the request as always).

The answer is only a proposal: :func:`apply_answer` turns it into an `elevation_action` row with the responder as
the actor and applies it with intake, so it passes exactly the checks of any other decision. The queue row stays
the single source of truth: when the request was decided elsewhere meanwhile (command line, Slack, another system,
expiry), intake refuses the action as not pending and the run ends successfully saying so.

A waiting approval whose request was decided elsewhere is closed by :func:`close_stale_approvals`: it answers the
task through Airflow's REST API as the user of the Airflow connection `elevation_airflow_api` (that user is added
to every approval's assigned users; its answers are never turned into decisions).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowFailException

from elevation.access.policy import approvers_for
from elevation.lifecycle import Status
from elevation.store import queue
from elevation.store.tables import requests

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from elevation.runtime import Runtime

log = logging.getLogger(__name__)

APPROVAL_DAG_ID = "elevation_approval"
ASK_TASK_ID = "ask"
APPROVE, REJECT = "Approve", "Reject"
OPTIONS = [APPROVE, REJECT]
#: The Airflow connection of the API user that closes approvals whose request was decided elsewhere (optional).
API_CONN_ID = "elevation_airflow_api"
#: An optional Airflow Variable (a JSON object) mapping a policy login to that person's Airflow user id, for auth
#: managers whose user ids are not the user names (FAB: the numeric id `airflow users list` shows).
USER_IDS_VARIABLE = "elevation_airflow_user_ids"
RUN_ID_PREFIX = "approval__"
#: Approval runs one request may have: a run that failed (its answer lost to a database error, the asking failing
#: after its retries, a decision refused) is replaced while the request is pending, up to this many in all.
MAX_APPROVAL_RUNS = 5
#: The first run has no suffix, the later ones `__2`, `__3`, ...: one run id per attempt.
_RUN_ID = re.compile(rf"{RUN_ID_PREFIX}(?P<request>[0-9]+)(?:__(?P<attempt>[2-9]|[1-9][0-9]+))?")


def run_id_for(request_id: int, attempt: int = 1) -> str:
    """The request's `attempt`-th approval run: `approval__<id>`, then `approval__<id>__<attempt>`. Derived from what
    the dispatcher saw, so a retried or concurrent start of the same attempt finds the run instead of making another."""
    if attempt < 1:
        raise ValueError(f"attempt {attempt} < 1")
    return f"{RUN_ID_PREFIX}{int(request_id)}" + (f"__{int(attempt)}" if attempt > 1 else "")


def parse_run_id(run_id: str) -> tuple[int, int] | None:
    """(request id, attempt) of an approval run id, or None for any other run id."""
    match = _RUN_ID.fullmatch(run_id)
    if match is None:
        return None
    return int(match["request"]), int(match["attempt"] or 1)


def request_id_of(run_id: str) -> int | None:
    parsed = parse_run_id(run_id)
    return parsed[0] if parsed else None


def approval_attempt(runs: int, failed: int, max_runs: int = MAX_APPROVAL_RUNS) -> int | None:
    """Which approval run a pending request needs, given how many it has had and how many of them failed.

    None yet: the first. Every one failed: the next, so the approvers are asked again (an answer lost to a database
    error must not leave them with nothing to answer). One waiting, or one that ended without an error (answered,
    timed out, or nobody to ask): none. After `max_runs` failed runs: none (each failure alerted the admins; the
    request can still be decided on the command line, in Slack or with `elevation_decide`, and expires as always).
    """
    if runs <= 0:
        return 1
    if failed >= runs and runs < max_runs:
        return runs + 1
    return None


def approvals_to_start(pending: Iterable[int], runs: Mapping[int, tuple[int, int]],
                       max_runs: int = MAX_APPROVAL_RUNS) -> list[tuple[int, int]]:
    """(request id, attempt) for each pending request that needs an approval run; `runs` maps a request id to (its
    approval runs, of those failed), a request missing from it has had none."""
    wanted = []
    for request_id in pending:
        attempt = approval_attempt(*runs.get(request_id, (0, 0)), max_runs=max_runs)
        if attempt is not None:
            wanted.append((request_id, attempt))
    return wanted


@dataclass(frozen=True)
class Question:
    """What the approvers are asked, or why nobody is asked (`skip`)."""

    request_id: int
    status: str
    skip: str | None = None
    subject: str = ""
    body: str = ""
    approvers: tuple[str, ...] = ()
    timeout: timedelta | None = None


def approver_logins(runtime: Runtime, row: queue.Row) -> list[str]:
    """The logins of the people the policy names as approvers for the request's account (or its OUs), never the
    requester unless the policy allows self-approval (:func:`elevation.access.policy.approvers_for`)."""
    from elevation.access.intake import _account_ous_or_raise

    ous = _account_ous_or_raise(runtime, str(row["account_id"]))
    return [person.login for person in approvers_for(runtime.policy, row["requester"], str(row["account_id"]), ous)]


def _md(value: object) -> str:
    """Text from a request, safe inside the Markdown body: one line, no markup, bounded."""
    text = " ".join(str(value).split()) if value is not None else ""
    for char in "\\`*_{}[]<>()#+!|":
        text = text.replace(char, "\\" + char)
    return text if len(text) <= 1000 else text[:999] + "…"


def question_for(runtime: Runtime, request_id: int) -> Question:
    """Read the request: still pending and validated, with approvers and time left, or why nobody is asked."""
    from elevation.access.checks import request_window

    with runtime.engine.connect() as conn:
        row = queue.get_request(conn, request_id)
    if row is None:
        return Question(request_id, "missing", skip=f"there is no request {request_id}")
    status = str(row["status"])
    if status != Status.PENDING:
        return Question(request_id, status, skip=f"request {request_id} is already {status}: nobody is asked")
    if row["validated_at"] is None:
        return Question(request_id, status, skip=f"request {request_id} is not validated yet: intake judges it first")
    window = request_window(row)
    if isinstance(window, str):
        return Question(request_id, status, skip=f"request {request_id} cannot be read: {window}")
    start, end = window
    now = runtime.now()
    deadline = min(row["created_at"] + runtime.policy.limits.request_expiry, end)
    if deadline <= now:
        return Question(request_id, status, skip=f"request {request_id} expires now: intake expires it")
    approvers = approver_logins(runtime, row)
    if not approvers:
        return Question(request_id, status, skip=f"the policy names no approver for request {request_id}")
    minutes = int(round((end - start).total_seconds() / 60))
    subject = (f"Approve {row['permission_set']} on {row['account_id']} for {row['requester']} "
               f"(request {request_id})")[:500]
    lines = [
        f"**Requester:** {_md(row['requester'])}",
        f"**Account:** {_md(row['account_id'])}",
        f"**Permission set:** {_md(row['permission_set'])}",
    ]
    if row["principal_group"]:
        lines.append(f"**Group (instead of the requester):** {_md(row['principal_group'])}")
    lines += [
        f"**Window:** {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC ({minutes} minutes)",
        f"**Justification:** {_md(row['justification']) or '(none)'}",
        f"**Ticket:** {_md(row['ticket']) or '(none)'}",
        "",
        f"Unanswered by {deadline:%Y-%m-%d %H:%M} UTC, the request expires (a timeout never approves). Your answer "
        "is checked like any other decision; if the request was decided elsewhere meanwhile, it changes nothing.",
    ]
    return Question(request_id, status, subject=subject, body="\n\n".join(lines), approvers=tuple(approvers),
                    timeout=deadline - now)


@dataclass(frozen=True)
class Outcome:
    request_id: int
    status: str
    applied: bool
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "status": self.status, "applied": self.applied,
                "message": self.message}


class DecisionRefused(AirflowFailException):
    """The approver's answer was recorded as an action and refused by intake's checks. Final: the task fails without
    retrying (a retry would record the same refusal again); the dispatcher asks again while the request is pending."""


class UnexpectedAnswer(AirflowFailException, ValueError):
    """An answer that is neither Approve nor Reject: no retry makes it one."""


def apply_answer(runtime: Runtime, request_id: int, answer: dict[str, Any] | None,
                 system_users: tuple[str, ...] = ()) -> Outcome:
    """Turn the approval task's answer into an action row, apply it with intake, and say what happened.

    No answer (nobody was asked, or the wait timed out) and answers by a system user (closing a stale approval)
    record nothing. An answer refused because the request is no longer pending ends quietly (decided elsewhere, or
    by this same answer on an earlier try of the task: repeating an answer is harmless); any other refusal raises
    :class:`DecisionRefused` with intake's reason.
    """
    from elevation.access.intake import run_intake

    def current() -> str:
        return str((row() or {}).get("status", "missing"))

    def row() -> Mapping[str, Any] | None:
        with runtime.engine.connect() as conn:
            return queue.get_request(conn, request_id)

    if not answer or answer.get("skip"):
        why = (answer or {}).get("skip") or "no answer"
        return Outcome(request_id, current(), False, f"nothing recorded: {why}")
    user = answer.get("responded_by_user") or {}
    name = str(user.get("name") or user.get("id") or "")
    if answer.get("timed_out") or not name:
        return Outcome(request_id, current(), False, "nobody answered in time: nothing recorded (never approves)")
    if name in system_users:
        return Outcome(request_id, current(), False,
                       f"closed by {name}: the request was decided elsewhere; nothing recorded")
    chosen = list(answer.get("chosen_options") or [])
    if chosen not in ([APPROVE], [REJECT]):
        raise UnexpectedAnswer(f"unexpected answer {chosen!r} by {name}")
    kind = "approve" if chosen == [APPROVE] else "reject"
    person = runtime.policy.person(name)
    actor = person.login if person is not None else name  # an unknown user is refused by intake, with the reason
    params = answer.get("params_input") or {}
    comment = params.get("comment") or "via the Airflow UI approval"
    with runtime.engine.begin() as conn:
        action_id = queue.insert_action(conn, request_id, kind, actor, str(comment)[:2000])
    run_intake(runtime)
    with runtime.engine.connect() as conn:
        action = queue.get_action(conn, action_id)
    status = current()
    if action["outcome"] == "applied":
        return Outcome(request_id, status, True, f"{kind} by {actor} applied: request {request_id} is {status}")
    if action["outcome"] is None:
        return Outcome(request_id, status, False, f"{kind} by {actor} recorded as action {action_id}; the request "
                       "is busy right now, and the next intake applies it")
    if status != Status.PENDING:
        decided_by = (row() or {}).get("decided_by")
        if decided_by == actor:  # e.g. a retry of this task after its first try's decision was applied
            return Outcome(request_id, status, False, f"{kind} by {actor} changed nothing: request {request_id} "
                           f"was already decided by {actor} and is {status} (a repeated answer is refused quietly)")
        return Outcome(request_id, status, False, f"{kind} by {actor} changed nothing: request {request_id} was "
                       f"decided elsewhere meanwhile and is {status} ({action['outcome_reason']})")
    raise DecisionRefused(f"{kind} of request {request_id} by {actor} refused: {action['outcome_reason']}")


def pending_request_ids(runtime: Runtime) -> list[int]:
    """Requests waiting for an approver: pending and validated by intake."""
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            requests.select().with_only_columns(requests.c.id)
            .where(requests.c.status == Status.PENDING.value, requests.c.validated_at.is_not(None))
            .order_by(requests.c.id)
        ).scalars()
        return [int(value) for value in rows]


def not_pending(runtime: Runtime, request_ids: list[int]) -> dict[int, str]:
    """Of these requests, those no longer pending, with their status (a missing request counts as `missing`)."""
    if not request_ids:
        return {}
    with runtime.engine.connect() as conn:
        found = {int(row.id): str(row.status) for row in conn.execute(
            requests.select().with_only_columns(requests.c.id, requests.c.status)
            .where(requests.c.id.in_(request_ids))
        )}
    return {rid: found.get(rid, "missing") for rid in request_ids if found.get(rid) != Status.PENDING}


# --- the REST API side: closing approvals whose request was decided elsewhere ------------------------------------


class AirflowApi:
    """A small client of Airflow's public REST API (v2), authenticated with a token from `/auth/token`."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 30.0) -> None:
        import requests as http

        self.base = base_url.rstrip("/")
        self.http = http.Session()
        self.timeout = timeout
        answer = self.http.post(f"{self.base}/auth/token", json={"username": username, "password": password},
                                timeout=timeout)
        answer.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"

    def waiting_approvals(self) -> list[dict[str, Any]]:
        """HITL details of `elevation_approval` without a response yet."""
        found: list[dict[str, Any]] = []
        offset = 0
        while True:
            answer = self.http.get(
                f"{self.base}/api/v2/dags/{APPROVAL_DAG_ID}/dagRuns/~/hitlDetails",
                params={"response_received": "false", "limit": 100, "offset": offset}, timeout=self.timeout,
            )
            answer.raise_for_status()
            page = answer.json().get("hitl_details", [])
            found += page
            if len(page) < 100:
                return found
            offset += 100

    def answer(self, run_id: str, task_id: str, map_index: int, option: str, comment: str) -> int:
        answer = self.http.patch(
            f"{self.base}/api/v2/dags/{APPROVAL_DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}"
            "/hitlDetails",
            json={"chosen_options": [option], "params_input": {"comment": comment}}, timeout=self.timeout,
        )
        return answer.status_code


def close_stale_approvals(runtime: Runtime, api: AirflowApi) -> list[tuple[int, str]]:
    """Answer (as the API user, with `Reject`, which records nothing) every waiting approval whose request is no
    longer pending. Returns (request id, its status) for each approval closed."""
    waiting: dict[int, list[dict[str, Any]]] = {}
    for detail in api.waiting_approvals():
        ti = detail.get("task_instance") or {}
        rid = request_id_of(str(ti.get("dag_run_id") or ""))
        if rid is not None and str(ti.get("state")) in ("awaiting_input", "deferred"):
            waiting.setdefault(rid, []).append(ti)
    closed: list[tuple[int, str]] = []
    for rid, status in sorted(not_pending(runtime, sorted(waiting)).items()):
        for ti in waiting[rid]:  # normally one; a run of an earlier attempt left waiting is closed too
            run_id = ti["dag_run_id"]
            code = api.answer(run_id, ti["task_id"], int(ti.get("map_index", -1)), REJECT,
                              f"closed: request {rid} is {status} (decided elsewhere)")
            if code == 200:
                closed.append((rid, status))
                log.info("approval %s of request %s closed: the request is %s", run_id, rid, status)
            elif code == 409:
                log.info("approval %s of request %s was answered meanwhile", run_id, rid)
            else:
                log.warning("approval %s of request %s could not be closed: HTTP %s", run_id, rid, code)
    return closed


# --- what the DAG tasks run --------------------------------------------------------------------------------------


def system_users() -> tuple[str, ...]:
    """The login of the API user that closes stale approvals (the connection `elevation_airflow_api`), if any."""
    try:
        from airflow.sdk import Connection

        login = Connection.get(API_CONN_ID).login
    except Exception:  # no such connection: stale approvals wait for their timeout (see the README)
        return ()
    return (login,) if login else ()


def airflow_user_ids() -> dict[str, str]:
    """The Variable `elevation_airflow_user_ids` (login -> Airflow user id), {} when it is not set. Airflow checks a
    respondent by the auth manager's user id: the user name with the Simple auth manager, a number with FAB."""
    from airflow.sdk import Variable

    value = Variable.get(USER_IDS_VARIABLE, default=None, deserialize_json=True)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
            isinstance(login, str) and isinstance(uid, str | int) and not isinstance(uid, bool) and str(uid)
            for login, uid in value.items()):
        raise ValueError(f"the Airflow Variable {USER_IDS_VARIABLE} must be a JSON object of policy login -> "
                         'Airflow user id, e.g. {"bob": "3"}')
    return {login: str(uid) for login, uid in value.items()}


def assignees(logins: Iterable[str], user_ids: Mapping[str, str]) -> list[dict[str, str]]:
    """HITL `assigned_users`: `id` is what Airflow compares with the respondent's user id (mapped when the Variable
    names the login, else the login itself), `name` what the UI shows."""
    return [{"id": user_ids.get(login, login), "name": login} for login in logins]


class AskApprovers(HITLOperator):
    """Ask the request's approvers in the Airflow UI (Required Actions), or end at once when nobody should be asked.

    Everything shown is read at execute time from the queue row and the policy: `assigned_users` are the approvers'
    Airflow logins (the policy's `login`s) plus the closing API user, as Airflow user ids (see
    :func:`airflow_user_ids`), `response_timeout` the time left before the request expires. No `defaults`: a
    timeout returns `timed_out` and never approves.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.pop("params", None)  # the DAG's params (request_id) are no form field of the answer
        super().__init__(
            subject="Approve an elevation request",
            options=list(OPTIONS),
            defaults=None,
            multiple=False,
            params={"comment": Param(None, type=["null", "string"], maxLength=2000, title="Comment (optional)")},
            **kwargs,
        )

    def execute(self, context: Any) -> Any:
        from elevation.runtime import runtime_for_run

        request_id = int(context["params"]["request_id"])
        question = question_for(runtime_for_run(context, APPROVAL_DAG_ID), request_id)
        if question.skip:
            self.log.info("%s", question.skip)
            return {"request_id": request_id, "status": question.status, "skip": question.skip}
        self.subject, self.body = question.subject, question.body
        users = [*question.approvers, *(u for u in system_users() if u not in question.approvers)]
        user_ids = airflow_user_ids()
        unmapped = [login for login in users if user_ids and login not in user_ids]
        if unmapped:
            self.log.warning("%s: no Airflow user id in the Variable %s; assigned by login, which only an auth "
                             "manager whose user ids are the user names accepts", ", ".join(unmapped),
                             USER_IDS_VARIABLE)
        self.assigned_users = assignees(users, user_ids)
        self.response_timeout = question.timeout
        self.log.info("asking %s about request %s until %s", ", ".join(question.approvers), request_id,
                      question.timeout)
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        request_id = int(context["params"]["request_id"])
        if event.get("error_type") == "timeout":
            self.log.warning("nobody answered about request %s in time: nothing is decided here", request_id)
            return {"request_id": request_id, "timed_out": True}
        answer = dict(super().execute_complete(context, event))
        answer["responded_at"] = str(answer.get("responded_at"))
        return {**answer, "request_id": request_id}


def apply_task(answer: dict[str, Any] | None, context: Any) -> dict[str, Any]:
    """The approval run's second task: the answer becomes an action row applied by intake (see apply_answer)."""
    from elevation.runtime import runtime_for_run, utcnow

    request_id = int(context["params"]["request_id"])
    runtime = runtime_for_run(context, APPROVAL_DAG_ID)
    runtime = replace(runtime, as_of=utcnow())  # a decision is made when it is answered, not when the run began
    outcome = apply_answer(runtime, request_id, answer, system_users())
    log.info("%s", outcome.message)
    return outcome.as_dict()


class RunCounter(Protocol):
    """What the dispatcher asks Airflow about runs (the task instance's `get_dr_count`, through the supervisor)."""

    def get_dr_count(self, dag_id: str, logical_dates: Any = None, run_ids: list[str] | None = None,
                     states: list[str] | None = None) -> int: ...


def approval_runs(ti: RunCounter, request_id: int, max_runs: int = MAX_APPROVAL_RUNS) -> tuple[int, int]:
    """(approval runs, of those failed) that Airflow has for the request: two counts over its possible run ids."""
    candidates = [run_id_for(request_id, attempt) for attempt in range(1, max_runs + 1)]
    runs = ti.get_dr_count(dag_id=APPROVAL_DAG_ID, run_ids=candidates)
    failed = ti.get_dr_count(dag_id=APPROVAL_DAG_ID, run_ids=candidates, states=["failed"]) if runs else 0
    return runs, failed


def _free_attempt(ti: RunCounter, request_id: int, attempt: int, max_runs: int) -> int | None:
    """`attempt`, or the next whose run id is free (a run deleted by hand leaves a gap in the numbers)."""
    while attempt <= max_runs:
        if attempt == 1 or not ti.get_dr_count(dag_id=APPROVAL_DAG_ID, run_ids=[run_id_for(request_id, attempt)]):
            return attempt
        attempt += 1
    return None


def requests_to_ask(context: Any, max_runs: int = MAX_APPROVAL_RUNS) -> list[dict[str, Any]]:
    """The dispatcher: an approval run for each pending request without one, or whose last one failed, as
    TriggerDagRunOperator arguments (it skips a run id that exists: a second dispatcher at once starts nothing)."""
    from elevation.runtime import runtime_for_run

    runtime = runtime_for_run(context, "elevation_approval_dispatch")
    ti = context["ti"]
    pending = pending_request_ids(runtime)
    runs = {rid: approval_runs(ti, rid, max_runs) for rid in pending}
    starts = []
    for rid, attempt in approvals_to_start(pending, runs, max_runs):
        free = _free_attempt(ti, rid, attempt, max_runs)
        if free is None:
            continue
        if free > 1:
            log.warning("request %s is pending and its approval run failed: starting %s", rid, run_id_for(rid, free))
        starts.append((rid, free))
    for rid, (count, failed) in runs.items():
        if count >= max_runs and failed >= count:
            log.warning("request %s is pending and all its %s approval runs failed: none is started again (decide "
                        "it on the command line, in Slack or with elevation_decide; it expires as always)", rid, count)
    log.info("starting approvals %s", ", ".join(run_id_for(rid, n) for rid, n in starts) or "for no request")
    return [{"trigger_run_id": run_id_for(rid, n), "conf": {"request_id": rid}} for rid, n in starts]


def close_stale_task(context: Any) -> dict[str, Any]:
    """The dispatcher's second task: close waiting approvals whose request was decided elsewhere."""
    from airflow.sdk import Connection

    from elevation.runtime import runtime_for_run

    try:
        conn = Connection.get(API_CONN_ID)
    except Exception:
        log.info("no connection %s: approvals decided elsewhere stay waiting until they time out", API_CONN_ID)
        return {"configured": False, "closed": []}
    base = conn.host if "://" in (conn.host or "") else f"{conn.schema or 'http'}://{conn.host}:{conn.port or 8080}"
    runtime = runtime_for_run(context, "elevation_approval_dispatch")
    closed = close_stale_approvals(runtime, AirflowApi(base, conn.login or "", conn.password or ""))
    return {"configured": True, "closed": [list(item) for item in closed]}
