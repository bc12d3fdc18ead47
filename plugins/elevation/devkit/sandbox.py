"""`python -m elevation.devkit.sandbox`: a running emulated organization to try the DAGs by hand.

Starts the AWS emulator on 127.0.0.1 (port 5000 unless `--port`), builds the demo organization, and writes into
`--dir` (default: `.sandbox` in the current directory) the configuration `elevation.yaml`, a SQLite queue
`queue.db`, Airflow's home `airflow/` and `env.sh`, the environment `airflow dags test` needs. Then it serves
until Ctrl-C, SIGINT or SIGTERM (`kill <pid>`; it prints its pid), also when started in the background, and
exits 0. In another shell: `source .sandbox/env.sh` and run any DAG with `airflow dags test <dag_id> <date>`.
The emulator's control endpoint (holds, failures, wire faults, the call log) is at `<endpoint>/_emulator`; see
elevation.devkit.emulator.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from elevation.devkit.demo import REPO, airflow_environment

if TYPE_CHECKING:
    from elevation.devkit.emulator import AwsEmulator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _default_dags() -> Path:
    """`./dags` when there is one (a checkout, or a copy next to a `pip install .`), else the source tree's."""
    here = Path("dags")
    return here if here.is_dir() else REPO / "dags"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m elevation.devkit.sandbox",
        description="Run the AWS emulator with the demo organization, and write the environment to run the "
        "DAGs against it with `airflow dags test`. Stop it with Ctrl-C or `kill <pid>` (SIGTERM).",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=5000,
        help="port on 127.0.0.1 for the emulated AWS endpoint and its control endpoint /_emulator "
        "(default: 5000; 0: any free port)",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(".sandbox"),
        help="folder for elevation.yaml, queue.db (emptied at start), Airflow's home airflow/ and env.sh "
        "(default: .sandbox in the current directory)",
    )
    parser.add_argument(
        "--dags",
        type=Path,
        default=None,
        help="the DAG folder Airflow reads (default: ./dags if it exists, else the source tree's dags/)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Explicit handlers, installed first: a shell starts a background job (`... &`) with SIGINT ignored, and
    # Python then never turns SIGINT into KeyboardInterrupt; SIGTERM (plain `kill`) would skip any clean-up.
    stop = threading.Event()
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda received, frame: stop.set())

    from elevation.devkit.emulator import AwsEmulator  # moto takes a while to import: after the handlers

    folder: Path = args.dir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "env.sh").unlink(missing_ok=True)  # whoever waits for env.sh must not read the last run's
    dags: Path = (args.dags or _default_dags()).resolve()
    try:
        emulator = AwsEmulator(port=args.port).start()
    except OSError as error:
        print(f"cannot serve on 127.0.0.1:{args.port}: {error} (choose another --port)", file=sys.stderr)
        return 2
    try:
        env, accounts, people = _set_up(emulator, folder, dags)
        _write_env(folder / "env.sh", env)
        print(f"emulator at {emulator.endpoint_url}; accounts: {json.dumps(accounts)}")
        print(f"control endpoint: {emulator.control_url} (routes: curl {emulator.control_url})")
        print(f"people: {', '.join(sorted(people))}")
        print(f"DAG folder: {dags}" + ("" if dags.is_dir() else " (missing: pass --dags)"))
        print(f"now, in another shell: source {folder / 'env.sh'} && airflow db migrate")
        print(f"sandbox pid {os.getpid()}: stop it with Ctrl-C or `kill {os.getpid()}`")
        sys.stdout.flush()
        while not stop.wait(1.0):
            pass
    finally:
        emulator.stop()
    print("sandbox stopped", flush=True)
    return 0


def _set_up(emulator: AwsEmulator, folder: Path, dags: Path) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Build the demo organization, the configuration and an empty queue.

    Returns the environment that reaches them, the account ids by name, and the people's logins.
    """
    from elevation.devkit.world import TRAIL_BUCKET, build_world, nightly_sections, write_config
    from elevation.store.database import create_engine_for_url
    from elevation.store.migrations import upgrade

    world = build_world(emulator)
    emulator.client("s3").create_bucket(Bucket=TRAIL_BUCKET)
    config = write_config(world, folder / "elevation.yaml", **nightly_sections(folder))
    queue_path = folder / "queue.db"
    queue_path.unlink(missing_ok=True)
    upgrade(create_engine_for_url(f"sqlite:///{queue_path}"))
    env = {
        **airflow_environment(folder / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "ELEVATION_CONFIG": str(config),
        "AIRFLOW_CONN_AWS_DEFAULT": emulator.airflow_connection_json(),
        "AIRFLOW_CONN_ELEVATION_DB": json.dumps({"conn_type": "sqlite", "host": str(queue_path)}),
        "ELEVATION_DATABASE_URL": f"sqlite:///{queue_path}",
        # For scripts and tests: EmulatorControl($ELEVATION_EMULATOR_URL), or curl $ELEVATION_EMULATOR_URL/_emulator
        "ELEVATION_EMULATOR_URL": emulator.endpoint_url,
    }
    return env, world.accounts, list(world.users)


def read_env(path: Path) -> dict[str, str]:
    """The variables of an env.sh this module wrote, as `source` would set them (for tests and scripts)."""
    env: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = shlex.split(value)[0] if value else ""
    return env


def _write_env(path: Path, env: dict[str, str]) -> None:
    """Write env.sh whole or not at all (a script waiting for it never sources half a file)."""
    partial = path.with_suffix(".sh.partial")
    partial.write_text(
        "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items()), encoding="utf-8"
    )
    partial.replace(path)


if __name__ == "__main__":
    sys.exit(main())
