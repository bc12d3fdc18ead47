"""The outside roles on PostgreSQL (sql/postgresql_intake_role.sql): what each may do, and that an outside system
sees only the requests it filed itself.

As in a real deployment, the tables belong to an ordinary role (no superuser, no BYPASSRLS) that runs the
migrations and the DAGs, and each outside system logs in as its own role inheriting `elevation_intake` or
`elevation_decisions` (`CREATE ROLE ticketing LOGIN IN ROLE elevation_intake`), which is how a DBA sets it up.
Roles belong to the whole server, so the roles a test creates carry a unique suffix and are dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from conftest import POSTGRES_ENV
from elevation.lifecycle import Status
from elevation.resources import data_path
from elevation.store import queue
from elevation.store.database import create_engine_for_url
from elevation.store.migrations import upgrade

ROLES_SQL = data_path("sql") / "postgresql_intake_role.sql"
FILE_REQUEST = (
    "INSERT INTO elevation_request (requester, account_id, permission_set, duration_minutes, justification, "
    "ticket, client_request_id) VALUES (:requester, :account, 'ReadOnlyAccess', 60, 'private reason', 'INC-1', "
    ":key) RETURNING id"
)
STATUS_COLUMNS = "id, client_request_id, requester, account_id, permission_set, status, submitted_by"


@dataclass
class Login:
    role: str
    engine: sa.Engine


@dataclass
class Deployment:
    """A migrated test database owned by an ordinary role, with the roles script applied by that owner."""

    admin_url: sa.URL  # the test database, as the superuser the tests connect as
    owner: Login
    create_role: Callable[[str, str], str]
    logins: list[Login] = field(default_factory=list)

    def login(self, name: str, member_of: str) -> Login:
        """A login role for one outside system, inheriting `member_of`, and an engine logged in as it."""
        role = self.create_role(name, f"LOGIN IN ROLE {member_of}")
        engine = sa.create_engine(self.admin_url.set(username=role), poolclass=NullPool)
        self.logins.append(Login(role, engine))
        return self.logins[-1]

    def apply_roles_sql(self, engine: sa.Engine) -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql(ROLES_SQL.read_text())


@pytest.fixture
def server_roles() -> Iterator[Callable[[str, str], str]]:
    """Create a server role `<name>_<suffix>` with options; all are dropped at the end.

    Requested before `postgres_url` (see `deployment`), so it is torn down after the test database is dropped:
    by then nothing in the database is owned by, or granted to, these roles.
    """
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        if os.environ.get("CI"):
            pytest.fail(f"{POSTGRES_ENV} is not set; CI must run the PostgreSQL tests")
        pytest.skip(f"{POSTGRES_ENV} is not set: PostgreSQL tests need a server")
    suffix = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    created: list[str] = []

    def create(name: str, options: str) -> str:
        role = f"{name}_{suffix}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE ROLE "{role}" {options}')
        created.append(role)
        return role

    yield create
    with admin.connect() as conn:
        for role in reversed(created):
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
    admin.dispose()


@pytest.fixture
def deployment(server_roles: Callable[[str, str], str], postgres_url: str) -> Iterator[Deployment]:
    admin_url = sa.engine.make_url(postgres_url)
    # CREATEROLE only so that the script can create elevation_intake / elevation_decisions on a fresh server.
    owner_role = server_roles("elevation_owner", "LOGIN CREATEROLE NOSUPERUSER NOBYPASSRLS")
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{admin_url.database}" OWNER TO "{owner_role}"')
    admin.dispose()
    owner = Login(owner_role, create_engine_for_url(admin_url.set(username=owner_role).render_as_string(False)))
    upgrade(owner.engine)
    deployed = Deployment(admin_url=admin_url, owner=owner, create_role=server_roles)
    deployed.apply_roles_sql(owner.engine)
    yield deployed
    for login in [owner, *deployed.logins]:
        login.engine.dispose()


def file_request(login: Login, requester: str, key: str | None = None, account: str = "111122223333") -> int:
    with login.engine.begin() as conn:
        return conn.execute(sa.text(FILE_REQUEST), {"requester": requester, "account": account, "key": key}).scalar_one()


def visible(login: Login, columns: str = STATUS_COLUMNS) -> list[tuple]:
    with login.engine.connect() as conn:
        return [tuple(row) for row in conn.exec_driver_sql(f"SELECT {columns} FROM elevation_request ORDER BY id")]


def refused(login: Login, statement: str, match: str = "permission denied", **params: object) -> None:
    with pytest.raises(sa.exc.DBAPIError, match=match), login.engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def test_each_intake_system_sees_only_the_requests_it_filed(deployment):
    ticketing = deployment.login("ticketing", "elevation_intake")
    chatops = deployment.login("chatops", "elevation_intake")
    mine = file_request(ticketing, "alice", key="REQ-1", account="111122223333")
    theirs = file_request(chatops, "bob", key="REQ-1", account="444455556666")  # same key: no collision

    assert visible(ticketing) == [(mine, "REQ-1", "alice", "111122223333", "ReadOnlyAccess", "pending", ticketing.role)]
    assert visible(chatops) == [(theirs, "REQ-1", "bob", "444455556666", "ReadOnlyAccess", "pending", chatops.role)]
    with ticketing.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT requester, account_id FROM elevation_request WHERE id = :id"),
                            {"id": theirs}).all() == []
        assert conn.exec_driver_sql("SELECT count(*) FROM elevation_request WHERE requester = 'bob' "
                                    "OR account_id = '444455556666'").scalar() == 0
    # Turning row security off does not show more rows: the query is refused instead.
    refused(ticketing, "SET LOCAL row_security = off; SELECT id FROM elevation_request",
            match="row-level security")


def test_an_intake_system_reads_back_its_new_row_with_returning(deployment):
    ticketing = deployment.login("ticketing", "elevation_intake")
    with ticketing.engine.begin() as conn:
        row = conn.execute(sa.text(
            "INSERT INTO elevation_request (requester, account_id, permission_set, duration_minutes, justification) "
            "VALUES ('alice', '111122223333', 'ReadOnlyAccess', 30, 'why') RETURNING id, status, submitted_by"
        )).one()
    assert row.status == "pending" and row.submitted_by == ticketing.role
    # RETURNING is a read: columns the role may not read stay unreadable.
    refused(ticketing, "INSERT INTO elevation_request (requester, account_id, permission_set, duration_minutes) "
                       "VALUES ('alice', '111122223333', 'X', 30) RETURNING justification")


def test_a_writer_cannot_file_a_request_in_another_writers_name(deployment):
    ticketing = deployment.login("ticketing", "elevation_intake")
    chatops = deployment.login("chatops", "elevation_intake")
    forge = ("INSERT INTO elevation_request (requester, account_id, permission_set, duration_minutes, "
             "submitted_by) VALUES ('mallory', '111122223333', 'AdministratorAccess', 60, :who)")
    refused(ticketing, forge, who=chatops.role)  # the column is not granted: the default, current_user, applies
    refused(ticketing, f'SET ROLE "{chatops.role}"')  # nor can it act as the other system

    # Should a DBA ever grant the column (or the whole table), row security still refuses another name, or none.
    with deployment.owner.engine.begin() as conn:
        conn.exec_driver_sql("GRANT INSERT (submitted_by) ON elevation_request TO elevation_intake")
    refused(ticketing, forge, match="row-level security policy", who=chatops.role)
    refused(ticketing, forge, match="row-level security policy", who=None)
    refused(ticketing, forge, match="row-level security policy", who="elevation_intake")
    with ticketing.engine.begin() as conn:
        conn.execute(sa.text(forge), {"who": ticketing.role})
    assert visible(chatops) == []


def test_the_owner_sees_and_moves_every_request_whoever_filed_it(deployment):
    owner = deployment.owner
    with owner.engine.connect() as conn:
        rolsuper, rolbypassrls = conn.exec_driver_sql(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user").one()
        rls, forced, table_owner = conn.exec_driver_sql(
            "SELECT relrowsecurity, relforcerowsecurity, pg_get_userbyid(relowner) FROM pg_class "
            "WHERE relname = 'elevation_request'").one()
    assert (rolsuper, rolbypassrls) == (False, False)  # an ordinary role: only ownership exempts it
    assert (rls, forced, table_owner) == (True, False, owner.role)

    ticketing = deployment.login("ticketing", "elevation_intake")
    approvals = deployment.login("approvals", "elevation_decisions")
    first = file_request(ticketing, "alice")
    second = file_request(approvals, "bob")
    with owner.engine.begin() as conn:
        third = queue.insert_request(conn, requester="carol", account_id="111122223333",
                                     permission_set="ReadOnlyAccess", duration_minutes=30, justification="cli")
    with owner.engine.begin() as conn:
        rows = queue.requests_in(conn, [Status.PENDING])
        assert [(row["id"], row["submitted_by"], row["justification"]) for row in rows] == [
            (first, ticketing.role, "private reason"),
            (second, approvals.role, "private reason"),
            (third, owner.role, "cli"),
        ]
        queue.update_request(conn, first, validated_at=datetime.now(UTC))
    with owner.engine.connect() as conn:
        assert queue.get_request(conn, first)["validated_at"] is not None


def test_the_decisions_integration_relays_approvals_for_any_request(deployment):
    ticketing = deployment.login("ticketing", "elevation_intake")
    approvals = deployment.login("approvals", "elevation_decisions")
    filed = file_request(ticketing, "alice", key="T-9")

    # It sees every request's status columns (to show an approver what is being decided)...
    assert visible(approvals) == [(filed, "T-9", "alice", "111122223333", "ReadOnlyAccess", "pending", ticketing.role)]
    # ...not the reasons for asking, nor the system's bookkeeping.
    for column in ("justification", "ticket", "approver", "claimed_by", "validated_at"):
        refused(approvals, f"SELECT {column} FROM elevation_request")

    with approvals.engine.begin() as conn:
        action = conn.execute(sa.text(
            "INSERT INTO elevation_action (request_id, action, actor, comment) "
            "VALUES (:id, 'approve', 'bob', 'ok') RETURNING id"), {"id": filed}).scalar_one()
        assert conn.execute(sa.text("SELECT request_id, action, actor, outcome FROM elevation_action WHERE id = :id"),
                            {"id": action}).one() == (filed, "approve", "bob", None)
        approved = conn.execute(sa.text(
            "INSERT INTO elevation_request (requester, account_id, permission_set, duration_minutes, justification, "
            "status, approver) VALUES ('dave', '111122223333', 'ReadOnlyAccess', 60, 'j', 'approved', 'bob') "
            "RETURNING id, status, submitted_by")).one()
    assert (approved.status, approved.submitted_by) == ("approved", approvals.role)
    assert visible(ticketing) == [(filed, "T-9", "alice", "111122223333", "ReadOnlyAccess", "pending", ticketing.role)]

    refused(approvals, "INSERT INTO elevation_request (requester, account_id, permission_set, duration_minutes, "
                       "status) VALUES ('dave', '111122223333', 'X', 60, 'active')", match="pending or approved")
    refused(approvals, "INSERT INTO elevation_request (requester, account_id, permission_set, duration_minutes, "
                       "submitted_by) VALUES ('dave', '111122223333', 'X', 60, :who)", who=ticketing.role)
    for statement in ("UPDATE elevation_request SET status = 'approved'", "DELETE FROM elevation_request",
                      "UPDATE elevation_action SET outcome = 'applied'", "DELETE FROM elevation_action",
                      "SELECT * FROM elevation_event", "SELECT * FROM elevation_session",
                      "SELECT * FROM elevation_heartbeat", "SELECT * FROM elevation_audit",
                      "SELECT * FROM elevation_schema_version"):
        refused(approvals, statement)


def test_a_session_that_sets_role_elevation_intake_files_as_elevation_intake(deployment):
    """Why a system should log in as its own role and not `SET ROLE elevation_intake`: the row's writer is the
    current role, so after SET ROLE the row belongs to elevation_intake, shared with every session acting as it."""
    ticketing = deployment.login("ticketing", "elevation_intake")
    own = file_request(ticketing, "alice")
    with ticketing.engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL ROLE elevation_intake")
        shared = conn.execute(sa.text(FILE_REQUEST), {"requester": "bob", "account": "111122223333",
                                                      "key": None}).scalar_one()
        assert conn.exec_driver_sql("SELECT id, submitted_by FROM elevation_request").all() == [
            (shared, "elevation_intake")]
    assert [row[0] for row in visible(ticketing)] == [own]


def privileges_and_policies(engine: sa.Engine) -> dict[str, list[tuple]]:
    """Everything the script decides: grants to the two roles (table, column, sequence), policies, RLS flags."""
    queries = {
        "relations": "SELECT c.relname, r.rolname, a.privilege_type FROM pg_class c, aclexplode(c.relacl) a "
                     "JOIN pg_roles r ON r.oid = a.grantee "
                     "WHERE r.rolname IN ('elevation_intake', 'elevation_decisions') ORDER BY 1, 2, 3",
        "columns": "SELECT table_name, column_name, grantee, privilege_type FROM information_schema.column_privileges "
                   "WHERE grantee IN ('elevation_intake', 'elevation_decisions') ORDER BY 1, 2, 3, 4",
        "policies": "SELECT policyname, permissive, roles::text, cmd, qual, with_check FROM pg_policies "
                    "WHERE tablename = 'elevation_request' ORDER BY 1",
        "row_security": "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
                        "WHERE relname LIKE 'elevation%' AND relkind = 'r' ORDER BY 1",
    }
    with engine.connect() as conn:
        return {name: [tuple(row) for row in conn.execute(sa.text(sql))] for name, sql in queries.items()}


def test_running_the_script_again_leaves_exactly_the_same_grants_and_policies(deployment):
    superuser = sa.create_engine(deployment.admin_url, poolclass=NullPool)
    first = privileges_and_policies(superuser)
    assert [policy[0] for policy in first["policies"]] == [
        "elevation_decisions_reads_all_requests", "elevation_intake_reads_own_requests",
        "elevation_writers_insert_as_themselves"]
    assert [table for table, rls, _ in first["row_security"] if rls] == ["elevation_request"]
    inserts = {(column, grantee) for table, column, grantee, kind in first["columns"]
               if table == "elevation_request" and kind == "INSERT"}
    assert ("status", "elevation_intake") not in inserts and ("status", "elevation_decisions") in inserts
    assert not {column for column, _ in inserts} & {"submitted_by", "id", "created_at", "validated_at"}

    deployment.apply_roles_sql(deployment.owner.engine)  # as the owner, as the header says
    deployment.apply_roles_sql(superuser)  # and as a DBA (superuser)
    assert privileges_and_policies(superuser) == first
    superuser.dispose()

    ticketing = deployment.login("ticketing", "elevation_intake")
    chatops = deployment.login("chatops", "elevation_intake")
    mine = file_request(ticketing, "alice")
    file_request(chatops, "bob")
    assert [row[0] for row in visible(ticketing)] == [mine]


def test_the_outside_roles_may_do_what_they_are_for_and_nothing_else(postgres_url):
    """The group roles used directly (SET ROLE by a superuser, or a login as elevation_intake itself)."""
    engine = create_engine_for_url(postgres_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(ROLES_SQL.read_text())
    insert = ("INSERT INTO elevation_request (requester, account_id, permission_set, duration_minutes, "
              "justification) VALUES ('alice', '111122223333', 'X', 60, 'j')")
    with engine.begin() as conn:
        conn.exec_driver_sql("SET ROLE elevation_intake")
        conn.exec_driver_sql(insert)
        assert conn.execute(sa.text("SELECT status, status_reason FROM elevation_request")).one() == ("pending", None)
    with engine.begin() as conn:
        conn.exec_driver_sql("SET ROLE elevation_decisions")
        conn.exec_driver_sql("INSERT INTO elevation_action (request_id, action, actor) VALUES (1, 'approve', 'bob')")
        conn.exec_driver_sql(
            "INSERT INTO elevation_request (requester, account_id, permission_set, duration_minutes, status, "
            "approver) VALUES ('alice', '111122223333', 'X', 60, 'approved', 'bob')"
        )
    forbidden = {
        "elevation_intake": [
            "INSERT INTO elevation_request (requester, account_id, permission_set, duration_minutes, status, "
            "approver) VALUES ('a', '111122223333', 'X', 60, 'approved', 'bob')",
            "INSERT INTO elevation_action (request_id, action, actor) VALUES (1, 'approve', 'bob')",
            "SELECT justification FROM elevation_request",
        ],
        "elevation_decisions": ["SELECT * FROM elevation_event", "UPDATE elevation_action SET outcome = 'applied'"],
    }
    common = [
        "UPDATE elevation_request SET status = 'active'",
        "DELETE FROM elevation_request",
        "SELECT claimed_by FROM elevation_request",
        "SELECT * FROM elevation_session",
        "INSERT INTO elevation_request (requester, account_id, permission_set, duration_minutes, granted_at) "
        "VALUES ('a', '1', 'p', 1, now())",
    ]
    for role, statements in forbidden.items():
        for statement in statements + common:
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"), engine.begin() as conn:
                conn.exec_driver_sql(f"SET ROLE {role}")
                conn.exec_driver_sql(statement)
