"""ValidateDeploymentOperator: one pre-deploy check; any failure blocks the deploy and names the check."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_checkpoint_provider.core import deploycheck
from airflow_checkpoint_provider.hooks.lookup import get_connection

if TYPE_CHECKING:
    from airflow.sdk import Context

CHECKS = ("env", "connections", "files", "dependencies")


def check_connections(conn_ids: list[str]) -> list[str]:
    """Each connection must exist and answer: an engine's connection type by a round trip to its
    server (``server_version``), any other type by its hook's ``test_connection``."""
    from airflow_checkpoint_provider import engines
    from airflow_checkpoint_provider.core.errors import CheckpointError

    by_type = {t: e for e in engines.engines().values() for t in e.conn_types}
    problems = []
    for conn_id in conn_ids:
        try:
            conn = get_connection(conn_id)
        except Exception as exc:
            problems.append(f"connection {conn_id!r} is not defined ({type(exc).__name__})")
            continue
        kind = conn.conn_type
        engine = by_type.get(kind or "") or (by_type.get("elasticsearch") if kind == "opensearch" else None)
        if engine is not None:
            try:
                version = engine.server_version(engine.target_from_connection(engines.connection_info(conn_id)))
                ok, message = True, f"{engine.title} {version}"
            except CheckpointError as exc:
                ok, message = False, str(exc)
        else:
            try:
                ok, message = conn.get_hook().test_connection()
            except Exception as exc:
                ok, message = False, f"cannot test connections of type {kind!r}: {exc}"
        if not ok:
            problems.append(f"connection {conn_id!r} ({kind}) is not reachable: {message.splitlines()[0]}")
    return problems


class ValidateDeploymentOperator(BaseOperator):
    """Run one deployment check. Fails (without retry) listing every problem it found.

    :param check: ``env`` (variables set), ``connections`` (reachable), ``files`` (present,
        readable, non-empty) or ``dependencies`` (installed versions satisfy specifiers).
    :param items: names, connection ids, paths, or ``{package: specifier}`` for the check.
    """

    template_fields = ("items",)

    def __init__(self, *, check: str, items: Any = (), **kwargs: Any) -> None:
        if check not in CHECKS:
            raise ValueError(f"unknown deployment check {check!r}; use one of {CHECKS}")
        super().__init__(**kwargs)
        self.check = check
        self.items = items

    def execute(self, context: Context) -> dict[str, Any]:
        items = self.items or ([] if self.check != "dependencies" else {})
        if self.check == "env":
            problems = deploycheck.check_env(items)
        elif self.check == "files":
            problems = deploycheck.check_files(items)
        elif self.check == "dependencies":
            problems = deploycheck.check_dependencies(items)
        else:
            problems = check_connections(list(items))
        if problems:
            raise AirflowFailException(
                f"deployment check '{self.check}' failed; the deploy is blocked:\n  - " + "\n  - ".join(problems)
            )
        self.log.info("deployment check '%s' passed (%d item(s))", self.check, len(items))
        return {"check": self.check, "passed": True, "items": len(items)}
