"""The audit viewer's pure parts: which file a URL path names inside the reports location, and how it is served.

The reports location (`audit.reports_location`) is a local folder or `s3://bucket/prefix` with the layout the
nightly audit writes (`<night>/index.html`, `<night>/findings-<night>.jsonl`, `sessions/<id>.html`, its
`.events.csv` / `.events.parquet`, `reconcile/...`). URL paths map onto that layout one to one, so the reports'
relative links keep working. Nothing outside the location is ever read: a path with `..`, an absolute path, a
backslash or a control character is refused before any lookup, and a local path that resolves (symlinks
followed) outside the folder is refused too.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

NIGHT = re.compile(r"\d{4}-\d{2}-\d{2}")

#: The same policy the reports carry in their own <meta> tag, plus who may frame them (the Airflow UI's iframe).
REPORT_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; "
              "frame-ancestors 'self'")

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".jsonl": "application/x-ndjson",
    ".json": "application/json",
    ".parquet": "application/vnd.apache.parquet",
}


class NotAllowed(ValueError):
    """The path would leave the reports location (or is not a plain relative path)."""


def clean_path(raw: str) -> str:
    """The relative POSIX path a URL path names, or NotAllowed. An empty path is the landing page ('')."""
    if any(ord(char) < 32 or char == "\x7f" for char in raw) or "\\" in raw:
        raise NotAllowed("control characters and backslashes are not allowed in a path")
    if raw.startswith("/") or re.match(r"^[A-Za-z]:", raw):
        raise NotAllowed("absolute paths are not allowed")
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if any(part == ".." for part in parts):
        raise NotAllowed("'..' is not allowed in a path")
    if any(part.startswith(".") for part in parts):
        raise NotAllowed("hidden files are not served")
    return "/".join(parts)


def content_type(path: str) -> str:
    return CONTENT_TYPES.get(PurePosixPath(path).suffix.lower(), "application/octet-stream")


def response_headers(path: str) -> dict[str, str]:
    """Headers every served file gets: its type, no sniffing, not cached, no referrer; HTML gets the reports' CSP,
    everything else is a download."""
    headers = {
        "Content-Type": content_type(path),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
    }
    if path.endswith(".html"):
        headers["Content-Security-Policy"] = REPORT_CSP
    else:
        name = PurePosixPath(path).name.replace('"', "")
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return headers


class ReportStore(Protocol):
    def nights(self) -> list[str]:
        """The nights that have an index, newest first."""

    def read(self, path: str) -> bytes | None:
        """The file at a cleaned relative path, or None when there is none (or it is a folder)."""

    def is_folder(self, path: str) -> bool:
        """Whether the cleaned relative path is a folder (then its index.html is served)."""


@dataclass(frozen=True)
class LocalStore:
    root: Path

    def _resolve(self, path: str) -> Path:
        root = self.root.resolve()
        target = (root / path).resolve()
        if target != root and not target.is_relative_to(root):
            raise NotAllowed("the path leaves the reports folder")
        return target

    def nights(self) -> list[str]:
        if not self.root.is_dir():
            return []
        found = [entry.name for entry in self.root.iterdir() if NIGHT.fullmatch(entry.name)]
        return sorted((name for name in found if self.read(f"{name}/index.html") is not None), reverse=True)

    def read(self, path: str) -> bytes | None:
        target = self._resolve(path)
        return target.read_bytes() if target.is_file() else None

    def is_folder(self, path: str) -> bool:
        return self._resolve(path).is_dir()


@dataclass(frozen=True)
class S3Store:
    """`s3://bucket/prefix`, read through the S3 hook of `audit.reports_conn_id`."""

    location: str
    conn_id: str

    @property
    def _bucket_prefix(self) -> tuple[str, str]:
        from urllib.parse import urlparse

        parsed = urlparse(self.location)
        return parsed.netloc, parsed.path.strip("/")

    def _key(self, path: str) -> str:
        return "/".join(filter(None, (self._bucket_prefix[1], path)))

    def _hook(self):  # noqa: ANN202
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=self.conn_id)

    def nights(self) -> list[str]:
        bucket, prefix = self._bucket_prefix
        start = f"{prefix}/" if prefix else ""
        prefixes = self._hook().list_prefixes(bucket_name=bucket, prefix=start, delimiter="/") or []
        names = [item[len(start):].strip("/") for item in prefixes]
        return sorted((name for name in names if NIGHT.fullmatch(name)), reverse=True)

    def read(self, path: str) -> bytes | None:
        from botocore.exceptions import ClientError

        bucket = self._bucket_prefix[0]
        try:
            obj = self._hook().get_conn().get_object(Bucket=bucket, Key=self._key(path))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        return obj["Body"].read()

    def is_folder(self, path: str) -> bool:
        if not path:
            return True
        bucket = self._bucket_prefix[0]
        keys = self._hook().list_keys(bucket_name=bucket, prefix=f"{self._key(path)}/", max_items=1)
        return bool(keys)


def store_for(location: str, conn_id: str) -> ReportStore:
    return S3Store(location, conn_id) if location.startswith("s3://") else LocalStore(Path(location))


def landing_page(nights: Iterable[str], user: str) -> str:
    """The list of nights, newest first, each linking to its index (relative links: the page is at .../audit/)."""
    items = "\n".join(f'<li><a href="{html.escape(night)}/index.html">{html.escape(night)}</a></li>'
                      for night in nights)
    body = f"<ul>\n{items}\n</ul>" if items else "<p>No audited night yet.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{REPORT_CSP.split("; frame-ancestors")[0]}">
<title>Elevation audit</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;}} li{{margin:.3rem 0;}}</style></head>
<body><h1>Elevation audit: nights</h1>
<p>Newest first; each night's index lists its sessions, worst first. Signed in as {html.escape(user)}.</p>
{body}
</body></html>
"""
