"""The restore journal: every destructive step of a cut-over is written down before it runs.

A restore (or a drill) opens one journal, ``journal/<restore_id>.json`` in the store, and
rewrites it atomically (temporary file, fsync, rename, directory fsync) at every change.
Each component restore records:

* its **phase**: ``loading`` (side-by-side copies are being built) -> ``verified`` (the
  copies match the checkpoint's fingerprints) -> ``cutting_over`` -> ``cut_over``; or
  ``rolling_back`` (the orchestration decided to undo a cut-over, because a later component
  failed) -> ``rolled_back``; or ``aborted`` (copies dropped before any cut-over);
* the names of the **copies** it made (side-by-side, rollback), so that nothing it created
  is ever orphaned;
* its **steps**: before each destructive step (block connections, rename, SWAPDB, write
  block, clone, delete, alias switch) the step's *intent* and its *undo*, then ``done``
  once it took effect.

The journal is removed when the restore ends, whether it succeeded or undid itself. A
journal that is still there while its lease (:mod:`.lease`) is dead belongs to a process
that was killed: the next restore, drill, retention run or capture, the task's own retry,
or ``airflow-checkpoint recover-interrupted`` replays it first with the engine's
``recover`` function. The policy is explicit and the same for every engine:

* **roll forward** when the replacement had verified (phase ``verified`` or later) and is
  still intact: the cut-over is finished;
* **roll back** otherwise: the side-by-side copies are dropped and the original is put
  back in service.

Either way every store ends up serving and writable: connections allowed, no write block,
every index present.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_checkpoint_provider.core.crashpoints import crashpoint
from airflow_checkpoint_provider.core.errors import FormatError
from airflow_checkpoint_provider.core.fs import TMP_MARK, StoreFS
from airflow_checkpoint_provider.core.manifest import format_ts, utcnow
from airflow_checkpoint_provider.core.safejson import load_json

log = logging.getLogger(__name__)

JOURNAL_DIR = "journal"
JOURNAL_FORMAT = "airflow-checkpoint-journal"
JOURNAL_VERSION = 1
PHASES = ("loading", "verified", "cutting_over", "cut_over", "rolling_back", "aborted", "rolled_back")
#: phases from which a replay finishes the cut-over rather than undoing it
FORWARD_PHASES = frozenset({"verified", "cutting_over", "cut_over"})
#: phases after which nothing is left to do
FINAL_PHASES = frozenset({"aborted", "rolled_back"})
MAX_JOURNAL_BYTES = 4 * 1024 * 1024


@dataclass
class Step:
    """One destructive step: what it does (intent) and how to take it back (undo)."""

    seq: int
    name: str
    intent: dict[str, Any]
    undo: dict[str, Any]
    state: str = "intent"  #: ``intent`` (written before the step), ``done`` (after it took effect)
    at: str = ""


@dataclass
class ComponentEntry:
    """One component restore's part of a journal."""

    component: str
    target: dict[str, Any]  #: the public target description (no secrets), plus ``conn_id`` if known
    phase: str = "loading"
    copies: dict[str, Any] = field(default_factory=dict)  #: engine-specific names of what it created
    data: dict[str, Any] = field(default_factory=dict)  #: engine-specific facts a replay needs
    steps: list[Step] = field(default_factory=list)

    @property
    def roll_forward(self) -> bool:
        """The replay policy: finish the cut-over iff the replacement had verified."""
        return self.phase in FORWARD_PHASES

    @property
    def finished(self) -> bool:
        return self.phase in FINAL_PHASES

    def pending(self) -> list[Step]:
        """Steps whose intent was written but which were never marked done (the step may or may
        not have taken effect: the engine's replay must look at the live store to tell)."""
        return [s for s in self.steps if s.state != "done"]

    def done(self, name: str) -> bool:
        return any(s.name == name and s.state == "done" for s in self.steps)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ComponentEntry:
        steps = [Step(**s) for s in d.get("steps", [])]
        return cls(
            component=d["component"],
            target=dict(d.get("target") or {}),
            phase=d.get("phase", "loading"),
            copies=dict(d.get("copies") or {}),
            data=dict(d.get("data") or {}),
            steps=steps,
        )


class Journal:
    """The journal of one restore; see the module docstring. Not thread-safe: one writer."""

    def __init__(
        self,
        fs: StoreFS,
        restore_id: str,
        *,
        checkpoint_id: str,
        kind: str = "restore",
        owner: dict[str, Any] | None = None,
        started_at: str | None = None,
        components: dict[str, ComponentEntry] | None = None,
    ) -> None:
        self.fs = fs
        self.restore_id = restore_id
        self.checkpoint_id = checkpoint_id
        self.kind = kind
        self.owner = dict(owner or {})
        self.started_at = started_at or format_ts(utcnow())
        self.components: dict[str, ComponentEntry] = dict(components or {})
        self._seq = max((s.seq for e in self.components.values() for s in e.steps), default=0)

    @property
    def rel(self) -> str:
        return f"{JOURNAL_DIR}/{self.restore_id}.json"

    # ---- writing -------------------------------------------------------------------------------

    @classmethod
    def begin(
        cls,
        fs: StoreFS,
        *,
        checkpoint_id: str,
        kind: str = "restore",
        owner: dict[str, Any] | None = None,
        restore_id: str | None = None,
    ) -> Journal:
        """Open a new journal and write it (so a kill right after this leaves a record)."""
        journal = cls(fs, restore_id or new_restore_id(), checkpoint_id=checkpoint_id, kind=kind, owner=owner)
        fs.makedirs(JOURNAL_DIR)
        journal.save()
        return journal

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": JOURNAL_FORMAT,
            "format_version": JOURNAL_VERSION,
            "restore_id": self.restore_id,
            "checkpoint_id": self.checkpoint_id,
            "kind": self.kind,
            "owner": self.owner,
            "started_at": self.started_at,
            "updated_at": format_ts(utcnow()),
            "components": {k: asdict(v) for k, v in self.components.items()},
        }

    def save(self) -> None:
        self.fs.write_bytes(self.rel, (json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n").encode())

    def component(self, name: str, target: dict[str, Any]) -> ComponentJournal:
        """The handle through which one component restore journals itself."""
        if name not in self.components:
            self.components[name] = ComponentEntry(component=name, target=dict(target))
            self.save()
        return ComponentJournal(self, self.components[name])

    def close(self) -> None:
        """The restore ended (done or undone): nothing is left to replay."""
        self.fs.remove(self.rel)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # ---- reading -------------------------------------------------------------------------------

    @classmethod
    def load(cls, fs: StoreFS, restore_id: str) -> Journal:
        rel = f"{JOURNAL_DIR}/{restore_id}.json"
        if fs.size(rel) > MAX_JOURNAL_BYTES:
            raise FormatError(
                f"journal {rel} is larger than {MAX_JOURNAL_BYTES} bytes",
                hint="it was not written by this provider; move it aside and check the stores by hand",
            )
        try:
            d = load_json(fs.read_bytes(rel), source=rel)
            if d.get("format") != JOURNAL_FORMAT or d.get("format_version") != JOURNAL_VERSION:
                raise ValueError(f"format {d.get('format')!r} version {d.get('format_version')!r}")
            comps = {k: ComponentEntry.from_dict(v) for k, v in (d.get("components") or {}).items()}
            return cls(
                fs,
                d["restore_id"],
                checkpoint_id=d["checkpoint_id"],
                kind=d.get("kind", "restore"),
                owner=d.get("owner") or {},
                started_at=d.get("started_at"),
                components=comps,
            )
        except (FormatError, ValueError, KeyError, TypeError) as exc:
            why = exc.message if isinstance(exc, FormatError) else exc
            raise FormatError(
                f"journal {rel} is unreadable: {why}",
                hint="an interrupted restore left it; check the stores it names by hand, then remove the file",
            ) from None


def open_journals(fs: StoreFS) -> list[str]:
    """Restore ids of every journal in the store (restores running now, or interrupted ones)."""
    return sorted(
        e[: -len(".json")] for e in fs.listdir(JOURNAL_DIR) if e.endswith(".json") and not e.startswith(TMP_MARK)
    )


def new_restore_id() -> str:
    return f"{utcnow().strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}"


class ComponentJournal:
    """What an engine's component restore writes into the journal."""

    def __init__(self, journal: Journal, entry: ComponentEntry) -> None:
        self.journal = journal
        self.entry = entry

    @property
    def restore_id(self) -> str:
        return self.journal.restore_id

    def phase(self, phase: str, **copies: Any) -> None:
        """Move to ``phase`` (see :data:`PHASES`), recording the names of copies made so far; crash
        point ``<component>.phase.<phase>`` follows."""
        if phase not in PHASES:
            raise ValueError(f"unknown journal phase {phase!r}; use one of {PHASES}")
        self.entry.phase = phase
        self.entry.copies.update(copies)
        self.journal.save()
        crashpoint(f"{self.entry.component}.phase.{phase}")

    def note(self, **data: Any) -> None:
        """Record engine-specific facts a replay will need (e.g. the replaced database's settings)."""
        self.entry.data.update(data)
        self.journal.save()

    @contextmanager
    def step(self, name: str, *, intent: dict[str, Any], undo: dict[str, Any]) -> Iterator[Step]:
        """Journal ``intent`` and ``undo`` (fsynced), run the block, then mark the step done.

        Crash points ``<component>.<name>.intent`` and ``<component>.<name>.applied`` surround
        the block. If the block raises, the step stays pending: the caller undoes what it can
        and the replay sees the rest.
        """
        step = Step(seq=self.journal._next_seq(), name=name, intent=intent, undo=undo, at=format_ts(utcnow()))
        self.entry.steps.append(step)
        self.journal.save()
        crashpoint(f"{self.entry.component}.{name}.intent")
        yield step
        crashpoint(f"{self.entry.component}.{name}.applied")
        step.state = "done"
        self.journal.save()


class NullJournal(ComponentJournal):
    """For component restores used without a journal (tests of one engine, dry runs): records nothing,
    but still passes through the crash points."""

    def __init__(self, component: str) -> None:
        self.entry = ComponentEntry(component=component, target={})

    @property
    def restore_id(self) -> str:
        return "unjournaled"

    def phase(self, phase: str, **copies: Any) -> None:
        self.entry.phase = phase
        self.entry.copies.update(copies)
        crashpoint(f"{self.entry.component}.phase.{phase}")

    def note(self, **data: Any) -> None:
        self.entry.data.update(data)

    @contextmanager
    def step(self, name: str, *, intent: dict[str, Any], undo: dict[str, Any]) -> Iterator[Step]:
        step = Step(seq=len(self.entry.steps) + 1, name=name, intent=intent, undo=undo)
        self.entry.steps.append(step)
        crashpoint(f"{self.entry.component}.{name}.intent")
        yield step
        crashpoint(f"{self.entry.component}.{name}.applied")
        step.state = "done"
