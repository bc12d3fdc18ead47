"""Benchmark: the extract's own cost, apart from the store it reads, against the cost of parsing alone.

    .venv/bin/python benchmarks/bench_reader.py 250000 1000000 4000000

The night of `bench_extract.py` (same generator, same sessions) is written once as gzip trail files into a local
folder (cached in $BENCH_READER_CACHE, default /tmp/elevation-bench-reader), and `S3TrailSource` reads it through a
tiny in-process stand-in for the S3 client (list and get from the folder): the same reader, the same threads, no
emulator. Each measurement runs in a fresh subprocess (peak RSS is its own):

- `records`: extract_night with ELEVATION_COLUMNAR_READS=0 (every record parsed into a dict, the path before);
- `columnar`: extract_night as shipped (native pyarrow.json read, matcher screening, dicts only for candidates);
- floors, one thread: gunzip alone; gunzip + json.loads; gunzip + pyarrow.json of the columns the screen reads.

Both extracts must write the same events: the table prints a digest of the sorted rows of each.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "plugins")]

from bench_extract import (  # noqa: E402
    ACCOUNTS,
    BUCKET,
    NIGHT,
    SESSION_SET,
    SESSION_USER,
    generate_and_upload,
)

CACHE = Path(os.environ.get("BENCH_READER_CACHE", "/tmp/elevation-bench-reader"))


class LocalStore:
    """The three S3 calls the trail source makes (list with prefix and delimiter, get, put), on a folder."""

    def __init__(self, root: Path, tag: str = "") -> None:
        self.root = root
        self.tag = tag

    def put_object(self, Bucket: str, Key: str, Body: bytes) -> None:  # noqa: N803 (boto3's names)
        path = self.root / Key.replace(".json.gz", f"{self.tag}.json.gz")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(Body)

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        return {"Body": io.BytesIO((self.root / Key).read_bytes())}

    def get_paginator(self, name: str) -> LocalStore:
        return self

    def paginate(self, Bucket: str, Prefix: str, Delimiter: str | None = None) -> list[dict[str, Any]]:  # noqa: N803
        folder = self.root / Prefix
        if not folder.is_dir():
            return [{}]
        if Delimiter:
            return [{"CommonPrefixes": [{"Prefix": f"{Prefix}{d.name}/"} for d in sorted(folder.iterdir())]}]
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        modified = datetime(2024, 8, 2, tzinfo=UTC)
        return [
            {"Contents": [{"Key": str(p.relative_to(self.root)), "LastModified": modified} for p in files]}
        ]


def _generate_half(folder: str, count: int, half: int) -> tuple[int, int]:
    middle = count // 2
    indices = range(0, middle) if half == 0 else range(middle, count)
    return generate_and_upload(LocalStore(Path(folder), tag=f"-{half}"), count, indices)


def night_folder(count: int) -> Path:
    """The generated night of `count` events (made once, in two processes, then reused)."""
    folder = CACHE / f"{count}"
    done = folder / "_complete"
    if not done.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with ProcessPoolExecutor(2) as pool:
            list(pool.map(_generate_half, [str(folder)] * 2, [count] * 2, [0, 1]))
        done.write_text("ok")
    return folder


def _files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.json.gz"))


def child_extract(folder: str, output: str) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from elevation.cloudtrail.s3_trail import S3TrailSource
    from elevation.cloudtrail.sessions import SessionIdentity
    from elevation.extract import extract_night, night_window

    start, end = night_window(NIGHT)
    granted = start + timedelta(hours=10)
    ended = granted + timedelta(hours=2)
    sessions = [
        SessionIdentity(
            f"bench-{acct}", acct, SESSION_SET, (SESSION_USER,), granted, ended, ended, timedelta(hours=1)
        )
        for acct in ACCOUNTS
    ]
    began = time.perf_counter()
    cpu = time.process_time()
    summary = extract_night(sessions, S3TrailSource(LocalStore(Path(folder)), BUCKET), start, end, output)
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the digest below
    table = pq.read_table(summary.files_written[0])
    rows = sorted(json.dumps(row, sort_keys=True, default=str) for row in table.to_pylist())
    return {
        "records_read": summary.records_read,
        "events_written": summary.events_written,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "peak_rss_mb": peak,
        "digest": hashlib.sha256("\n".join(rows).encode()).hexdigest()[:12],
        "warnings": len(summary.warnings),
    }


def child_floor(folder: str, kind: str) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.json as pj

    from elevation.cloudtrail.records import _columns_schema

    files = _files(Path(folder))
    options = pj.ParseOptions(explicit_schema=_columns_schema(), unexpected_field_behavior="ignore")
    count = 0
    began = time.perf_counter()
    cpu = time.process_time()
    for path in files:
        text = zlib.decompress(path.read_bytes(), 16 + zlib.MAX_WBITS)
        if kind == "json":
            count += len(json.loads(text)["Records"])
        elif kind == "pyarrow":
            table = pj.read_json(
                pa.BufferReader(text),
                read_options=pj.ReadOptions(use_threads=False, block_size=len(text) + 64),
                parse_options=options,
            )
            count += len(table.column("Records").combine_chunks().flatten())
    return {
        "records": count,
        "seconds": time.perf_counter() - began,
        "cpu_seconds": time.process_time() - cpu,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_child(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[250_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the columnar extract this many times per size (a shared machine's noise shows; "
                        "the median is printed last)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, folder, *rest = args.child
        result = child_extract(folder, rest[0]) if kind == "extract" else child_floor(folder, kind)
        print(json.dumps(result))
        return 0
    print(
        f"{'events':>10} {'files':>6} {'what':<22} {'seconds':>8} {'cpu s':>7} {'events/s':>10} "
        f"{'peak RSS MB':>11} {'written':>8} {'digest':>13}"
    )
    for size in args.sizes:
        folder = night_folder(size)
        files = len(_files(folder))
        for path in _files(folder):  # warm the page cache: every measurement reads from memory
            path.read_bytes()
        measures: list[tuple[str, dict[str, Any]]] = []
        for kind in ("gunzip", "json", "pyarrow"):
            measures.append(
                (f"floor: gunzip{' + ' + kind if kind != 'gunzip' else ''}", run_child(kind, str(folder)))
            )
        runs = [("extract: records", "0")] + [("extract: columnar", "1")] * max(1, args.repeat)
        for mode, flag in runs:
            with tempfile.TemporaryDirectory() as output:
                measures.append(
                    (mode, run_child("extract", str(folder), output, env={"ELEVATION_COLUMNAR_READS": flag}))
                )
        columnar = sorted((report for what, report in measures if what == "extract: columnar"),
                          key=lambda report: report["seconds"])
        if len(columnar) > 1:
            measures.append(("  median columnar", columnar[len(columnar) // 2]))
        for what, report in measures:
            events = report.get("records_read", report.get("records")) or size
            print(
                f"{size:>10,} {files:>6} {what:<22} {report['seconds']:>8.2f} {report['cpu_seconds']:>7.2f} "
                f"{events / report['seconds']:>10,.0f} {report['peak_rss_mb']:>11.0f} "
                f"{report.get('events_written', ''):>8} {report.get('digest', ''):>13}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
