"""Where the Parquet goes: a local folder or S3, as a pyarrow filesystem and a base path.

pyarrow's filesystems are used rather than fsspec because s3fs is not a dependency; an Airflow
`ObjectStoragePath` (fsspec) is accepted too and wrapped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pyarrow import fs as pafs


def resolve_location(
    location: Any,
    *,
    session: Any = None,
    endpoint_url: str | None = None,
    region_name: str | None = None,
) -> tuple[pafs.FileSystem, str]:
    """(filesystem, base path) for `s3://bucket/prefix`, `file:///dir`, a plain path or an ObjectStoragePath.

    For S3 the credentials come from `session` (a boto3 session, e.g. AwsBaseHook.get_session()); else from the
    environment's default chain. `endpoint_url` points it at an emulator."""
    if hasattr(location, "fs") and hasattr(location, "path") and not isinstance(location, str | Path):
        handler = pafs.FSSpecHandler(location.fs)
        return pafs.PyFileSystem(handler), str(location.path).rstrip("/")
    text = str(location)
    parsed = urlparse(text)
    if parsed.scheme == "s3":
        options: dict[str, Any] = {}
        if session is not None:
            credentials = session.get_credentials()
            if credentials is not None:
                frozen = credentials.get_frozen_credentials()
                options.update(
                    access_key=frozen.access_key, secret_key=frozen.secret_key, session_token=frozen.token
                )
            region_name = region_name or session.region_name
        if region_name:
            options["region"] = region_name
        if endpoint_url:
            endpoint = urlparse(endpoint_url)
            options["endpoint_override"] = endpoint.netloc or endpoint_url
            options["scheme"] = endpoint.scheme or "https"
        return pafs.S3FileSystem(**options), f"{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")
    if parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme == "file" else text).expanduser().resolve()
        return pafs.LocalFileSystem(), path.as_posix()
    raise ValueError(f"unsupported output location {text!r} (use a folder, file:// or s3://)")
