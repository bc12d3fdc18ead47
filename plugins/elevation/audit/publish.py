"""Reports rendered into a local folder, uploaded to S3 with their layout (so relative links keep working).

The nightly audit and the reconcile report both render into a staging folder and publish it here when
`audit.reports_location` is an `s3://` location, through the connection `audit.reports_conn_id`.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".csv": "text/csv; charset=utf-8",
                 ".jsonl": "application/x-ndjson", ".json": "application/json",
                 ".parquet": "application/vnd.apache.parquet"}


def publish_reports(folder: Path, location: str, conn_id: str) -> None:
    """Upload every file under `folder` to `location` (s3://bucket/prefix), each with its content type (the audit
    viewer and browsers rely on it; nothing is served as a guess)."""
    from elevation.aws import airflow_session

    session, endpoint, region = airflow_session(conn_id)
    s3 = session.client("s3", endpoint_url=endpoint, region_name=region)
    target = urlparse(location)
    prefix = target.path.strip("/")
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            key = "/".join(filter(None, (prefix, path.relative_to(folder).as_posix())))
            s3.put_object(Bucket=target.netloc, Key=key, Body=path.read_bytes(),
                          ContentType=CONTENT_TYPES.get(path.suffix, "application/octet-stream"))


def published_uri(location: str, folder: Path, path: Path) -> str:
    """Where `path` (a file under `folder`) is once `folder` is published to `location`."""
    return f"{location.rstrip('/')}/{path.relative_to(folder).as_posix()}"
