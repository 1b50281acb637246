"""``SearchRestore``: the search engine as one component of a checkpoint restore.

The search restore loads side by side, verifies and cuts over in one call
(:func:`.restore.restore`, with its own journaled rollback), so the orchestration runs it
last: :meth:`SearchRestore.prepare` only re-checks the plan, and :meth:`cutover` does the
work. If it fails, the search indices are put back by the engine and the components cut
over before it are rolled back by the orchestration.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow_checkpoint_provider.core.engines.search._capture import capture
from airflow_checkpoint_provider.core.engines.search._client import SearchClient
from airflow_checkpoint_provider.core.engines.search.health import health as search_health
from airflow_checkpoint_provider.core.engines.search.restore import plan_restore
from airflow_checkpoint_provider.core.engines.search.restore import restore as search_restore
from airflow_checkpoint_provider.core.engines.targets import SearchTarget
from airflow_checkpoint_provider.core.errors import EngineError, FormatError, NotFoundError
from airflow_checkpoint_provider.core.manifest import Artifact
from airflow_checkpoint_provider.core.restore import HealthCheck, PlanItem, RestoreOutcome
from airflow_checkpoint_provider.core.safejson import load_json
from airflow_checkpoint_provider.core.staging import Staging
from airflow_checkpoint_provider.core.store import Store

log = logging.getLogger(__name__)


class SearchRestore:
    component = "search"

    def __init__(self, target: SearchTarget, store: Store, checkpoint_id: str, artifact: Artifact, *,
                 indices: list[str] | None = None, swap: str = "auto", include_global_state: bool = False,
                 repository_settings: dict[str, Any] | None = None, wait_timeout: float = 3600.0) -> None:
        self.target, self.store, self.checkpoint_id, self.artifact = target, store, checkpoint_id, artifact
        self.indices, self.swap, self.include_global_state = indices, swap, include_global_state
        self.repository_settings, self.wait_timeout = repository_settings, wait_timeout
        self._doc: dict[str, Any] | None = None
        self.outcome: RestoreOutcome | None = None

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
            plan = plan_restore(client, self.artifact, doc, checkpoint_id=self.checkpoint_id,
                                indices=self.indices, swap=self.swap, include_global_state=self.include_global_state,
                                repository_settings=self.repository_settings)
        return plan.items, plan.problems

    def safety_capture(self, staging: Staging) -> list[Artifact]:
        """Snapshot the indices that would be replaced (those that exist now) into the same repository."""
        names = [i for i in (self.indices or self.doc["snapshot"]["indices"]) if not i.startswith(".")]
        with self._client() as client:
            try:
                live, _ = client.resolve_indices(None)
            except NotFoundError:
                live = []
        existing = [i for i in live if i in set(names)]
        if not existing:
            return []
        return capture(self.target, staging, repository=self.doc["repository"]["name"],
                       repository_settings=self.repository_settings, indices=existing)

    def prepare(self) -> None:
        items, problems = self.plan()
        if problems:
            raise EngineError("; ".join(problems), hint="nothing was changed")

    def cutover(self) -> RestoreOutcome:
        with self._client() as client:
            self.outcome = search_restore(client, self.artifact, self.doc, checkpoint_id=self.checkpoint_id,
                                          indices=self.indices, swap=self.swap,
                                          include_global_state=self.include_global_state,
                                          wait_timeout=self.wait_timeout, log=log,
                                          repository_settings=self.repository_settings)
        return self.outcome

    def rollback(self) -> None:
        raise EngineError(
            f"search restore of {self.checkpoint_id} into {self.target.label} cannot be undone automatically",
            hint=f"the previous indices are kept as rollback copies: {self.outcome.rollback if self.outcome else []}",
        )

    def abort(self) -> None:
        """Nothing to drop: the engine removes its side-by-side copies when it fails."""

    def health(self, tolerance: float) -> list[HealthCheck]:
        expected = self.artifact.fingerprints
        if self.indices:
            expected = {**expected, "indices": {k: v for k, v in expected.get("indices", {}).items()
                                                if k in self.indices}}
        with self._client() as client:
            return search_health(client, expected, tolerance=tolerance)
