"""Write a night's rows to its Hive-style partition `date=YYYY-MM-DD/` atomically.

The rows stream into a temporary object in the partition folder, named so that no reader takes it for data
(`_events.parquet.tmp-<uuid>`: not `*.parquet`, and Athena skips names starting with `_`). Only when the last
row is written is it moved to `events.parquet`: on a local folder an atomic rename, on S3 a server-side copy
of a complete object (readers see the old night or the new one, never half of one). Then everything else in
the partition (temporary files of a killed run, files of older layouts) is removed, so a retried run replaces
the night and never duplicates it. An exception while writing deletes the temporary object and leaves the
previous partition untouched.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from elevation.cloudtrail.schema import EVENT_SCHEMA

log = logging.getLogger(__name__)

FINAL_NAME = "events.parquet"
TEMP_PREFIX = "_events.parquet.tmp-"


@dataclass(frozen=True)
class WrittenPartition:
    """The committed file of a night."""

    path: str
    rows: int
    bytes: int


def partition_dir(base: str, night: date) -> str:
    return f"{base.rstrip('/')}/date={night:%Y-%m-%d}"


def _delete_quietly(filesystem: pafs.FileSystem, path: str) -> None:
    try:
        filesystem.delete_file(path)
    except (OSError, FileNotFoundError) as error:
        log.warning("could not delete %s: %s", path, error)


#: Rows (at least) per Parquet row group. One group per 5,000-row batch made reading a night back (the audit) twice as slow;
#: a group is held in memory until written, so it is also closed once it holds ROW_GROUP_BYTES of Arrow data (real
#: events, ~1.5 kB each: ~16,000 rows), which keeps the extract's memory flat whatever the night's size.
ROW_GROUP_ROWS = 32_768
ROW_GROUP_BYTES = 24 * 1024 * 1024


def write_partition(
    filesystem: pafs.FileSystem,
    base: str,
    night: date,
    rows: Iterable[dict[str, Any]],
    *,
    batch_size: int = 5_000,
    compression: str = "zstd",
) -> WrittenPartition:
    """Stream `rows` (dicts of :data:`EVENT_SCHEMA`) into the night's partition; commit only when complete."""
    directory = partition_dir(base, night)
    if not isinstance(filesystem, pafs.S3FileSystem):  # S3 has no folders; pyarrow would write marker objects
        filesystem.create_dir(directory, recursive=True)
    temp = f"{directory}/{TEMP_PREFIX}{uuid.uuid4().hex}"
    final = f"{directory}/{FINAL_NAME}"
    count = 0
    size = 0
    try:
        with filesystem.open_output_stream(temp) as sink:
            writer = pq.ParquetWriter(sink, EVENT_SCHEMA, compression=compression)
            group: list[pa.RecordBatch] = []  # converted batches of the row group being gathered

            def flush() -> None:
                if group:
                    table = pa.Table.from_batches(group, EVENT_SCHEMA)
                    writer.write_table(table, row_group_size=table.num_rows)  # one group per flush
                    group.clear()

            try:
                batch: list[dict[str, Any]] = []
                for row in rows:
                    batch.append(row)
                    if len(batch) >= batch_size:
                        group.append(pa.RecordBatch.from_pylist(batch, schema=EVENT_SCHEMA))
                        count += len(batch)
                        batch = []
                        held = sum(len(converted) for converted in group)
                        if held >= ROW_GROUP_ROWS or sum(b.nbytes for b in group) >= ROW_GROUP_BYTES:
                            flush()
                if batch:
                    group.append(pa.RecordBatch.from_pylist(batch, schema=EVENT_SCHEMA))
                    count += len(batch)
                flush()
            finally:
                writer.close()  # also on failure: the temporary file is deleted below anyway
            size = sink.tell()  # counted here: some S3 emulators answer HEAD with a zero length
    except BaseException:
        _delete_quietly(filesystem, temp)
        raise
    filesystem.move(temp, final)
    for info in filesystem.get_file_info(pafs.FileSelector(directory)):
        if info.type == pafs.FileType.File and info.path.rstrip("/") != final:
            _delete_quietly(filesystem, info.path)
    log.info("committed %s (%d rows, %d bytes)", final, count, size)
    return WrittenPartition(final, count, size)
