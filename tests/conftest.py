"""Shared pytest fixtures: real PostgreSQL, Redis, OpenSearch and Elasticsearch 7.

The servers are started by ``scripts/services.py`` only when a test asks for one
of the fixtures below, once per session, and are stopped at the end of the
session (also when tests fail or the run is interrupted). Pure unit tests that
request none of them never start anything.

Set ``CHECKPOINT_SERVICES_DIR`` to the state directory of services you started
yourself (``python scripts/services.py start --dir DIR``) to reuse them instead;
they are then left running.

This module must not import Airflow.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICES_SCRIPT = REPO_ROOT / "scripts" / "services.py"

SERVICE_FIXTURES = frozenset(
    {"services", "pg", "redis_server", "opensearch", "elasticsearch", "airflow_conn_env", "s3_server"}
)


def _load_services_module():
    name = "checkpoint_test_services"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SERVICES_SCRIPT)
    assert spec and spec.loader, SERVICES_SCRIPT
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


services_api = _load_services_module()


#: the modules that take minutes (real Airflow, kill loops): run first, so that with parallel
#: workers (``make test``: pytest-xdist, whole modules per worker) no worker is left with one of
#: them at the end while the others idle
SLOW_MODULES = (
    "test_ui_browser.py",
    "test_dag_cycles.py",
    "test_restore_kills.py",
    "test_workflow_dag.py",
    "test_dag_restore.py",
    "test_metrics.py",
    "test_s3_store.py",
    "test_cli_break_glass.py",
    "test_celery_workers.py",
    "test_restore_drift.py",
    "test_dag_checkpoint.py",
    "test_search_crash.py",
    "test_dag_lifecycle.py",
    "test_files_dag.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses a service fixture as ``integration``; put the slow modules first."""
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
    rank = {name: i for i, name in enumerate(SLOW_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keeps its order


@pytest.fixture(scope="session")
def services_module():
    """The ``scripts/services.py`` module (start/stop/connection_env/...)."""
    return services_api


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Start all four servers for the session and yield the info dict."""
    reuse = os.environ.get("CHECKPOINT_SERVICES_DIR")
    if reuse:
        info = services_api.load_info(Path(reuse))
        state = services_api.status(Path(reuse))
        stopped = [n for n in info if n in services_api.ALL and not state.get(n)]
        if stopped:
            raise RuntimeError(f"CHECKPOINT_SERVICES_DIR={reuse}: not running: {', '.join(stopped)}")
        yield info
        return

    state_dir = tmp_path_factory.mktemp("services")

    # Belt and braces: stop() is idempotent, so also run it at interpreter exit
    # in case the session is torn down abnormally.
    def stop_services() -> None:
        services_api.stop(state_dir)

    atexit.register(stop_services)
    try:
        info = services_api.start(state_dir)
        yield info
    finally:
        stop_services()
        atexit.unregister(stop_services)


def _service(services: dict[str, Any], name: str) -> dict[str, Any]:
    if name not in services:
        raise RuntimeError(f"{name} is not among the reused services (CHECKPOINT_SERVICES_DIR); start it too")
    return services[name]


@pytest.fixture(scope="session")
def pg(services: dict[str, Any]) -> dict[str, Any]:
    """PostgreSQL: host, port, user, password, database, superuser, socket_dir, bin_dir, ..."""
    return _service(services, "postgres")


@pytest.fixture(scope="session")
def redis_server(services: dict[str, Any]) -> dict[str, Any]:
    """Redis: host, port, password, version, dir, pid."""
    return _service(services, "redis")


@pytest.fixture(scope="session")
def opensearch(services: dict[str, Any]) -> dict[str, Any]:
    """OpenSearch 2.19: url, host, port, version, path_repo, pid."""
    return _service(services, "opensearch")


@pytest.fixture(scope="session")
def elasticsearch(services: dict[str, Any]) -> dict[str, Any]:
    """Elasticsearch 7.10.2: url, host, port, version, path_repo, pid."""
    return _service(services, "elasticsearch")


@pytest.fixture(scope="session")
def s3_server(services: dict[str, Any]) -> dict[str, Any]:
    """The S3 server (SeaweedFS): ``url``, ``bucket``, ``access_key_id``, ``secret_access_key``."""
    return _service(services, "s3")


@pytest.fixture(scope="session")
def airflow_conn_env(services: dict[str, Any]) -> Iterator[dict[str, str]]:
    """Set the AIRFLOW_CONN_* variables for the whole session; yields them."""
    env = services_api.connection_env(services)
    patcher = pytest.MonkeyPatch()
    try:
        for key, value in env.items():
            patcher.setenv(key, value)
        yield env
    finally:
        patcher.undo()


@pytest.fixture(autouse=True)
def _logging_left_as_found() -> Iterator[None]:
    """Tests that run the CLI's ``main()`` in-process let it set up logging (stderr, WARNING); put
    the logging of the process back afterwards, so later tests see Airflow's own."""
    import logging

    import structlog

    root = logging.getLogger()
    saved = (structlog.get_config(), root.level, list(root.handlers))
    yield
    config, level, handlers = saved
    structlog.configure(**config)
    root.setLevel(level)
    root.handlers[:] = handlers
