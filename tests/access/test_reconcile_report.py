"""The reconcile report: every open drift item in the JSON with who, what, where, since when and what the run did;
an HTML page in the audit reports' look that shows a hostile principal name as text, also in a real browser; the
latest copies; and the nightly index's drift line (the count and the link, or that reconcile never ran)."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from audit.test_report_html import dump_dom
from markupsafe import escape

from elevation.access.grants import run_grants
from elevation.access.intake import run_intake
from elevation.access.reconcile import run_reconcile
from elevation.access.reconcile_report import drift_overview, latest_link, write_reconcile_report
from elevation.access.revocations import run_revocations
from elevation.audit.report import DriftOverview, render_index
from elevation.config import load_config

HOSTILE = "<script>window.__pwned=1;document.title='PWNED'</script> & \"Bobby\" 'Tables'"


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    return tmp_path / "reports"


@pytest.fixture
def scoped(world, configure, reports):  # noqa: ANN001, ANN201
    """Reconcile over the whole demo organization, audit reports under tmp_path; settings may be overridden."""

    def _configure(**settings):  # noqa: ANN003, ANN202
        section = {"ous": [world.ous["Production"], world.ous["Staging"], world.ous["Sandbox"]],
                   "permission_sets": ["AdministratorAccess", "PowerUserAccess", "ReadOnlyAccess"],
                   "grace_period": "0s", **settings}
        return configure(sections={"reconcile": section, "audit": {"reports_location": str(reports)}})

    _configure()
    return _configure


@pytest.fixture
def sso(world):  # noqa: ANN001, ANN201
    """Identity Center changed by hand, behind the system's back."""
    client = world.emulator.client("sso-admin")

    def _change(action: str, principal_id: str, permission_set: str, account: str) -> None:
        getattr(client, f"{action}_account_assignment")(
            InstanceArn=world.instance_arn, TargetId=world.accounts[account], TargetType="AWS_ACCOUNT",
            PermissionSetArn=world.permission_sets[permission_set], PrincipalType="USER", PrincipalId=principal_id)

    return _change


@pytest.fixture
def drifted(world, sso, make_runtime, file_request):  # noqa: ANN001, ANN201
    """One item of each kind: a console grant to a user whose name is an HTML payload (unexpected), dave's ended
    session whose access came back (lingering), alice's standing assignment deleted by hand (missing)."""
    hostile = world.emulator.client("identitystore").create_user(
        IdentityStoreId=world.identity_store_id, UserName=HOSTILE, DisplayName="x",
        Name={"GivenName": "x", "FamilyName": "y"})["UserId"]
    sso("create", hostile, "AdministratorAccess", "sandbox-1")
    now = datetime.now(UTC)
    request_id = file_request(requester="dave", account_id="media-prod", permission_set="AdministratorAccess",
                              duration_minutes=30, start_at=now)
    run_intake(make_runtime(as_of=now))
    run_grants(make_runtime(as_of=now))
    run_revocations(make_runtime(as_of=now + timedelta(minutes=31)))
    sso("create", world.users["dave"], "AdministratorAccess", "media-prod")
    sso("delete", world.users["alice"], "ReadOnlyAccess", "media-stg")
    return {"hostile": hostile, "request_id": request_id}


@pytest.fixture
def later(make_runtime):  # noqa: ANN001, ANN201
    """A runtime 35 minutes from now, logical and real clock: after dave's session ended."""
    shift = timedelta(minutes=35)
    return lambda: make_runtime(as_of=datetime.now(UTC) + shift, clock=lambda: datetime.now(UTC) + shift)


def by_kind(document: dict) -> dict[str, dict]:
    return {item["kind"]: item for item in document["open"]}


def test_the_json_lists_every_open_item_with_who_what_where_since_and_what_was_done(
    world, drifted, scoped, later, reports
):
    runtime = later()
    summary = run_reconcile(runtime)
    page = Path(write_reconcile_report(runtime, summary))
    folder = reports / "reconcile" / runtime.as_of.strftime("%Y-%m-%dT%H%M")
    assert page == folder / "reconcile.html"
    document = json.loads((folder / "reconcile.json").read_text())
    items = by_kind(document)
    assert sorted(items) == ["lingering", "missing", "unexpected"]
    unexpected, lingering, missing = items["unexpected"], items["lingering"], items["missing"]
    assert (unexpected["principal_type"], unexpected["principal_id"], unexpected["principal_name"]) == (
        "USER", drifted["hostile"], HOSTILE)
    assert (unexpected["account_id"], unexpected["account_name"]) == (world.accounts["sandbox-1"], "sandbox-1")
    assert (unexpected["permission_set_name"], unexpected["permission_set_arn"]) == (
        "AdministratorAccess", world.permission_sets["AdministratorAccess"])
    assert unexpected["request_id"] is None and lingering["request_id"] == drifted["request_id"]
    assert (lingering["principal_name"], lingering["account_name"]) == ("dave", "media-prod")
    assert (missing["principal_name"], missing["account_name"]) == ("alice", "media-stg")
    assert "has ended" in lingering["detail"] and "standing" in missing["detail"]
    for item in document["open"]:
        assert datetime.fromisoformat(item["first_seen_at"]) <= datetime.fromisoformat(item["last_seen_at"])
        assert (item["action"], item["action_detail"]) == ("reported", "report mode: nothing is changed")
    assert document["mode"] == "report" and document["refused"] is None and document["fixed_this_run"] == []
    assert document["scope"] == {"accounts": 4, "permission_sets": 3, "pairs_listed": summary.pairs_listed,
                                 "assignments_seen": summary.assignments_seen}
    assert document["aws_calls"]["ListAccountAssignments"] >= summary.pairs_listed > 0
    assert document["counts"]["open"] == 3 and document["counts"]["new_this_run"] == 3


def test_a_drift_open_for_several_runs_keeps_its_first_sighting(drifted, scoped, later, reports):
    first = later()
    write_reconcile_report(first, run_reconcile(first))
    since = {item["kind"]: item["first_seen_at"] for item in json.loads(
        (reports / "reconcile" / "latest.json").read_text())["open"]}
    second = later()
    write_reconcile_report(second, run_reconcile(second))
    document = json.loads((reports / "reconcile" / "latest.json").read_text())
    assert {item["kind"]: item["first_seen_at"] for item in document["open"]} == since
    assert document["counts"]["new_this_run"] == 0 and document["counts"]["open"] == 3


def test_enforce_shows_what_it_removed_and_what_it_only_reported(drifted, scoped, later, reports):
    scoped(mode="enforce")
    runtime = later()
    write_reconcile_report(runtime, run_reconcile(runtime))
    document = json.loads((reports / "reconcile" / "latest.json").read_text())
    assert [(item["kind"], item["action"]) for item in document["open"]] == [("missing", "reported")]
    assert "recreate_missing is off" in document["open"][0]["action_detail"]
    fixed = {item["kind"]: item for item in document["fixed_this_run"]}
    assert sorted(fixed) == ["lingering", "unexpected"]
    assert all(item["action"] == "removed" and item["resolution"] == "removed by reconcile"
               and item["resolved_at"] for item in fixed.values())
    assert fixed["lingering"]["request_id"] == drifted["request_id"]
    assert document["counts"]["removed"] == 2 and document["aws_calls"]["DeleteAccountAssignment"] == 2


def test_a_run_refused_by_the_safety_limit_says_so_on_each_item(drifted, scoped, later, reports):
    scoped(mode="enforce", max_removals=1)
    runtime = later()
    summary = run_reconcile(runtime)
    write_reconcile_report(runtime, summary)
    document = json.loads((reports / "reconcile" / "latest.json").read_text())
    assert document["refused"] == summary.refused and "nothing was removed" in summary.refused
    actions = {item["kind"]: item["action"] for item in document["open"]}
    assert actions == {"unexpected": "refused", "lingering": "refused", "missing": "reported"}
    page = html.unescape((reports / "reconcile" / "latest.html").read_text())
    assert "Safety limit held, nothing was removed" in page


def test_latest_is_a_copy_of_the_newest_run_and_links_to_its_page(drifted, scoped, later, reports):
    runtime = later()
    write_reconcile_report(runtime, run_reconcile(runtime))
    folder = runtime.as_of.strftime("%Y-%m-%dT%H%M")
    root = reports / "reconcile"
    assert (root / "latest.json").read_bytes() == (root / folder / "reconcile.json").read_bytes()
    latest = (root / "latest.html").read_text()
    assert f'href="{folder}/reconcile.html"' in latest and 'href="latest.json"' in latest
    assert 'href="reconcile.json"' in (root / folder / "reconcile.html").read_text()
    assert not [path for path in root.rglob(".*")]  # no partial file left behind


def test_the_page_shows_a_hostile_principal_name_as_text(drifted, scoped, later, reports):
    runtime = later()
    page = Path(write_reconcile_report(runtime, run_reconcile(runtime))).read_text()
    assert "<script" not in page.lower()
    assert str(escape(HOSTILE)) in page  # <, >, &, both quotes
    assert "Content-Security-Policy" in page and "AdministratorAccess" in page
    assert f"#{drifted['request_id']}" in page


@pytest.mark.browser
def test_the_page_renders_in_a_browser_and_the_payload_does_not_run(drifted, scoped, later, reports, tmp_path):
    runtime = later()
    page = Path(write_reconcile_report(runtime, run_reconcile(runtime)))
    dom = dump_dom(page, tmp_path / "profile")
    title = re.search(r"<title>(.*?)</title>", dom, re.S)
    assert title is not None and title.group(1).startswith("Drift reconciliation"), "the page did not render"
    assert "<script" not in dom.lower()
    assert "&lt;script&gt;window.__pwned=1;document.title='PWNED'&lt;/script&gt; &amp; \"Bobby\" 'Tables'" in dom
    assert dom.count('class="sev high">unexpected') >= 1


# --- the nightly index ----------------------------------------------------------------------------------------


def test_the_index_shows_the_open_drift_count_and_links_the_latest_report(tmp_path):
    drift = DriftOverview(open_items=3, by_kind={"unexpected": 2, "lingering": 1},
                          latest_report="../reconcile/latest.html")
    page = html.unescape(render_index([], tmp_path, "2024-07-31", drift=drift).read_text())
    assert "3 open items (2 unexpected, 1 lingering)" in re.sub(r"<[^>]+>", "", page)
    assert '<a href="../reconcile/latest.html">Latest reconcile report</a>' in page


def test_the_index_says_when_no_reconcile_report_exists_instead_of_a_broken_link(tmp_path):
    drift = DriftOverview(open_items=0, by_kind={}, latest_report=None)
    page = render_index([], tmp_path, "2024-07-31", drift=drift).read_text()
    assert "No reconcile report yet" in page and "latest.html" not in page


def test_drift_overview_counts_the_open_rows_and_links_latest_once_a_report_exists(
    drifted, scoped, later, make_runtime
):
    assert drift_overview(make_runtime()) == DriftOverview(0, {}, None)
    runtime = later()
    write_reconcile_report(runtime, run_reconcile(runtime))
    assert drift_overview(make_runtime()) == DriftOverview(
        3, {"unexpected": 1, "lingering": 1, "missing": 1}, "../reconcile/latest.html")


@pytest.mark.parametrize(
    ("audit", "reconcile", "link"),
    [
        ({"reports_location": "/srv/reports"}, {}, "../reconcile/latest.html"),
        ({"reports_location": "s3://b/reports", "base_url": "https://audit.example/r/"}, {},
         "https://audit.example/r/reconcile/latest.html"),
        ({"reports_location": "/srv/reports"}, {"reports_location": "/srv/reports/drift/"},
         "../drift/latest.html"),
        ({"reports_location": "/srv/reports"}, {"reports_location": "/elsewhere/drift"},
         "file:///elsewhere/drift/latest.html"),
        ({"reports_location": "s3://b/reports"}, {"reports_location": "s3://other/drift"},
         "s3://other/drift/latest.html"),
    ],
    ids=["default", "base-url", "under-the-reports", "local-elsewhere", "s3-elsewhere"],
)
def test_the_index_link_follows_the_reports_location_and_base_url(tmp_path, audit, reconcile, link):
    path = tmp_path / "elevation.yaml"
    path.write_text(json.dumps({"audit": audit, "reconcile": reconcile}))
    assert latest_link(load_config(path)) == link


def test_reports_publish_to_s3_and_the_index_finds_the_latest_there(
    world, drifted, scoped, configure, later, make_runtime
):
    s3 = world.emulator.client("s3")
    s3.create_bucket(Bucket="security-reports")
    section = {"ous": [world.ous["Sandbox"]], "permission_sets": ["AdministratorAccess"], "grace_period": "0s"}
    configure(sections={"reconcile": section, "audit": {"reports_location": "s3://security-reports/elevation",
                                                        "base_url": "https://audit.example.com/elevation"}})
    assert drift_overview(make_runtime()).latest_report is None
    runtime = later()
    folder = runtime.as_of.strftime("%Y-%m-%dT%H%M")
    where = write_reconcile_report(runtime, run_reconcile(runtime))
    assert where == f"s3://security-reports/elevation/reconcile/{folder}/reconcile.html"
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket="security-reports")["Contents"]}
    assert keys == {f"elevation/reconcile/{folder}/reconcile.html", f"elevation/reconcile/{folder}/reconcile.json",
                    "elevation/reconcile/latest.html", "elevation/reconcile/latest.json"}
    latest = s3.get_object(Bucket="security-reports", Key="elevation/reconcile/latest.json")
    assert latest["ContentType"] == "application/json"
    assert [item["kind"] for item in json.loads(latest["Body"].read())["open"]] == ["unexpected"]
    assert drift_overview(make_runtime()).latest_report == "https://audit.example.com/elevation/reconcile/latest.html"
