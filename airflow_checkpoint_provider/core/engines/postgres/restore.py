"""Restore: ``pg_restore`` side by side into ``<db>__restoring``, verify, then cut over by renaming.

See the package docstring for the recipe; this module implements
:class:`~airflow_checkpoint_provider.core.recovery.ComponentRestore` for PostgreSQL.
"""

from __future__ import annotations

from airflow_checkpoint_provider.core.engines.postgres._common import (
    COMPONENT,
)
from airflow_checkpoint_provider.core.engines.postgres._plan import _PlanMixin
from airflow_checkpoint_provider.core.engines.postgres._switching import _SwitchMixin
from airflow_checkpoint_provider.core.engines.postgres.health import health as _health
from airflow_checkpoint_provider.core.restore import HealthCheck


class PostgresRestore(_PlanMixin, _SwitchMixin):
    """Restore the PostgreSQL databases of one checkpoint (a ``ComponentRestore``).

    :param target: the server to restore into (may differ from the captured one).
    :param store: the checkpoint store; artifacts are streamed out of it, sha256-checked.
    :param checkpoint_id: the (resolved) checkpoint id.
    :param artifacts: the checkpoint's artifacts; those of store ``postgres`` are used.
    :param mode: ``side_by_side`` (default) or ``in_place`` (see the package docstring).
    :param databases: restore only these databases of the checkpoint (by ``meta["database"]``).
    :param rename: ``{checkpoint db: target db}``: restore a database under another name.
    :param pg_restore: the pg_restore binary (its major version must be >= the dump's pg_dump).
    :param jobs: pg_restore ``--jobs``. With 1 a custom-format dump is streamed into pg_restore's
        stdin; otherwise (and for the directory format, and in place) it is written to a private
        temporary file or directory under ``workdir`` first, removed afterwards.
    :param capture_options: keyword arguments of :func:`capture` for the safety checkpoint.
    :param workdir: parent of the temporary dump files (default: the system temp dir).
    :param no_owner: ``pg_restore --no-owner`` (default): objects belong to the restoring role.
        ``False`` keeps the dump's owners (needs a superuser and the roles on the target).
    :param no_privileges: ``pg_restore --no-privileges``: skip GRANT/REVOKE (roles missing on the target).
    :param session_options: settings for the pg_restore sessions (``PGOPTIONS``); default
        ``synchronous_commit=off`` and ``maintenance_work_mem=512MB`` side by side, none in place.
    :param cutover_timeout: seconds to wait for terminated sessions to go away.
    """

    component = COMPONENT

    def health(self, tolerance: float) -> list[HealthCheck]:
        expectations = {
            i.target_db: {
                "rows": i.artifact.fingerprints.get("rows") or {},
                "row_counts": i.artifact.fingerprints.get("row_counts", "exact"),
            }
            for i in self.items
        }
        return _health(self.target, expectations, tolerance=tolerance)
