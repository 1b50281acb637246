"""Airflow connections and Variables, found inside a task and outside one.

Inside a task, ``airflow.sdk`` asks the supervisor, which reads the secrets backends and the
metadata database. Outside a task (the break-glass CLI, the Checkpoints page in the
api-server) ``airflow.sdk`` only sees ``AIRFLOW_CONN_*``/``AIRFLOW_VAR_*`` and the configured
secrets backends, not the metadata database. So when it finds nothing, the lookup is asked
again of Airflow's own models, which also read the metadata database (where a user who set
the connection in the UI keeps it). The first error is the one raised if both fail.
"""

from __future__ import annotations

from typing import Any


def get_connection(conn_id: str) -> Any:
    """The Airflow connection ``conn_id`` (raises ``AirflowNotFoundException`` when none defines it)."""
    from airflow.sdk import BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except Exception as first:
        try:
            from airflow.models.connection import Connection

            return Connection.get_connection_from_secrets(conn_id)
        except Exception:
            raise first from None


def get_variable(key: str) -> str:
    """The Airflow Variable ``key`` as text (raises when none defines it)."""
    from airflow.sdk import Variable

    try:
        return str(Variable.get(key))
    except Exception as first:
        try:
            from airflow.models.variable import Variable as StoredVariable

            return str(StoredVariable.get(key))
        except Exception:
            raise first from None
