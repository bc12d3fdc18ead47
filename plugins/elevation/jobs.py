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
