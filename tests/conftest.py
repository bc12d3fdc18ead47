"""Shared worlds for the tests: one AWS emulator per session, a fresh organization, queue and policy per test.

Airflow reads its configuration when first imported, so its home, DAG folder and metadata database are set
here, before anything imports it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The shared corpora, read in place and never copied into the repository: cloudtrail/ (real CloudTrail records:
#: stratus-red-team/, panther-rule-tests/) and sigma/ (SigmaHQ's rules). One setting for every test that uses them.
SHARED_DATA_ENV = "ELEVATION_SHARED_DATA"
SHARED_DATA_DEFAULT = REPO.parent / "shared" / "data"
SHARED_DATA = Path(os.environ.get(SHARED_DATA_ENV) or SHARED_DATA_DEFAULT).expanduser().absolute()
TRAIL_BUCKET = "org-cloudtrail-logs"
ORG_ID = "o-abcdefghij"

from elevation.devkit.demo import airflow_environment  # noqa: E402  (stdlib only: Airflow not imported yet)

os.environ.update(airflow_environment(Path(tempfile.mkdtemp(prefix="elevation-airflow-"))))
os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"

from elevation.cloudtrail.records import iter_records_from_path  # noqa: E402
from elevation.devkit.aws_calls import RECORDER, AwsCallRecorder  # noqa: E402
from elevation.devkit.cloudtrail_lake import CloudTrailLakeDouble  # noqa: E402
from elevation.devkit.emulator import AwsEmulator  # noqa: E402
from elevation.devkit.trail_events import Scenario, upload_trail  # noqa: E402
from elevation.devkit.world import World, build_world, policy_document, write_config  # noqa: E402
from elevation.runtime import Runtime, identity_center_from_airflow  # noqa: E402
from elevation.store import queue  # noqa: E402
from elevation.store.database import create_engine_for_url  # noqa: E402
from elevation.store.migrations import upgrade  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def aws_call_recorder() -> Iterator[AwsCallRecorder]:
    """Every AWS API call the project makes in this run is recorded with the component that made it (calls of
    fixtures and of the devkit are not the project's); the run's last test checks each against that component's
    IAM policy in deploy/iam/ (tests/deploy/test_iam_policy.py)."""
    with RECORDER.installed_for() as recorder:
        yield recorder


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests whose function has `run_last` set (the check of every AWS call the run made) run after all others."""
    items.sort(key=lambda item: bool(getattr(getattr(item, "function", None), "run_last", False)))


@pytest.fixture(scope="session")
def emulator() -> Iterator[AwsEmulator]:
    with AwsEmulator() as running:
        yield running


@pytest.fixture
def world(emulator: AwsEmulator, monkeypatch: pytest.MonkeyPatch) -> World:
    """A fresh organization: accounts in Production/Staging/Sandbox OUs, users, groups, permission sets."""
    emulator.reset()
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", emulator.airflow_connection_json())
    built = build_world(emulator)
    emulator.calls.clear()  # count only what the system under test does
    return built


@pytest.fixture
def queue_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated SQLite queue (the embedded default), reachable as the Airflow connection `elevation_db`."""
    path = tmp_path / "queue.db"
    monkeypatch.setenv("AIRFLOW_CONN_ELEVATION_DB", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    upgrade(create_engine_for_url(f"sqlite:///{path}"))
    return f"sqlite:///{path}"


@pytest.fixture
def engine(queue_url: str):  # noqa: ANN201
    return create_engine_for_url(queue_url)


@pytest.fixture
def configure(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Write the world's configuration file (policy sections may be overridden) and point ELEVATION_CONFIG at it."""

    def _configure(sections: dict[str, Any] | None = None, **policy_overrides: Any) -> Path:
        # Reports go under the test's own folder unless a test says where: the default (reports/out) is the
        # checkout's, shared by every test of the run (a reconcile report one test wrote showed in another's digest).
        sections = {"audit": {"reports_location": str(tmp_path / "reports")}, **(sections or {})}
        path = write_config(
            world, tmp_path / "elevation.yaml", policy=policy_document(world, **policy_overrides), **sections
        )
        monkeypatch.setenv("ELEVATION_CONFIG", str(path))
        return path

    _configure()
    return _configure


@pytest.fixture
def make_runtime(engine, configure, world: World) -> Callable[..., Runtime]:  # noqa: ANN001
    """A Runtime as a DAG task would build it, at a chosen logical time (default: now)."""
    from elevation.config import load_config

    def _make(as_of: datetime | None = None, actor: str = "test", clock: Callable[[], datetime] | None = None) -> Runtime:
        extra = {"clock": clock} if clock else {}
        return Runtime(
            config=load_config(),
            engine=engine,
            identity_center_factory=identity_center_from_airflow,
            as_of=as_of or datetime.now(UTC),
            actor=actor,
            **extra,
        )

    return _make


@pytest.fixture
def file_request(engine, world: World) -> Callable[..., int]:  # noqa: ANN001
    """Insert a request row as an outside system would; account may be given by world name."""

    def _file(**values: Any) -> int:
        row: dict[str, Any] = {
            "requester": "alice",
            "account_id": "media-stg",
            "permission_set": "PowerUserAccess",
            "duration_minutes": 60,
            "justification": "deploy hotfix",
            "start_at": datetime.now(UTC),
        }
        row.update(values)
        row["account_id"] = world.accounts.get(row["account_id"], row["account_id"])
        with engine.begin() as conn:
            return queue.insert_request(conn, **row)

    return _file


@pytest.fixture
def request_row(engine) -> Callable[[int], dict[str, Any]]:  # noqa: ANN001
    def _row(request_id: int) -> dict[str, Any]:
        with engine.connect() as conn:
            row = queue.get_request(conn, request_id)
        assert row is not None
        return dict(row)

    return _row


@pytest.fixture(scope="session")
def airflow_db() -> None:
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)


@pytest.fixture(scope="session")
def dagbag(airflow_db: None):  # noqa: ANN201
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(REPO / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag


@pytest.fixture
def run_dag(dagbag, configure, queue_url):  # noqa: ANN001, ANN201
    """Run a DAG with `dag.test()` at a logical time; returns the DagRun (its state says if a task failed)."""

    def _run(dag_id: str, logical_date: datetime, conf: dict[str, Any] | None = None) -> Any:
        dag = dagbag.get_dag(dag_id)
        for task in dag.tasks:  # a failing task fails the run at once instead of waiting out retry delays
            task.retries = 0
        return dag.test(logical_date=logical_date, run_conf=conf)

    return _run


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def unavailable(reason: str, ci_reason: str | None = None) -> NoReturn:
    """A test cannot run because something outside the repository is missing (a server, the shared data): it is
    skipped with the reason shown, except under CI (the variable CI set), where that is a failure."""
    if os.environ.get("CI"):
        pytest.fail(ci_reason or f"{reason}; CI must run these tests", pytrace=False)
    pytest.skip(reason)


POSTGRES_ENV = "ELEVATION_TEST_POSTGRES_URL"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, on the server named by ELEVATION_TEST_POSTGRES_URL.

    Skipped (with the reason shown) when the variable is absent, except under CI, where that is a failure.
    """
    from elevation.devkit.postgres import scratch_database

    base = os.environ.get(POSTGRES_ENV)
    if not base:
        unavailable(
            f"{POSTGRES_ENV} is not set: PostgreSQL tests need a server",
            f"{POSTGRES_ENV} is not set; CI must run the PostgreSQL tests",
        )
    with scratch_database(base, "test") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty queue database, once on SQLite and once on PostgreSQL (skipped there without a server)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/queue.db"
    return request.getfixturevalue("postgres_url")


# --- CloudTrail: the real samples, an organization's night, its trail bucket, Lake --------------------------


def shared_data(subpath: str) -> Path:
    """`SHARED_DATA / subpath`; when it is not there the calling test is skipped (failed under CI), saying where it
    was looked for and which variable says where it is."""
    path = SHARED_DATA / subpath
    if not path.exists():
        unavailable(
            f"shared data not found at {path}: set {SHARED_DATA_ENV} to the folder holding cloudtrail/ and sigma/ "
            f"(default {SHARED_DATA_DEFAULT})"
        )
    return path


GENERATED_ACCOUNT = "111122223333"


def generated_records(
    *dangerous: str, account: str = GENERATED_ACCOUNT, start: datetime = datetime(2024, 7, 31, 13, tzinfo=UTC)
) -> list[dict[str, Any]]:
    """The project's own CloudTrail records, for tests of the extract and audit machinery that must run without the
    shared data: an Identity Center session making each routine call of `devkit.activity` (the activity `make demo`
    audits), one a minute, then the named calls of its DANGEROUS list. The same records on every call."""
    from elevation.devkit.activity import DANGEROUS, ROUTINE
    from elevation.devkit.trail_events import make_event, sso_identity

    catalogue = {name: (name, source, request) for name, source, request in DANGEROUS}
    unknown = sorted(set(dangerous) - set(catalogue))
    assert not unknown, f"not in devkit.activity.DANGEROUS: {unknown}"
    identity = sso_identity(account, "AdministratorAccess", "alice@example.com")
    calls = [*ROUTINE, *(catalogue[name] for name in dangerous)]
    records = []
    for index, (name, source, request) in enumerate(calls):
        record = make_event(identity, name, source, start + timedelta(minutes=index), recipient_account=account,
                            request=request, event_id=f"generated-{index:03d}")  # fmt: skip
        record["requestID"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"elevation-tests/{record['eventID']}"))
        records.append(record)
    return records


@pytest.fixture(scope="session")
def real_records() -> list[dict[str, Any]]:
    """Every record of the shared samples (Stratus Red Team detonations and Panther rule tests)."""
    return list(iter_records_from_path(shared_data("cloudtrail"), on_skip=lambda path, reason: None))


@pytest.fixture(scope="session")
def scenario() -> Scenario:
    """An organization's night with its answer key. The sessions' own calls are real records, restamped, where the
    shared CloudTrail samples are; the project's generated records otherwise. What the extract must find (which
    events, which night) is the same either way: it is decided by the identities and times the scenario gives."""
    folder = SHARED_DATA / "cloudtrail"
    if folder.is_dir():
        calls = list(iter_records_from_path(folder, on_skip=lambda path, reason: None))
    else:
        calls = generated_records()
    return Scenario(calls, background=1200)


@pytest.fixture
def trail_bucket(emulator: Any, scenario: Scenario) -> str:
    """The scenario's trail files in the emulator's S3 (re-uploaded if another test reset the emulator)."""
    s3 = emulator.client("s3")
    try:
        s3.head_object(Bucket=TRAIL_BUCKET, Key="_populated")
    except Exception:
        upload_trail(s3, TRAIL_BUCKET, scenario.records, org_id=ORG_ID, file_period=timedelta(minutes=30))
        s3.put_object(Bucket=TRAIL_BUCKET, Key="_populated", Body=b"")
    return TRAIL_BUCKET


@pytest.fixture(scope="session")
def lake(scenario: Scenario) -> Iterator[CloudTrailLakeDouble]:
    with CloudTrailLakeDouble(scenario.records, page_size=7) as double:
        yield double


@pytest.fixture
def run_grant_cycle(run_dag):  # noqa: ANN001, ANN201
    """What the scheduler does every minute for granting: `elevation_intake`, then `elevation_grants`; the state
    of both runs (each must succeed for the cycle to)."""

    def _cycle(logical_date: datetime) -> str:
        states = {run_dag(dag_id, logical_date).state for dag_id in ("elevation_intake", "elevation_grants")}
        return "success" if states == {"success"} else "failed"

    return _cycle


# --- the API server's plugin apps over real HTTP ------------------------------------------------------------


@pytest.fixture
def serve_app() -> Iterator[Callable[[Any], str]]:
    """Serve an ASGI app with uvicorn in a thread on a free port; returns its base URL (no trailing slash)."""
    import socket
    import threading
    import time

    import uvicorn

    servers: list[tuple[Any, threading.Thread]] = []

    def _serve(app: Any) -> str:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    yield _serve
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


#: The JWT secret the tests' Airflow signs and validates tokens with (as `[api_auth] jwt_secret` would be set).
TEST_JWT_SECRET = "elevation-tests-jwt-secret-not-for-production-" + "0123456789abcdef" * 4


@pytest.fixture(scope="session")
def airflow_auth(airflow_db: None) -> Any:
    """Airflow's auth manager, initialized as the API server does, with a test JWT secret."""
    os.environ["AIRFLOW__API_AUTH__JWT_SECRET"] = TEST_JWT_SECRET
    from airflow.api_fastapi.app import create_auth_manager

    manager = create_auth_manager()
    manager.init()
    return manager


# --- Slack: the fake Web API, reachable as the Airflow connection `slack_api_default` -----------------------


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fake Slack over real HTTP where the demo's people are users (by email) and #security and
    #elevation-admin exist; `AIRFLOW_CONN_SLACK_API_DEFAULT` points the provider's SlackHook at it."""
    from elevation.devkit.slack_fake import SlackFake
    from elevation.devkit.world import PEOPLE

    with SlackFake() as fake:
        for login, (_, _, email, _) in PEOPLE.items():
            fake.add_user(email, login)
        fake.add_channel("security")
        fake.add_channel("elevation-admin")
        monkeypatch.setenv("AIRFLOW_CONN_SLACK_API_DEFAULT", fake.airflow_connection_json())
        yield fake


@pytest.fixture
def plugin_server(serve_app, airflow_auth) -> str:  # noqa: ANN001
    """Airflow's own API server app (`create_app`: the plugins folder's FastAPI apps mounted by `init_plugins`, its
    auth manager, middlewares and UI), served over HTTP; the base URL."""
    from airflow import plugins_manager
    from airflow.api_fastapi.app import create_app

    names = {app["name"] for app in plugins_manager.get_fastapi_plugins()[0]}
    assert {"elevation_slack", "elevation_audit"} <= names, names
    return serve_app(create_app("core"))
