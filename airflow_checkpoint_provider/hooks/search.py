"""Elasticsearch/OpenSearch connection -> :class:`SearchTarget`, spoken to over plain HTTP.

The connection is Airflow's ``elasticsearch`` type: host (optionally with a scheme),
port, ``schema`` = ``http`` or ``https``, login/password for basic auth, and extra
``api_key``, ``verify_certs`` and ``ca_certs``. The official client is not used: its
product checks refuse OpenSearch and older servers.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook

from airflow_checkpoint_provider.core.engines.targets import SearchTarget


class SearchCheckpointHook(BaseHook):
    """Snapshot API access for Elasticsearch 7-9 and OpenSearch 1-3.

    :param elasticsearch_conn_id: the Airflow connection id (default ``elasticsearch_default``).
    """

    conn_name_attr = "elasticsearch_conn_id"
    default_conn_name = "elasticsearch_default"
    conn_type = "elasticsearch"
    hook_name = "Checkpoint: Elasticsearch / OpenSearch"

    def __init__(self, elasticsearch_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.elasticsearch_conn_id = elasticsearch_conn_id

    def target(self) -> SearchTarget:
        from airflow_checkpoint_provider import engines

        return engines.target("search", self.elasticsearch_conn_id)

    def get_conn(self) -> Any:
        from airflow_checkpoint_provider.core.engines.search import SearchClient

        return SearchClient(self.target())

    def test_connection(self) -> tuple[bool, str]:
        from airflow_checkpoint_provider.core.errors import CheckpointError

        target = self.target()
        try:
            info = self.get_conn().info()
            return True, f"{target.label}: {info['flavor']} {info['version']}"
        except CheckpointError as exc:
            return False, str(exc)
