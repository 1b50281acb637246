"""``SearchRestore``: the search engine as one component of a checkpoint restore.

:meth:`SearchRestore.prepare` registers a missing repository (``repository_settings``), restores
the copies side by side and verifies them (journal phases ``loading`` -> ``verified``);
:meth:`cutover` runs the journaled forward pass (``cutting_over`` -> ``cut_over``), undoing itself
on failure; :meth:`rollback` undoes a completed cut-over (``rolled_back``) and :meth:`abort` drops
the copies (``aborted``). The orchestration sets :attr:`journal` before :meth:`prepare`; an
interrupted restore is finished or undone by :func:`.restore.recover`.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow_checkpoint_provider.core.engines.search._capture import capture
from airflow_checkpoint_provider.core.engines.search._client import SearchClient
from airflow_checkpoint_provider.core.engines.search._names import DRILL_MARK, STAGING_MARK
from airflow_checkpoint_provider.core.engines.search.health import (
    health as search_health,
)
from airflow_checkpoint_provider.core.engines.search.restore import (
    COMPONENT,
    Prepared,
    abort,
    cut_over,
    plan_restore,
    prepare_restore,
    roll_back,
)
from airflow_checkpoint_provider.core.engines.targets import SearchTarget
from airflow_checkpoint_provider.core.errors import EngineError, FormatError, NotFoundError
from airflow_checkpoint_provider.core.journal import ComponentJournal, NullJournal
from airflow_checkpoint_provider.core.manifest import Artifact
from airflow_checkpoint_provider.core.restore import (
    HealthCheck,
    PlanItem,
    RestoreOutcome,
)
from airflow_checkpoint_provider.core.safejson import load_json
from airflow_checkpoint_provider.core.staging import Staging
from airflow_checkpoint_provider.core.store import Store

log = logging.getLogger(__name__)


class SearchRestore:
    component = "search"

    def __init__(
        self,
        target: SearchTarget,
        store: Store,
        checkpoint_id: str,
        artifact: Artifact,
        *,
        indices: list[str] | None = None,
        swap: str = "auto",
        include_global_state: bool = False,
        repository_settings: dict[str, Any] | None = None,
        wait_timeout: float = 3600.0,
        restore_templates: bool | None = None,
    ) -> None:
        """``repository_settings`` (e.g. ``{"type": "fs", "settings": {"location": "/path"}}``) register
        the snapshot repository when the target cluster lacks it; ``restore_templates``: see
        :mod:`._templates` (None: create the templates the cluster lacks)."""
        self.target, self.store, self.checkpoint_id, self.artifact = target, store, checkpoint_id, artifact
        self.indices, self.swap, self.include_global_state = indices, swap, include_global_state
        self.repository_settings, self.wait_timeout = repository_settings, wait_timeout
        self._doc: dict[str, Any] | None = None
        self.restore_templates = restore_templates
        self.journal: ComponentJournal = NullJournal(COMPONENT)
        self._prepared: Prepared | None = None
        self.outcome: RestoreOutcome | None = None
        self._mark = STAGING_MARK  #: side-by-side copies ``<index>__restoring_<id>``

    def use_drill_names(self) -> None:
        """Load a drill's copies as ``<index>__drill_<short checkpoint id>`` (core/drill.py)."""
        self._mark = DRILL_MARK

    @property
    def doc(self) -> dict[str, Any]:
        """The artifact's JSON document, read (size-capped) the first time the plan needs it."""
        if self._doc is None:
            source = f"{self.checkpoint_id}:{self.artifact.name}"
            doc = load_json(self.store.read_artifact(self.checkpoint_id, self.artifact.name), source=source)
            if not isinstance(doc, dict):
                raise FormatError(f"{source} is not a JSON object", hint="verify the checkpoint")
            self._doc = doc
        return self._doc

    def _client(self) -> SearchClient:
        return SearchClient(self.target)

    def plan(self) -> tuple[list[PlanItem], list[str]]:
        doc = self.doc  # read before any request: a damaged artifact never reaches the cluster
        with self._client() as client:
            plan = plan_restore(
                client,
                self.artifact,
                doc,
                checkpoint_id=self.checkpoint_id,
                indices=self.indices,
                swap=self.swap,
                include_global_state=self.include_global_state,
                repository_settings=self.repository_settings,
                restore_templates=self.restore_templates,
                mark=self._mark,
            )
        return plan.items, plan.problems

    def drift(self) -> list[str]:
        """Mapping drift (core/drift.py): each live index whose mapping differs from the checkpoint's,
        which the restore puts back. An index absent now is created by the restore: no drift."""
        from airflow_checkpoint_provider.core.engines.search._logic import mapping_sha256

        recorded = self.artifact.fingerprints.get("indices") or {}
        lines = []
        with self._client() as client:
            for name in sorted(n for n in recorded if not self.indices or n in self.indices):
                want = (recorded[name] or {}).get("mapping_sha256")
                if not want:
                    continue
                try:
                    live = client.get_mappings(name)
                except NotFoundError:
                    continue
                except EngineError as exc:
                    lines.append(
                        f"{self.target.label}: index {name}: the live mapping could not be read "
                        f"({exc.message}); drift unknown"
                    )
                    continue
                if live and sorted({mapping_sha256(m) for m in live.values()}) != [want]:
                    lines.append(
                        f"{self.target.label}: index {name}: the mapping changed since the checkpoint; the "
                        "restore puts the checkpoint's mapping back"
                    )
        return lines

    def safety_capture(self, staging: Staging) -> list[Artifact]:
        """Snapshot the indices and data streams that would be replaced into the same repository."""
        items, _ = self.plan()
        existing = sorted({i.target for i in items if i.action in ("replace", "replace-stream")})
        if not existing:
            return []
        return capture(
            self.target,
            staging,
            repository=self.doc["repository"]["name"],
            repository_settings=self.repository_settings,
            indices=existing,
        )

    def prepare(self) -> None:
        """Plan (refusing on problems), register a missing repository, load the copies, verify them."""
        with self._client() as client:
            self._prepared = prepare_restore(
                client,
                self.artifact,
                self.doc,
                checkpoint_id=self.checkpoint_id,
                indices=self.indices,
                swap=self.swap,
                include_global_state=self.include_global_state,
                wait_timeout=self.wait_timeout,
                log=log,
                repository_settings=self.repository_settings,
                restore_templates=self.restore_templates,
                journal=self.journal,
                mark=self._mark,
            )

    def cutover(self) -> RestoreOutcome:
        if self._prepared is None:
            self.outcome = RestoreOutcome(component=COMPONENT, details={"note": "nothing to restore"})
            return self.outcome
        with self._client() as client:
            self._prepared.ctx.client = client
            self.outcome = cut_over(self._prepared)
        return self.outcome

    def rollback(self) -> None:
        """Undo the completed cut-over: every target serves what it served before (journaled)."""
        if self._prepared is None or not self._prepared.cut:
            return
        with self._client() as client:
            self._prepared.ctx.client = client
            roll_back(self._prepared)

    def abort(self) -> None:
        """Drop the side-by-side copies :meth:`prepare` made (idempotent)."""
        if self._prepared is None or self._prepared.cut:
            return
        with self._client() as client:
            kept = abort(self._prepared, client, log)
        if kept:
            raise EngineError(
                f"search restore of {self.checkpoint_id}: could not drop the side-by-side copies {', '.join(kept)}",
                hint="delete them by hand (DELETE /<index>), or let the next run's cleanup drop them (drop_leftovers)",
            )

    def health(self, tolerance: float) -> list[HealthCheck]:
        expected = self.artifact.fingerprints
        if self.indices:
            expected = {
                **expected,
                "indices": {k: v for k, v in expected.get("indices", {}).items() if k in self.indices},
            }
        with self._client() as client:
            return search_health(client, expected, tolerance=tolerance)
