"""Atomic partitions: an interrupted write (exception or kill -9) never leaves a partial or duplicated night."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from pyarrow import fs as pafs

from elevation.cloudtrail.schema import record_to_row
from elevation.extract.location import resolve_location
from elevation.extract.writer import FINAL_NAME, ROW_GROUP_BYTES, ROW_GROUP_ROWS, write_partition

NIGHT = date(2024, 8, 1)


def rows(count: int, session: str = "s1", fail_after: int | None = None) -> Iterator[dict[str, Any]]:
    for index in range(count):
        if fail_after is not None and index == fail_after:
            raise RuntimeError("source died half-way")
        yield record_to_row(
            {
                "eventID": f"e{index:07d}",
                "eventTime": "2024-08-01T01:02:03Z",
                "eventName": "CreateUser",
                "userIdentity": {"type": "AssumedRole", "arn": "arn:aws:sts::111111111111:assumed-role/R/u"},
                "requestParameters": {"userName": f"u{index}", "padding": "x" * 200},
            },
            session,
        )


def test_an_exception_mid_write_keeps_the_previous_night_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    local = pafs.LocalFileSystem()
    write_partition(local, str(tmp_path), NIGHT, rows(100, "old"))
    with pytest.raises(RuntimeError, match="half-way"):
        write_partition(local, str(tmp_path), NIGHT, rows(50_000, "new", fail_after=30_000), batch_size=1000)
    assert [p.name for p in (tmp_path / "date=2024-08-01").iterdir()] == [FINAL_NAME]
    table = pq.read_table(tmp_path / "date=2024-08-01" / FINAL_NAME)
    assert table.num_rows == 100 and set(table.column("session_id").to_pylist()) == {"old"}


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from datetime import date
    sys.path.insert(0, {tests!r})
    from test_writer import rows
    from elevation.extract.location import resolve_location
    from elevation.extract.writer import write_partition

    def dying():
        for index, row in enumerate(rows(200_000, "new")):
            if index == 60_000:
                os.kill(os.getpid(), signal.SIGKILL)
            yield row

    filesystem, base = resolve_location({location!r}, endpoint_url={endpoint!r}, region_name="us-east-1")
    write_partition(filesystem, base, date(2024, 8, 1), dying(), batch_size=5_000)
    """
)


def kill_mid_write(location: str, endpoint: str | None = None, env: dict[str, str] | None = None) -> None:
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), location=location, endpoint=endpoint)
    result = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, **(env or {})}, capture_output=True, timeout=120
    )
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-2000:]


def test_a_killed_write_on_a_local_folder_leaves_the_committed_night_alone(tmp_path: Path) -> None:
    local = pafs.LocalFileSystem()
    write_partition(local, str(tmp_path), NIGHT, rows(10, "old"))
    kill_mid_write(str(tmp_path))
    leftovers = sorted(p.name for p in (tmp_path / "date=2024-08-01").iterdir())
    assert FINAL_NAME in leftovers and all(n == FINAL_NAME or not n.endswith(".parquet") for n in leftovers)
    assert len(leftovers) == 2, "the killed run's temporary file is there (it was killed), but not as data"
    seen = duckdb.sql(
        f"SELECT session_id, count(*) FROM read_parquet('{tmp_path}/*/*.parquet') GROUP BY 1"  # noqa: S608 (a test's tmp path)
    ).fetchall()
    assert seen == [("old", 10)]
    write_partition(local, str(tmp_path), NIGHT, rows(20, "retry"))
    assert [p.name for p in (tmp_path / "date=2024-08-01").iterdir()] == [FINAL_NAME], "the retry cleans up"


def test_a_killed_write_on_s3_commits_nothing_and_a_retry_replaces_the_night(emulator: Any) -> None:
    s3 = emulator.client("s3")
    s3.create_bucket(Bucket="audit-extract")
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    os.environ.update(env)
    location = "s3://audit-extract/cloudtrail"
    filesystem, base = resolve_location(location, endpoint_url=emulator.endpoint_url, region_name="us-east-1")
    first = write_partition(filesystem, base, NIGHT, rows(10, "old"))
    assert first.path == "audit-extract/cloudtrail/date=2024-08-01/events.parquet"
    kill_mid_write(location, emulator.endpoint_url, env)

    def keys() -> list[str]:
        listing = s3.list_objects_v2(Bucket="audit-extract", Prefix="cloudtrail/").get("Contents", [])
        return sorted(item["Key"] for item in listing if not item["Key"].endswith("/"))

    assert [k for k in keys() if k.endswith(".parquet")] == ["cloudtrail/date=2024-08-01/events.parquet"]
    assert read_back(s3, first.path).column("session_id").to_pylist() == ["old"] * 10
    with pytest.raises(RuntimeError):
        write_partition(filesystem, base, NIGHT, rows(30_000, "new", fail_after=20_000), batch_size=1000)
    retry = write_partition(filesystem, base, NIGHT, rows(25, "retry"))
    assert keys() == ["cloudtrail/date=2024-08-01/events.parquet"]
    assert read_back(s3, retry.path).num_rows == 25 and retry.bytes > 0


def read_back(s3: Any, path: str) -> Any:
    """Through boto3 (the emulator answers HEAD with a zero Content-Length, which pyarrow's reader trusts)."""
    import io

    bucket, key = path.split("/", 1)
    return pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))


def test_locations() -> None:
    filesystem, base = resolve_location("/tmp/x/../y")
    assert isinstance(filesystem, pafs.LocalFileSystem) and base == "/tmp/y"
    assert resolve_location("file:///srv/out/")[1] == "/srv/out"
    with pytest.raises(ValueError):
        resolve_location("ftp://host/x")
    _ = datetime.now(UTC)


def test_rows_are_gathered_into_large_row_groups_whatever_the_batch_size(tmp_path: Path) -> None:
    written = write_partition(pafs.LocalFileSystem(), str(tmp_path), NIGHT, rows(80_000), batch_size=5_000)
    metadata = pq.ParquetFile(written.path).metadata
    sizes = [metadata.row_group(index).num_rows for index in range(metadata.num_row_groups)]
    assert sum(sizes) == written.rows == 80_000
    assert len(sizes) == 3  # not one group per 5,000-row batch: reading a night back visits each group
    assert all(size >= ROW_GROUP_ROWS for size in sizes[:-1])


def test_a_row_group_of_large_events_is_closed_at_a_size_so_memory_stays_flat(tmp_path: Path) -> None:
    def large(count: int) -> Iterator[dict[str, Any]]:
        for row in rows(count):
            yield row | {"responseElements": "y" * 4_000}

    written = write_partition(pafs.LocalFileSystem(), str(tmp_path), NIGHT, large(20_000), batch_size=1_000)
    metadata = pq.ParquetFile(written.path).metadata
    sizes = [metadata.row_group(index).num_rows for index in range(metadata.num_row_groups)]
    assert sum(sizes) == 20_000 and len(sizes) >= 3
    per_row = 4_000 + 400
    assert all(size * per_row * 1.3 >= ROW_GROUP_BYTES and size < ROW_GROUP_ROWS for size in sizes[:-1])
    assert all(size >= 5_000 for size in sizes[:-1])  # still gathered: far more than one batch per group
