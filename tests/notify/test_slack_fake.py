"""The fake Slack speaks the Web API as slack_sdk expects it: the real client, over real HTTP."""

from __future__ import annotations

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from elevation.devkit.slack_fake import SlackFake


@pytest.fixture
def fake():
    with SlackFake() as running:
        yield running


def test_the_real_client_looks_people_up_posts_dms_and_channel_messages_and_updates_them(fake):
    alice = fake.add_user("alice@example.com", "Alice")
    security = fake.add_channel("security")
    client = WebClient(token=fake.token, base_url=fake.base_url)

    assert client.auth_test()["team_id"] == fake.team
    assert client.users_lookupByEmail(email="ALICE@example.com")["user"]["id"] == alice
    assert client.users_info(user=alice)["user"]["profile"]["email"] == "alice@example.com"
    dm = client.conversations_open(users=alice)["channel"]["id"]
    posted = client.chat_postMessage(channel=alice, text="hello", blocks=[{"type": "section",
                                                                          "text": {"type": "mrkdwn", "text": "hi"}}])
    assert posted["channel"] == dm and posted["ts"]
    to_channel = client.chat_postMessage(channel="#security", text="to the team")
    assert to_channel["channel"] == security
    client.chat_update(channel=dm, ts=posted["ts"], text="hello again")

    assert [(m.channel, m.text, m.user) for m in fake.messages] == [
        (dm, "hello again", alice), (security, "to the team", None)]
    assert fake.messages[0].blocks[0]["text"]["text"] == "hi" and fake.messages[0].updated
    assert [m.text for m in fake.messages_to("alice@example.com")] == ["hello again"]
    assert [m.text for m in fake.messages_to("#security")] == ["to the team"]
    # Form bodies (the client's default for some methods) and JSON bodies both arrive.
    assert client.api_call("chat.postMessage", data={"channel": security, "text": "form"})["ok"]
    assert client.api_call("chat.postMessage", json={"channel": security, "text": "json"})["ok"]


def test_errors_come_back_as_slack_gives_them(fake):
    client = WebClient(token=fake.token, base_url=fake.base_url)
    with pytest.raises(SlackApiError) as unknown:
        client.users_lookupByEmail(email="nobody@example.com")
    assert unknown.value.response["error"] == "users_not_found"
    with pytest.raises(SlackApiError) as bad_token:
        WebClient(token="xoxb-wrong", base_url=fake.base_url).auth_test()
    assert bad_token.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as nowhere:
        client.chat_postMessage(channel="#nowhere", text="x")
    assert nowhere.value.response["error"] == "channel_not_found"


def test_injected_rate_limits_and_server_errors(fake):
    fake.add_channel("security")
    client = WebClient(token=fake.token, base_url=fake.base_url)
    fake.fail_next(1, status=429, retry_after=7)
    with pytest.raises(SlackApiError) as limited:
        client.chat_postMessage(channel="#security", text="x")
    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["Retry-After"] == "7"
    fake.fail_next(1, status=500, method="chat.postMessage")
    assert client.auth_test()["ok"]  # another method is not affected
    with pytest.raises(SlackApiError) as broken:
        client.chat_postMessage(channel="#security", text="x")
    assert broken.value.response.status_code == 500
    assert client.chat_postMessage(channel="#security", text="x")["ok"]
    assert len(fake.messages) == 1


def test_history_reads_a_conversation_newest_first_with_metadata_pages_and_a_window(fake):
    """conversations.history as Slack answers it, parsed by the real client: ids only, `oldest` exclusive, pages
    through `response_metadata.next_cursor`, metadata only when `include_all_metadata` asks for it."""
    alice = fake.add_user("alice@example.com")
    security = fake.add_channel("security")
    clock = [1_800_000_000.0]
    fake.clock = lambda: clock[0]
    client = WebClient(token=fake.token, base_url=fake.base_url)
    posted = []
    for index in range(5):
        clock[0] += 10
        metadata = {"event_type": "elevation_outbox", "event_payload": {"key": f"k{index}"}}
        posted.append(client.chat_postMessage(channel="#security", text=f"m{index}", metadata=metadata)["ts"])
    dm = client.chat_postMessage(channel=alice, text="to alice")
    assert posted == [f"{1_800_000_000 + 10 * i:.6f}" for i in range(1, 6)]

    first = client.conversations_history(channel=security, oldest=posted[0], limit=2, include_all_metadata=True)
    assert [m["text"] for m in first["messages"]] == ["m4", "m3"]  # newest first; m0 (== oldest) left out
    assert first["has_more"] and first["messages"][0]["metadata"] == {
        "event_type": "elevation_outbox", "event_payload": {"key": "k4"}}
    assert first["messages"][0]["bot_id"] and first["messages"][0]["ts"] == posted[4]
    second = client.conversations_history(channel=security, oldest=posted[0], limit=2, include_all_metadata=True,
                                          cursor=first["response_metadata"]["next_cursor"])
    assert [m["text"] for m in second["messages"]] == ["m2", "m1"] and not second["has_more"]
    plain = client.conversations_history(channel=security, oldest=posted[0], inclusive=True)
    assert len(plain["messages"]) == 5 and all("metadata" not in m for m in plain["messages"])
    im = client.conversations_open(users=alice)["channel"]["id"]
    assert [m["ts"] for m in client.conversations_history(channel=im)["messages"]] == [dm["ts"]]
    with pytest.raises(SlackApiError) as by_name:
        client.conversations_history(channel="#security")
    assert by_name.value.response["error"] == "channel_not_found"
    fake.fail_next(1, method="conversations.history", error="missing_scope")
    with pytest.raises(SlackApiError) as scope:
        client.conversations_history(channel=security)
    assert scope.value.response["error"] == "missing_scope" and "channels:history" in scope.value.response["needed"]
    with pytest.raises(SlackApiError) as bad:
        client.chat_postMessage(channel=security, text="x", metadata={"event_type": "x"})
    assert bad.value.response["error"] == "invalid_metadata_format"


def test_auth_test_and_history_tell_which_app_is_which(fake):
    """As Slack does: `auth.test` tells a bot token its bot user and `bot_id`, and every message in a history shows
    the `user`, `bot_id`, `app_id` and `bot_profile` of the app that posted it; only that app may update it."""
    security = fake.add_channel("security")
    ours = WebClient(token=fake.token, base_url=fake.base_url)
    other_app = fake.add_app("staging-elevation")
    theirs = WebClient(token=other_app.token, base_url=fake.base_url)

    me, them = ours.auth_test(), theirs.auth_test()
    assert (me["user_id"], me["bot_id"]) == (fake.bot.bot_user, fake.bot.bot_id)
    assert (them["user_id"], them["bot_id"]) == (other_app.bot_user, other_app.bot_id)
    assert me["bot_id"] != them["bot_id"]
    mine = ours.chat_postMessage(channel=security, text="ours")["ts"]
    their = theirs.chat_postMessage(channel=security, text="theirs")["ts"]

    shown = {m["text"]: m for m in ours.conversations_history(channel=security)["messages"]}
    for text, app in (("ours", fake.bot), ("theirs", other_app)):
        message = shown[text]
        assert (message["user"], message["bot_id"], message["app_id"]) == (app.bot_user, app.bot_id, app.app_id)
        assert (message["bot_profile"]["id"], message["bot_profile"]["app_id"]) == (app.bot_id, app.app_id)
    assert [m.app for m in fake.messages] == [None, other_app]
    with pytest.raises(SlackApiError) as not_ours:
        ours.chat_update(channel=security, ts=their, text="edited")
    assert not_ours.value.response["error"] == "cant_update_message"
    assert ours.chat_update(channel=security, ts=mine, text="edited")["ok"]
