"""The in-place Redis restore: RESTORE REPLACE into the serving dbs, then remove the keys the checkpoint does not hold."""

from __future__ import annotations

import logging
from typing import Any

from airflow_checkpoint_provider.core.restore import (
    RestoreOutcome,
)

from ._base import _RestoreBase
from ._load import (
    RedisRestoreError,
    _transaction,
)
from .resp import Connection, RespError, connect

log = logging.getLogger("airflow_checkpoint_provider.core.engines.redis.restore")


class _InPlaceMixin(_RestoreBase):
    """The in-place Redis restore: RESTORE REPLACE into the serving dbs, then remove the keys the checkpoint does not hold. Mixed into :class:`RedisRestore`."""

    def _cutover_in_place(self) -> RestoreOutcome:
        mapping = {t: t for t in self.dbs}
        fns: list[Any] = []
        self.journal.note(mode="in_place", checkpoint_id=self.checkpoint_id, restore_id=self.restore_id, dbs=self.dbs)
        self.journal.phase("cutting_over")
        try:
            with (
                connect(self.target) as conn,
                self.journal.step(
                    "load_in_place",
                    intent={"dbs": self.dbs, "checkpoint_id": self.checkpoint_id},
                    undo={"restore": "the safety checkpoint taken before the restore"},
                ),
            ):
                self._stats = self._load(conn, mapping, replace=True, keep_hashes=True)
                removed = self._remove_extra(conn)
                self._verify(conn, mapping)
                fns = self._function_commands(self._major())
                if fns:
                    errors = [r.message for r in _transaction(conn, fns) if isinstance(r, RespError)]
                    if errors:
                        raise RedisRestoreError(f"loading the functions failed: {'; '.join(errors)}")
        except Exception as exc:
            raise RedisRestoreError(
                f"the in-place restore of {self.checkpoint_id} into {self.target.label} failed: {exc}",
                hint="the dbs are partly restored: restore the safety checkpoint, or retry",
            ) from exc
        self.journal.phase("cut_over")
        details = {**self._details(fns), "removed": removed}
        return RestoreOutcome(self.component, restored=[f"db{t}" for t in self.dbs], details=details)

    def _remove_extra(self, conn: Connection) -> dict[str, int]:
        """UNLINK the keys of each target db that the checkpoint does not hold."""
        removed = {}
        for t in self.dbs:
            st = self._stats.get(t)
            keep = st.hashes if st is not None and st.hashes is not None else set()
            conn.call("SELECT", t)
            cursor, n = b"0", 0
            while True:
                cursor, keys = conn.call("SCAN", cursor, "COUNT", 1000)
                extra = [k for k in keys if hash(k) not in keep]
                if extra:
                    n += conn.call("UNLINK", *extra)
                if cursor in (b"0", 0, "0"):
                    break
            removed[f"db{t}"] = n
        return removed
