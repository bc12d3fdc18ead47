"""`make airflow`'s configuration: the audit results' report links open the reports in that same Airflow."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import yaml

from elevation.config import load_config
from elevation.devkit.airflow_local import LocalAirflow, audit_base_url
from elevation.notify.producer import report_link


def test_the_audit_base_url_is_the_api_servers_audit_viewer() -> None:
    assert audit_base_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080/elevation/audit"
    assert audit_base_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080/elevation/audit"


def test_a_report_link_of_make_airflow_opens_the_report_in_its_viewer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plugin_server: str, airflow_auth) -> None:  # noqa: ANN001
    """The configuration LocalAirflow writes, the link the notifier builds from it (as the nightly audit builds its
    links), fetched from Airflow's real API server app with the plugin mounted, as a logged-in user."""
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    reports = tmp_path / "reports"
    (reports / "sessions").mkdir(parents=True)
    (reports / "sessions" / "7.html").write_text("<!doctype html><title>Session 7</title>", encoding="utf-8")
    config = tmp_path / "elevation.yaml"
    config.write_text(yaml.safe_dump({"audit": {"reports_location": str(reports)}}), encoding="utf-8")
    monkeypatch.setenv("ELEVATION_CONFIG", str(config))

    LocalAirflow._enable_notifications(config, audit_base_url(plugin_server))
    loaded = load_config(config)
    assert loaded.notifications.enabled and loaded.audit.reports_location == str(reports)  # the rest is kept
    link = report_link(SimpleNamespace(config=loaded), 7, str(reports / "sessions" / "7.html"))
    assert link == f"{plugin_server}/elevation/audit/sessions/7.html"

    token = airflow_auth.generate_jwt(SimpleAuthManagerUser(username="erin", role="viewer"))
    answer = httpx.get(link, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    assert answer.text == "<!doctype html><title>Session 7</title>"
    assert httpx.get(link).status_code == 401  # behind the login, as every report
