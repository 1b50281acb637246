"""Airflow 3.3 run for real by the integration tests: api-server, scheduler, dag-processor (and
the triggerer if asked), each in its own process group, LocalExecutor, a temporary AIRFLOW_HOME,
and a REST client to trigger runs and read their results.

Used by ``test_ui_browser.py`` and ``test_workflow_dag.py``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
ALL_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(what: str, check: Callable[[], Any], timeout: float, interval: float = 2.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` and the last result."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def airflow_env(
    home: Path,
    connections: dict[str, str],
    *,
    port: int,
    password_file: Path,
    dags_folder: Path,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of every component: this process's, minus its AIRFLOW_* settings, plus these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))}
    env.update(connections)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__CHECKPOINT__STORAGE_ROOT": str(home / "checkpoints_data"),
            "PYTHONPATH": str(REPO),
            **(extra or {}),
        }
    )
    return env


def admin_password(home: Path) -> tuple[str, Path]:
    """A random admin password, in the simple auth manager's 0600 passwords file."""
    password = secrets.token_urlsafe(16)
    path = home / "passwords.json"
    path.write_text(json.dumps({"admin": password}))
    path.chmod(0o600)
    return password, path


class Airflow:
    """The Airflow components, each in its own process group, and a REST client."""

    def __init__(
        self,
        home: Path,
        env: dict[str, str],
        port: int,
        password: str,
        *,
        components: Iterable[str] = ALL_COMPONENTS,
        dag_ids: Iterable[str] = (),
    ) -> None:
        self.home, self.env, self.port, self.password = home, env, port, password
        self.components, self.dag_ids = tuple(components), set(dag_ids)
        self.url = f"http://127.0.0.1:{port}"
        self.procs: list[subprocess.Popen] = []
        self._token: str | None = None

    def start(self) -> None:
        airflow = str(Path(sys.executable).parent / "airflow")
        proc = subprocess.run([airflow, "db", "migrate"], env=self.env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        for name in self.components:
            args = [airflow, name] + (["--port", str(self.port)] if name == "api-server" else [])
            log = open(self.home / f"{name}.log", "wb")
            self.procs.append(
                subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            )

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        """Start another component (a Celery worker) in its own process group; stopped with the rest."""
        airflow = str(Path(sys.executable).parent / "airflow")
        log = open(self.home / f"{name}.log", "wb")
        proc = subprocess.Popen([airflow, *args], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        """SIGTERM each component's process group (by the PIDs started here), then SIGKILL leftovers."""
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # children (task runners, workers) of this group too
            except ProcessLookupError:
                pass

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._token is None:
            resp = httpx.post(f"{self.url}/auth/token", json={"username": "admin", "password": self.password})
            resp.raise_for_status()
            self._token = resp.json()["access_token"]
        headers = {"Authorization": f"Bearer {self._token}", **kwargs.pop("headers", {})}
        resp = httpx.request(method, f"{self.url}/api/v2{path}", headers=headers, timeout=30, **kwargs)
        resp.raise_for_status()
        return resp.json() if resp.headers.get("content-type", "").startswith("application/json") else resp.text

    def ready(self) -> bool:
        health = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=5).json()
        wanted = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}
        if any(health.get(wanted[c], {}).get("status") != "healthy" for c in self.components if c in wanted):
            return False
        dags = {d["dag_id"] for d in self.api("GET", "/dags", params={"limit": 100})["dags"]}
        return self.dag_ids <= dags

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:] for p in self.home.glob("*.log"))

    # ---- runs ----------------------------------------------------------------------------------

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Trigger ``dag_id`` through the REST API (unpausing it first); returns the run id."""
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        run = self.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def finish(self, dag_id: str, run_id: str, timeout: float = 240) -> dict[str, Any]:
        """Wait for the run to end; returns the run with ``tasks``: {task_id: (state, try_number)}."""

        def done() -> dict[str, Any] | None:
            current = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            return current if current["state"] in ("success", "failed") else None

        run = wait(f"{dag_id} run {run_id} to finish", done, timeout=timeout, interval=0.5)
        run["tasks"] = {t["task_id"]: (t["state"], t["try_number"]) for t in self.task_instances(dag_id, run_id)}
        return run

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        value = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value")
        return value["value"] if not isinstance(value["value"], str) else json.loads(value["value"])

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        body = self.api(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": True},
            headers={"Accept": "application/json"},
        )
        if isinstance(body, dict):
            content = body.get("content")
            if isinstance(content, list):
                return "\n".join(_line(c) for c in content)
            return str(content)
        return str(body)


def _line(entry: Any) -> str:
    """One structured log entry as text: the event, and the exceptions it carries."""
    if not isinstance(entry, dict):
        return str(entry)
    errors = [
        f"{e.get('exc_type')}: {e.get('exc_value')}" for e in entry.get("error_detail") or [] if isinstance(e, dict)
    ]
    return "\n".join([str(entry.get("event", "")), *errors])
