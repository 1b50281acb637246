"""The journaled steps of a search cut-over and the context the forward and backward passes share.

Every change a cut-over or a rollback makes to what serves runs inside ``ctx.step(name, ...)``, a
journal step (intent and undo written first, fsynced; marked done after), with the crash points
``search.<name>.intent`` and ``search.<name>.applied`` around it. Both passes are *idempotent*:
each looks at the live cluster before each step (is the alias already switched? was the index
restored from our snapshot?), so running one again after a kill finishes what the killed one
started. That is how :func:`._replay.recover` works: it runs the same pass again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from airflow_checkpoint_provider.core import crashpoints
from airflow_checkpoint_provider.core.engines.search import _ops as O
from airflow_checkpoint_provider.core.engines.search._client import SearchClient
from airflow_checkpoint_provider.core.journal import (
    ComponentEntry,
    ComponentJournal,
    NullJournal,
)

COMPONENT = "search"
#: forward (cut-over) steps, then backward (rollback) steps: distinct names, so that a crash test can
#: kill a rollback half-way as well as a cut-over
FORWARD_STEPS = (
    "put_template",
    "block_writes",
    "clone",
    "close",
    "delete",
    "restore_index",
    "alias_switch",
    "snapshot_stream",
    "delete_stream",
    "restore_stream",
)
BACKWARD_STEPS = ("rollback_alias", "rollback_delete", "rollback_clone", "unblock", "rollback_stream", "drop_template")
STEPS = crashpoints.declare(COMPONENT, FORWARD_STEPS + BACKWARD_STEPS)


class EntryJournal(NullJournal):
    """A replay's journal: no file behind it, but the steps of ``entry`` (the killed restore's) are
    what :meth:`Ctx.started` looks at."""

    def __init__(self, entry: ComponentEntry) -> None:
        self.entry = entry


class Ctx:
    """What a forward or backward pass works with: the cluster, the journaled plan, the journal."""

    def __init__(
        self,
        client: SearchClient,
        record: dict[str, Any],
        journal: ComponentJournal,
        *,
        say: Callable[[str], None],
        timeout: float = 3600.0,
        poll_interval: float = 1.0,
        checkpoint_id: str = "",
    ) -> None:
        self.client = client
        self.record = record
        self.journal = journal
        self.say = say
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.checkpoint_id = checkpoint_id
        self.repository: str = record["repository"]
        self.snapshot: str = record["snapshot"]
        self.items: list[dict[str, Any]] = record["items"]
        self.state: dict[str, str] = {}  #: per target, what the last pass left it as
        self.current = ""  #: the target being worked on (for messages)
        self.doing = ""  #: the step being taken (for messages)

    # -- journal
    @contextmanager
    def step(self, name: str, intent: dict[str, Any], undo: dict[str, Any], doing: str) -> Iterator[None]:
        self.doing = doing
        self.say(doing)
        with self.journal.step(name, intent=intent, undo=undo):
            yield

    def started(self, step: str, **match: Any) -> bool:
        """Whether this restore's journal has a step ``step`` whose intent matches ``match``."""
        return any(
            s.name == step and all(s.intent.get(k) == v for k, v in match.items()) for s in self.journal.entry.steps
        )

    def noted(self, key: str) -> list[str]:
        return list(self.journal.entry.data.get(key) or [])

    def note_add(self, key: str, value: str) -> None:
        values = self.noted(key)
        if value not in values:
            self.journal.note(**{key: values + [value]})

    # -- the live cluster
    def status(self, index: str) -> str:
        """``missing``, ``open`` or ``close``."""
        return O.index_status(self.client, index)

    def ours(self, index: str, snapshot: str | None = None) -> bool:
        """Whether ``index`` was restored from this restore's snapshot (or ``snapshot``)."""
        return O.recovered_from(self.client, index) == (self.repository, snapshot or self.snapshot)

    def wait(self, names: list[str], what: str) -> None:
        O.wait_for_primaries(self.client, names, timeout=self.timeout, what=what, poll_interval=self.poll_interval)
