"""The audit viewer over real HTTP, mounted as the API server mounts plugin apps: Airflow's login is required, the
reports are served as they are, and nothing outside the reports folder is."""

from __future__ import annotations

import http.client
import os
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import jwt
import pytest


@pytest.fixture
def reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "reports"
    for night in ("2026-11-26", "2026-11-28", "2026-11-27"):
        (folder / night).mkdir(parents=True)
        (folder / night / "index.html").write_text(
            f'<!doctype html><title>{night}</title><a href="../sessions/5.html">session 5</a>', encoding="utf-8")
    (folder / "2026-11-28" / "findings-2026-11-28.jsonl").write_text('{"key": "k"}\n', encoding="utf-8")
    (folder / "not-a-night").mkdir()
    (folder / "sessions").mkdir()
    (folder / "sessions" / "5.html").write_text("<!doctype html><title>Session 5</title>", encoding="utf-8")
    (folder / "sessions" / "5.events.csv").write_text("eventID\ne1\n", encoding="utf-8")
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET", encoding="utf-8")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x.html").write_text("TOP SECRET", encoding="utf-8")
    os.symlink(secret, folder / "sessions" / "evil.html")
    os.symlink(tmp_path / "outside", folder / "sessions" / "linked")
    config = tmp_path / "elevation.yaml"
    config.write_text(f"audit:\n  reports_location: {folder}\n", encoding="utf-8")
    monkeypatch.setenv("ELEVATION_CONFIG", str(config))
    return folder


@pytest.fixture
def api(airflow_auth, plugin_server) -> str:  # noqa: ANN001
    return plugin_server


def token_for(manager, name: str = "viewer", role: str = "viewer") -> str:  # noqa: ANN001
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return manager.generate_jwt(SimpleAuthManagerUser(username=name, role=role))


def test_the_ui_has_an_audit_entry_pointing_at_the_app(api, airflow_auth) -> None:  # noqa: ANN001
    """What the UI reads to build its navigation, from the API server itself."""
    answer = httpx.get(f"{api}/api/v2/plugins", headers={"Authorization": f"Bearer {token_for(airflow_auth, 'a', 'admin')}"})
    assert answer.status_code == 200, answer.text
    [plugin] = [plugin for plugin in answer.json()["plugins"] if plugin["name"] == "elevation"]
    [audit] = [view for view in plugin["external_views"] if view["name"] == "Audit"]
    assert audit["href"] == "elevation/audit/" and audit["destination"] == "nav"
    assert {app["url_prefix"] for app in plugin["fastapi_apps"]} == {"/elevation/slack", "/elevation/audit"}


def test_anonymous_and_forged_tokens_are_refused(reports, api, airflow_auth) -> None:  # noqa: ANN001
    assert httpx.get(f"{api}/elevation/audit/").status_code == 401
    assert httpx.get(f"{api}/elevation/audit/sessions/5.html").status_code == 401
    genuine = token_for(airflow_auth)
    claims = jwt.decode(genuine, options={"verify_signature": False})
    forged = jwt.encode(claims, "not-the-secret-" * 8, algorithm="HS512")
    for headers, cookies in (({"Authorization": f"Bearer {forged}"}, None), ({}, {"_token": forged}),
                             ({"Authorization": "Bearer garbage"}, None)):
        answer = httpx.get(f"{api}/elevation/audit/sessions/5.html", headers=headers, cookies=cookies)
        assert answer.status_code in (401, 403), answer.text
        assert "Session 5" not in answer.text


def test_a_valid_airflow_token_sees_the_nights_and_the_reports(reports, api, airflow_auth) -> None:  # noqa: ANN001
    bearer = {"Authorization": f"Bearer {token_for(airflow_auth)}"}
    landing = httpx.get(f"{api}/elevation/audit/", headers=bearer)
    assert landing.status_code == 200
    text = landing.text
    assert text.index("2026-11-28") < text.index("2026-11-27") < text.index("2026-11-26")  # newest first
    assert "not-a-night" not in text and 'href="2026-11-28/index.html"' in text

    # The UI's cookie works the same; the report is served as written, with its type and no sniffing.
    with httpx.Client(base_url=api, cookies={"_token": token_for(airflow_auth, "bob", "admin")}) as browser:
        index = browser.get("/elevation/audit/2026-11-28/index.html")
        assert index.status_code == 200 and "../sessions/5.html" in index.text
        report = browser.get("/elevation/audit/2026-11-28/../sessions/5.html")  # the index's relative link
        assert report.status_code == 200 and report.text == "<!doctype html><title>Session 5</title>"
        assert report.headers["content-type"] == "text/html; charset=utf-8"
        assert report.headers["x-content-type-options"] == "nosniff"
        assert "default-src 'none'" in report.headers["content-security-policy"]
        download = browser.get("/elevation/audit/sessions/5.events.csv")
        assert download.status_code == 200 and download.text == "eventID\ne1\n"
        assert download.headers["content-type"].startswith("text/csv")
        assert download.headers["content-disposition"] == 'attachment; filename="5.events.csv"'
        assert download.headers["x-content-type-options"] == "nosniff"
        findings = browser.get("/elevation/audit/2026-11-28/findings-2026-11-28.jsonl")
        assert findings.status_code == 200 and findings.headers["content-type"] == "application/x-ndjson"
        folder = browser.get("/elevation/audit/2026-11-27", follow_redirects=True)
        assert folder.status_code == 200 and "<title>2026-11-27</title>" in folder.text
        assert str(folder.url).endswith("/elevation/audit/2026-11-27/index.html")
        assert browser.get("/elevation/audit/sessions/6.html").status_code == 404


@pytest.mark.parametrize("raw", [
    "/elevation/audit/../secret.txt",
    "/elevation/audit/..%2fsecret.txt",
    "/elevation/audit/%2e%2e/secret.txt",
    "/elevation/audit/sessions/..%2f..%2fsecret.txt",
    "/elevation/audit/%2e%2e%2f%2e%2e%2fsecret.txt",
    "/elevation/audit//etc/passwd",
    "/elevation/audit/%2fetc%2fpasswd",
    "/elevation/audit/sessions/..%5c..%5csecret.txt",
    "/elevation/audit/sessions/evil.html",  # a symlink out of the folder
    "/elevation/audit/sessions/linked/x.html",  # a folder symlink out of it
])
def test_nothing_outside_the_reports_folder_is_served(reports, api, airflow_auth, raw) -> None:  # noqa: ANN001
    where = urlsplit(api)

    def get(path: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection(where.hostname, where.port, timeout=10)
        conn.request("GET", path, headers={"Authorization": f"Bearer {token_for(airflow_auth)}"})  # as written
        answer = conn.getresponse()
        body = answer.read().decode("utf-8", "replace")
        conn.close()
        return answer.status, body

    assert get("/elevation/audit/sessions/5.html")[0] == 200  # the same request for a file inside is served
    status, body = get(raw)
    assert status in (400, 403, 404), (raw, status, body)
    assert "TOP SECRET" not in body and "root:" not in body


def test_reports_in_s3_are_read_through_the_s3_hook_of_reports_conn_id(
    world, tmp_path, monkeypatch, api, airflow_auth
):  # noqa: ANN001
    s3 = world.emulator.client("s3")
    s3.create_bucket(Bucket="audit-reports")
    for key, body in {
        "elevation/2026-11-27/index.html": "<title>night 27</title>",
        "elevation/2026-11-28/index.html": "<title>night 28</title>",
        "elevation/sessions/5.html": "<title>Session 5 in S3</title>",
        "elevation/sessions/5.events.csv": "eventID\ne1\n",
        "secret.txt": "TOP SECRET",
    }.items():
        s3.put_object(Bucket="audit-reports", Key=key, Body=body.encode())
    config = tmp_path / "elevation.yaml"
    config.write_text("audit:\n  reports_location: s3://audit-reports/elevation\n  reports_conn_id: aws_default\n",
                      encoding="utf-8")
    monkeypatch.setenv("ELEVATION_CONFIG", str(config))

    with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {token_for(airflow_auth)}"}) as client:
        landing = client.get("/elevation/audit/").text
        assert landing.index("2026-11-28") < landing.index("2026-11-27")
        report = client.get("/elevation/audit/sessions/5.html")
        assert report.status_code == 200 and report.text == "<title>Session 5 in S3</title>"
        assert report.headers["content-type"] == "text/html; charset=utf-8"
        assert report.headers["x-content-type-options"] == "nosniff"
        night = client.get("/elevation/audit/2026-11-28/", follow_redirects=True)
        assert night.status_code == 200 and night.text == "<title>night 28</title>"
        assert client.get("/elevation/audit/sessions/6.html").status_code == 404
        assert client.get("/elevation/audit/sessions/..%2f..%2fsecret.txt").status_code == 404


def test_a_login_the_auth_manager_keeps_from_the_audit_dag_is_refused(
    reports, api, airflow_auth, monkeypatch
) -> None:  # noqa: ANN001
    """The reports name people and what they did: only logins that may read the elevation_audit DAG see them (a
    per-DAG permission under FAB or Keycloak; here the auth manager is told to refuse one user)."""
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    asked = []
    allowed = SimpleAuthManager.is_authorized_dag

    def only_some(self, *, method, user, access_entity=None, details=None):  # noqa: ANN001, ANN202
        asked.append((method, user.get_name(), details.id if details else None))
        if user.get_name() == "outsider":
            return False
        return allowed(self, method=method, user=user, access_entity=access_entity, details=details)

    monkeypatch.setattr(SimpleAuthManager, "is_authorized_dag", only_some)
    for path in ("/elevation/audit/", "/elevation/audit/sessions/5.html", "/elevation/audit/2026-11-28/index.html"):
        refused = httpx.get(f"{api}{path}", headers={"Authorization": f"Bearer {token_for(airflow_auth, 'outsider')}"})
        assert refused.status_code == 403 and "Session 5" not in refused.text, (path, refused.status_code)
        seen = httpx.get(f"{api}{path}", headers={"Authorization": f"Bearer {token_for(airflow_auth, 'auditor')}"},
                         follow_redirects=True)
        assert seen.status_code == 200, (path, seen.status_code)
    assert ("GET", "outsider", "elevation_audit") in asked and ("GET", "auditor", "elevation_audit") in asked
