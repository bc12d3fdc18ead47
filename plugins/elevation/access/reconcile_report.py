"""The reconcile report: per run, an HTML page and a JSON file listing every open drift item and what the run did.

Written under the reconcile reports location (`reconcile.reports_location`, default `<audit.reports_location>/
reconcile`; a local folder or s3://, published the way the audit reports are) as `<YYYY-MM-DDTHHMM>/reconcile.html`
and `reconcile.json`, with copies at the top as `latest.html` and `latest.json` for the nightly index and for
people. Items are read from the drift table, so each carries since when it has been open. Principal names come from
the directory and are attacker-influenced: the page is rendered by the audit reports' Jinja2 environment (autoescape,
the same look, no script) and the JSON is data, never markup.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from elevation.access.drift import Drift, DriftKind
from elevation.access.reconcile import ReconcileSummary
from elevation.audit.publish import publish_reports
from elevation.audit.report import DriftOverview, template_environment, write_output
from elevation.aws import airflow_session
from elevation.config import ElevationConfig
from elevation.runtime import Runtime
from elevation.store import drift as drift_store
from elevation.store.tables import drift as drift_table

log = logging.getLogger(__name__)

RUN_PAGE, RUN_JSON = "reconcile.html", "reconcile.json"
LATEST_PAGE, LATEST_JSON = "latest.html", "latest.json"
#: How each kind looks in the page (the audit reports' severity colours).
KIND_LOOK = {DriftKind.UNEXPECTED.value: "high", DriftKind.LINGERING.value: "high", DriftKind.MISSING.value: "medium"}
Action = tuple[str, str | None]  # (removed | recreated | failed | refused | reported, why)


def reports_location(config: ElevationConfig) -> str:
    """Where reconcile reports go: the configured location, else `reconcile` under the audit reports."""
    configured = config.reconcile.reports_location
    if configured:
        return configured.rstrip("/")
    root = config.audit.reports_location
    return f"{root.rstrip('/')}/reconcile" if root.startswith("s3://") else str(Path(root) / "reconcile")


def run_folder(as_of: datetime) -> str:
    """The run's folder name: its logical time to the minute, UTC (an hourly run gets its own)."""
    return as_of.astimezone(UTC).strftime("%Y-%m-%dT%H%M")


# ---------------------------------------------------------------------------------------------------------------
# What the report lists (pure)


def row_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """A drift row as the report and `elevation drift --json` give it: the table's columns, by their names."""
    return {
        "drift_id": row["id"],
        "kind": row["kind"],
        "principal_type": row["principal_type"],
        "principal_id": row["principal_id"],
        "principal_name": row["principal_name"],
        "permission_set_name": row["permission_set_name"],
        "permission_set_arn": row["permission_set_arn"],
        "account_id": row["account_id"],
        "request_id": row["request_id"],
        "detail": row["detail"],
        "first_seen_at": row["first_seen_at"],
        "last_seen_at": row["last_seen_at"],
        "resolved_at": row["resolved_at"],
        "resolution": row["resolution"],
    }


def run_actions(summary: ReconcileSummary, recreate_missing: bool) -> dict[drift_store.Key, Action]:
    """What this run did about each item it found, by item key."""
    actions: dict[drift_store.Key, Action] = {}
    for item in summary.drift:
        if summary.mode == "report":
            action: Action = ("reported", "report mode: nothing is changed")
        elif item.removable and summary.refused:
            action = ("refused", "over the safety limit (reconcile.max_removals): nothing was removed")
        elif item.kind is DriftKind.MISSING and not recreate_missing:
            action = ("reported", "reconcile.recreate_missing is off: a missing assignment may be a deliberate "
                                  "removal")
        else:
            action = ("reported", None)
        actions[drift_store.key_of(item)] = action
    for item, reason in summary.failed:
        actions[drift_store.key_of(item)] = ("failed", reason)
    for item in summary.removed:
        actions[drift_store.key_of(item)] = ("removed", "removal confirmed by its deletion status")
    for item in summary.recreated:
        actions[drift_store.key_of(item)] = ("recreated", "creation confirmed by its creation status")
    return actions


def build_document(
    summary: ReconcileSummary,
    open_rows: Sequence[Mapping[str, Any]],
    fixed_rows: Sequence[Mapping[str, Any]],
    account_names: Mapping[str, str],
    *,
    recreate_missing: bool,
    max_removals: int,
    generated_at: datetime,
) -> dict[str, Any]:
    """Everything the page and the JSON say about one run (datetimes kept as such; the JSON writes them ISO 8601)."""
    actions = run_actions(summary, recreate_missing)

    def item(row: Mapping[str, Any]) -> dict[str, Any]:
        action, why = actions.get(drift_store._key_of_row(row), ("not seen by this run", None))
        fields = row_fields(row)
        fields["account_name"] = account_names.get(row["account_id"])
        fields["action"], fields["action_detail"] = action, why
        return fields

    kind_order = [kind.value for kind in DriftKind]  # unexpected, lingering, missing: what enforce removes first
    ordered = sorted(open_rows, key=lambda row: (kind_order.index(row["kind"]) if row["kind"] in kind_order
                                                  else len(kind_order), row["first_seen_at"], row["id"]))
    open_items = [item(row) for row in ordered]
    for fields in open_items:
        del fields["resolved_at"], fields["resolution"]
    by_kind = Counter(fields["kind"] for fields in open_items)
    calls = dict(sorted(summary.calls.items()))
    return {
        "generated_at": generated_at,
        "as_of": summary.as_of,
        "mode": summary.mode,
        "recreate_missing": recreate_missing,
        "max_removals": max_removals,
        "refused": summary.refused,
        "scope": {
            "accounts": summary.accounts,
            "permission_sets": summary.permission_sets,
            "pairs_listed": summary.pairs_listed,
            "assignments_seen": summary.assignments_seen,
        },
        "aws_calls": calls,
        "aws_calls_total": sum(calls.values()),
        "counts": {
            "open": len(open_items),
            "open_by_kind": {kind.value: by_kind[kind.value] for kind in DriftKind if by_kind[kind.value]},
            "found_this_run": len(summary.drift),
            "new_this_run": summary.opened,
            "no_longer_seen": summary.resolved,
            "removed": len(summary.removed),
            "recreated": len(summary.recreated),
            "failed": len(summary.failed),
        },
        "open": open_items,
        "fixed_this_run": [item(row) for row in fixed_rows],
    }


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")


def to_json(document: Any) -> bytes:
    return (json.dumps(document, default=_json_value, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def _open_for(since: datetime | None, now: datetime) -> str:
    """How long an item has been open, for people ("3 d 4 h"): a drift open for days must look like it."""
    if since is None:
        return ""
    minutes = max(0, int((now - since) / timedelta(minutes=1)))
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def render_page(document: Mapping[str, Any], *, json_href: str, permalink: str | None) -> bytes:
    """The run's HTML page; `permalink` (from latest.html) points at the run's own page."""
    environment = template_environment().overlay()  # the shared environment is cached: its filters are not ours to change
    environment.filters = {**environment.filters,
                           "open_for": lambda since: _open_for(since, document["generated_at"])}
    page = environment.get_template("reconcile_report.html.j2").render(
        doc=document, look=KIND_LOOK, json_href=json_href, permalink=permalink
    )
    return page.encode("utf-8")


# ---------------------------------------------------------------------------------------------------------------
# Reading and writing


def _fixed_rows(conn: sa.Connection, fixed: Iterable[Drift]) -> list[sa.RowMapping]:
    """The rows this run resolved by removing or re-creating their assignment (the latest row of each item)."""
    rows = []
    for item in fixed:
        principal_type, principal_id, arn, account, kind = drift_store.key_of(item)
        t = drift_table.c
        row = conn.execute(
            sa.select(drift_table)
            .where(t.principal_type == principal_type, t.principal_id == principal_id, t.permission_set_arn == arn,
                   t.account_id == account, t.kind == kind, t.resolved_at.is_not(None))
            .order_by(t.id.desc())
            .limit(1)
        ).mappings().first()
        if row is not None:
            rows.append(row)
    return rows


def write_reconcile_report(runtime: Runtime, summary: ReconcileSummary) -> str:
    """Write the run's page and JSON, then latest.html / latest.json; returns where the run's page is."""
    settings = runtime.config.reconcile
    with runtime.engine.connect() as conn:
        open_rows = drift_store.open_items(conn)
        fixed_rows = _fixed_rows(conn, [*summary.removed, *summary.recreated])
    accounts = {row["account_id"] for row in (*open_rows, *fixed_rows)}
    document = build_document(
        summary, open_rows, fixed_rows, _names_of(runtime, accounts),
        recreate_missing=settings.recreate_missing, max_removals=settings.max_removals, generated_at=runtime.now(),
    )
    data = to_json(document)
    location, folder = reports_location(runtime.config), run_folder(summary.as_of)
    publish = location.startswith("s3://")
    staging = tempfile.TemporaryDirectory(prefix="elevation-reconcile-") if publish else nullcontext(location)
    with staging as folder_path:
        root = Path(folder_path)
        # The run's own files first: latest.* is only replaced once what it copies exists.
        write_output(root / folder, RUN_JSON, data)
        page = write_output(root / folder, RUN_PAGE, render_page(document, json_href=RUN_JSON, permalink=None))
        write_output(root, LATEST_JSON, data)
        write_output(root, LATEST_PAGE,
                     render_page(document, json_href=LATEST_JSON, permalink=f"{folder}/{RUN_PAGE}"))
        if publish:
            publish_reports(root, location, runtime.config.audit.reports_conn_id)
            return f"{location}/{folder}/{RUN_PAGE}"
    return str(page)


def _names_of(runtime: Runtime, accounts: set[str]) -> dict[str, str]:
    if not accounts:
        return {}
    known = runtime.organization_accounts()
    return {account: known[account] for account in accounts if account in known}


def _latest_exists(config: ElevationConfig, location: str) -> bool:
    """Whether a reconcile report was ever written there (an S3 error other than "not found" counts as yes: a link
    that may not open is better than saying reconcile never ran when it did)."""
    if not location.startswith("s3://"):
        return (Path(location) / LATEST_JSON).is_file()
    from urllib.parse import urlparse

    from botocore.exceptions import BotoCoreError, ClientError

    target = urlparse(location)
    key = "/".join(filter(None, (target.path.strip("/"), LATEST_JSON)))
    try:
        session, endpoint, region = airflow_session(config.audit.reports_conn_id)
        session.client("s3", endpoint_url=endpoint, region_name=region).head_object(Bucket=target.netloc, Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        log.warning("cannot tell whether %s/%s exists: %s", location, LATEST_JSON, error)
    except BotoCoreError as error:
        log.warning("cannot tell whether %s/%s exists: %s", location, LATEST_JSON, error)
    return True


def latest_link(config: ElevationConfig) -> str:
    """The link from a night's index (`<reports>/<night>/index.html`) to latest.html: under audit.base_url or
    relative when the reconcile reports live under the audit reports (the default), else the location itself."""
    location = reports_location(config)
    root = config.audit.reports_location.rstrip("/")
    if not root.startswith("s3://") and not location.startswith("s3://"):
        root, location = str(Path(root).absolute()), str(Path(location).absolute())
    if location.startswith(f"{root}/"):
        below = location[len(root) + 1:]
        base = config.audit.base_url
        return f"{base.rstrip('/')}/{below}/{LATEST_PAGE}" if base else f"../{below}/{LATEST_PAGE}"
    if location.startswith("s3://"):
        return f"{location}/{LATEST_PAGE}"
    return (Path(location).absolute() / LATEST_PAGE).as_uri()


def drift_overview(runtime: Runtime) -> DriftOverview:
    """The nightly index's drift line: how many items are open now, by kind, and the latest reconcile report."""
    with runtime.engine.connect() as conn:
        rows = drift_store.open_items(conn)
    counts = Counter(row["kind"] for row in rows)
    location = reports_location(runtime.config)
    return DriftOverview(
        open_items=len(rows),
        by_kind={kind.value: counts[kind.value] for kind in DriftKind if counts[kind.value]},
        latest_report=latest_link(runtime.config) if _latest_exists(runtime.config, location) else None,
    )
