"""Entry points the DAG tasks call: build the run's Runtime, do the work, log a readable summary.

DAG files import this module inside their task functions only, so parsing a DAG file stays cheap.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from elevation.runtime import Runtime, runtime_for_run

log = logging.getLogger(__name__)


def _summarise(title: str, summary: object) -> dict[str, Any]:
    data = asdict(summary)  # type: ignore[call-overload]
    counts = ", ".join(
        f"{key}={len(value) if isinstance(value, list) else value}" for key, value in data.items()
    )
    log.info("%s: %s", title, counts)
    return data


def intake(context: dict[str, Any], runtime: Runtime | None = None) -> dict[str, Any]:
    """Intake, then a look at granting: when approved requests wait too long (AWS failing, elevation_grants paused
    or stuck behind a missing pool), this run fails too, so the UI shows it even when the grant task never runs."""
    from elevation.access.grants import GrantsOverdue, overdue_grants, overdue_message
    from elevation.access.intake import run_intake

    runtime = runtime or runtime_for_run(context, "elevation_intake")
    summary = _summarise("intake", run_intake(runtime))
    overdue = overdue_grants(runtime)
    if overdue:
        raise GrantsOverdue(f"intake itself is done; but {overdue_message(runtime, overdue)}")
    return summary


def grants(context: dict[str, Any], runtime: Runtime | None = None) -> dict[str, Any]:
    from elevation.access.grants import run_grants

    runtime = runtime or runtime_for_run(context, "elevation_grants")
    return _summarise("grants", run_grants(runtime))


def revocations(context: dict[str, Any], runtime: Runtime | None = None) -> dict[str, Any]:
    from elevation.access.revocations import run_revocations

    runtime = runtime or runtime_for_run(context, "elevation_revocations")
    return _summarise("revocations", run_revocations(runtime))


def reconcile(context: dict[str, Any], runtime: Runtime | None = None) -> dict[str, Any]:
    """Reconcile, write its report, and fail the run when enforce mode refused (safety limit) or a removal failed:
    the drift is recorded and reported either way."""
    from elevation.access.reconcile import ReconcileRefused, describe, run_reconcile
    from elevation.access.reconcile_report import write_reconcile_report

    runtime = runtime or runtime_for_run(context, "elevation_reconcile")
    summary = run_reconcile(runtime)
    report = write_reconcile_report(runtime, summary) if runtime.config.reconcile.has_scope else None
    result = {
        "mode": summary.mode,
        "drift": [describe(item, summary.names) for item in summary.drift],
        "removed": [describe(item, summary.names) for item in summary.removed],
        "recreated": [describe(item, summary.names) for item in summary.recreated],
        "calls": dict(summary.calls),
        "report": report,
    }
    for item in summary.drift:
        log.warning("drift %s", describe(item, summary.names))
    if summary.refused:
        raise ReconcileRefused(summary.refused)
    if summary.failed:
        raise ReconcileRefused("; ".join(f"{describe(item, summary.names)}: {why}" for item, why in summary.failed))
    return result


class ActionRefused(RuntimeError):
    """The form's decision was recorded and refused: the run fails so the person sees it."""


def submit_request(params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """The trigger form: insert the request as any outside system would, then run intake so the answer shows.

    The requester is the logged-in user who triggered the run (mapped to a person through `policy.people` by
    login or email); the `requester` parameter only counts for runs without one (`airflow dags test`).
    """
    from elevation.access.intake import run_intake
    from elevation.submission import submit

    runtime = runtime_for_run(context, "elevation_request")
    requester = acting_user(params, context, "requester")
    request_id = submit(runtime.engine, {**params, "requester": requester})
    run_intake(runtime)
    return _request_state(runtime, request_id)


def decide(params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """The decision form: approve / reject / cancel / revoke, as the logged-in Airflow user. A refused decision
    fails the run with the reason; an applied `revoke` moves the session to `ending`, and the next
    `elevation_revocations` run (within a minute) removes the assignment."""
    from elevation.access.intake import run_intake
    from elevation.store import queue

    runtime = runtime_for_run(context, "elevation_decide")
    actor = acting_user(params, context, "actor")
    request_id = int(params["request_id"])
    with runtime.engine.begin() as conn:
        action_id = queue.insert_action(conn, request_id, params["action"], actor, params.get("comment"))
    run_intake(runtime)
    with runtime.engine.connect() as conn:
        action = queue.get_action(conn, action_id)
    if action["outcome"] == "refused":
        raise ActionRefused(f"{params['action']} of request {request_id} by {actor} refused: {action['outcome_reason']}")
    if action["outcome"] is None:
        log.warning("action %s is recorded but not applied yet (the request is busy or AWS could not be asked); "
                    "the next intake applies it", action_id)
    state = _request_state(runtime, request_id)
    state["action"] = {key: str(value) for key, value in action.items()}
    log.info("action %s by %s: %s %s", params["action"], actor, action["outcome"], action["outcome_reason"] or "")
    return state


#: The user Airflow records for `airflow dags test` / `dag.test()` runs, which have no logged-in user.
NO_LOGGED_IN_USER = (None, "", "dag_test")


def acting_user(params: dict[str, Any], context: dict[str, Any], field: str) -> str:
    """Who acts: the logged-in user who triggered the run. The `field` parameter only counts for runs without
    one (`airflow dags test`), so nobody files or decides in someone else's name from the UI."""
    user = getattr(context.get("dag_run"), "triggering_user_name", None)
    given = params.get(field)
    if user not in NO_LOGGED_IN_USER:
        if given and given != user:
            raise PermissionError(
                f"{field}={given!r}, but the run was triggered by {user!r}: you act as yourself (leave {field} empty)"
            )
        return str(user)
    if not given:
        raise ValueError(f"no {field}: trigger the form while logged in, or give the {field} parameter")
    return str(given)


def _request_state(runtime: Runtime, request_id: int) -> dict[str, Any]:
    from elevation.store import queue

    with runtime.engine.connect() as conn:
        row = queue.get_request(conn, request_id)
    if row is None:
        raise LookupError(f"there is no request {request_id}")
    state = {"request_id": request_id, "status": row["status"], "reason": row["status_reason"]}
    log.info(
        "request %s is %s%s",
        request_id,
        row["status"],
        f": {row['status_reason']}" if row["status_reason"] else "",
    )
    return state


# --- nightly ------------------------------------------------------------------------------------------------

#: The Asset the extract produces once per night; `elevation_audit` is scheduled on it.
EXTRACT_ASSET_NAME = "elevation_cloudtrail_events"


def extract_plan(params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Pick the night; on CloudTrail Lake, start its queries (one per night, for all sessions) for the deferred wait."""
    from elevation.nightly import lake_client, night_to_process, plan_lake_statements

    runtime = runtime_for_run(context, "elevation_extract")
    settings = runtime.config.extract
    night = night_to_process(runtime.as_of, settings.timezone, params.get("night"))
    statements = plan_lake_statements(runtime, night)
    ids = {}
    if statements:
        client = lake_client(runtime)
        ids = {statement: client.start_query(statement) for statement in statements}
    log.info("night %s: source %s, %d Lake queries started", night, settings.source, len(ids))
    return {
        "night": night.isoformat(),
        "ids": ids,
        "event_data_store": settings.lake_event_data_store_arn,
        "conn_id": settings.lake_conn_id,
        "poll_interval": settings.poll_interval.total_seconds(),
        "max_wait": settings.max_wait.total_seconds(),
    }


def extract(plan: dict[str, Any], finished: dict[str, Any], context: dict[str, Any], asset: Any) -> dict[str, Any]:
    """Extract the planned night into Parquet and announce it on the Asset (the audit DAG waits for it)."""
    from datetime import date

    from elevation.nightly import run_extract

    runtime = runtime_for_run(context, "elevation_extract")
    ready = {statement: (query_id, int(scanned)) for statement, (query_id, scanned) in (finished or {}).items()}
    summary = run_extract(runtime, date.fromisoformat(plan["night"]), ready_queries=ready or None)
    log.info(
        "night %s: %d events for %d sessions (%s), %d objects read, %d bytes scanned, %d warnings",
        summary.night, summary.events_written, summary.sessions,
        ", ".join(f"session {key}: {value}" for key, value in summary.events_per_session.items()) or "none",
        summary.objects_read, summary.bytes_scanned, len(summary.warnings),
    )
    for earlier, gained in sorted(summary.late_events.items()):
        log.warning("night %s gained events delivered late: %s", earlier,
                    ", ".join(f"session {key}: {value}" for key, value in sorted(gained.items())))
    for problem in summary.problems:
        if problem.is_error:
            log.error("%s", problem.message)
    outlet_events = context.get("outlet_events")
    if outlet_events is not None:
        # The audit re-audits the earlier nights that gained late events along with this one.
        outlet_events[asset].extra = {"night": plan["night"], "events": summary.events_written,
                                      "late_nights": sorted(summary.late_events)}
    result = summary.to_dict()
    return {key: result[key] for key in ("night", "sessions", "events_per_session", "events_written",
                                         "bytes_scanned", "objects_read", "files_written", "warnings",
                                         "problems", "late_events")}


def audit(params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Audit the night the extract announced (or the one given, or yesterday): reports, index, findings file."""
    from dataclasses import asdict
    from datetime import date

    from elevation.nightly import MissingCloudTrailData, night_to_process, run_audit

    runtime = runtime_for_run(context, "elevation_audit")
    extras = [
        event.extra
        for events in (context.get("triggering_asset_events") or {}).values()
        for event in events
        if getattr(event, "extra", None)
    ]
    night = night_to_process(runtime.as_of, runtime.config.extract.timezone,
                             params.get("night") or (extras[-1].get("night") if extras else None))
    # Earlier nights that gained late events first (their sessions' reports say so), then the announced night.
    late = sorted({date.fromisoformat(day) for extra in extras for day in extra.get("late_nights") or ()} - {night})
    results, blind = {}, []
    for day in [*late, night]:
        try:
            summary = run_audit(runtime, day)
        except MissingCloudTrailData as error:  # every night is still audited and written before failing
            blind.append(str(error))
            continue
        log.info("night %s: %d sessions audited, %d findings (%d written to the findings file); index: %s", day,
                 len(summary.sessions), summary.findings, summary.findings_written, summary.index)
        for rule in summary.unsupported_rules:
            log.warning("rule not loaded: %s", rule)
        results[day.isoformat()] = asdict(summary)
    if blind:
        raise MissingCloudTrailData(" | ".join(blind))
    tonight = results.pop(night.isoformat())
    return {**tonight, "late_nights": results}


# --- notifications --------------------------------------------------------------------------------------------


def notify(context: dict[str, Any], runtime: Runtime | None = None) -> dict[str, Any]:
    """Slack notifications: turn what happened into outbox rows, then deliver the due ones. Slack problems never
    fail the run (they show on the heartbeat `elevation_notify`); a producer error does, after the sender ran."""
    from elevation.notify.producer import produce
    from elevation.notify.sender import run_sender

    runtime = runtime or runtime_for_run(context, "elevation_notify")
    if not runtime.config.notifications.enabled:
        log.info("notifications are off: set notifications.enabled to true (see README, 'Slack notifications')")
        return {"enabled": False}
    failure: Exception | None = None
    try:
        produced = _summarise("notifications produced", produce(runtime))
    except Exception as error:  # what is already in the outbox still goes out
        log.exception("producing notifications failed")
        produced, failure = {"error": str(error)[:500]}, error
    sent = _summarise("notifications sent", run_sender(runtime))
    if failure is not None:
        raise failure
    return {"enabled": True, "produced": produced, "sent": sent}
