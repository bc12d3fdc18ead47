"""A fake Slack Web API: a real HTTP server speaking Slack's wire format, for the tests and the demo.

`slack_sdk.WebClient(token=..., base_url=fake.base_url)` (or the provider's `SlackHook` with the connection extra
`base_url`) works against it unchanged. Methods: `auth.test`, `users.lookupByEmail`, `users.info`,
`conversations.open`, `chat.postMessage` (channel: a channel id, a `#name`, or a user id for a DM) and
`chat.update`. Bodies may be form-encoded or JSON, the token comes as `Authorization: Bearer`; answers are
`{"ok": true, ...}` or `{"ok": false, "error": "users_not_found"}` as Slack gives them.

Users are registered by email (:meth:`SlackFake.add_user`); every posted message is recorded (channel, text,
blocks, ts) in :attr:`SlackFake.messages`. Fault injection: :meth:`SlackFake.fail_next` makes the next N calls
(optionally of one method only) answer HTTP 429 with `Retry-After`, or HTTP 500.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
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


@dataclass
class _Fault:
    status: int
    retry_after: int | None
    method: str | None
    remaining: int


@dataclass
class SlackFake:
    """Start with `with SlackFake() as slack:`; `slack.base_url` is what WebClient's `base_url` takes."""

    token: str = "xoxb-fake-token"
    team: str = "T0FAKE"
    channels: dict[str, str] = field(default_factory=dict)  # name (without #) -> channel id
    messages: list[Message] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (method, arguments) of every call
    _users: dict[str, dict[str, Any]] = field(default_factory=dict)  # user id -> user object
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
                  method: str | None = None) -> None:
        """The next `count` calls (of `method`, or of any method) answer HTTP `status`: 429 carries
        `Retry-After: <retry_after>` (Slack's rate limit), 500 an error page."""
        with self._lock:
            self._faults.append(_Fault(status, retry_after if status == 429 else None, method, count))

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
            if fault.status == 429:
                return _reply(handler, {"ok": False, "error": "ratelimited"}, 429,
                              {"Retry-After": str(fault.retry_after)})
            return _reply(handler, None, fault.status, {}, body=b"<html>Internal Server Error</html>")
        token = handler.headers.get("Authorization", "").removeprefix("Bearer ").strip() or arguments.get("token")
        if not token:
            return _reply(handler, {"ok": False, "error": "not_authed"})
        if token != self.token:
            return _reply(handler, {"ok": False, "error": "invalid_auth"})
        answer = getattr(self, f"_api_{method.replace('.', '_')}", None)
        if answer is None:
            return _reply(handler, {"ok": False, "error": "unknown_method", "req_method": method})
        with self._lock:
            result = answer(arguments)
        _reply(handler, result)

    def _api_auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": "https://fake.slack.com/", "team": "Fake", "team_id": self.team,
                "user": "elevation", "user_id": "UBOT00001", "bot_id": "BFAKE0001"}

    def _api_users_lookupByEmail(self, args: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        email = str(args.get("email") or "")
        if not email:
            return {"ok": False, "error": "invalid_arguments"}
        user_id = self.user_id(email)
        if user_id is None:
            return {"ok": False, "error": "users_not_found"}
        return {"ok": True, "user": self._users[user_id]}

    def _api_users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self._users.get(str(args.get("user") or ""))
        return {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}

    def _api_conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
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

    def _api_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        target = self._resolve_channel(str(args.get("channel") or ""))
        if target is None:
            return {"ok": False, "error": "channel_not_found"}
        text, blocks = args.get("text"), _blocks(args.get("blocks"))
        if not text and not blocks:
            return {"ok": False, "error": "no_text"}
        if blocks is False:
            return {"ok": False, "error": "invalid_blocks"}
        ts = f"{time.time():.6f}"
        while any(m.ts == ts for m in self.messages):
            ts = f"{float(ts) + 0.000001:.6f}"
        channel, user = target
        self.messages.append(Message(channel, str(text or ""), blocks or None, ts, user))
        return {"ok": True, "channel": channel, "ts": ts,
                "message": {"type": "message", "text": text, "blocks": blocks or [], "ts": ts, "bot_id": "BFAKE0001"}}

    def _api_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        target = self._resolve_channel(str(args.get("channel") or ""))
        ts = str(args.get("ts") or "")
        if target is None:
            return {"ok": False, "error": "channel_not_found"}
        for index, message in enumerate(self.messages):
            if message.channel == target[0] and message.ts == ts:
                blocks = _blocks(args.get("blocks"))
                if blocks is False:
                    return {"ok": False, "error": "invalid_blocks"}
                self.messages[index] = Message(message.channel, str(args.get("text") or message.text),
                                               blocks or message.blocks, ts, message.user, updated=True)
                return {"ok": True, "channel": message.channel, "ts": ts, "text": args.get("text")}
        return {"ok": False, "error": "message_not_found"}


def _dm_channel(user_id: str) -> str:
    return f"D{user_id[1:]}"


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
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return False
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
