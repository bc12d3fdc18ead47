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
    from elevation.intake import run_intake

    runtime = runtime or runtime_for_run(context, "elevation_grants")
    return _summarise("intake", run_intake(runtime))


def grants(context: dict[str, Any], runtime: Runtime | None = None) -> dict[str, Any]:
    from elevation.grants import run_grants

    runtime = runtime or runtime_for_run(context, "elevation_grants")
    return _summarise("grants", run_grants(runtime))


def revocations(context: dict[str, Any], runtime: Runtime | None = None) -> dict[str, Any]:
    from elevation.revocations import run_revocations

    runtime = runtime or runtime_for_run(context, "elevation_revocations")
    return _summarise("revocations", run_revocations(runtime))


def submit_request(params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """The trigger form: insert the request as any outside system would, then run intake so the answer shows."""
    from elevation.intake import run_intake
    from elevation.submission import submit

    runtime = runtime_for_run(context, "elevation_request")
    request_id = submit(runtime.engine, params)
    run_intake(runtime)
    return _request_state(runtime, request_id)


def decide(params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """The decision form: approve / reject / cancel / revoke, as the logged-in Airflow user."""
    from elevation.intake import run_intake
    from elevation.store import queue

    runtime = runtime_for_run(context, "elevation_decide")
    actor = decision_actor(params, context)
    with runtime.engine.begin() as conn:
        action_id = queue.insert_action(
            conn, int(params["request_id"]), params["action"], actor, params.get("comment")
        )
    run_intake(runtime)
    with runtime.engine.connect() as conn:
        action = queue.get_action(conn, action_id)
    state = _request_state(runtime, int(params["request_id"]))
    state["action"] = {key: str(value) for key, value in action.items()}
    log.info(
        "action %s by %s: %s %s", params["action"], actor, action["outcome"], action["outcome_reason"] or ""
    )
    return state


#: The user Airflow records for `airflow dags test` / `dag.test()` runs, which have no logged-in user.
NO_LOGGED_IN_USER = (None, "", "dag_test")


def decision_actor(params: dict[str, Any], context: dict[str, Any]) -> str:
    """Who decides: the logged-in user who triggered the run. The `actor` parameter only counts for runs without
    one (`airflow dags test`), so nobody can approve in someone else's name from the UI."""
    user = getattr(context.get("dag_run"), "triggering_user_name", None)
    if user not in NO_LOGGED_IN_USER:
        if params.get("actor") and params["actor"] != user:
            log.warning("ignoring actor=%r: the run was triggered by %r, who is the actor", params["actor"], user)
        return str(user)
    if not params.get("actor"):
        raise ValueError("no actor: trigger the form while logged in, or give the actor parameter")
    return str(params["actor"])


def _request_state(runtime: Runtime, request_id: int) -> dict[str, Any]:
    from elevation.store import queue

    with runtime.engine.connect() as conn:
        row = queue.get_request(conn, request_id)
    assert row is not None
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
    outlet_events = context.get("outlet_events")
    if outlet_events is not None:
        outlet_events[asset].extra = {"night": plan["night"], "events": summary.events_written}
    result = summary.to_dict()
    return {key: result[key] for key in ("night", "sessions", "events_per_session", "events_written",
                                         "bytes_scanned", "objects_read", "files_written", "warnings")}


def audit(params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Audit the night the extract announced (or the one given, or yesterday): reports, index, findings file."""
    from dataclasses import asdict

    from elevation.nightly import night_to_process, run_audit

    runtime = runtime_for_run(context, "elevation_audit")
    announced = [
        event.extra.get("night")
        for events in (context.get("triggering_asset_events") or {}).values()
        for event in events
        if getattr(event, "extra", None)
    ]
    night = night_to_process(runtime.as_of, runtime.config.extract.timezone,
                             params.get("night") or (announced[-1] if announced else None))
    summary = run_audit(runtime, night)
    log.info("night %s: %d sessions audited, %d findings; index: %s", night, len(summary.sessions),
             summary.findings, summary.index)
    for rule in summary.unsupported_rules:
        log.warning("rule not loaded: %s", rule)
    return asdict(summary)
