"""The sender delivers the outbox through the provider's SlackHook to a fake Slack over real HTTP: once each,
whatever Slack answers."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from elevation.config import ElevationConfig
from elevation.notify import sender as sender_module
from elevation.notify.install import install_id
from elevation.notify.sender import run_sender
from elevation.notify.settings import NotifySettings
from elevation.runtime import Runtime
from elevation.store import outbox
from elevation.store.database import create_engine_for_url
from elevation.store.migrations import upgrade
from elevation.store.tables import heartbeats
from elevation.store.tables import outbox as outbox_table

SETTINGS = {"enabled": True, "security_channel": "#security", "admin_channel": "#elevation-admin"}


def runtime_at(engine, moment, worker="sender-1", **settings):
    config = ElevationConfig(notifications=NotifySettings(**{**SETTINGS, **settings}))
    return Runtime(config=config, engine=engine, identity_center_factory=lambda runtime: None, as_of=moment,
                   actor="test", clock=lambda: moment, worker=worker)


def put(engine, *entries, at):
    with engine.begin() as conn:
        return outbox.enqueue(conn, list(entries), now=at)


def entry(key, recipient, text="hello", kind="session_active", request_id=1):
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    return outbox.Entry(key, kind, recipient, {"text": text, "blocks": blocks}, request_id)


def state(engine):
    with engine.connect() as conn:
        return {row["dedup_key"]: row for row in outbox.rows(conn)}


NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


def test_dms_by_email_and_channel_messages_are_sent_once_with_slack_ts_recorded(engine, slack):
    assert put(engine, entry("a", "alice@example.com", "to alice"), entry("b", "#security", "to security"),
               at=NOW) == 2
    assert put(engine, entry("a", "alice@example.com", "again"), at=NOW) == 0  # the key exists: nothing new
    summary = run_sender(runtime_at(engine, NOW))
    assert len(summary.sent) == 2
    rows = state(engine)
    assert {key: row["state"] for key, row in rows.items()} == {"a": "sent", "b": "sent"}
    dm = slack.messages_to("alice@example.com")
    assert [(m.text, m.blocks[0]["text"]["text"]) for m in dm] == [("to alice", "to alice")]
    assert rows["a"]["slack_ts"] == dm[0].ts and rows["a"]["slack_channel"] == dm[0].channel
    assert [m.text for m in slack.messages_to("#security")] == ["to security"]
    assert run_sender(runtime_at(engine, NOW + timedelta(minutes=1))).sent == []  # nothing twice
    assert len(slack.messages) == 2
    assert not [method for method, _ in slack.calls if method in ("auth.test", "conversations.history")]


def test_a_rate_limit_reschedules_at_retry_after_then_sends_once(engine, slack):
    put(engine, entry("a", "alice@example.com"), entry("b", "bob@example.com"), at=NOW)
    slack.fail_next(1, status=429, retry_after=120, method="chat.postMessage")
    summary = run_sender(runtime_at(engine, NOW))
    assert summary.sent == [] and summary.rate_limited_until
    rows = state(engine)
    for key in ("a", "b"):  # the rest of the run waits too
        assert rows[key]["state"] == "pending" and rows[key]["attempts"] == 0
        assert rows[key]["next_attempt_at"] == NOW + timedelta(seconds=120)
        assert rows[key]["claimed_by"] is None
    assert run_sender(runtime_at(engine, NOW + timedelta(seconds=60))).sent == []  # not due yet
    later = run_sender(runtime_at(engine, NOW + timedelta(seconds=121)))
    assert len(later.sent) == 2
    assert len(slack.messages_to("alice@example.com")) == 1 and len(slack.messages) == 2


def test_a_server_error_is_retried_later_with_backoff_and_counted(engine, slack):
    put(engine, entry("a", "#security"), at=NOW)
    slack.fail_next(2, status=500, method="chat.postMessage")
    run_sender(runtime_at(engine, NOW))
    row = state(engine)["a"]
    assert (row["state"], row["attempts"], row["next_attempt_at"]) == ("pending", 1, NOW + timedelta(seconds=30))
    assert "HTTP 500" in row["last_error"]
    run_sender(runtime_at(engine, NOW + timedelta(seconds=31)))
    row = state(engine)["a"]
    assert (row["attempts"], row["next_attempt_at"]) == (2, NOW + timedelta(seconds=31 + 60))
    run_sender(runtime_at(engine, NOW + timedelta(seconds=92)))
    row = state(engine)["a"]
    assert (row["state"], row["attempts"], row["last_error"]) == ("sent", 3, None)
    assert len(slack.messages) == 1


def test_after_max_attempts_a_message_fails_and_the_heartbeat_shows_it(engine, slack):
    put(engine, entry("a", "#security"), at=NOW)
    slack.fail_next(5, status=503)
    moment = NOW
    for _ in range(3):
        run_sender(runtime_at(engine, moment, max_attempts=3, retry_initial="1s"))
        moment += timedelta(minutes=1)
    row = state(engine)["a"]
    assert row["state"] == "failed" and row["attempts"] == 3 and "gave up after 3 attempts" in row["last_error"]
    with engine.connect() as conn:
        beat = conn.execute(sa.select(heartbeats).where(heartbeats.c.job == "elevation_notify")).mappings().one()
    assert beat["outcome"] == "stuck" and f"{row['id']}" in beat["detail"]


def test_a_network_error_is_retried_later(engine, slack):
    put(engine, entry("a", "#security"), at=NOW)
    slack.stop()  # nothing listens any more: connection refused
    summary = run_sender(runtime_at(engine, NOW))
    row = state(engine)["a"]
    assert summary.retrying == [row["id"]] and row["state"] == "pending" and "network error" in row["last_error"]


def test_someone_not_in_slack_is_skipped_with_a_warning_and_the_others_are_sent(engine, slack, caplog):
    put(engine, entry("a", "ghost@example.com"), entry("b", "alice@example.com"), entry("c", "ghost@example.com",
                                                                                         kind="session_ended"),
        at=NOW)
    with caplog.at_level("WARNING"):
        summary = run_sender(runtime_at(engine, NOW))
    rows = state(engine)
    assert {key: row["state"] for key, row in rows.items()} == {"a": "skipped", "b": "sent", "c": "skipped"}
    assert "users_not_found" in rows["a"]["last_error"] and len(summary.skipped) == 2
    assert "ghost@example.com is not a Slack user" in caplog.text
    assert sum(1 for method, args in slack.calls if method == "users.lookupByEmail"
               and args.get("email") == "ghost@example.com") == 1  # looked up once per run
    with engine.connect() as conn:
        beat = conn.execute(sa.select(heartbeats).where(heartbeats.c.job == "elevation_notify")).mappings().one()
    assert beat["outcome"] == "ok"  # skipped is not stuck


def test_a_channel_slack_does_not_know_fails_with_slacks_error(engine, slack):
    put(engine, entry("a", "#nowhere"), at=NOW)
    run_sender(runtime_at(engine, NOW))
    row = state(engine)["a"]
    assert row["state"] == "failed" and row["last_error"] == "Slack error channel_not_found"


def test_a_missing_connection_leaves_messages_pending_and_says_so_on_the_heartbeat(engine, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_SLACK_API_DEFAULT", raising=False)
    put(engine, entry("a", "#security"), at=NOW)
    summary = run_sender(runtime_at(engine, NOW, slack_conn_id="no_such_slack"))
    assert summary.error and "no_such_slack" in summary.error
    assert state(engine)["a"]["state"] == "pending"
    with engine.connect() as conn:
        beat = conn.execute(sa.select(heartbeats).where(heartbeats.c.job == "elevation_notify")).mappings().one()
    assert beat["outcome"] == "error"


def _crash_recording_the_nth_send(monkeypatch, n):
    """The worker dies after Slack answered the n-th post and before that answer was written down."""
    real_mark_sent = outbox.mark_sent
    calls = {"n": 0}

    def crash(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise RuntimeError("worker killed")
        return real_mark_sent(*args, **kwargs)

    monkeypatch.setattr(sender_module.outbox, "mark_sent", crash)
    return lambda: monkeypatch.setattr(sender_module.outbox, "mark_sent", real_mark_sent)


def _posted_then_killed(engine, slack, monkeypatch, text="revoke overdue", kind="revoke_overdue"):
    """One message to alice, posted to Slack by worker w1, which dies before writing the answer down."""
    slack.clock = lambda: NOW.timestamp()
    put(engine, entry("a", "alice@example.com", text, kind=kind), at=NOW)
    restore = _crash_recording_the_nth_send(monkeypatch, 1)
    with pytest.raises(RuntimeError):
        run_sender(runtime_at(engine, NOW, worker="w1"))
    restore()


def test_a_retried_task_resumes_its_own_claims_and_sends_each_message_exactly_once(engine, slack, monkeypatch):
    slack.clock = lambda: NOW.timestamp()  # Slack's clock agrees with the test's
    put(engine, *(entry(f"m{i}", "#security", f"message {i}") for i in range(4)), at=NOW)
    restore = _crash_recording_the_nth_send(monkeypatch, 3)
    with pytest.raises(RuntimeError):
        run_sender(runtime_at(engine, NOW, worker="elevation_notify/run1/notify"))
    restore()
    crashed = state(engine)["m2"]
    assert crashed["state"] == "pending" and crashed["sending_at"] == NOW  # Slack has it; the outbox does not know
    # Another sender cannot take the crashed task's rows while its lease runs ...
    assert run_sender(runtime_at(engine, NOW, worker="someone-else")).sent == []
    # ... its retry (same worker id) takes them back at once, finds message 2 in the channel by its metadata and
    # records it instead of posting it again.
    retry = run_sender(runtime_at(engine, NOW + timedelta(seconds=5), worker="elevation_notify/run1/notify"))
    assert len(retry.sent) == 2
    assert sorted(m.text for m in slack.messages) == ["message 0", "message 1", "message 2", "message 3"]
    rows = state(engine)
    assert {row["state"] for row in rows.values()} == {"sent"}
    [posted] = [m for m in slack.messages if m.text == "message 2"]
    assert (rows["m2"]["slack_channel"], rows["m2"]["slack_ts"]) == (posted.channel, posted.ts)
    assert posted.metadata == {"event_type": "elevation_outbox",
                               "event_payload": {"key": "m2", "install": install_id(engine)}}
    assert [method for method, _ in slack.calls].count("auth.test") == 1  # who our bot is, for the one look-up
    [looked] = [args for method, args in slack.calls if method == "conversations.history"]
    assert looked["channel"] == slack.channels["security"] and looked["include_all_metadata"] in ("1", "true", True)
    assert float(looked["oldest"]) == (NOW - sender_module.HISTORY_MARGIN).timestamp()
    assert sum(1 for method, args in slack.calls if method == "chat.postMessage" and args["text"] == "message 2") == 1


def test_a_dm_whose_answer_was_lost_is_found_in_the_persons_im_and_not_sent_twice(engine, slack, monkeypatch):
    _posted_then_killed(engine, slack, monkeypatch, "to alice", "session_active")
    assert len(run_sender(runtime_at(engine, NOW + timedelta(seconds=5), worker="w1")).sent) == 1
    [dm] = slack.messages_to("alice@example.com")
    row = state(engine)["a"]
    assert (row["state"], row["slack_channel"], row["slack_ts"]) == ("sent", dm.channel, dm.ts)
    alice = slack.user_id("alice@example.com")
    assert [args["users"] for method, args in slack.calls if method == "conversations.open"] == [alice]
    assert [args["channel"] for method, args in slack.calls if method == "conversations.history"] == [dm.channel]


def test_an_attempt_that_never_reached_slack_is_looked_for_then_posted_once(engine, slack):
    slack.clock = lambda: NOW.timestamp()
    put(engine, entry("a", "#security", "to security"), entry("b", "bob@example.com", "to bob"), at=NOW)
    slack.fail_next(2, status=500, method="chat.postMessage")  # Slack did not take either
    first = run_sender(runtime_at(engine, NOW))
    assert len(first.retrying) == 2 and slack.messages == []
    assert {row["sending_at"] for row in state(engine).values()} == {NOW}
    later = NOW + timedelta(seconds=31)
    assert len(run_sender(runtime_at(engine, later)).sent) == 2
    assert [m.text for m in slack.messages_to("#security")] == ["to security"]
    assert [m.text for m in slack.messages_to("bob@example.com")] == ["to bob"]
    looked = [args["channel"] for method, args in slack.calls if method == "conversations.history"]
    # bob's IM is looked in; #security's id is not known yet (nothing was ever posted there): posted again
    assert looked == [slack.user_id("bob@example.com").replace("U", "D", 1)]
    assert {row["sending_at"] for row in state(engine).values()} == {NOW}  # the first attempt's, kept


@pytest.mark.parametrize("refusal", ["missing_scope", "not_in_channel", "channel_not_found"])
def test_when_slack_cannot_be_searched_the_message_is_posted_again_rather_than_lost(engine, slack, monkeypatch,
                                                                                       caplog, refusal):
    """A duplicate is better than a lost security alert: without the history scopes (or refused the conversation)
    the sender cannot tell, so it posts again and says so."""
    _posted_then_killed(engine, slack, monkeypatch)
    slack.fail_next(1, method="conversations.history", error=refusal)
    with caplog.at_level("WARNING"):
        assert len(run_sender(runtime_at(engine, NOW + timedelta(seconds=5), worker="w1")).sent) == 1
    assert [m.text for m in slack.messages_to("alice@example.com")] == ["revoke overdue", "revoke overdue"]
    assert refusal in caplog.text and "a duplicate is better than a lost message" in caplog.text


def test_a_rate_limited_look_up_waits_instead_of_posting(engine, slack, monkeypatch):
    slack.clock = lambda: NOW.timestamp()
    put(engine, entry("a", "#security", "first"), entry("b", "#security", "second"), at=NOW)
    restore = _crash_recording_the_nth_send(monkeypatch, 2)
    with pytest.raises(RuntimeError):
        run_sender(runtime_at(engine, NOW, worker="w1"))
    restore()
    slack.fail_next(1, status=429, retry_after=60, method="conversations.history")
    summary = run_sender(runtime_at(engine, NOW + timedelta(seconds=5), worker="w1"))
    assert summary.sent == [] and summary.rate_limited_until
    assert state(engine)["b"]["next_attempt_at"] == NOW + timedelta(seconds=65)
    assert len(run_sender(runtime_at(engine, NOW + timedelta(seconds=66), worker="w1")).sent) == 1
    assert [m.text for m in slack.messages_to("#security")] == ["first", "second"]


def test_an_approval_message_is_closed_in_place_once_posted_and_not_before(engine, slack):
    """A `request_pending_closed` row updates its approval message with chat.update: it waits while that message
    is not posted yet, and is skipped when it never will be."""
    put(engine, entry("ask", "bob@example.com", "decide", kind="request_pending"), at=NOW + timedelta(minutes=10))
    put(engine, entry("gone", "#nowhere", "decide", kind="request_pending"), at=NOW)
    with engine.connect() as conn:
        ask, gone = (conn.execute(sa.select(outbox_table.c.id).where(outbox_table.c.dedup_key == key)).scalar()
                     for key in ("ask", "gone"))
    update = {"text": "Access request 1 was approved by carol", "blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": "approved by carol"}}]}
    put(engine, outbox.Entry("closed:ask", "request_pending_closed", "bob@example.com", {**update, "target": ask}, 1),
        outbox.Entry("closed:gone", "request_pending_closed", "#nowhere", {**update, "target": gone}, 1), at=NOW)
    first = run_sender(runtime_at(engine, NOW))
    rows = state(engine)
    assert rows["gone"]["state"] == "failed" and rows["closed:gone"]["state"] == "skipped"
    assert "never posted (failed)" in rows["closed:gone"]["last_error"]
    waiting = rows["closed:ask"]
    assert first.retrying == [waiting["id"]] and waiting["state"] == "pending" and waiting["attempts"] == 0
    assert waiting["next_attempt_at"] == NOW + timedelta(minutes=10)  # when its message is due
    assert not [method for method, _ in slack.calls if method == "chat.update"]
    run_sender(runtime_at(engine, NOW + timedelta(minutes=10)))
    rows = state(engine)
    [message] = slack.messages_to("bob@example.com")
    assert message.updated and message.text == "Access request 1 was approved by carol"
    assert (rows["closed:ask"]["state"], rows["closed:ask"]["slack_ts"]) == ("sent", rows["ask"]["slack_ts"])
    assert len(slack.messages) == 1  # an update, not a new message


def _two_senders_at_once(engine_url, slack):
    engines = [create_engine_for_url(engine_url) for _ in range(2)]
    put(engines[0], *(entry(f"m{i}", "#security", f"message {i}") for i in range(40)), at=NOW)
    barrier = threading.Barrier(2)
    results, errors = [], []

    def work(index):
        try:
            barrier.wait()
            results.append(run_sender(runtime_at(engines[index], NOW, worker=f"sender-{index}"), limit=7))
            while True:  # keep taking batches until nothing is due
                more = run_sender(runtime_at(engines[index], NOW, worker=f"sender-{index}"), limit=7)
                results.append(more)
                if not more.sent:
                    break
        except Exception as error:  # pragma: no cover - shown by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    texts = sorted(m.text for m in slack.messages)
    assert texts == sorted(f"message {i}" for i in range(40))  # each exactly once
    assert sum(len(result.sent) for result in results) == 40
    assert {row["state"] for row in state(engines[0]).values()} == {"sent"}


def test_two_senders_at_once_never_send_one_message_twice(queue_url, slack):
    _two_senders_at_once(queue_url, slack)


@pytest.mark.postgres
def test_two_senders_at_once_never_send_one_message_twice_on_postgresql(postgres_url, slack):
    upgrade(create_engine_for_url(postgres_url))
    _two_senders_at_once(postgres_url, slack)


@pytest.mark.postgres
def test_enqueue_ignores_a_key_it_has_on_postgresql(postgres_url):
    engine = create_engine_for_url(postgres_url)
    upgrade(engine)
    assert put(engine, entry("a", "#security"), entry("b", "#security"), at=NOW) == 2
    assert put(engine, entry("a", "#security", "other"), entry("c", "#security"), at=NOW) == 1
    assert outbox.payload(state(engine)["a"])["text"] == "hello"


def test_a_run_slower_than_its_lease_never_sends_what_another_sender_took_over(engine, slack):
    """Sender A's lease runs out while it is still sending (a slow Slack); sender B takes the rest over. A must not
    send those too."""
    put(engine, *(entry(f"m{i}", "#security", f"message {i}") for i in range(5)), at=NOW)
    clock = [NOW]
    slow = Runtime(config=runtime_at(engine, NOW).config, engine=engine, identity_center_factory=lambda r: None,
                   as_of=NOW, actor="test", clock=lambda: clock[0], worker="sender-A")
    calls = []

    class SlowSlack:
        def __init__(self, client):
            self.client = client

        def __getattr__(self, name):
            return getattr(self.client, name)

        def chat_postMessage(self, **kwargs):  # noqa: N802
            calls.append(kwargs["text"])
            if len(calls) == 2:  # meanwhile, the next sender finds A's lease expired
                run_sender(runtime_at(engine, clock[0], worker="sender-B"))
            answer = self.client.chat_postMessage(**kwargs)
            if len(calls) == 1:
                clock[0] = NOW + timedelta(minutes=6)  # the first message took longer than the lease
            return answer

    run_sender(slow, client_factory=lambda settings: SlowSlack(sender_module.slack_client(settings)))
    texts = sorted(m.text for m in slack.messages)
    assert texts == [f"message {i}" for i in range(5)]  # each exactly once
    assert {row["state"] for row in state(engine).values()} == {"sent"}


# --- what the look-up may take for ours, and what it does when Slack cannot answer it ------------------------


def _not_taken_first(engine, slack, *entries, worker="sender-1"):
    """A first attempt that Slack did not take (HTTP 500): the rows are marked `sending_at`, nothing was posted."""
    slack.clock = lambda: NOW.timestamp()
    put(engine, *entries, at=NOW)
    slack.fail_next(len(entries), status=500, method="chat.postMessage")
    assert len(run_sender(runtime_at(engine, NOW, worker=worker)).retrying) == len(entries)
    assert {row["sending_at"] for row in state(engine).values()} == {NOW}


def test_another_deployments_message_with_the_same_key_is_not_taken_for_ours(engine, slack, tmp_path):
    """Keys repeat across deployments (`digest:<night>`, `transition:<event id>:...`): a staging posting its digest
    to the channel production's first attempt went to must not make production record staging's message as its own
    (and never post its digest). Each installation's messages carry its own random id."""
    security = slack.channels["security"]
    staging = create_engine_for_url(f"sqlite:///{tmp_path}/staging.db")
    upgrade(staging)
    _not_taken_first(engine, slack, entry("digest:2026-11-28", security, "production digest: 3 critical findings"))
    put(staging, entry("digest:2026-11-28", security, "staging digest: nothing"), at=NOW)
    assert len(run_sender(runtime_at(staging, NOW + timedelta(seconds=10))).sent) == 1
    assert len(run_sender(runtime_at(engine, NOW + timedelta(seconds=31))).sent) == 1
    posted = {m.text: m for m in slack.messages_to("#security")}
    assert sorted(posted) == ["production digest: 3 critical findings", "staging digest: nothing"]
    row = state(engine)["digest:2026-11-28"]
    assert row["slack_ts"] == posted["production digest: 3 critical findings"].ts
    ours, theirs = (posted[text].metadata["event_payload"]["install"] for text in sorted(posted))
    assert ours and theirs and ours != theirs


def test_a_message_another_app_posted_with_our_key_and_install_id_is_not_ours(engine, slack):
    """Metadata anyone can write (another app, or a copy of this database restored into a staging with its own Slack
    app): only a message our own bot posted (its `bot_id`, from `auth.test`) is taken for ours."""
    from slack_sdk import WebClient

    security = slack.channels["security"]
    _not_taken_first(engine, slack, entry("a", security, "ours"))
    impostor = WebClient(token=slack.add_app("another-app").token, base_url=slack.base_url)
    impostor.chat_postMessage(channel=security, text="not ours", metadata={
        "event_type": "elevation_outbox", "event_payload": {"key": "a", "install": install_id(engine)}})
    assert len(run_sender(runtime_at(engine, NOW + timedelta(seconds=31))).sent) == 1
    [mine] = [m for m in slack.messages_to("#security") if m.text == "ours"]
    assert mine.app is None and state(engine)["a"]["slack_ts"] == mine.ts
    assert [method for method, _ in slack.calls].count("auth.test") == 1


def test_our_bot_is_asked_who_it_is_once_per_run_and_only_when_a_look_up_is_needed(engine, slack):
    security = slack.channels["security"]
    _not_taken_first(engine, slack, entry("a", security, "first"), entry("b", security, "second"))
    put(engine, entry("c", security, "third"), at=NOW)
    assert not [method for method, _ in slack.calls if method == "auth.test"]  # nothing was looked for yet
    assert len(run_sender(runtime_at(engine, NOW + timedelta(seconds=31))).sent) == 3
    assert [method for method, _ in slack.calls].count("auth.test") == 1  # two look-ups, one auth.test
    assert [method for method, _ in slack.calls].count("conversations.history") == 2


def test_a_sender_whose_lease_ran_out_mid_message_does_not_post_what_another_sender_took_over(engine, slack, caplog):
    """Sender A is slow before it posts (a slow lookup, longer than its lease); B takes the row over and delivers
    it. A must not post it too: the claim is renewed, and checked, just before the post."""
    put(engine, entry("a", "alice@example.com", "to alice"), at=NOW)

    def slow_client(settings):
        client = sender_module.slack_client(settings)
        lookup = client.users_lookupByEmail

        def slow_lookup(**kwargs):
            taken_over = run_sender(runtime_at(engine, NOW + timedelta(minutes=6), worker="sender-B"))
            assert len(taken_over.sent) == 1
            return lookup(**kwargs)

        client.users_lookupByEmail = slow_lookup
        return client

    with caplog.at_level("INFO"):
        summary = run_sender(runtime_at(engine, NOW, worker="sender-A"), client_factory=slow_client)
    assert summary.sent == [] and summary.failed == []
    assert [m.text for m in slack.messages_to("alice@example.com")] == ["to alice"]
    row = state(engine)["a"]
    assert row["state"] == "sent" and row["slack_ts"] == slack.messages[0].ts
    assert "another sender took it over" in caplog.text


def test_the_claim_is_renewed_and_the_first_attempt_kept_just_before_the_post(engine, slack):
    _not_taken_first(engine, slack, entry("a", "#security", "to security"))
    later = NOW + timedelta(seconds=31)
    seen = {}
    real = outbox.mark_sent

    def look(conn, row_id, worker, **kwargs):
        seen.update(conn.execute(sa.select(outbox_table).where(outbox_table.c.id == row_id)).mappings().one())
        return real(conn, row_id, worker, **kwargs)

    sender_module.outbox.mark_sent = look
    try:
        assert len(run_sender(runtime_at(engine, later)).sent) == 1
    finally:
        sender_module.outbox.mark_sent = real
    assert seen["sending_at"] == NOW and seen["claimed_until"] == later + sender_module.LEASE


@pytest.mark.parametrize(("method", "fault"), [
    ("conversations.history", {"status": 500}),
    ("conversations.history", {"error": "internal_error"}),
    ("conversations.history", {"status": 503}),
    ("auth.test", {"status": 500}),
    ("conversations.open", {"error": "service_unavailable"}),
])
def test_a_look_up_slack_cannot_answer_now_is_retried_later_instead_of_posting_again(engine, slack, monkeypatch,
                                                                                       method, fault):
    """A 5xx, a network error or Slack's `internal_error` says nothing about the earlier attempt: the row waits
    (with backoff, like any transient error) and is looked for again, instead of being posted a second time."""
    _posted_then_killed(engine, slack, monkeypatch)
    slack.fail_next(1, method=method, **fault)
    retry = run_sender(runtime_at(engine, NOW + timedelta(seconds=5), worker="w1"))
    row = state(engine)["a"]
    assert retry.retrying == [row["id"]] and retry.sent == []
    assert (row["state"], row["attempts"], row["next_attempt_at"]) == ("pending", 1, NOW + timedelta(seconds=35))
    assert "cannot look for an earlier attempt yet" in row["last_error"]
    assert len(slack.messages_to("alice@example.com")) == 1  # not posted again
    assert len(run_sender(runtime_at(engine, NOW + timedelta(seconds=36), worker="w1")).sent) == 1
    [dm] = slack.messages_to("alice@example.com")
    assert (state(engine)["a"]["state"], state(engine)["a"]["slack_ts"]) == ("sent", dm.ts)


def test_a_look_up_that_keeps_failing_is_posted_again_at_the_last_attempt_rather_than_lost(engine, slack, caplog):
    """Retrying the look-up must not turn into a lost alert: at the last attempt the message is posted again."""
    _not_taken_first(engine, slack, entry("a", slack.channels["security"], "revoke overdue", kind="revoke_overdue"))
    slack.fail_next(5, status=500, method="conversations.history")
    run_sender(runtime_at(engine, NOW + timedelta(seconds=31), max_attempts=3))
    assert state(engine)["a"]["attempts"] == 2 and slack.messages == []
    with caplog.at_level("WARNING"):
        assert len(run_sender(runtime_at(engine, NOW + timedelta(minutes=5), max_attempts=3)).sent) == 1
    assert [m.text for m in slack.messages] == ["revoke overdue"]
    assert "a duplicate is better than a lost message" in caplog.text


def test_a_row_taken_over_after_its_post_is_counted_by_the_sender_that_holds_it(engine, slack, monkeypatch):
    """Slack answered, but another sender took the row over meanwhile (a lease outlived): this run does not claim
    it sent the row; the holder records it."""
    put(engine, entry("a", "alice@example.com", "to alice"), at=NOW)
    real_mark_sent = outbox.mark_sent

    def taken_over(conn, row_id, worker, **kwargs):
        conn.execute(sa.update(outbox_table).where(outbox_table.c.id == row_id).values(claimed_by="sender-2"))
        return real_mark_sent(conn, row_id, worker, **kwargs)

    monkeypatch.setattr(outbox, "mark_sent", taken_over)
    summary = run_sender(runtime_at(engine, NOW))
    assert summary.sent == [] and len(slack.messages_to("alice@example.com")) == 1
    assert state(engine)["a"]["state"] == "pending" and state(engine)["a"]["claimed_by"] == "sender-2"
