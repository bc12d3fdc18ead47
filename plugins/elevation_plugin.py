"""The elevation plugin: what the Airflow API server serves for the system.

- `/elevation/slack/actions`: Slack's interactivity request URL (the approve / reject buttons).
- `/elevation/audit/`: the nightly audit reports, behind the caller's Airflow login; an "Audit" entry in the
  UI's navigation opens it.

Airflow imports this module whenever it loads plugins (scheduler, workers, `airflow` commands), so it imports
nothing but Airflow's plugin base: each app is built from `elevation.web.apps` on its first request.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

from airflow.plugins_manager import AirflowPlugin


class LazyApp:
    """An ASGI app that builds the real one (`module:factory`) on its first request."""

    def __init__(self, factory: str) -> None:
        self.factory = factory
        self._app: Any = None
        self._lock = threading.Lock()

    def _build(self) -> Any:
        with self._lock:
            if self._app is None:
                module, name = self.factory.split(":")
                self._app = getattr(importlib.import_module(module), name)()
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        app = self._app if self._app is not None else self._build()
        await app(scope, receive, send)


class ElevationPlugin(AirflowPlugin):
    name = "elevation"
    fastapi_apps = [
        {"name": "elevation_slack", "app": LazyApp("elevation.web.apps:slack_app"), "url_prefix": "/elevation/slack"},
        {"name": "elevation_audit", "app": LazyApp("elevation.web.apps:audit_app"), "url_prefix": "/elevation/audit"},
    ]
    external_views = [
        {
            "name": "Audit",
            "href": "elevation/audit/",  # relative (no leading slash): works behind a proxy's path prefix too
            "destination": "nav",
            "category": "browse",
            "url_route": "elevation-audit",  # shown inside the UI (an iframe of the same origin: the login carries)
        }
    ]
