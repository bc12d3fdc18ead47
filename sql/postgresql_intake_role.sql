-- Roles for outside systems. Run as a database owner after `elevation db upgrade`, then set passwords:
--   ALTER ROLE elevation_intake PASSWORD '...';  ALTER ROLE elevation_decisions PASSWORD '...';
--
-- elevation_intake: for anything that files requests (a ticketing tool, a chat workflow, SQL users). It may insert
-- PENDING requests (it cannot set status or approver, so every row starts pending) and read their status, and
-- nothing else: no updates, no deletes, no actions, no justification or ticket of other rows, no event log.
--
-- elevation_decisions: for a trusted integration that relays decisions of people it has authenticated (an approval
-- button in the ticketing tool, a chat command): it may insert actions (approve / reject / cancel / revoke) naming
-- the actor, and requests that arrive already approved. The actor is taken on this integration's word, so give the
-- role only to systems that authenticate their users; every action is still checked against the policy (an
-- approver named for the account, never the requester unless allowed, only the requester cancels).

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'elevation_intake') THEN
        CREATE ROLE elevation_intake LOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'elevation_decisions') THEN
        CREATE ROLE elevation_decisions LOGIN;
    END IF;
END
$$;

REVOKE ALL ON elevation_request, elevation_action, elevation_session, elevation_event, elevation_heartbeat,
    elevation_audit FROM elevation_intake, elevation_decisions;

-- What both may read back about a request: its status, not other people's reasons for asking.
GRANT SELECT (id, client_request_id, requester, account_id, permission_set, principal_group, start_at,
              duration_minutes, status, created_at, reason_code, status_reason, decided_by, decided_at, end_at,
              granted_at, ended_at, revoke_requested_at)
    ON elevation_request TO elevation_intake, elevation_decisions;
GRANT USAGE ON SEQUENCE elevation_request_id_seq TO elevation_intake, elevation_decisions;

GRANT INSERT (client_request_id, requester, account_id, permission_set, principal_group, start_at,
              duration_minutes, justification, ticket)
    ON elevation_request TO elevation_intake;

GRANT INSERT (client_request_id, requester, account_id, permission_set, principal_group, start_at,
              duration_minutes, justification, ticket, status, approver)
    ON elevation_request TO elevation_decisions;
GRANT INSERT (request_id, action, actor, comment) ON elevation_action TO elevation_decisions;
GRANT SELECT (id, request_id, action, actor, created_at, processed_at, outcome, outcome_reason)
    ON elevation_action TO elevation_decisions;
GRANT USAGE ON SEQUENCE elevation_action_id_seq TO elevation_decisions;
