"""The FastAPI apps the Airflow API server mounts (see `plugins/elevation_plugin.py`).

`slack_app()`, at `/elevation/slack`: `POST /actions` is Slack's interactivity request URL. It answers Slack at
once (200, empty) after checking the signature, and records and applies the click in a background task: the
Slack user's email (`users.info`, through the SlackHook of `notifications.slack_conn_id`) names a person of the
policy; the decision becomes an `elevation_action` row with that person's login as actor and "via Slack" as
comment, and intake applies it (every check of any decision applies); the outcome goes back to Slack. The clicked
message, once replaced, is recorded in the outbox as closed: the notifier then closes the other approvers'
messages of that request and leaves this one as the click left it.

`audit_app()`, at `/elevation/audit`: the nightly reports under `audit.reports_location`, to callers with a valid
Airflow token (the UI's `_token` cookie or `Authorization: Bearer`), validated by Airflow's own `get_user`.
"""

import logging
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from elevation.web.audit_viewer import NotAllowed, clean_path, landing_page, response_headers, store_for
from elevation.web.slack_actions import (
    COMMENT,
    Click,
    Refused,
    SignatureCheck,
    ephemeral,
    failure_message,
    outcome_message,
    parse_click,
    unknown_person_message,
)

log = logging.getLogger(__name__)

#: The Airflow connection holding the Slack app's signing secret in its password field (any conn type; a secrets
#: backend may provide it like any connection). Never in the configuration file, code or logs.
SIGNING_SECRET_CONN_ID = "elevation_slack_signing"
#: The Slack API connection when the configuration has no `notifications.slack_conn_id`.
DEFAULT_SLACK_CONN_ID = "slack_api_default"

SLACK_PREFIX = "/elevation/slack"
AUDIT_PREFIX = "/elevation/audit"


# --- Slack --------------------------------------------------------------------------------------------------


def signing_secret() -> str | None:
    from airflow.exceptions import AirflowNotFoundException
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(SIGNING_SECRET_CONN_ID)
    except AirflowNotFoundException:
        return None
    return conn.password or None


def _config() -> Any:
    from elevation.config import load_config

    return load_config()


def slack_conn_id(config: Any) -> str:
    notifications = getattr(config, "notifications", None)
    return getattr(notifications, "slack_conn_id", None) or DEFAULT_SLACK_CONN_ID


@lru_cache(maxsize=4)
def _engine(url: str) -> Any:
    from elevation.store.database import create_engine_for_url

    return create_engine_for_url(url)


def web_runtime(config: Any, actor: str) -> Any:
    """A Runtime for a decision made on the web, acting as of now."""
    from elevation.runtime import Runtime, identity_center_from_airflow
    from elevation.store.database import url_from_airflow_connection

    return Runtime(
        config=config,
        engine=_engine(url_from_airflow_connection(config.connections.database)),
        identity_center_factory=identity_center_from_airflow,
        as_of=datetime.now(UTC),
        actor=actor,
    )


class SlackReplies:
    """How outcomes reach Slack: the message itself through `chat.update` (the bot posted it), or the
    `response_url`; what only the clicker should see through the `response_url` (ephemeral), or else a DM."""

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id

    def _client(self) -> Any:
        from airflow.providers.slack.hooks.slack import SlackHook

        return SlackHook(slack_conn_id=self.conn_id).client

    def email_of(self, slack_user_id: str) -> str | None:
        from slack_sdk.errors import SlackApiError

        try:
            answer = self._client().users_info(user=slack_user_id)
        except SlackApiError as error:
            if error.response.get("error") in ("user_not_found", "users_not_found"):
                return None
            raise
        user = answer.get("user") or {}
        if user.get("deleted") or user.get("is_bot"):
            return None
        if not self._of_our_workspace(user):
            log.warning("Slack user %s belongs to workspace %s, not the app's own: not a person of the policy",
                        slack_user_id, user.get("team_id"))
            return None
        return (user.get("profile") or {}).get("email")

    def _of_our_workspace(self, user: dict[str, Any]) -> bool:
        """Whether the user is a member of the bot's own workspace (or of its Enterprise Grid organisation). An
        email is only proof of a person inside our own workspace: a Slack Connect guest or a user of another
        workspace carries whatever email their own organisation gave them."""
        if user.get("is_stranger"):
            return False
        bot = self._client().auth_test()
        team, enterprise = bot.get("team_id"), bot.get("enterprise_id")
        if team and user.get("team_id") == team:
            return True
        theirs = (user.get("enterprise_user") or {}).get("enterprise_id")
        return bool(enterprise and theirs == enterprise)

    def send(self, click: Click, message: dict[str, Any]) -> None:
        if message.get("replace_original") and click.channel_id and click.message_ts:
            try:
                self._client().chat_update(channel=click.channel_id, ts=click.message_ts, text=message["text"],
                                           blocks=message.get("blocks"))
                return
            except Exception:
                if not click.response_url:
                    raise
                log.warning("chat.update of the message of request %s failed; answering through the "
                            "response_url", click.request_id, exc_info=True)
        if click.response_url:
            from slack_sdk.webhook import WebhookClient

            response = WebhookClient(click.response_url).send_dict(message)
            if response.status_code >= 300:
                raise RuntimeError(f"Slack's response_url answered {response.status_code}: {response.body[:200]}")
        else:  # nowhere to answer only the clicker: a direct message
            self._client().chat_postMessage(channel=click.slack_user_id, text=message["text"])


def handle_click(click: Click, config: Any, replies: SlackReplies) -> dict[str, Any]:
    """Record and apply one click; tell Slack the outcome. Returns what was told (for the log and the tests)."""
    from elevation.access.intake import run_intake
    from elevation.store import queue

    runtime = None
    try:
        email = replies.email_of(click.slack_user_id)
        person = config.policy.person(email) if email else None
        if person is None:
            log.warning("Slack user %s (%s) is not a person of the policy: %s of request %s refused, nothing "
                        "recorded", click.slack_user_id, email, click.decision, click.request_id)
            message = unknown_person_message(click, email)
        else:
            runtime = web_runtime(config, actor=f"slack:{person.login}")
            with runtime.engine.begin() as conn:
                exists = queue.get_request(conn, click.request_id) is not None
                if exists:
                    action_id = queue.insert_action(conn, click.request_id, click.decision, person.login, COMMENT)
            if not exists:
                message = ephemeral(f"There is no request {click.request_id}; nothing was recorded.")
            else:
                run_intake(runtime)
                with runtime.engine.connect() as conn:
                    action = queue.get_action(conn, action_id)
                    request = queue.get_request(conn, click.request_id)
                log.info("Slack %s of request %s by %s: %s %s", click.decision, click.request_id, person.login,
                         action["outcome"], action["outcome_reason"] or "")
                message = outcome_message(click, person.login, action["outcome"], action["outcome_reason"],
                                          request["status"] if request else None)
    except Exception:
        log.exception("Slack %s of request %s by Slack user %s failed", click.decision, click.request_id,
                      click.slack_user_id)
        message = failure_message(click)
    try:
        replies.send(click, message)
    except Exception:
        log.exception("could not tell Slack the outcome of the %s of request %s", click.decision, click.request_id)
        return message
    if runtime is not None and message.get("replace_original"):
        _closed_by_click(runtime, click, message)
    return message


def _closed_by_click(runtime: Any, click: Click, message: dict[str, Any]) -> None:
    """The clicked message shows the outcome now: the notifier must not replace it again."""
    from elevation.notify.producer import closed_by_click

    try:
        closed_by_click(runtime.engine, click.request_id, click.channel_id, click.message_ts, message["text"],
                        at=runtime.now())
    except Exception:  # the notifier then replaces it with the same outcome: harmless
        log.warning("could not record that the Slack message of request %s is closed", click.request_id,
                    exc_info=True)


_signatures = SignatureCheck()


def slack_app() -> FastAPI:
    app = FastAPI(title="Elevation: Slack interactivity", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/actions")
    async def actions(request: Request, background: BackgroundTasks) -> Response:
        body = await request.body()
        secret = await run_in_threadpool(signing_secret)
        if not secret:
            log.error("Slack request refused: the connection %r with the signing secret is missing",
                      SIGNING_SECRET_CONN_ID)
            return JSONResponse({"detail": "Slack signing is not configured"}, status_code=503)
        try:
            _signatures.verify(secret, body, request.headers)
            click = parse_click(body)
        except Refused as refused:
            log.warning("Slack request refused (%s): %s", refused.status, refused.reason)
            return JSONResponse({"detail": refused.reason}, status_code=refused.status)
        try:
            config = await run_in_threadpool(_config)
        except Exception:
            log.exception("Slack %s of request %s not handled: the configuration cannot be read", click.decision,
                          click.request_id)
            return JSONResponse({"detail": "the elevation configuration cannot be read"}, status_code=503)
        background.add_task(handle_click, click, config, SlackReplies(slack_conn_id(config)))
        return Response(status_code=200)  # Slack wants an answer within 3 s; the outcome follows

    return app


# --- the audit viewer ---------------------------------------------------------------------------------------


#: Who may read the reports: whoever the auth manager lets read this DAG (the one that writes them). With FAB or
#: Keycloak that is a per-DAG permission; the reports name people and what they did, so they are not for every login.
AUDIT_DAG_ID = "elevation_audit"


def audit_app() -> FastAPI:
    # Airflow's own check of the caller's token (Authorization: Bearer, else the UI's _token cookie): 401 without
    # one, 403 for an invalid one, 403 without read access to the audit DAG. This module has no
    # `from __future__ import annotations`, so FastAPI sees the annotations.
    from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag

    app = FastAPI(title="Elevation: audit reports", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(requires_access_dag("GET", param_dag_id=AUDIT_DAG_ID))])

    def store() -> Any:
        audit = _config().audit
        return store_for(audit.reports_location, audit.reports_conn_id)

    @app.get("/", response_class=HTMLResponse)
    def nights(user: GetUserDep) -> HTMLResponse:
        page = landing_page(store().nights(), user.get_name())
        return HTMLResponse(page, headers={key: value for key, value in response_headers("index.html").items()
                                           if key != "Content-Type"})

    @app.get("/{path:path}")
    def report(path: str, user: GetUserDep) -> Response:
        try:
            relative = clean_path(path)
            reports = store()
            if not relative or reports.is_folder(relative):
                last = relative.rsplit("/", 1)[-1]
                return RedirectResponse("index.html" if path.endswith("/") or not last else f"{last}/index.html",
                                        status_code=307)
            content = reports.read(relative)
        except NotAllowed as refused:
            log.warning("audit viewer: %s asked for %r: %s", user.get_name(), path, refused)
            raise HTTPException(status_code=404, detail=f"not found: {refused}") from None
        if content is None:
            raise HTTPException(status_code=404, detail="not found")
        return Response(content, headers=response_headers(relative))

    return app
