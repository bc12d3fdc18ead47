"""What AWS must allow: the IAM policy documents of deploy/iam/ equal the calls each component makes.

The recorder (elevation.devkit.aws_calls) sees every AWS API call made through botocore and the component that
made it. One test drives every component once against the emulator (a grant of a user and of a group, a
revocation, intake and notify reading the organization, reconcile in enforce mode removing and recreating, an
extract from S3 and one from CloudTrail Lake, the audit publishing to S3 and the audit viewer reading it back) and
checks both directions with the placeholders rendered to the test's own ARNs: every call is allowed, and every
action and resource the document names was needed. The last test of the run checks every call the whole suite
made (tests/conftest.py records from the first test on and orders that test last).
"""

from __future__ import annotations

import importlib.util
import json
import time
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from elevation.devkit.aws_calls import (
    COMPONENT_NAMES,
    COMPONENTS,
    NOT_PROJECT,
    PLUMBING,
    RECORDER,
    AwsCall,
    UnknownOperation,
    authorizations,
    evaluate,
    iam_action,
    lookup,
    statements,
)
from elevation.devkit.emulator import MOTO_ACCOUNT_ID

IAM = Path(__file__).resolve().parents[2] / "deploy" / "iam"
REPORTS_BUCKET = "security-reports"
REPORTS_PREFIX = "elevation/"


def _load_renderer() -> Any:
    spec = importlib.util.spec_from_file_location("iam_render", IAM / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load_renderer()

#: The placeholders for the whole run: every test builds its own organization, buckets and event data store, so
#: names become wildcards and what stays checked is the rest (actions, resource types, key layout, conditions).
SUITE_WIDE = {
    "IdentityCenterInstanceArn": "arn:aws:sso:::instance/*",
    "IdentityCenterInstanceId": "*",
    "IdentityStoreId": "*",
    "TrailBucket": "*",
    "TrailKeyPrefix": "*",
    "EventDataStoreArn": "arn:aws:cloudtrail:*:*:eventdatastore/*",
    "ReportsBucket": "*",
    "ReportsKeyPrefix": "*",
}
SUITE_FACTS = {**SUITE_WIDE, "IdentityStoreAccountId": MOTO_ACCOUNT_ID, "AccountId": MOTO_ACCOUNT_ID}


def policy(component: str, values: dict[str, str]) -> dict[str, Any]:
    return render.render_document(IAM / f"{component}.json", values)


def by_component(calls: dict[AwsCall, int]) -> dict[str | None, list[AwsCall]]:
    grouped: dict[str | None, list[AwsCall]] = {}
    for call in calls:
        grouped.setdefault(call.component, []).append(call)
    return grouped


def unmapped(calls: dict[AwsCall, int]) -> list[str]:
    return sorted({str(call) for call in calls if call.component not in COMPONENT_NAMES})


# --- the documents -----------------------------------------------------------------------------------------------


def test_there_is_one_document_per_component_with_sids_and_documented_placeholders():
    documents = sorted(path.stem for path in IAM.glob("*.json"))
    assert documents == sorted(COMPONENT_NAMES)
    readme = (IAM / "README.md").read_text(encoding="utf-8")
    for name in COMPONENT_NAMES:
        text = (IAM / f"{name}.json").read_text(encoding="utf-8")
        document = json.loads(text)
        assert document["Version"] == "2012-10-17"
        sids = [item.get("Sid") for item in document["Statement"]]
        assert all(sids) and len(set(sids)) == len(sids), f"{name}: every statement needs its own Sid"
        assert all(statement.effect == "Allow" for statement in statements(document))
        for placeholder in render.placeholders(text):
            assert f"${{{placeholder}}}" in readme, f"{name}.json: ${{{placeholder}}} is not in deploy/iam/README.md"
        assert f"`{name}.json`" in readme


def test_the_renderer_refuses_a_missing_value_and_derives_the_instance_id(capsys):
    text = (IAM / "access.json").read_text(encoding="utf-8")
    with pytest.raises(KeyError, match="IdentityStoreId"):
        render.render(text, {"IdentityCenterInstanceArn": "arn:aws:sso:::instance/ssoins-1"})
    rendered = render.render(text, {"IdentityCenterInstanceArn": "arn:aws:sso:::instance/ssoins-1",
                                    "IdentityStoreId": "d-1"})
    assert "arn:aws:sso:::permissionSet/ssoins-1/*" in rendered and "${" not in rendered
    assert render.main(["extract-s3.json", "TrailBucket=logs", "TrailKeyPrefix="]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["Statement"][1]["Resource"] == "arn:aws:s3:::logs/AWSLogs/*"
    assert render.main(["extract-s3.json", "TrailBucket=logs"]) == 2
    assert "no value for TrailKeyPrefix" in capsys.readouterr().err


# --- the evaluator can fail both ways ------------------------------------------------------------------------------


def call(component: str, service: str, operation: str, signing: str | None = None, **params: str) -> AwsCall:
    return AwsCall(component, "test:call", service, operation, signing or service, "us-east-1",
                   tuple(sorted(params.items())))


TRAIL = {"TrailBucket": "logs", "TrailKeyPrefix": ""}


def test_the_evaluator_denies_a_call_outside_the_policy():
    document = policy("extract-s3", TRAIL)
    allowed = [call("extract-s3", "s3", "ListObjectsV2", Bucket="logs", Prefix="AWSLogs/111122223333/CloudTrail/"),
               call("extract-s3", "s3", "GetObject", Bucket="logs", Key="AWSLogs/111122223333/CloudTrail/x.json.gz")]
    assert evaluate(document, allowed).ok
    outside = {
        "another bucket": call("extract-s3", "s3", "GetObject", Bucket="other", Key="AWSLogs/1/x.json.gz"),
        "outside AWSLogs/": call("extract-s3", "s3", "GetObject", Bucket="logs", Key="secrets/x"),
        "a listing outside the prefix": call("extract-s3", "s3", "ListObjectsV2", Bucket="logs", Prefix="private/"),
        "a listing of the whole bucket": call("extract-s3", "s3", "ListObjectsV2", Bucket="logs"),
        "another action": call("extract-s3", "s3", "PutObject", Bucket="logs", Key="AWSLogs/1/x.json.gz"),
    }
    for what, bad in outside.items():
        result = evaluate(document, [*allowed, bad])
        assert [denied for denied, _, _ in result.denied] == [bad], what
    # Every resource of a multi-resource action must be allowed: one permission set outside the instance is enough.
    access = policy("access", {"IdentityCenterInstanceArn": "arn:aws:sso:::instance/ssoins-1", "IdentityStoreId": "d-1"})
    create = dict(InstanceArn="arn:aws:sso:::instance/ssoins-1", TargetId="111122223333",
                  PermissionSetArn="arn:aws:sso:::permissionSet/ssoins-2/ps-1")
    denied = evaluate(access, [call("access", "sso-admin", "CreateAccountAssignment", "sso", **create)]).denied
    assert [str(what) for _, what, _ in denied] == [
        "sso:CreateAccountAssignment on arn:aws:sso:::permissionSet/ssoins-2/ps-1"]
    # A Deny wins over an Allow.
    deny = {"Sid": "NoLogs", "Effect": "Deny", "Action": "s3:*", "Resource": "arn:aws:s3:::logs/*"}
    with_deny = {**document, "Statement": [*document["Statement"], deny]}
    assert "denied by NoLogs" in evaluate(with_deny, allowed).describe()


def test_the_evaluator_reports_an_action_or_resource_no_call_needed():
    document = policy("extract-s3", TRAIL)
    listing = call("extract-s3", "s3", "ListObjectsV2", Bucket="logs", Prefix="AWSLogs/")
    result = evaluate(document, [listing])
    assert result.unused_actions == [("ReadTrailLogFiles", "s3:GetObject")] and not result.denied
    assert not result.ok and "ReadTrailLogFiles allows s3:GetObject, which no call needed" in result.describe()
    wider = json.loads(json.dumps(document))
    wider["Statement"][0]["Resource"] = ["arn:aws:s3:::logs", "arn:aws:s3:::other-bucket"]
    reading = call("extract-s3", "s3", "GetObject", Bucket="logs", Key="AWSLogs/x")
    assert evaluate(wider, [listing, reading]).unused_resources == [("ListTrailLogFolders", "arn:aws:s3:::other-bucket")]


def test_a_call_the_evaluator_cannot_map_to_resources_fails_loudly():
    with pytest.raises(UnknownOperation, match="sso-admin.ProvisionPermissionSet"):
        authorizations(call("access", "sso-admin", "ProvisionPermissionSet", "sso"))


def test_attribution_table_covers_the_project_and_maps_to_known_components():
    assert set(COMPONENTS.values()) <= {*COMPONENT_NAMES, PLUMBING, NOT_PROJECT}
    assert lookup("elevation.access.grants", "run_grants") == "access"
    assert lookup("elevation.access.reconcile_report", "write_reconcile_report") == "reconcile"
    assert lookup("elevation.access.reconcile_report", "_latest_exists") == "reports"
    assert lookup("elevation.audit.publish", "publish_reports") == "reports"
    assert lookup("elevation.runtime", "organization_accounts") == PLUMBING
    assert lookup("elevation.devkit.world", "build_world") == NOT_PROJECT
    assert lookup("elevation.somewhere_new", "f") is None  # recorded with component None: the tests name it


def test_calls_of_fixtures_and_the_devkit_are_not_the_projects(world, emulator):
    with RECORDER.capture() as calls:
        emulator.client("s3").list_buckets()  # a test's own call
        world.assignments("media-prod", "ReadOnlyAccess")  # the devkit's
    assert calls == {}


def test_a_project_module_the_table_does_not_know_is_recorded_without_a_component(emulator):
    module = types.ModuleType("elevation.not_in_the_table")
    exec(compile("def list_buckets(client):\n    return client.list_buckets()\n", "<test>", "exec"), module.__dict__)
    with RECORDER.capture(keep=False) as calls:
        module.list_buckets(emulator.client("s3"))
    assert [(made.component, made.caller, iam_action(made)) for made in calls] == [
        (None, "elevation.not_in_the_table:list_buckets", "s3:ListBuckets")]
    assert unmapped(calls) and not unmapped(RECORDER.calls())


# --- every component once, checked both ways ------------------------------------------------------------------------


def test_each_component_calls_exactly_what_its_policy_allows(
    world, emulator, configure, file_request, make_runtime, engine, tmp_path, monkeypatch
):
    from elevation.access.grants import run_grants
    from elevation.access.intake import run_intake
    from elevation.access.reconcile import run_reconcile
    from elevation.access.reconcile_report import write_reconcile_report
    from elevation.access.revocations import run_revocations
    from elevation.cloudtrail.lake import LakeQueryError
    from elevation.devkit.activity import activity_records, write_activity
    from elevation.devkit.cloudtrail_lake import CloudTrailLakeDouble
    from elevation.devkit.world import TRAIL_BUCKET
    from elevation.nightly import (
        lake_client,
        plan_lake_statements,
        run_audit,
        run_extract,
        session_identities,
    )
    from elevation.notify.producer import produce
    from elevation.store import queue
    from elevation.web.audit_viewer import S3Store

    started = time.monotonic()
    s3 = emulator.client("s3")
    s3.create_bucket(Bucket=REPORTS_BUCKET)
    reports = f"s3://{REPORTS_BUCKET}/{REPORTS_PREFIX.rstrip('/')}"
    sections = {
        "extract": {"source": "s3", "s3_bucket": TRAIL_BUCKET, "s3_conn_id": "aws_default",
                    "output_location": str(tmp_path / "cloudtrail")},
        "audit": {"reports_location": reports, "reports_conn_id": "aws_default"},
        "reconcile": {"ous": [world.ous["Production"], world.ous["Staging"], world.ous["Sandbox"]],
                      "permission_sets": ["AdministratorAccess", "PowerUserAccess", "ReadOnlyAccess"],
                      "grace_period": "0s", "mode": "enforce", "recreate_missing": True},
        "notifications": {"enabled": True, "security_channel": "#security"},
    }
    configure(sections)
    day = (datetime.now(UTC) - timedelta(days=2)).date()
    at = lambda hour, minute=0: datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(  # noqa: E731
        hours=hour, minutes=minute)

    with RECORDER.capture() as calls:
        # access: intake checks a user's and a group's request and a pending one; both are granted, then revoked
        user = file_request(requester="alice", account_id="media-stg", permission_set="PowerUserAccess",
                            start_at=at(10), duration_minutes=60, status="approved", approver="bob")
        group = file_request(requester="bob", account_id="ec-prod", permission_set="PowerUserAccess",
                             principal_group="platform", start_at=at(10), duration_minutes=60, status="approved",
                             approver="carol")
        file_request(requester="erin", account_id="media-prod", permission_set="PowerUserAccess", start_at=at(10),
                     duration_minutes=60)
        runtime = make_runtime(as_of=at(10), clock=lambda: at(10))
        run_intake(runtime)
        assert run_grants(runtime).activated == [user, group]
        with engine.begin() as conn:
            queue.insert_action(conn, user, "revoke", "alice", "done")
            queue.insert_action(conn, group, "revoke", "bob", "done")
        run_intake(runtime)
        assert sorted(run_revocations(runtime).revoked) == [user, group]
        # notify, in its own task (so with its own lookups): the pending request's approvers by the account's OUs
        produce(make_runtime(as_of=at(10), clock=lambda: at(10)))

        # reconcile, enforce: a console grant to a user and to a group removed, a lost standing assignment recreated
        sso = emulator.client("sso-admin")
        console = {"InstanceArn": world.instance_arn, "TargetType": "AWS_ACCOUNT"}
        sso.create_account_assignment(**console, TargetId=world.accounts["media-prod"], PrincipalType="USER",
                                      PermissionSetArn=world.permission_sets["AdministratorAccess"],
                                      PrincipalId=world.users["carol"])
        sso.create_account_assignment(**console, TargetId=world.accounts["sandbox-1"], PrincipalType="GROUP",
                                      PermissionSetArn=world.permission_sets["ReadOnlyAccess"],
                                      PrincipalId=world.groups["security"])
        sso.delete_account_assignment(**console, TargetId=world.accounts["media-stg"], PrincipalType="USER",
                                      PermissionSetArn=world.permission_sets["ReadOnlyAccess"],
                                      PrincipalId=world.users["alice"])
        runtime = make_runtime()
        summary = run_reconcile(runtime)
        assert len(summary.removed) == 2 and len(summary.recreated) == 1, summary
        write_reconcile_report(runtime, summary)  # the accounts' names (reconcile), the report itself (reports)
        # ... and over one account: more permission sets than accounts lists by account instead
        configure({**sections, "reconcile": {"accounts": [world.accounts["media-stg"]]}})
        run_reconcile(make_runtime())

        # extract from the trail bucket, audit (publishing to S3), read back through the audit viewer
        configure(sections)
        runtime = make_runtime()
        sessions = session_identities(runtime)
        write_activity(s3, TRAIL_BUCKET, sessions)
        assert run_extract(runtime, day).events_written > 0
        assert run_audit(runtime, day).index == f"{reports}/{day.isoformat()}/index.html"
        viewer = S3Store(reports, "aws_default")
        assert viewer.nights() == [day.isoformat()]
        assert viewer.read(f"{day.isoformat()}/index.html")

        # extract from CloudTrail Lake, and a query given up on (cancelled)
        records, _ = activity_records(sessions)
        with CloudTrailLakeDouble(records) as lake:
            monkeypatch.setenv("AIRFLOW_CONN_AWS_LAKE", json.dumps({
                "conn_type": "aws", "login": "testing", "password": "testing",
                "extra": {"endpoint_url": lake.endpoint_url, "region_name": "us-east-1"}}))
            configure({**sections, "extract": {
                "source": "lake", "lake_event_data_store_arn": lake.event_data_store_arn, "lake_conn_id": "aws_lake",
                "poll_interval": "0s", "max_wait": "0s", "output_location": str(tmp_path / "lake")}})
            runtime = make_runtime()
            assert run_extract(runtime, day).events_written > 0
            lake.next_query(running_polls=5)
            with pytest.raises(LakeQueryError, match="WAIT_TIMEOUT"):
                lake_client(runtime).run(plan_lake_statements(runtime, day)[0])
            event_data_store = lake.event_data_store_arn

    values = {
        "IdentityCenterInstanceArn": world.instance_arn,
        "IdentityStoreId": world.identity_store_id,
        "TrailBucket": TRAIL_BUCKET,
        "TrailKeyPrefix": "",
        "EventDataStoreArn": event_data_store,
        "ReportsBucket": REPORTS_BUCKET,
        "ReportsKeyPrefix": REPORTS_PREFIX,
    }
    facts = {**values, "IdentityStoreAccountId": emulator.account_id}
    assert not unmapped(calls), "calls by modules deploy/iam has no component for:\n" + "\n".join(unmapped(calls))
    grouped = by_component(calls)
    assert sorted(grouped) == sorted(COMPONENT_NAMES)
    problems = {}
    for component in COMPONENT_NAMES:
        result = evaluate(policy(component, values), grouped[component], facts)
        if not result.ok:
            problems[component] = result.describe()
    assert not problems, "\n\n".join(f"{component}.json:\n{text}" for component, text in problems.items())
    assert time.monotonic() - started < 60  # a guard: about 8 s, mostly the project building its clients per run


# --- the whole run --------------------------------------------------------------------------------------------------


def test_every_project_call_of_the_run_is_allowed_by_its_components_policy():
    """Ordered last by tests/conftest.py: what every test before it made the project call."""
    assert RECORDER.installed, "tests/conftest.py's aws_call_recorder fixture did not install the recorder"
    calls = RECORDER.calls()
    if not calls:  # this test alone: nothing ran that calls AWS (with the others, the test above guards the recorder)
        pytest.skip("no test of this run made an AWS call: nothing to check")
    assert not unmapped(calls), "calls by modules deploy/iam has no component for:\n" + "\n".join(unmapped(calls))
    problems = {}
    for component, made in sorted(by_component(calls).items()):
        result = evaluate(policy(component, SUITE_WIDE), made, SUITE_FACTS)
        if result.denied:
            problems[component] = "\n".join(line for line in result.describe().splitlines() if line.startswith("denied"))
    assert not problems, "\n\n".join(f"{component}.json:\n{text}" for component, text in problems.items())


test_every_project_call_of_the_run_is_allowed_by_its_components_policy.run_last = True  # type: ignore[attr-defined]
