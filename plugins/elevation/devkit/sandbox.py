"""`python -m elevation.devkit.sandbox`: a running emulated organization to try the DAGs by hand.

Starts the AWS emulator on a fixed port, builds the demo organization, writes `.sandbox/elevation.yaml`, a SQLite
queue and `.sandbox/env.sh` (the environment `airflow dags test` needs), then waits until interrupted. In another
shell: `source .sandbox/env.sh` and run any DAG with `airflow dags test <dag_id> <logical date>`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from elevation.devkit.demo import REPO, airflow_environment
from elevation.devkit.emulator import AwsEmulator
from elevation.devkit.world import TRAIL_BUCKET, build_world, nightly_sections, write_config
from elevation.store.database import create_engine_for_url
from elevation.store.migrations import upgrade


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--dir", type=Path, default=REPO / ".sandbox")
    args = parser.parse_args(argv)
    folder: Path = args.dir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    emulator = AwsEmulator(port=args.port).start()
    world = build_world(emulator)
    emulator.client("s3").create_bucket(Bucket=TRAIL_BUCKET)
    config = write_config(
        world,
        folder / "elevation.yaml",
        **nightly_sections(folder),
    )
    queue_path = folder / "queue.db"
    queue_path.unlink(missing_ok=True)
    upgrade(create_engine_for_url(f"sqlite:///{queue_path}"))
    env = {
        **airflow_environment(folder / "airflow"),
        "ELEVATION_CONFIG": str(config),
        "AIRFLOW_CONN_AWS_DEFAULT": emulator.airflow_connection_json(),
        "AIRFLOW_CONN_ELEVATION_DB": json.dumps({"conn_type": "sqlite", "host": str(queue_path)}),
        "ELEVATION_DATABASE_URL": f"sqlite:///{queue_path}",
    }
    (folder / "env.sh").write_text(
        "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items()), encoding="utf-8"
    )
    print(f"emulator at {emulator.endpoint_url}; accounts: {json.dumps(world.accounts)}")
    print(f"people: {', '.join(sorted(world.users))}")
    print(f"now, in another shell: source {folder / 'env.sh'} && airflow db migrate")
    sys.stdout.flush()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
