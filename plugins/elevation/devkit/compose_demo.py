"""`python -m elevation.devkit.compose_demo`: the AWS emulator and its demo organization for docker-compose.yaml.

The `demo` profile of docker-compose.yaml runs two services from this module, so that `docker compose --profile demo
up` shows the whole system working without an AWS account:

`serve` (service `aws-emulator`)
    The devkit's emulator (:class:`~elevation.devkit.emulator.AwsEmulator`: moto behind the middleware that makes
    Identity Center asynchronous, validates, pages and serves the control endpoint `/_emulator`), listening on
    `--host` (0.0.0.0 in a container, so the other containers reach it by its service name) instead of the
    loopback address the tests and `make demo` use. Serves until SIGTERM or SIGINT.

`seed --endpoint-url URL --dir DIR` (one-shot service `demo-seed`)
    Builds, in the emulator at URL, exactly what `make demo` and `make airflow` build: the organization (4 accounts
    in Production / Staging / Sandbox OUs), the Identity Center users and groups, the permission sets and standing
    assignments (:func:`~elevation.devkit.world.build_world`), and the trail bucket. Then it writes into DIR:

    - `elevation.yaml`: the configuration for that world (its policy, the nightly sections reading the emulator's
      trail bucket, reconcile in report mode over the demo OUs);
    - `passwords.json`: Airflow logins for the demo's people (password: login + "-pw", as `make airflow`);
    - `airflow.env` (the overlay, written last and whole): the variables that turn the Airflow containers to the
      demo: `ELEVATION_CONFIG` (the file above), every AWS connection of the compose file pointed at the emulator
      (`endpoint_url` in the connection's extra, dummy credentials), the demo people as Airflow users.

    The Airflow containers' entrypoint (deploy/compose/entrypoint.sh) applies the overlay only while an emulator
    answers at its URL, so a demo volume left behind never points a deployment without the demo profile at it.
    Seeding is idempotent: when the emulator already holds the organization that DIR's configuration names, it
    is left as it is (a second `up` keeps the demo's requests and sessions); otherwise the emulator is reset first
    (its state may be a previous run's: moto's state lives as long as the emulator's process).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

#: The AWS connections of docker-compose.yaml; the overlay points every one of them at the emulator.
AWS_CONNECTIONS = ("aws_default", "aws_cloudtrail_logs")
CONFIG_FILE = "elevation.yaml"
PASSWORDS_FILE = "passwords.json"
OVERLAY_FILE = "airflow.env"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RemoteEmulator:
    """An emulator running elsewhere (another container), as :func:`~elevation.devkit.world.build_world` uses one:
    boto3 clients pointed at its URL with the emulator's dummy credentials."""

    def __init__(self, endpoint_url: str, region: str = "us-east-1") -> None:
        self.endpoint_url = endpoint_url.rstrip("/")
        self.region = region
        self._session: Any = None

    def client(self, service: str, config: Any = None) -> Any:
        import boto3

        from elevation.devkit.emulator import emulator_client

        if self._session is None:
            self._session = boto3.session.Session()
        return emulator_client(self._session, service, self.endpoint_url, self.region, config)

    def airflow_connection_json(self) -> str:
        """An Airflow AWS connection to this emulator (as AwsEmulator.airflow_connection_json, for its URL)."""
        from elevation.devkit.emulator import DUMMY_CREDENTIAL

        return json.dumps({
            "conn_type": "aws",
            "login": DUMMY_CREDENTIAL,
            "password": DUMMY_CREDENTIAL,
            "extra": {"endpoint_url": self.endpoint_url, "region_name": self.region},
        })


# --- seed ----------------------------------------------------------------------------------------------------


def seed(endpoint_url: str, folder: Path, data_dir: Path, reports_dir: Path, region: str = "us-east-1") -> bool:
    """Build the demo world in the emulator at `endpoint_url` and write the files into `folder`.

    Returns False when the emulator already held the world `folder`'s configuration names (nothing rebuilt)."""
    from elevation.devkit.emulator import EmulatorControl
    from elevation.devkit.sandbox import _write_env

    emulator = RemoteEmulator(endpoint_url, region)
    folder.mkdir(parents=True, exist_ok=True)
    if _already_seeded(emulator, folder):
        return False
    (folder / OVERLAY_FILE).unlink(missing_ok=True)  # no overlay naming a world that is about to go away
    EmulatorControl(emulator.endpoint_url).reset()
    world = _build(emulator, folder, data_dir, reports_dir)
    _write_json(folder / PASSWORDS_FILE, demo_passwords())
    _write_env(folder / OVERLAY_FILE, overlay(emulator, folder))
    print(f"demo organization built in {emulator.endpoint_url}: "
          f"{', '.join(f'{name} {number}' for name, number in world.accounts.items())}", flush=True)
    return True


def _build(emulator: RemoteEmulator, folder: Path, data_dir: Path, reports_dir: Path) -> Any:
    from elevation.devkit.demo import reconcile_section
    from elevation.devkit.world import TRAIL_BUCKET, build_world, nightly_sections, write_config

    world = build_world(emulator)  # type: ignore[arg-type]  (duck-typed: build_world only asks for clients)
    emulator.client("s3").create_bucket(Bucket=TRAIL_BUCKET)
    sections = nightly_sections(data_dir)
    sections["audit"] = {"reports_location": str(reports_dir)}
    partial = folder / f"{CONFIG_FILE}.partial"
    write_config(world, partial, **sections, reconcile=reconcile_section(world, "report"))
    partial.replace(folder / CONFIG_FILE)
    return world


def _already_seeded(emulator: RemoteEmulator, folder: Path) -> bool:
    """The overlay and the configuration exist, and the emulator holds the organization and the Identity Center
    instance that configuration names (moto's instance ARN changes with every reset)."""
    import yaml
    from botocore.exceptions import BotoCoreError, ClientError

    config, passwords, env = folder / CONFIG_FILE, folder / PASSWORDS_FILE, folder / OVERLAY_FILE
    if not (config.is_file() and passwords.is_file() and env.is_file()):
        return False
    try:
        document = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        named = document["policy"]["identity_center"]["instance_arn"]
        emulator.client("organizations").describe_organization()
        instances = emulator.client("sso-admin").list_instances()["Instances"]
    except (OSError, yaml.YAMLError, KeyError, TypeError, ClientError, BotoCoreError):
        return False
    return any(instance["InstanceArn"] == named for instance in instances)


def demo_passwords() -> dict[str, str]:
    """The demo people's Airflow logins and their known passwords (the same as `make airflow`'s)."""
    from elevation.devkit.airflow_local import password_of
    from elevation.devkit.world import PEOPLE

    return {login: password_of(login) for login in PEOPLE}


def overlay(emulator: RemoteEmulator, folder: Path) -> dict[str, str]:
    """The variables the Airflow containers take from the overlay in the demo (see deploy/compose/entrypoint.sh)."""
    connection = emulator.airflow_connection_json()
    return {
        "ELEVATION_DEMO": "1",
        "ELEVATION_EMULATOR_URL": emulator.endpoint_url,
        "ELEVATION_CONFIG": str(folder / CONFIG_FILE),
        **{f"AIRFLOW_CONN_{conn_id.upper()}": connection for conn_id in AWS_CONNECTIONS},
        # Appended to AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS by the entrypoint; airflow-init adds the passwords.
        "ELEVATION_DEMO_USERS": ",".join(f"{login}:USER" for login in demo_passwords()),
        "ELEVATION_DEMO_PASSWORDS": str(folder / PASSWORDS_FILE),
    }


def _write_json(path: Path, value: Any) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)


# --- serve ---------------------------------------------------------------------------------------------------


def serve(host: str, port: int, region: str = "us-east-1", stop: threading.Event | None = None,
          ready: threading.Event | None = None) -> int:
    """Run the devkit's emulator on host:port until `stop` is set (by SIGTERM or SIGINT when run as a command).

    The emulator binds the address in its module's LOOPBACK; it is set to `host` while the server binds, and put
    back at once (it also names the stand-in requests the emulator makes to moto itself, which do not care)."""
    from elevation.devkit import emulator as emulator_module

    stop = stop or threading.Event()
    loopback = emulator_module.LOOPBACK
    emulator_module.LOOPBACK = host
    try:
        running = emulator_module.AwsEmulator(port=port, region=region).start()
    finally:
        emulator_module.LOOPBACK = loopback
    try:
        print(f"AWS emulator serving on {host}:{port} (control endpoint /_emulator)", flush=True)
        if ready is not None:
            ready.set()
        while not stop.wait(1.0):
            pass
    finally:
        running.stop()
    print("AWS emulator stopped", flush=True)
    return 0


# --- command line --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m elevation.devkit.compose_demo",
                                     description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_command = commands.add_parser("serve", help="run the AWS emulator until SIGTERM")
    serve_command.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")  # noqa: S104
    serve_command.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    serve_command.add_argument("--region", default="us-east-1")
    seed_command = commands.add_parser("seed", help="build the demo organization in an emulator, write the files")
    seed_command.add_argument("--endpoint-url", required=True,
                              help="the emulator's URL as the Airflow containers reach it (http://aws-emulator:5000)")
    seed_command.add_argument("--dir", type=Path, default=Path("/opt/airflow/demo"),
                              help="where to write elevation.yaml, passwords.json and airflow.env")
    seed_command.add_argument("--data-dir", type=Path, default=Path("/opt/airflow/data"),
                              help="the extract's output folder goes under it (cloudtrail/)")
    seed_command.add_argument("--reports-dir", type=Path, default=Path("/opt/airflow/reports"),
                              help="the audit's reports folder")
    seed_command.add_argument("--region", default="us-east-1")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        stop = threading.Event()
        for signum in STOP_SIGNALS:
            signal.signal(signum, lambda received, frame: stop.set())
        return serve(args.host, args.port, args.region, stop)
    built = seed(args.endpoint_url, args.dir.resolve(), args.data_dir, args.reports_dir, args.region)
    if not built:
        print(f"the emulator at {args.endpoint_url} already holds the demo organization of "
              f"{args.dir / CONFIG_FILE}: left as it is", flush=True)
    print(f"log in to Airflow as one of {', '.join(demo_passwords())} (password: login + '-pw'); "
          f"configuration {args.dir / CONFIG_FILE}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
