"""How long each DAG file takes to parse in a fresh interpreter (what the DAG processor pays every loop).

Each file is imported in a new Python process `--runs` times; the import of Airflow itself is measured once
on its own and subtracted, so the number is what the DAG file adds. Run: `.venv/bin/python benchmarks/bench_dag_parse.py`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBE = """
import time, importlib.util, json, sys
start = time.perf_counter()
import airflow.sdk
base = time.perf_counter() - start
path = sys.argv[1]
start = time.perf_counter()
if path != "-":
    spec = importlib.util.spec_from_file_location("dag_file", path)
    module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
print(json.dumps({"airflow_sdk": base, "dag_file": time.perf_counter() - start, "modules": len(sys.modules)}))
"""


def measure(path: str, runs: int) -> dict[str, float]:
    samples = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", PROBE, path], capture_output=True, text=True, check=True)
        samples.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {
        "airflow_sdk_ms": statistics.median(s["airflow_sdk"] for s in samples) * 1000,
        "dag_file_ms": statistics.median(s["dag_file"] for s in samples) * 1000,
        "modules": samples[-1]["modules"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print(f"{'file':<28} {'import airflow.sdk':>19} {'the DAG file itself':>20} {'modules loaded':>15}")
    for path in sorted((REPO / "dags").glob("*.py")):
        result = measure(str(path), args.runs)
        print(
            f"{path.name:<28} {result['airflow_sdk_ms']:>16.0f} ms {result['dag_file_ms']:>17.1f} ms "
            f"{result['modules']:>15}"
        )


if __name__ == "__main__":
    main()
