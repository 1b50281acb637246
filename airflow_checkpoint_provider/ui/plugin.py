"""The Airflow plugin: mounts the Checkpoints app and adds it to the navigation."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_checkpoint_provider.ui.app import PREFIX, create_app


class CheckpointsPlugin(AirflowPlugin):
    """``airflow.plugins`` entry point ``checkpoints``."""

    name = "checkpoints"
    fastapi_apps = [{"app": create_app(), "url_prefix": PREFIX, "name": "Checkpoints"}]
    external_views = [
        {
            "name": "Checkpoints",
            "href": f"{PREFIX}/ui/",
            "destination": "nav",
            "url_route": "checkpoints",
            "category": "browse",
        }
    ]
