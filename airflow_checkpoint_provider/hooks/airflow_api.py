"""Pause and unpause DAGs from a task: Airflow's REST API, or the metadata database where allowed.

Airflow 3 task processes may not touch the metadata database, so a worker pauses DAGs
through the REST API of the api-server: an ``http`` connection (``[checkpoint]
airflow_api_conn_id``, default ``airflow_api``) whose host is the api-server's URL and whose
login and password belong to a user allowed to pause DAGs (``POST /auth/token``; without a
login, ``GET /auth/token`` as with ``simple_auth_manager_all_admins``). Where that connection
is not defined, the metadata database is used directly, which works only where the task
runs in-process (``dag.test()``).
"""

from __future__ import annotations

from typing import Any, Protocol

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowException


class PauseUnavailableError(AirflowException):
    """Neither the REST API connection nor the metadata database can be used to pause DAGs."""


class Pauser(Protocol):
    how: str

    def is_paused(self, dag_id: str) -> bool | None:
        """Whether the DAG is paused; None when no such DAG is deployed."""

    def set_paused(self, dag_id: str, paused: bool) -> None:
        """Pause or unpause the DAG."""


class ApiPauser:
    """Through the public REST API (``/api/v2/dags/<id>``)."""

    how = "the Airflow REST API"

    def __init__(self, base_url: str, login: str | None, password: str | None, timeout: float = 30.0) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.client = httpx.Client(base_url=self.base_url, timeout=timeout)
        self.login, self.password = login, password
        self._token: str | None = None

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            if self.login:
                resp = self.client.post("/auth/token", json={"username": self.login, "password": self.password})
            else:
                resp = self.client.get("/auth/token")
            if resp.status_code >= 400:
                raise AirflowException(
                    f"the Airflow REST API at {self.base_url} refused a token for user {self.login!r} "
                    f"(HTTP {resp.status_code}); check the login and password of the connection"
                )
            self._token = resp.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def is_paused(self, dag_id: str) -> bool | None:
        resp = self.client.get(f"/api/v2/dags/{dag_id}", headers=self._headers())
        if resp.status_code == 404:
            return None
        self._check(resp, f"read DAG {dag_id!r}")
        return bool(resp.json()["is_paused"])

    def set_paused(self, dag_id: str, paused: bool) -> None:
        resp = self.client.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": paused}, headers=self._headers())
        self._check(resp, f"{'pause' if paused else 'unpause'} DAG {dag_id!r}")

    def _check(self, resp: Any, what: str) -> None:
        if resp.status_code >= 400:
            raise AirflowException(
                f"could not {what} through {self.base_url} (HTTP {resp.status_code}): "
                f"{resp.text[:300]}; check that the connection's user may edit DAGs"
            )


class DatabasePauser:
    """Directly in the metadata database (only where the task may use it, e.g. ``dag.test()``)."""

    how = "the metadata database"

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id

    def _session(self) -> Any:
        try:
            from airflow.utils.session import create_session

            return create_session()
        except Exception as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: BaseException) -> PauseUnavailableError:
        return PauseUnavailableError(
            f"cannot pause DAGs: no connection {self.conn_id!r} to the Airflow REST API, and this task may not use "
            f"the metadata database ({exc}). HINT: define the http connection {self.conn_id!r} (host: the "
            "api-server URL, login/password of a user allowed to pause DAGs), or name another one in "
            "[checkpoint] airflow_api_conn_id"
        )

    def is_paused(self, dag_id: str) -> bool | None:
        from airflow.models.dag import DagModel

        try:
            with self._session() as session:
                model = session.get(DagModel, dag_id)
                return None if model is None else bool(model.is_paused)
        except PauseUnavailableError:
            raise
        except Exception as exc:
            raise self._unavailable(exc) from exc

    def set_paused(self, dag_id: str, paused: bool) -> None:
        from airflow.models.dag import DagModel

        with self._session() as session:
            model = session.get(DagModel, dag_id)
            if model is not None:
                model.is_paused = paused


class AirflowApiHook(BaseHook):
    """The Airflow REST API of this deployment, for pausing DAGs during a restore.

    :param airflow_api_conn_id: an ``http`` connection: host = api-server URL, login/password.
    """

    conn_name_attr = "airflow_api_conn_id"
    default_conn_name = "airflow_api"
    conn_type = "http"
    hook_name = "Checkpoint: Airflow REST API"

    def __init__(self, airflow_api_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.airflow_api_conn_id = airflow_api_conn_id

    def pauser(self) -> Pauser:
        """The REST API when the connection exists, else the metadata database."""
        try:
            conn = self.get_connection(self.airflow_api_conn_id)
        except Exception:
            return DatabasePauser(self.airflow_api_conn_id)
        host = (conn.host or "localhost").rstrip("/")
        if "://" not in host:
            host = f"{conn.schema or 'http'}://{host}"
        base = f"{host}:{conn.port}" if conn.port else host
        return ApiPauser(base, conn.login or None, conn.password or None)
