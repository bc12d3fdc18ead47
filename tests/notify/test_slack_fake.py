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
