"""What the Airflow API server serves for the system (registered by `plugins/elevation_plugin.py`).

`slack_actions`: Slack's approve / reject buttons, checked and recorded through the one decision path (an action
row, then intake). `audit_viewer`: the nightly audit reports behind the caller's Airflow login. `apps`: the FastAPI
apps themselves. Nothing here is imported while Airflow loads plugins: the apps are built on their first request.
"""
