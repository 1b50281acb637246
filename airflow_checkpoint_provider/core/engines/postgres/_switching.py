"""The component's cut-over, rollback and abort over the journaled renames of ``_cutover``."""

from __future__ import annotations

import time
from dataclasses import asdict

from airflow_checkpoint_provider.core.engines.postgres._common import (
    COMPONENT,
    _Item,
    log,
)
from airflow_checkpoint_provider.core.engines.postgres._cutover import (
    CutoverError,
    Server,
    Switch,
)
from airflow_checkpoint_provider.core.engines.postgres._load import _LoadMixin
from airflow_checkpoint_provider.core.engines.postgres._names import (
    rollback_name,
)
from airflow_checkpoint_provider.core.errors import (
    CheckpointError,
)
from airflow_checkpoint_provider.core.restore import RestoreOutcome


class _SwitchMixin(_LoadMixin):
    """The component's cut-over, rollback and abort over the journaled renames of ``_cutover``. Mixed into :class:`~.restore.PostgresRestore`."""

    def cutover(self) -> RestoreOutcome:
        """Switch every verified copy in (journaled; see ``_cutover``); undo them all if one fails."""
        if self.mode == "in_place":
            self.journal.note(mode="in_place")
            self.journal.phase("cutting_over")
            for item in self.items:
                self._restore_in_place(item)
            self.journal.phase("cut_over")
            return self._outcome()
        try:
            self._cutover_side_by_side()
        finally:
            self._watchers.close()
        self.journal.phase("cut_over")
        return self._outcome()

    def _cutover_side_by_side(self) -> None:
        with self._admin("cutting over") as conn:
            srv = self._server(conn)
            switches = [self._switch_for(srv, item) for item in self.items]
            self.journal.note(switches=[asdict(sw) for sw in switches])
            self.journal.phase("cutting_over")
            done: list[_Item] = []
            try:
                for item, sw in zip(self.items, switches, strict=True):
                    self._switch(srv, item, sw)
                    done.append(item)
            except BaseException as exc:
                self.journal.phase("rolling_back")
                failed = self._switch_back(srv, done)
                if failed and isinstance(exc, Exception):
                    raise CutoverError(
                        f"{self.target.label}: cut-over failed ({exc}) and putting back the databases cut over "
                        f"before it failed too: {'; '.join(failed)}",
                        hint="run `airflow-checkpoint recover-interrupted`; the rollback copies "
                        "(`airflow-checkpoint rollbacks list`) and the safety checkpoint hold the previous data",
                    ) from exc
                self.journal.phase("rolled_back")
                raise

    def _outcome(self) -> RestoreOutcome:
        outcome = RestoreOutcome(COMPONENT)
        for item in self.items:
            outcome.restored.append(item.target_db)
            if item.rollback:
                outcome.rollback.append(item.rollback)
            outcome.details[item.target_db] = {
                "source": item.source,
                "artifact": item.artifact.name,
                "mode": self.mode,
                "rollback": item.rollback,
                **item.details,
            }
        return outcome

    def _switch_for(self, srv: Server, item: _Item) -> Switch:
        """What the cut-over of ``item`` will do, with the names and settings a replay needs."""
        if srv.settings(item.staging) is None:
            raise CutoverError(
                f"{self.target.label}/{item.target_db}: the side-by-side copy {item.staging} does not exist",
                hint="run prepare() before cutover(); nothing was changed",
            )
        current = srv.settings(item.target_db)
        limit = item.info.connection_limit if item.info and item.info.connection_limit is not None else -1
        if current is None:
            return Switch(item.target_db, item.staging, None, new_limit=limit)
        return Switch(
            item.target_db,
            item.staging,
            rollback_name(item.target_db, self.checkpoint_id),
            allow=current[0],
            limit=current[1],
            new_limit=limit,
        )

    def _switch(self, srv: Server, item: _Item, sw: Switch) -> None:
        where = f"{self.target.label}/{item.target_db}"
        t0 = time.monotonic()
        terminated = srv.switch(sw, self.journal)
        item.existed, item.rollback, item.switch, item.cut_over = sw.rollback is not None, sw.rollback, sw, True
        item.details.update(
            {
                "terminated_sessions": terminated,
                "cutover_seconds": round(time.monotonic() - t0, 3),
                "connection_limit": sw.new_limit,
            }
        )
        if sw.rollback:
            log.info(
                "%s now serves checkpoint %s; the previous data is kept as %s (%d session(s) terminated, "
                "cut-over %.2fs)",
                where,
                self.checkpoint_id,
                sw.rollback,
                terminated,
                time.monotonic() - t0,
            )
        else:
            log.info("%s now serves checkpoint %s (it did not exist before)", where, self.checkpoint_id)
        if sw.rollback and sw.limit != sw.new_limit:
            log.info(
                "%s: CONNECTION LIMIT is the checkpoint's %d (the replaced database had %d, kept on %s)",
                where,
                sw.new_limit,
                sw.limit,
                sw.rollback,
            )

    def _switch_back(self, srv: Server, items: list[_Item]) -> list[str]:
        """Undo the cut-over of ``items``, newest first; returns the failures."""
        failed = []
        for item in reversed(items):
            assert item.switch is not None
            try:
                srv.switch_back(item.switch, self.journal)
            except Exception as exc:
                log.exception("rolling back %s failed", item.target_db)
                failed.append(f"{item.target_db}: {exc}")
                continue
            item.cut_over, item.rollback = False, None
            log.info("%s/%s: rolled back; the previous data serves again", self.target.label, item.target_db)
        return failed

    def _restore_in_place(self, item: _Item) -> None:
        where = f"{self.target.label}/{item.target_db}"
        t0 = time.monotonic()
        info = self._inspect(item)
        warnings: list[str] = []
        with self._admin("preparing the in-place restore") as conn:
            if self._server(conn).settings(item.target_db) is None:
                warnings += self._create_database(conn, item.target_db, info)
                item.existed = False
            else:
                item.existed = True
        warnings += [f"created missing schema {s}" for s in self._create_schemas(item, item.target_db)]
        try:
            self._pg_restore(item, item.target_db, in_place=True)
        except CheckpointError as exc:
            state = (
                "nothing was changed (pg_restore ran in a single transaction)"
                if self.jobs == 1
                else "the database may be partly restored: restore the safety checkpoint (tag 'safety') taken "
                "before this restore"
            )
            raise type(exc)(f"{exc.message}\n{where}: {state}", hint=exc.hint) from None
        warnings += self._apply_database_properties(item, item.target_db)
        item.details["verification"] = self._verify(item, item.target_db, in_place=True)
        item.details["warnings"] = warnings + item.details["verification"].pop("warnings", [])
        item.details["cutover_seconds"] = round(time.monotonic() - t0, 3)
        item.cut_over, item.rollback = True, None

    def rollback(self) -> None:
        """Put the replaced databases back (side by side); the restored copies are dropped."""
        if self.mode == "in_place" and any(i.cut_over for i in self.items):
            raise CutoverError(
                f"{self.target.label}: an in-place restore cannot be undone here",
                hint="restore the safety checkpoint (tag 'safety') taken before this restore",
            )
        items = [i for i in self.items if i.cut_over]
        if not items:
            return
        self.journal.phase("rolling_back")
        with self._admin("rolling back") as conn:
            failed = self._switch_back(self._server(conn), items)
        if failed:
            raise CutoverError(
                f"{self.target.label}: rollback failed: {'; '.join(failed)}",
                hint="run `airflow-checkpoint recover-interrupted`; the rollback copies "
                "(`airflow-checkpoint rollbacks list`) and the safety checkpoint hold the previous data",
            )
        self.journal.phase("rolled_back")

    def abort(self) -> None:
        """Drop the ``__restoring`` copies of this restore (idempotent; never touches what serves).

        Tries every copy; raises naming those that could not be dropped."""
        self._watchers.close()
        pending = [i for i in self.items if not i.cut_over]
        if not pending:
            return
        left: list[str] = []
        try:
            with self._admin("dropping side-by-side copies") as conn:
                srv = self._server(conn)
                for item in pending:
                    try:
                        srv.drop_copy(item.staging)
                        item.prepared = False
                    except CheckpointError as exc:
                        left.append(f"{item.staging} ({exc.message})")
        except CheckpointError as exc:
            left = [f"{i.staging} ({exc.message})" for i in pending]
        if left:
            raise CutoverError(
                f"{self.target.label}: could not drop the side-by-side copies {', '.join(left)}",
                hint="they hold no live data; `airflow-checkpoint cleanup` or the next restore removes them",
            )
        self.journal.phase("aborted")
