-- Roles for outside systems that file requests and relay decisions through the queue tables (PostgreSQL).
--
-- HOW TO RUN
--   After `elevation db upgrade` (schema revision 0004 or later: it adds elevation_request.submitted_by), as the
--   role that owns the elevation_* tables (the role the DAGs connect as; it ran the migrations) or a superuser.
--   Creating the two roles the first time also needs CREATEROLE. The script is idempotent: run it again after
--   every upgrade, it re-creates exactly the grants and policies below and nothing else. Prefer one transaction:
--     psql -v ON_ERROR_STOP=1 --single-transaction -f sql/postgresql_intake_role.sql
--   (Run statement by statement, it never opens more than it should in between: row-level security is switched on
--   before any policy exists, and a table with row-level security and no policy shows a writer nothing.)
--
-- THE TWO ROLES
--   elevation_intake: for anything that files requests (a ticketing tool, a chat workflow, SQL users). It may insert
--   PENDING requests (it cannot set status or approver, so every row starts pending) and read the status columns
--   of the requests IT submitted, and nothing else: no other writer's rows, no updates, no deletes, no actions, no
--   justification or ticket read back, no sessions, no event log.
--
--   elevation_decisions: for a trusted integration that relays decisions of people it has authenticated (an
--   approval button in the ticketing tool, a chat command): it may insert actions (approve / reject / cancel /
--   revoke) naming the actor, for ANY request, and requests that arrive already approved. To show an approver what
--   is being decided it reads the status columns of every request (not justifications or tickets). The actor is
--   taken on this integration's word, so give the role only to systems that authenticate their users; every
--   action is still checked against the policy (an approver named for the account, never the requester unless
--   allowed, only the requester cancels).
--
-- ONE LOGIN PER OUTSIDE SYSTEM (recommended)
--   A writer is identified by the role it is logged in as: elevation_request.submitted_by defaults to
--   current_user, writers cannot set it, and the policies below compare it with current_user. Give each system
--   its own login that inherits one of the two roles (INHERIT is the default; do not use NOINHERIT):
--     CREATE ROLE ticketing LOGIN PASSWORD '...' IN ROLE elevation_intake;
--     CREATE ROLE approvals_bot LOGIN PASSWORD '...' IN ROLE elevation_decisions;
--   Such a system sees only its own requests, and its client_request_id values cannot collide with another's.
--   The system must NOT run `SET ROLE elevation_intake`: current_user then becomes elevation_intake, and its rows
--   are filed as, and visible to, every session acting as elevation_intake. Logging in directly as
--   elevation_intake or elevation_decisions (set a password with ALTER ROLE ... PASSWORD '...') still works, and
--   is fine for a single system; systems sharing one login share one identity and see each other's requests.
--
-- THE OWNER
--   Row-level security does not apply to the tables' owner (nor to superusers or BYPASSRLS roles): the DAGs and
--   `elevation db upgrade` keep seeing and updating every row. This script sets NO FORCE ROW LEVEL SECURITY to
--   keep it that way. Any OTHER role that reads these tables (a reporting role, a DAG user that does not own the
--   tables) now sees no rows of elevation_request unless it gets its own policy or BYPASSRLS.

-- 1. The roles (created if absent; an existing role keeps its attributes and password). -------------------------
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'elevation_intake') THEN
        BEGIN
            CREATE ROLE elevation_intake LOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created meanwhile by a concurrent run of this script (roles are shared by the whole cluster)
        END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'elevation_decisions') THEN
        BEGIN
            CREATE ROLE elevation_decisions LOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$;

-- 2. Row-level security on the request queue: who sees and files which rows. -------------------------------------
-- Applies to every role but the owner (and superusers / BYPASSRLS roles). A role with no policy below sees no row
-- and inserts none, even if someone later grants it privileges on the table. There are no UPDATE or DELETE
-- policies: outside roles can never change or remove a row, whatever is granted.
ALTER TABLE elevation_request ENABLE ROW LEVEL SECURITY;
ALTER TABLE elevation_request NO FORCE ROW LEVEL SECURITY;  -- the owner (the DAGs) is never filtered

-- Intake writers read back only the requests they submitted. This also governs INSERT ... RETURNING: the new row
-- is checked against it, and passes, since submitted_by is the inserting role.
DROP POLICY IF EXISTS elevation_intake_reads_own_requests ON elevation_request;
CREATE POLICY elevation_intake_reads_own_requests ON elevation_request
    AS PERMISSIVE FOR SELECT TO elevation_intake
    USING (submitted_by = current_user);

-- The decisions integration relays approvals for any request, so it reads every request (only the columns
-- granted in section 3: no justification, no ticket).
DROP POLICY IF EXISTS elevation_decisions_reads_all_requests ON elevation_request;
CREATE POLICY elevation_decisions_reads_all_requests ON elevation_request
    AS PERMISSIVE FOR SELECT TO elevation_decisions
    USING (true);

-- Both file requests only in their own name. Writers are not granted the submitted_by column (section 3), so the
-- column default, current_user, always applies; this check refuses the row anyway ("new row violates row-level
-- security policy") should a broader grant ever let a writer name another role, or NULL.
DROP POLICY IF EXISTS elevation_writers_insert_as_themselves ON elevation_request;
CREATE POLICY elevation_writers_insert_as_themselves ON elevation_request
    AS PERMISSIVE FOR INSERT TO elevation_intake, elevation_decisions
    WITH CHECK (submitted_by = current_user);

-- 3. Privileges. Everything is revoked first so that a re-run leaves exactly these grants (revoking a table
-- privilege revokes its column privileges too). --------------------------------------------------------------------
REVOKE ALL ON elevation_request, elevation_action, elevation_session, elevation_event, elevation_heartbeat,
    elevation_audit, elevation_schema_version FROM elevation_intake, elevation_decisions;
REVOKE ALL ON SEQUENCE elevation_request_id_seq, elevation_action_id_seq, elevation_session_id_seq,
    elevation_event_id_seq FROM elevation_intake, elevation_decisions;

-- What both may read back about a request (rows limited by the policies above): its status and the writer that
-- filed it, not the reasons for asking (justification, ticket) nor the system's bookkeeping (claims, approver
-- named on insert, validation).
GRANT SELECT (id, client_request_id, requester, account_id, permission_set, principal_group, start_at,
              duration_minutes, status, created_at, reason_code, status_reason, decided_by, decided_at, end_at,
              granted_at, ended_at, revoke_requested_at, submitted_by)
    ON elevation_request TO elevation_intake, elevation_decisions;

-- Inserting a request draws its id from this sequence.
GRANT USAGE ON SEQUENCE elevation_request_id_seq TO elevation_intake, elevation_decisions;

-- Intake files pending requests: the contract's input columns, without status or approver (so status takes its
-- default, pending) and without submitted_by (so it takes its default, current_user).
GRANT INSERT (client_request_id, requester, account_id, permission_set, principal_group, start_at,
              duration_minutes, justification, ticket)
    ON elevation_request TO elevation_intake;

-- Decisions may also file a request already approved, naming its approver (validated like any approval; the
-- database refuses any status but pending or approved at insert). Still not submitted_by.
GRANT INSERT (client_request_id, requester, account_id, permission_set, principal_group, start_at,
              duration_minutes, justification, ticket, status, approver)
    ON elevation_request TO elevation_decisions;

-- Decisions relays approve / reject / cancel / revoke for any request, and reads back every action's outcome
-- (elevation_action has no row-level security: the decisions integration is trusted with all of them).
GRANT INSERT (request_id, action, actor, comment) ON elevation_action TO elevation_decisions;
GRANT SELECT (id, request_id, action, actor, created_at, processed_at, outcome, outcome_reason)
    ON elevation_action TO elevation_decisions;
GRANT USAGE ON SEQUENCE elevation_action_id_seq TO elevation_decisions;
