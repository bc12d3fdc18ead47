"""Credentials a session minted (access keys, assumed roles) and where they were then used, and their report section."""

from __future__ import annotations

import html
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from test_report_html import ACCOUNT, START, review_records, review_session

from elevation.audit.credentials import minted_credentials
from elevation.audit.facts import SessionFacts
from elevation.audit.report import as_events_table, render_session_report
from elevation.cloudtrail.schema import EVENT_SCHEMA, record_to_row
from elevation.devkit.trail_events import make_event, sso_identity

OTHER = "210987654321"


def table_of(records: list[dict]) -> pa.Table:
    return pa.Table.from_pylist([record_to_row(record, "12") for record in records], schema=EVENT_SCHEMA)


def test_an_access_key_and_an_assumed_role_with_their_uses() -> None:
    key, role = minted_credentials(table_of(review_records()))
    assert (key.kind, key.call, key.event_id) == ("access key", "iam:CreateAccessKey", "new-key")
    assert (key.access_key_id, key.owner, key.identity_arn) == ("AKIAEXAMPLENEWKEY001", "deploy-bot", None)
    assert key.uses.count == 3 and key.uses.calls == (("iam:ListUsers", 3),) and key.uses.accounts == (ACCOUNT,)
    assert key.uses.first_time == START + timedelta(minutes=12)
    assert key.uses.last_time == START + timedelta(minutes=14)
    assert (role.kind, role.call, role.event_id) == ("assumed role", "sts:AssumeRole", "assume")
    assert role.access_key_id == "ASIAEXAMPLEHOP00001"
    assert role.identity_arn == f"arn:aws:sts::{OTHER}:assumed-role/Deployer/hop"
    assert role.owner == f"arn:aws:iam::{OTHER}:role/Deployer"
    assert role.uses.count == 2 and role.uses.accounts == (OTHER,)
    assert dict(role.uses.calls) == {"s3:PutBucketPolicy": 1, "sts:GetCallerIdentity": 1}


def test_failed_or_redacted_calls_mint_nothing_and_unused_credentials_say_so() -> None:
    identity = sso_identity(ACCOUNT, "AdministratorAccess", "alice@example.com")
    records = [
        make_event(identity, "AssumeRole", "sts.amazonaws.com", START, recipient_account=ACCOUNT, event_id="denied",
                   request={"roleArn": "arn:aws:iam::1:role/X"}, error_code="AccessDenied"),
        make_event(identity, "CreateAccessKey", "iam.amazonaws.com", START, recipient_account=ACCOUNT,
                   event_id="redacted", request={"userName": "bot"}, response=None),
        make_event(identity, "GetSessionToken", "sts.amazonaws.com", START, recipient_account=ACCOUNT,
                   event_id="token", response={"credentials": {"accessKeyId": "ASIATOKEN"}}),
    ]  # fmt: skip
    (token,) = minted_credentials(table_of(records))
    assert (token.kind, token.access_key_id, token.identity_arn) == ("session token", "ASIATOKEN", None)
    assert token.uses.count == 0 and token.uses.calls == ()
    assert minted_credentials(table_of([])) == []


def test_dictionary_encoded_tables_give_the_same_answer() -> None:
    table = table_of(review_records())
    encoded = pa.table(
        [pc.dictionary_encode(column) if pa.types.is_string(column.type) else column for column in table.columns],
        names=table.column_names,
    )
    assert minted_credentials(encoded) == minted_credentials(table)
    assert minted_credentials(as_events_table(encoded, "12")) == minted_credentials(table)


def test_the_report_lists_the_minted_credentials_and_their_uses(tmp_path: Path) -> None:
    page = html.unescape(render_session_report(review_session(), review_records(), [], tmp_path).read_text())
    section = page[page.index("Credentials minted by the session (2)"):page.index("Write operations")]
    rows = section.split("<tr>")[2:]
    assert len(rows) == 2
    assert "AKIAEXAMPLENEWKEY001" in rows[0] and "deploy-bot" in rows[0] and "3 events" in rows[0]
    assert "iam:ListUsers ×3" in rows[0] and ACCOUNT in rows[0]
    assert f"arn:aws:sts::{OTHER}:assumed-role/Deployer/hop" in rows[1] and "2 events" in rows[1]
    assert "s3:PutBucketPolicy ×1" in rows[1] and OTHER in rows[1]
    quiet = html.unescape(render_session_report(SessionFacts(session_id="q"), [], [], tmp_path).read_text())
    assert "Credentials minted" not in quiet


def test_a_console_password_an_ssh_key_and_a_service_credential_are_listed_with_nothing_to_trace(
    tmp_path: Path,
) -> None:
    """Credentials CloudTrail cannot follow by key id or ARN are persistence all the same: listed, owner named."""
    identity = sso_identity(ACCOUNT, "AdministratorAccess", "alice@example.com")
    calls = [("CreateLoginProfile", {"userName": "backdoor", "passwordResetRequired": False}, None),
             ("UploadSSHPublicKey", {"userName": "backdoor", "sSHPublicKeyBody": "ssh-rsa AAAA"},
              {"sSHPublicKey": {"sSHPublicKeyId": "APKAEXAMPLE"}}),
             ("CreateServiceSpecificCredential", {"userName": "backdoor", "serviceName": "codecommit.amazonaws.com"},
              None)]  # fmt: skip
    records = [make_event(identity, name, "iam.amazonaws.com", START + timedelta(minutes=index),
                          recipient_account=ACCOUNT, event_id=name, request=request, response=response)
               for index, (name, request, response) in enumerate(calls)]
    minted = minted_credentials(table_of(records))
    assert [(c.kind, c.owner, c.access_key_id, c.identity_arn, c.uses.count) for c in minted] == [
        ("console password", "backdoor", None, None, 0),
        ("SSH public key", "backdoor", None, None, 0),
        ("service-specific credential", "backdoor", None, None, 0),
    ]
    page = html.unescape(render_session_report(review_session(), records, [], tmp_path).read_text())
    section = page[page.index("Credentials minted by the session (3)"):page.index("Write operations")]
    assert "console password" in section and "iam:CreateLoginProfile" in section and "backdoor" in section
