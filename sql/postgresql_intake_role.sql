-- The role for outside systems (ticketing tools, chat workflows, SQL users) that file requests.
-- It may insert requests and actions (approve / reject / cancel / revoke) and read what it needs to follow them,
-- and nothing else: it cannot change a request's status, delete anything, or read the event log.
-- Run as a database owner after `elevation db upgrade`; then: ALTER ROLE elevation_intake PASSWORD '...';
-- A request inserted with status 'approved' is validated like any other (approver checked against policy).

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'elevation_intake') THEN
        CREATE ROLE elevation_intake LOGIN;
    END IF;
END
$$;

REVOKE ALL ON elevation_request, elevation_action, elevation_session, elevation_event, elevation_heartbeat,
    elevation_audit
    FROM elevation_intake;

GRANT INSERT (client_request_id, requester, account_id, permission_set, principal_group, start_at,
              duration_minutes, justification, ticket, status, approver)
    ON elevation_request TO elevation_intake;
GRANT SELECT (id, client_request_id, requester, account_id, permission_set, principal_group, start_at,
              duration_minutes, justification, ticket, status, approver, created_at, reason_code,
              status_reason, decided_by, decided_at, end_at, granted_at, ended_at, revoke_requested_at)
    ON elevation_request TO elevation_intake;
GRANT USAGE ON SEQUENCE elevation_request_id_seq TO elevation_intake;

GRANT INSERT (request_id, action, actor, comment) ON elevation_action TO elevation_intake;
GRANT SELECT (id, request_id, action, actor, created_at, processed_at, outcome, outcome_reason)
    ON elevation_action TO elevation_intake;
GRANT USAGE ON SEQUENCE elevation_action_id_seq TO elevation_intake;
