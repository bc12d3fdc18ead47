"""A fake Slack Web API: a real HTTP server speaking Slack's wire format, for the tests and the demo.

`slack_sdk.WebClient(token=..., base_url=fake.base_url)` (or the provider's `SlackHook` with the connection extra
`base_url`) works against it unchanged. Methods: `auth.test`, `users.lookupByEmail`, `users.info`,
`conversations.open`, `chat.postMessage` (channel: a channel id, a `#name`, or a user id for a DM; with optional
message `metadata`), `chat.update` and `conversations.history` (a conversation id only, as Slack wants; newest first,
`oldest` / `latest` / `inclusive`, `limit` and cursor pages, metadata only with `include_all_metadata`). Bodies may
be form-encoded or JSON (GET query strings too), the token comes as `Authorization: Bearer`; answers are
`{"ok": true, ...}` or `{"ok": false, "error": "users_not_found"}` as Slack gives them.

Users are registered by email (:meth:`SlackFake.add_user`); every posted message is recorded (channel, text,
blocks, ts, metadata, the app that posted it) in :attr:`SlackFake.messages`, every call with its arguments in
:attr:`SlackFake.calls`. The token `token` is this project's bot; :meth:`SlackFake.add_app` adds another app of the
workspace with its own token. As Slack does, `auth.test` tells a bot token its `user_id` and `bot_id`, and a message
an app posted shows its `user` (the bot user), `bot_id`, `app_id` and `bot_profile`.
Fault injection: :meth:`SlackFake.fail_next` makes the next N calls (optionally of one method only) answer HTTP 429
with `Retry-After`, HTTP 500, or Slack's own `{"ok": false, "error": ...}` (e.g. `missing_scope`).
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

VALID_TOKEN_PREFIXES = ("xoxb-", "xoxp-")


@dataclass(frozen=True)
class Message:
    channel: str  # the channel id (a DM's is D..., its user is `user`)
    text: str
    blocks: list[dict[str, Any]] | None
    ts: str
    user: str | None = None  # the person a DM went to (when the channel is a DM)
    updated: bool = False
    metadata: dict[str, Any] | None = None  # Slack message metadata: {"event_type": ..., "event_payload": {...}}
    app: App | None = None  # who posted it (None: this project's bot, the fake's `token`)


@dataclass(frozen=True)
class App:
    """A Slack app installed in the workspace, as its bot token sees itself."""

    token: str
    name: str
    bot_user: str  # the bot user's id (a message's `user`, auth.test's `user_id`)
    bot_id: str  # B...
    app_id: str  # A...


@dataclass
class _Fault:
    status: int
    retry_after: int | None
    method: str | None
    remaining: int
    error: str | None = None  # with status 200: Slack's own refusal, {"ok": false, "error": error}


@dataclass
class SlackFake:
    """Start with `with SlackFake() as slack:`; `slack.base_url` is what WebClient's `base_url` takes."""

    token: str = "xoxb-fake-token"
    team: str = "T0FAKE"
    channels: dict[str, str] = field(default_factory=dict)  # name (without #) -> channel id
    messages: list[Message] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (method, arguments) of every call
    #: Slack's clock (a message's ts, history's default `latest`): its own, not the caller's; tests that run the
    #: caller on a made-up clock set this to follow it.
    clock: Callable[[], float] = time.time
    _users: dict[str, dict[str, Any]] = field(default_factory=dict)  # user id -> user object
    _apps: dict[str, App] = field(default_factory=dict)  # token -> another app (this project's is `bot`)
    _faults: list[_Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _server: ThreadingHTTPServer | None = None

    # --- lifecycle ----------------------------------------------------------------------------------------

    def __enter__(self) -> SlackFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> SlackFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                fake._handle(self)

            def do_GET(self) -> None:  # noqa: N802
                fake._handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/api/"

    def airflow_connection_json(self) -> str:
        """The Airflow connection (for `AIRFLOW_CONN_SLACK_API_DEFAULT`) that points the SlackHook here."""
        return json.dumps({"conn_type": "slack", "password": self.token, "extra": {"base_url": self.base_url}})

    # --- test controls ------------------------------------------------------------------------------------

    def add_user(self, email: str, name: str | None = None) -> str:
        """Register a person; returns their user id."""
        with self._lock:
            user_id = f"U{next(self._ids):08d}"
            self._users[user_id] = {
                "id": user_id,
                "team_id": self.team,
                "name": name or email.split("@")[0],
                "deleted": False,
                "is_bot": False,
                "profile": {"email": email, "real_name": name or email.split("@")[0]},
            }
        return user_id

    @property
    def bot(self) -> App:
        """This project's app: the one `token` belongs to."""
        return App(self.token, "elevation", BOT_USER, BOT_ID, APP_ID)

    def add_app(self, name: str, token: str | None = None) -> App:
        """Install another app in the workspace (another deployment's bot, another tool); post as it with its
        token."""
        with self._lock:
            number = next(self._ids)
            app = App(token or f"xoxb-{name}-{number}", name, f"U{number:08d}", f"B{number:08d}", f"A{number:08d}")
            self._apps[app.token] = app
        return app

    def add_channel(self, name: str) -> str:
        with self._lock:
            channel_id = f"C{next(self._ids):08d}"
            self.channels[name.lstrip("#")] = channel_id
        return channel_id

    def user_id(self, email: str) -> str | None:
        for user in self._users.values():
            if user["profile"]["email"].lower() == email.lower():
                return str(user["id"])
        return None

    def fail_next(self, count: int = 1, *, status: int = 429, retry_after: int | None = 1,
                  method: str | None = None, error: str | None = None) -> None:
        """The next `count` calls (of `method`, or of any method) answer HTTP `status`: 429 carries
        `Retry-After: <retry_after>` (Slack's rate limit), 500 an error page. With `error` they answer HTTP 200
        `{"ok": false, "error": error}` instead (Slack's refusals, e.g. `missing_scope` or `not_in_channel`)."""
        if error is not None:
            status = 200
        with self._lock:
            self._faults.append(_Fault(status, retry_after if status == 429 else None, method, count, error))

    def messages_to(self, who: str) -> list[Message]:
        """Messages to a person (by email or user id) or a channel (by `#name` or id)."""
        user = self.user_id(who) if "@" in who else who
        channel = self.channels.get(who.lstrip("#"), who)
        return [m for m in self.messages if m.user == user or m.channel == channel]

    # --- the wire -----------------------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)
        method = path[0].rsplit("/", 1)[-1]
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        arguments = _arguments(handler.headers.get("Content-Type", ""), raw, path[1] if len(path) > 1 else "")
        with self._lock:
            self.calls.append((method, arguments))
            fault = next((f for f in self._faults if f.method in (None, method) and f.remaining > 0), None)
            if fault is not None:
                fault.remaining -= 1
        if fault is not None:
            if fault.error is not None:
                refusal: dict[str, Any] = {"ok": False, "error": fault.error}
                if fault.error == "missing_scope":
                    refusal.update({"needed": _SCOPES.get(method, "unknown"), "provided": "chat:write"})
                return _reply(handler, refusal)
            if fault.status == 429:
                return _reply(handler, {"ok": False, "error": "ratelimited"}, 429,
                              {"Retry-After": str(fault.retry_after)})
            return _reply(handler, None, fault.status, {}, body=b"<html>Internal Server Error</html>")
        token = handler.headers.get("Authorization", "").removeprefix("Bearer ").strip() or arguments.get("token")
        if not token:
            return _reply(handler, {"ok": False, "error": "not_authed"})
        caller = self.bot if token == self.token else self._apps.get(str(token))
        if caller is None:
            return _reply(handler, {"ok": False, "error": "invalid_auth"})
        answer = getattr(self, f"_api_{method.replace('.', '_')}", None)
        if answer is None:
            return _reply(handler, {"ok": False, "error": "unknown_method", "req_method": method})
        with self._lock:
            result = answer(arguments, caller)
        _reply(handler, result)

    def _api_auth_test(self, args: dict[str, Any], caller: App) -> dict[str, Any]:
        """Who the token is: a bot token gets its bot user (`user_id`) and its `bot_id`."""
        return {"ok": True, "url": "https://fake.slack.com/", "team": "Fake", "team_id": self.team,
                "user": caller.name, "user_id": caller.bot_user, "bot_id": caller.bot_id,
                "is_enterprise_install": False}

    def _api_users_lookupByEmail(self, args: dict[str, Any], caller: App) -> dict[str, Any]:  # noqa: N802
        email = str(args.get("email") or "")
        if not email:
            return {"ok": False, "error": "invalid_arguments"}
        user_id = self.user_id(email)
        if user_id is None:
            return {"ok": False, "error": "users_not_found"}
        return {"ok": True, "user": self._users[user_id]}

    def _api_users_info(self, args: dict[str, Any], caller: App) -> dict[str, Any]:
        user = self._users.get(str(args.get("user") or ""))
        return {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}

    def _api_conversations_open(self, args: dict[str, Any], caller: App) -> dict[str, Any]:
        users = [u for u in str(args.get("users") or "").split(",") if u]
        if len(users) != 1 or users[0] not in self._users:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "channel": {"id": _dm_channel(users[0]), "is_im": True, "user": users[0]}}

    def _resolve_channel(self, channel: str) -> tuple[str, str | None] | None:
        """(channel id, DM user or None), or None when there is no such channel."""
        if channel in self._users:
            return _dm_channel(channel), channel
        if channel.startswith("D") and channel[1:].isdigit() and f"U{channel[1:]}" in self._users:
            return channel, f"U{channel[1:]}"
        if channel in self.channels.values():
            return channel, None
        name = channel.lstrip("#")
        if name in self.channels:
            return self.channels[name], None
        return None

    def _api_chat_postMessage(self, args: dict[str, Any], caller: App) -> dict[str, Any]:  # noqa: N802
        target = self._resolve_channel(str(args.get("channel") or ""))
        if target is None:
            return {"ok": False, "error": "channel_not_found"}
        text, blocks = args.get("text"), _blocks(args.get("blocks"))
        if not text and not blocks:
            return {"ok": False, "error": "no_text"}
        if blocks is False:
            return {"ok": False, "error": "invalid_blocks"}
        metadata = _metadata(args.get("metadata"))
        if metadata is False:
            return {"ok": False, "error": "invalid_metadata_format"}
        ts = f"{self.clock():.6f}"
        while any(m.ts == ts for m in self.messages):
            ts = f"{float(ts) + 0.000001:.6f}"
        channel, user = target
        message = Message(channel, str(text or ""), blocks or None, ts, user, metadata=metadata or None,
                          app=None if caller.token == self.token else caller)
        self.messages.append(message)
        return {"ok": True, "channel": channel, "ts": ts, "message": self._wire(message, with_metadata=True)}

    def _wire(self, message: Message, *, with_metadata: bool) -> dict[str, Any]:
        """A message as the Web API shows one an app posted: its bot user, `bot_id`, `app_id` and `bot_profile`."""
        app = message.app or self.bot
        profile = {"id": app.bot_id, "app_id": app.app_id, "name": app.name, "deleted": False, "team_id": self.team}
        shown: dict[str, Any] = {"type": "message", "user": app.bot_user, "bot_id": app.bot_id, "app_id": app.app_id,
                                 "bot_profile": profile, "team": self.team, "text": message.text,
                                 "blocks": message.blocks or [], "ts": message.ts}
        if message.updated:
            shown["edited"] = {"user": app.bot_user, "ts": message.ts}
        if with_metadata and message.metadata:
            shown["metadata"] = message.metadata
        return shown

    def _api_conversations_history(self, args: dict[str, Any], caller: App) -> dict[str, Any]:
        """A conversation's messages, newest first. Like Slack, only an id names a conversation (`#name` is
        `channel_not_found`); `oldest` / `latest` are exclusive unless `inclusive`; pages of `limit` (default 100,
        at most 999) with an opaque `next_cursor`; metadata only with `include_all_metadata`."""
        channel = str(args.get("channel") or "")
        known = channel in self.channels.values() or (channel.startswith("D") and f"U{channel[1:]}" in self._users)
        if not known:
            return {"ok": False, "error": "channel_not_found"}
        try:
            oldest = float(args.get("oldest") or 0)
        except ValueError:
            return {"ok": False, "error": "invalid_ts_oldest"}
        try:
            latest = float(args.get("latest") or self.clock() + 1)
        except ValueError:
            return {"ok": False, "error": "invalid_ts_latest"}
        inclusive = _flag(args.get("inclusive"))
        try:
            limit = min(max(int(args.get("limit") or 100), 1), 999)
        except ValueError:
            return {"ok": False, "error": "invalid_limit"}
        start = 0
        if args.get("cursor"):
            try:
                start = int(base64.b64decode(str(args["cursor"])).decode().removeprefix("offset:"))
            except ValueError:
                return {"ok": False, "error": "invalid_cursor"}

        def within(ts: float) -> bool:
            if inclusive:
                return oldest <= ts <= latest
            return oldest < ts < latest

        found = sorted((m for m in self.messages if m.channel == channel and within(float(m.ts))),
                       key=lambda m: float(m.ts), reverse=True)
        page = found[start:start + limit]
        more = start + limit < len(found)
        with_metadata = _flag(args.get("include_all_metadata"))
        answer: dict[str, Any] = {"ok": True, "messages": [self._wire(m, with_metadata=with_metadata) for m in page],
                                  "has_more": more, "pin_count": 0, "channel_actions_ts": None,
                                  "channel_actions_count": 0}
        if more:
            cursor = base64.b64encode(f"offset:{start + limit}".encode()).decode()
            answer["response_metadata"] = {"next_cursor": cursor}
        return answer

    def _api_chat_update(self, args: dict[str, Any], caller: App) -> dict[str, Any]:
        target = self._resolve_channel(str(args.get("channel") or ""))
        ts = str(args.get("ts") or "")
        if target is None:
            return {"ok": False, "error": "channel_not_found"}
        for index, message in enumerate(self.messages):
            if message.channel == target[0] and message.ts == ts:
                if (message.app or self.bot).token != caller.token:  # only the app that posted it may edit it
                    return {"ok": False, "error": "cant_update_message"}
                blocks = _blocks(args.get("blocks"))
                if blocks is False:
                    return {"ok": False, "error": "invalid_blocks"}
                self.messages[index] = Message(message.channel, str(args.get("text") or message.text),
                                               blocks or message.blocks, ts, message.user, updated=True,
                                               metadata=message.metadata, app=message.app)
                return {"ok": True, "channel": message.channel, "ts": ts, "text": args.get("text")}
        return {"ok": False, "error": "message_not_found"}


BOT_USER, BOT_ID, APP_ID = "UBOT00001", "BFAKE0001", "AFAKE0001"
#: What `missing_scope` says is needed, per method (a bot token's scopes).
_SCOPES = {"conversations.history": "channels:history,groups:history,im:history,mpim:history",
           "conversations.open": "im:write", "users.lookupByEmail": "users:read.email",
           "users.info": "users:read", "chat.postMessage": "chat:write", "chat.update": "chat:write"}


def _dm_channel(user_id: str) -> str:
    return f"D{user_id[1:]}"


def _flag(value: Any) -> bool:
    """A boolean argument as the clients send it: true, "true", "1" (slack_sdk sends 1 in query strings)."""
    return value is True or str(value).lower() in ("1", "true")


_NOT_JSON = object()


def _decoded(value: Any) -> Any:
    """A JSON argument as sent: form bodies carry it as text (`_NOT_JSON` when that text is not JSON)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return _NOT_JSON


def _metadata(value: Any) -> dict[str, Any] | None | bool:
    """Message metadata (a JSON object, or its text in form bodies); False when it is not Slack's shape:
    `event_type` a short name and `event_payload` an object."""
    if value in (None, "", {}):
        return None
    value = _decoded(value)
    if not isinstance(value, dict) or not isinstance(value.get("event_type"), str) or not value["event_type"]:
        return False
    if not isinstance(value.get("event_payload"), dict):
        return False
    return {"event_type": value["event_type"], "event_payload": value["event_payload"]}


def _arguments(content_type: str, raw: bytes, query: str) -> dict[str, Any]:
    arguments: dict[str, Any] = {key: values[-1] for key, values in parse_qs(query).items()}
    if raw:
        if "application/json" in content_type:
            arguments.update(json.loads(raw.decode("utf-8")))
        else:
            arguments.update({key: values[-1] for key, values in parse_qs(raw.decode("utf-8")).items()})
    return arguments


def _blocks(value: Any) -> list[dict[str, Any]] | None | bool:
    """Blocks as a list (form bodies carry them as JSON text); False when they are not valid blocks."""
    if value in (None, "", []):
        return None
    value = _decoded(value)
    if not isinstance(value, list) or not all(isinstance(block, dict) and "type" in block for block in value):
        return False
    return value


def _reply(handler: BaseHTTPRequestHandler, payload: dict[str, Any] | None, status: int = 200,
           headers: dict[str, str] | None = None, body: bytes | None = None) -> None:
    data = body if body is not None else json.dumps(payload).encode("utf-8")
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json; charset=utf-8" if body is None else "text/html")
    handler.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(data)
