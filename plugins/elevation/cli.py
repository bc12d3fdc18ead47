"""The `elevation` command: file requests, decide on them, read their state and the drift, migrate the database.

`db upgrade` also creates the grant task's Airflow pool where Airflow runs (a missing pool stalls grants silently).
Decisions are written as action rows and applied by the next `elevation_grants` run (every minute), through
the same checks as the table, the form and the UI. `audit-events` (incident response on raw CloudTrail files)
is registered by the audit package.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Sequence

import sqlalchemy as sa

DATABASE_ENV = "ELEVATION_DATABASE_URL"


def _engine(args: argparse.Namespace) -> sa.Engine:
    from elevation.store.database import create_engine_for_url, url_from_airflow_connection

    url = args.database_url or os.environ.get(DATABASE_ENV)
    if not url:
        from elevation.config import load_config

        url = url_from_airflow_connection(load_config().connections.database)
    return create_engine_for_url(url)


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    from elevation.store.migrations import current_revision, upgrade

    engine = _engine(args)
    upgrade(engine)
    print(f"schema at revision {current_revision(engine)}")
    if not args.no_pool:
        _ensure_pool()
    return 0


def _ensure_pool() -> None:
    """The grant task's pool, where Airflow runs; elsewhere a warning with the command that makes it by hand."""
    from elevation.pools import (
        CREATE_BY_HAND,
        IDENTITY_CENTER_POOL,
        PoolUnavailable,
        ensure_identity_center_pool,
    )

    try:
        created, slots = ensure_identity_center_pool()
    except PoolUnavailable as error:
        print(
            f"warning: Airflow pool {IDENTITY_CENTER_POOL} not created: {error}. Without it the grant task "
            f"waits forever; create it where Airflow runs: {CREATE_BY_HAND}",
            file=sys.stderr,
        )
        return
    if created:
        print(f"Airflow pool {IDENTITY_CENTER_POOL} created with {slots} slot(s)")
    else:
        print(f"Airflow pool {IDENTITY_CENTER_POOL} exists with {slots} slot(s), left as it is")


def _cmd_request(args: argparse.Namespace) -> int:
    from elevation.submission import submit

    request_id = submit(
        _engine(args),
        {
            "requester": args.requester,
            "account_id": args.account,
            "permission_set": args.permission_set,
            "principal_group": args.group,
            "start_at": args.start,
            "duration_minutes": args.duration,
            "justification": args.justification,
            "ticket": args.ticket,
            "client_request_id": args.client_request_id,
        },
    )
    print(f"request {request_id} filed; the next elevation_grants run checks it against policy")
    return 0


def _cmd_action(args: argparse.Namespace) -> int:
    from elevation.store import queue

    actor = args.actor or getpass.getuser()
    with _engine(args).begin() as conn:
        if queue.get_request(conn, args.request_id) is None:
            print(f"there is no request {args.request_id}", file=sys.stderr)
            return 2
        action_id = queue.insert_action(conn, args.request_id, args.command, actor, args.comment)
    print(
        f"action {action_id} ({args.command} request {args.request_id} as {actor}) recorded; "
        "the next elevation_grants run applies it"
    )
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from elevation.store import queue
    from elevation.store.tables import requests

    with _engine(args).connect() as conn:
        if args.request_id is not None:
            row = queue.get_request(conn, args.request_id)
            if row is None:
                print(f"there is no request {args.request_id}", file=sys.stderr)
                return 2
            print(
                json.dumps(
                    {key: str(value) if value is not None else None for key, value in row.items()},
                    ensure_ascii=False,
                    indent=2,
                )
            )
            return 0
        rows = conn.execute(sa.select(requests).order_by(requests.c.id.desc()).limit(args.limit)).mappings()
        for row in rows:
            print(
                f"{row['id']:>6}  {row['status']:<9}  {row['requester']:<20.20}  {row['account_id']:<12.12}  "
                f"{row['permission_set']:<24.24}  {row['status_reason'] or ''}"
            )
    return 0


DRIFT_COLUMNS = ("KIND", "PRINCIPAL", "PERMISSION SET", "ACCOUNT", "SINCE", "REQUEST", "DETAIL")


def _printable(value: object) -> str:
    """Text for a terminal: principal names come from the directory, and a name carrying escape sequences or
    newlines must not rewrite the admin's screen or the table."""
    text = "" if value is None else str(value)
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _when(moment: object) -> str:
    from datetime import UTC, datetime

    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if isinstance(moment, datetime) else ""


def _drift_line(row: dict[str, object], resolved: bool) -> tuple[str, ...]:
    name = row["principal_name"] or row["principal_id"]
    cells = (
        row["kind"],
        f"{str(row['principal_type']).lower()} {name}",
        row["permission_set_name"] or row["permission_set_arn"],
        row["account_id"],
        _when(row["first_seen_at"]),
        f"#{row['request_id']}" if row["request_id"] is not None else "-",
        row["detail"] or "",
    )
    if resolved:
        cells += (_when(row["resolved_at"]) or "open", row["resolution"] or "")
    return tuple(_printable(cell) for cell in cells)


def _fit(cell: str, width: int) -> str:
    return (cell if len(cell) <= width else cell[: width - 1] + "…").ljust(width)


def _cmd_drift(args: argparse.Namespace) -> int:
    from elevation.access.reconcile_report import row_fields, to_json
    from elevation.store import drift as drift_store
    from elevation.store.tables import drift

    with _engine(args).connect() as conn:
        if args.all:
            rows = list(conn.execute(sa.select(drift).order_by(drift.c.id)).mappings())
        else:
            rows = drift_store.open_items(conn)
    items = [row_fields(row) for row in rows]
    if args.json:
        sys.stdout.write(to_json(items).decode("utf-8"))
        return 0
    if not items:
        print("no drift items recorded" if args.all else "no open drift items")
        return 0
    header = DRIFT_COLUMNS + (("RESOLVED", "RESOLUTION") if args.all else ())
    lines = [header, *(_drift_line(item, args.all) for item in items)]
    *fixed, _ = range(len(header))  # every column but the last gets a width (at most 48); the last runs on
    widths = [min(max(len(line[column]) for line in lines), 48) for column in fixed]
    for line in lines:
        print("  ".join([*(_fit(line[column], widths[column]) for column in fixed), line[-1]]).rstrip())
    still_open = sum(1 for item in items if item["resolved_at"] is None)
    print(f"{still_open} open" + (f", {len(items) - still_open} resolved" if args.all else ""))
    return 0


DATABASE_URL_HELP = (
    f"SQLAlchemy URL of the queue database (or ${DATABASE_ENV}; "
    "default: the Airflow connection named in the configuration file)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elevation", description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help=DATABASE_URL_HELP)
    # Also accepted after the command (`elevation db upgrade --database-url X`); SUPPRESS keeps a value given
    # before the command from being reset by the subcommand's default.
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument("--database-url", default=argparse.SUPPRESS, help=DATABASE_URL_HELP)
    commands = parser.add_subparsers(dest="command", required=True)

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_upgrade = db_commands.add_parser(
        "upgrade", parents=[database],
        help="apply the migrations in sql/migrations; create the Airflow pool of the grant task",
    )
    db_upgrade.add_argument(
        "--no-pool", action="store_true",
        help="do not create the Airflow pool (e.g. when Airflow runs elsewhere)",
    )
    db_upgrade.set_defaults(handler=_cmd_db_upgrade)

    request = commands.add_parser("request", parents=[database], help="file a request for temporary access")
    request.add_argument("--requester", required=True)
    request.add_argument("--account", required=True)
    request.add_argument("--permission-set", required=True)
    request.add_argument("--duration", type=int, required=True, help="minutes")
    request.add_argument("--start", help="ISO 8601, UTC (default: now)")
    request.add_argument("--group", help="assign this group instead of the requester")
    request.add_argument("--justification")
    request.add_argument("--ticket")
    request.add_argument("--client-request-id")
    request.set_defaults(handler=_cmd_request)

    for name, text in (
        ("approve", "approve a pending request"),
        ("reject", "reject a pending request"),
        ("cancel", "cancel your request before it starts"),
        ("revoke", "end an active session early"),
    ):
        action = commands.add_parser(name, parents=[database], help=text)
        action.add_argument("request_id", type=int)
        action.add_argument("--as", dest="actor", help="your login (default: the OS user)")
        action.add_argument("--comment")
        action.set_defaults(handler=_cmd_action)

    status = commands.add_parser("status", parents=[database], help="show one request, or the latest ones")
    status.add_argument("request_id", type=int, nargs="?")
    status.add_argument("--limit", type=int, default=20)
    status.set_defaults(handler=_cmd_status)

    drift = commands.add_parser(
        "drift", parents=[database],
        help="the open drift items reconcile recorded: assignments that differ from what the system recorded",
    )
    drift.add_argument("--json", action="store_true", help="machine-readable: one JSON object per item")
    drift.add_argument("--all", action="store_true", help="include resolved items, with when and how")
    drift.set_defaults(handler=_cmd_drift)

    from elevation.audit import command as audit_command

    audit_command.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (ValueError, RuntimeError) as error:
        print(f"elevation: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
