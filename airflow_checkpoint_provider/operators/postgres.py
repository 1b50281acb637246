"""PgDumpOperator: pg_dump one, several or all databases into the run's staging area."""

from __future__ import annotations

from typing import Any

from airflow_checkpoint_provider import settings
from airflow_checkpoint_provider.core.manifest import Artifact
from airflow_checkpoint_provider.core.staging import Staging
from airflow_checkpoint_provider.operators.base import CaptureOperator, split_list


class PgDumpOperator(CaptureOperator):
    """Dump PostgreSQL databases with pg_dump, zstd-compressed, with fingerprints.

    The dump and the fingerprints (row counts per table, schema hash, server version,
    database size) come from one exported snapshot, so they describe the same instant.
    The password reaches pg_dump through a passfile held in memory, never its command line,
    its environment or the disk; the connection's TLS options (``sslmode``, ``sslrootcert``,
    ``sslcert``, ``sslkey``, ...) reach it too.

    :param postgres_conn_id: Airflow connection of the server.
    :param databases: a name, a list, or ``"all"``/None for every connectable database.
    :param dump_format: ``custom`` (default) or ``directory`` (parallel with ``jobs``).
    :param jobs: pg_dump -j for the directory format.
    :param schemas: only these schemas (pg_dump -n); ``exclude_schemas``: pg_dump -N.
    :param tables: only these tables (pg_dump -t); ``exclude_tables``: pg_dump -T.
    :param pg_dump: path of pg_dump; must be at least as new as the server.
    :param exact_counts: exact ``count(*)`` per table (default) or the catalogue estimate.
    """

    component = "postgres"
    task_name = "pg_dump"  #: its task id in the checkpoint task group
    group_options = {"postgres_conn_id": "postgres_conn_id", "databases": "databases", "pg_options": "*"}
    names_option = "databases"
    restore_kwargs = {
        "databases": "databases",
        "rename_databases": "rename",
        "pg_restore": "pg_restore",
        "jobs": "jobs",
        "pg_options": "*",
    }
    template_fields = (
        *CaptureOperator.template_fields,
        "databases",
        "dump_format",
        "jobs",
        "schemas",
        "exclude_schemas",
        "tables",
        "exclude_tables",
        "pg_dump",
        "postgres_conn_id",
    )

    def __init__(
        self,
        *,
        postgres_conn_id: str = "postgres_default",
        databases: str | list[str] | None = None,
        dump_format: str = "custom",
        jobs: int = 1,
        schemas: list[str] | tuple[str, ...] = (),
        exclude_schemas: list[str] | tuple[str, ...] = (),
        tables: list[str] | tuple[str, ...] = (),
        exclude_tables: list[str] | tuple[str, ...] = (),
        pg_dump: str = "pg_dump",
        exact_counts: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.postgres_conn_id = postgres_conn_id
        self.databases = databases
        self.dump_format = dump_format
        self.jobs = jobs
        self.schemas = schemas
        self.exclude_schemas = exclude_schemas
        self.tables = tables
        self.exclude_tables = exclude_tables
        self.pg_dump = pg_dump
        self.exact_counts = exact_counts

    def _databases(self) -> list[str] | None:
        dbs = split_list(self.databases)
        return None if not dbs or dbs == ["all"] else dbs

    def config(self) -> dict[str, Any]:
        return {
            "conn_id": self.postgres_conn_id,
            "databases": self._databases(),
            "format": self.dump_format,
            "jobs": int(self.jobs),
            "schemas": split_list(self.schemas),
            "exclude_schemas": split_list(self.exclude_schemas),
            "tables": split_list(self.tables),
            "exclude_tables": split_list(self.exclude_tables),
            "exact_counts": bool(self.exact_counts),
        }

    @classmethod
    def capture_params(cls) -> dict[str, Any]:
        from airflow_checkpoint_provider.dags.params import optional_text

        return {
            "databases": optional_text(
                "PostgreSQL databases",
                "Comma-separated database names, or 'all' (or empty) for every connectable database.",
                "all",
            )
        }

    @classmethod
    def capture_kwargs(cls) -> dict[str, Any]:
        return {"databases": "{{ params.databases or 'all' }}"}

    @classmethod
    def restore_params(cls, *, chosen: bool) -> dict[str, Any]:
        from airflow.sdk import Param

        from airflow_checkpoint_provider.dags.params import optional_text

        if not chosen:
            return {}
        return {
            "databases": optional_text(
                "PostgreSQL databases", "Comma-separated subset of the checkpoint's databases; empty for all."
            ),
            "rename_databases": Param(
                None,
                type=["null", "object"],
                title="Restore databases under other names",
                description='e.g. {"app": "app_restored"}; the original stays untouched.',
            ),
            "no_owner": Param(
                True,
                type="boolean",
                title="Skip ownership (pg_restore --no-owner)",
                description="Objects belong to the target connection's user instead of their "
                "original owners; needed when the target lacks the source's roles.",
            ),
            "no_privileges": Param(
                False,
                type="boolean",
                title="Skip privileges (pg_restore --no-privileges)",
                description="Leave out GRANT/REVOKE; needed when the target lacks the roles they name.",
            ),
        }

    @classmethod
    def restore_options(cls, *, chosen: bool) -> dict[str, Any]:
        if not chosen:
            return {}
        return {
            "databases": "{{ params.databases }}",
            "rename": "{{ params.rename_databases }}",
            "no_owner": "{{ params.no_owner }}",
            "no_privileges": "{{ params.no_privileges }}",
        }

    def capture(self, staging: Staging, target: Any) -> list[Artifact]:
        from airflow_checkpoint_provider.core.engines import postgres

        self.log.info(
            "pg_dump %s from %s (%s format)", self._databases() or "all databases", target.label, self.dump_format
        )
        return postgres.capture(
            target,
            staging,
            databases=self._databases(),
            dump_format=self.dump_format,
            jobs=int(self.jobs),
            schemas=split_list(self.schemas),
            exclude_schemas=split_list(self.exclude_schemas),
            tables=split_list(self.tables),
            exclude_tables=split_list(self.exclude_tables),
            pg_dump=self.pg_dump,
            exact_counts=bool(self.exact_counts),
            compression_level=settings.compression_level(),
        )
