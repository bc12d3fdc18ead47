"""`make airflow`: the real Airflow UI on this machine, against the same embedded environment as `make demo`.

Starts the AWS emulator with the demo organization, a SQLite queue, `SlackFake` (a fake Slack Web API; the messages
it receives are printed here), and Airflow's own processes (api-server, scheduler, dag-processor, triggerer;
LocalExecutor, SQLite metadata, the Simple auth manager with known passwords), all under `--dir` (default
`.airflow`, emptied at start). It prints where to log in and as whom, and stops on Ctrl-C or SIGTERM,
killing every process it started (each in its own process group, by pid).

The e2e test (tests/test_airflow_ui_e2e.py) starts the same thing with :class:`LocalAirflow`, on PostgreSQL when
the test server is known, and `make test-distributed` (elevation.devkit.distributed) the production topology:
CeleryExecutor with separate workers, PostgreSQL for Airflow's metadata and the queue, Redis as the broker.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from elevation.devkit.demo import REPO, airflow_environment

#: Airflow users (the policy's logins, so the approvers are who the approvals are assigned to) and their roles.
ROLES = {"alice": "USER", "bob": "USER", "carol": "USER", "dave": "USER", "erin": "USER", "hanako": "USER",
         "admin": "ADMIN"}
#: The API user that closes approvals decided elsewhere (connection `elevation_airflow_api`).
SYSTEM_USER = "elevation-system"
AIRFLOW_PROCESSES = ("api-server", "scheduler", "dag-processor", "triggerer")
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


#: Where the plugin mounts the audit viewer on the API server (`plugins/elevation_plugin.py`).
AUDIT_VIEWER_PREFIX = "/elevation/audit"


def audit_base_url(api_base_url: str) -> str:
    """`audit.base_url` for reports served by this API server: the viewer serves `audit.reports_location`'s files
    under its prefix, so `<this>/sessions/<id>.html` (the nightly audit's and the notifier's links) resolves."""
    return api_base_url.rstrip("/") + AUDIT_VIEWER_PREFIX


def password_of(login: str) -> str:
    """Known passwords, for a local sandbox only."""
    return f"{login}-pw"


class LocalAirflow:
    """The emulator, the queue, SlackFake and Airflow's processes under `folder`. `start()`, then `stop()`."""

    def __init__(self, folder: Path, port: int = 0, dags: Path | None = None, *, metadata_url: str | None = None,
                 queue_url: str | None = None, celery_broker_url: str | None = None, workers: int = 0) -> None:
        """`metadata_url`/`queue_url`: PostgreSQL databases (empty) instead of SQLite files under `folder`;
        `celery_broker_url` with `workers`: CeleryExecutor and that many `airflow celery worker` processes
        (concurrency 1 each, named worker-1, worker-2, ... in the task instances' hostname)."""
        if celery_broker_url and not (metadata_url and workers):
            raise ValueError("CeleryExecutor needs a PostgreSQL metadata database and at least one worker")
        self.folder = folder.resolve()
        self.metadata_url = metadata_url
        self.celery_broker_url = celery_broker_url
        self.workers = workers
        self.port = port or free_port()
        self.dags = (dags or REPO / "dags").resolve()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.env: dict[str, str] = {}
        self.accounts: dict[str, str] = {}
        self.emulator: Any = None
        self.slack: Any = None
        self.queue_url = queue_url or ""

    # --- start --------------------------------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> LocalAirflow:
        try:
            self._prepare()
            self._migrate()
            for name in AIRFLOW_PROCESSES:
                self._spawn(name)
            for number in range(1, self.workers + 1):
                self._spawn_worker(f"worker-{number}")
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _prepare(self) -> None:
        from elevation.devkit.emulator import AwsEmulator
        from elevation.devkit.sandbox import _set_up
        from elevation.devkit.slack_fake import SlackFake
        from elevation.devkit.world import PEOPLE

        self.folder.mkdir(parents=True, exist_ok=True)
        self.emulator = AwsEmulator(port=0).start()
        self.emulator.reset()  # moto's state is process-wide: start from an empty AWS (inside a test session too)
        env, self.accounts, _ = _set_up(self.emulator, self.folder, self.dags)
        self.slack = SlackFake().start()
        for login, (_, _, email, _) in PEOPLE.items():
            self.slack.add_user(email, login)
        for channel in ("security", "elevation-admin"):
            self.slack.add_channel(channel)
        self._enable_notifications(Path(env["ELEVATION_CONFIG"]), audit_base_url(self.base_url))
        home = self.folder / "airflow"
        passwords = home / "passwords.json"
        home.mkdir(parents=True, exist_ok=True)
        users = {**ROLES, SYSTEM_USER: "USER"}
        passwords.write_text(json.dumps({login: password_of(login) for login in users}), encoding="utf-8")
        if self.queue_url:
            env.update(self._queue_on(self.queue_url))
        self.queue_url = env["ELEVATION_DATABASE_URL"]
        self.env = {
            **{key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "ELEVATION"))},
            **env,
            **airflow_environment(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor" if self.celery_broker_url else "LocalExecutor",
            # SQLite (the default): wait for a lock instead of failing a request after sqlite's 5 s.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": f"{__name__}.SQLITE_CONNECT_ARGS",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in users.items()),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(32).hex(),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW_CONN_SLACK_API_DEFAULT": self.slack.airflow_connection_json(),
            "AIRFLOW_CONN_ELEVATION_AIRFLOW_API": json.dumps(
                {"conn_type": "http", "host": self.base_url, "login": SYSTEM_USER,
                 "password": password_of(SYSTEM_USER)}),
        }
        if self.metadata_url:
            self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = self.metadata_url
            del self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"]
        if self.celery_broker_url:
            assert self.metadata_url is not None
            self.env["AIRFLOW__CELERY__BROKER_URL"] = self.celery_broker_url
            self.env["AIRFLOW__CELERY__RESULT_BACKEND"] = "db+" + self.metadata_url

    @staticmethod
    def _queue_on(url: str) -> dict[str, str]:
        """The queue on a PostgreSQL database instead of the SQLite file: migrated, and the connection to it."""
        import sqlalchemy as sa

        from elevation.store.database import create_engine_for_url
        from elevation.store.migrations import upgrade

        engine = create_engine_for_url(url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()
        parts = sa.engine.make_url(url)
        connection = {"conn_type": "postgres", "host": parts.host or "127.0.0.1", "port": parts.port or 5432,
                      "schema": parts.database, "login": parts.username or "", "password": parts.password or ""}
        return {"ELEVATION_DATABASE_URL": url, "AIRFLOW_CONN_ELEVATION_DB": json.dumps(connection)}

    @staticmethod
    def _enable_notifications(config: Path, reports_url: str) -> None:
        """Slack on (the fake), and `audit.base_url` at this API server's audit viewer, so the audit results' report
        links open the reports in this Airflow (without it they read "No report link")."""
        import yaml

        document = yaml.safe_load(config.read_text(encoding="utf-8"))
        document["notifications"] = {"enabled": True, "slack_conn_id": "slack_api_default",
                                     "security_channel": "#security", "admin_channel": "#elevation-admin"}
        document.setdefault("audit", {})["base_url"] = reports_url
        config.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")

    def _migrate(self) -> None:
        from elevation.pools import (
            IDENTITY_CENTER_POOL,
            IDENTITY_CENTER_POOL_DESCRIPTION,
            IDENTITY_CENTER_POOL_SLOTS,
        )

        log = (self.folder / "setup.log").open("ab")
        airflow = str(BIN / "airflow")
        subprocess.run([airflow, "db", "migrate"], env=self.env, check=True, stdout=log, stderr=log)
        subprocess.run([airflow, "pools", "set", IDENTITY_CENTER_POOL, str(IDENTITY_CENTER_POOL_SLOTS),
                        IDENTITY_CENTER_POOL_DESCRIPTION], env=self.env, check=True, stdout=log, stderr=log)

    def _spawn(self, name: str, command: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        """`airflow <name>` (or `airflow <command>`), logging to logs/<name>.log."""
        logs = self.folder / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        out = (logs / f"{name}.log").open("ab")
        if command is None:
            command = [name, *(["--host", "127.0.0.1", "--port", str(self.port)] if name == "api-server" else [])]
        # Its own process group: stop() ends it and every child it forked (gunicorn/uvicorn workers, task runners).
        self.processes[name] = subprocess.Popen([str(BIN / "airflow"), *command], env=env or self.env, stdout=out,
                                                stderr=subprocess.STDOUT, start_new_session=True, cwd=self.folder)

    def _spawn_worker(self, name: str) -> None:
        """A Celery worker of concurrency 1 whose task instances record `name` as their hostname."""
        env = {**self.env, "ELEVATION_WORKER_NAME": name,
               "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname"}
        # --skip-serve-logs: two workers on one machine would both take the log server's port.
        self._spawn(name, ["celery", "worker", "--concurrency", "1", "--celery-hostname", f"{name}@%h",
                           "--skip-serve-logs"], env)

    def log_tail(self, name: str, lines: int = 40) -> str:
        """The end of one process's log, for a failure message."""
        path = self.folder / "logs" / f"{name}.log"
        if not path.exists():
            return f"(no {path})"
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"airflow {name} exited with {process.returncode}: see "
                                       f"{self.folder / 'logs' / (name + '.log')}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/api/v2/monitor/health", timeout=5) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1)
        raise TimeoutError(f"the API server did not answer at {self.base_url} within {timeout:.0f}s")

    # --- stop ---------------------------------------------------------------------------------------------

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM to each process group we started (by its leader's pid), then SIGKILL what is left."""
        for process in self.processes.values():
            _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
        for process in self.processes.values():
            _signal_group(process.pid, signal.SIGKILL)  # the group's stragglers too, even if the leader is gone
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        groups = [process.pid for process in self.processes.values()]
        deadline = time.monotonic() + 10  # SIGKILL is delivered asynchronously: let the stragglers die
        while any(living_group_members(pid) for pid in groups) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.processes.clear()
        if self.slack is not None:
            self.slack.stop()
            self.slack = None
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None

    def alive(self) -> list[int]:
        """Pids of started process groups that still have a living member."""
        return [process.pid for process in self.processes.values() if living_group_members(process.pid)]


class AirflowApi:
    """Airflow's REST API as one user (the Simple auth manager's token), for scripts and tests."""

    def __init__(self, base_url: str, login: str) -> None:
        import requests

        self.base = base_url
        self.http = requests.Session()
        token = self.http.post(f"{base_url}/auth/token", json={"username": login, "password": password_of(login)},
                               timeout=30)
        if token.status_code not in (200, 201):
            raise RuntimeError(f"no API token for {login}: {token.status_code} {token.text[:300]}")
        self.http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

    def get(self, path: str, **kw: Any) -> Any:
        return self.http.get(f"{self.base}/api/v2{path}", timeout=60, **kw)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.http.post(f"{self.base}/api/v2{path}", json=body, timeout=60)

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self.http.patch(f"{self.base}/api/v2{path}", json=body, timeout=60)

    def dag_ids(self) -> set[str]:
        answer = self.get("/dags", params={"limit": 100})
        return {dag["dag_id"] for dag in answer.json().get("dags", [])} if answer.status_code == 200 else set()


#: sqlite3's default lock wait is 5 s; Airflow's processes share the file, and one waits for another.
SQLITE_CONNECT_ARGS = {"timeout": 60}


def worker_hostname() -> str:
    """`core.hostname_callable` of a local Celery worker: its name, so tasks show which worker ran them."""
    return f"{os.environ.get('ELEVATION_WORKER_NAME', 'worker')}@{socket.getfqdn()}"


def living_group_members(pgid: int) -> list[int]:
    """Processes of the group that are not zombies. Zombies count for `killpg(pgid, 0)`, but are dead: where no
    init reaps orphans (a container whose pid 1 is the test runner), they stay until their parent exits."""
    if not Path("/proc/self/stat").exists():  # no procfs: the signal probe, zombies included
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except (ProcessLookupError, PermissionError):
            return []
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m elevation.devkit.airflow_local",
                                     description="The Airflow UI with this project's DAGs, against the emulator.")
    parser.add_argument("--port", type=int, default=8080, help="the API server / UI port (default 8080; 0: free)")
    parser.add_argument("--dir", type=Path, default=Path(".airflow"), help="working folder (emptied)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda received, frame: stop.set())
    import shutil

    shutil.rmtree(args.dir, ignore_errors=True)
    local = LocalAirflow(args.dir, port=args.port)
    print(f"starting the emulator, SlackFake and Airflow under {local.folder} ...", flush=True)
    try:
        local.start()
        print(f"\nAirflow UI: {local.base_url}   (logs: {local.folder / 'logs'})")
        print("log in as (password = login + '-pw'):")
        print("  erin / erin-pw        requester: trigger 'elevation_request' (e.g. ec-prod, PowerUserAccess)")
        print("  bob / bob-pw          approver of every account (carol / carol-pw: Production) -> Required Actions")
        print("  admin / admin-pw      everything")
        print(f"accounts: {json.dumps(local.accounts)}")
        print(f"queue: {local.queue_url}; emulator: {local.emulator.endpoint_url}; Slack (fake): "
              f"{local.slack.base_url}")
        print("Slack messages appear below. Ctrl-C stops everything.\n", flush=True)
        seen = 0
        while not stop.wait(1.0):
            messages = list(local.slack.messages)
            for message in messages[seen:]:
                who = message.user or message.channel
                print(f"[slack -> {who}] {message.text[:300]}", flush=True)
            seen = len(messages)
            dead = [name for name, process in local.processes.items() if process.poll() is not None]
            if dead:
                print(f"airflow {', '.join(dead)} exited: see {local.folder / 'logs'}", file=sys.stderr)
                return 1
    finally:
        local.stop()
        print("stopped: every process started here is gone", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
