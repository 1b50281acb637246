"""A workflow's checkpoints, as the task author uses them: ``steps``, ``state``, ``save``, ``summary``.

::

    wf = Workflow(store, "planning-2025", config=SIM_CONFIG, validate=count_rows)
    for year in wf.steps(years):              # resumes after the last saved step (resume.py)
        state = run_year(year, wf.state)       # wf.state: the last saved state (or ``initial``)
        wf.save(year, state)                   # atomic, checksummed, compressed; fingerprints from validate
    result = wf.summary()                      # marks the workflow completed; releases its lock

The workflow's lock is taken at the first use of ``steps``, ``state`` or ``save`` and held until
``summary``/``close`` (or the process ends, even by SIGKILL): a second writer of the same
workflow waits, then resumes after whatever the first one saved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from airflow_checkpoint_provider.core.manifest import format_ts, utcnow
from airflow_checkpoint_provider.core.workflow.codec import (
    DEFAULT_LEVEL,
    config_digest,
    config_hash,
    encode_json,
    encode_raw,
    raw_state,
    step_key,
    validate_step,
)
from airflow_checkpoint_provider.core.workflow.errors import (
    UnknownStepError,
    WorkflowError,
)
from airflow_checkpoint_provider.core.workflow.records import (
    Session,
    StateHeader,
    WorkflowStore,
    validate_workflow_id,
)
from airflow_checkpoint_provider.core.workflow.resume import (
    DataCheckpoints,
    Resumed,
    ResumeOptions,
    Validator,
    resume,
)
from airflow_checkpoint_provider.core.workflow.stream import STREAM_THRESHOLD, StreamedPayload

log = logging.getLogger(__name__)

#: states kept per workflow
DEFAULT_HISTORY = 10
DEFAULT_LOCK_TIMEOUT = 300.0


class Workflow:
    """Step-wise checkpoints of one workflow in a :class:`WorkflowStore` (see the module docstring).

    :param store: a :class:`FileWorkflowStore` or :class:`PostgresWorkflowStore`.
    :param workflow_id: what ties attempts and runs together.
    :param config: the inputs that must not change under a resume (JSON); only hashes are stored.
    :param options: ``force_restart``, ``allow_config_drift``, ``resume_from``, ``restore_data``.
    :param validate: ``validate(step) -> {name: value}``: the live fingerprints of a step's data. A
        save without ``fingerprints`` records them; a resume compares them with the saved ones.
    :param data: takes a data checkpoint with each save, and restores one for ``restore_data``.
    :param history: how many states to keep (None: all).
    :param initial: ``state`` before the first step.
    :param writer: who writes (recorded in each header: dag, run, task, try, host, pid).
    :param expire_on_success: delete the workflow's states when it completes.
    :param on_event: ``on_event(kind, info)`` after ``resumed``, ``saved`` and ``completed``.
    """

    def __init__(
        self,
        store: WorkflowStore,
        workflow_id: str,
        *,
        config: Any = None,
        options: ResumeOptions | None = None,
        validate: Validator | None = None,
        data: DataCheckpoints | None = None,
        history: int | None = DEFAULT_HISTORY,
        initial: Any = None,
        writer: Mapping[str, Any] | None = None,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        level: int = DEFAULT_LEVEL,
        expire_on_success: bool = False,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        if history is not None and (not isinstance(history, int) or history < 1):
            raise WorkflowError(
                f"history={history!r} must be a positive number of states, or None to keep all",
                hint="keep at least the latest state (history=1)",
            )
        self.store = store
        self.workflow_id = validate_workflow_id(workflow_id)
        self.options = options or ResumeOptions()
        self._digest = config_digest(config)
        self.config_hash = config_hash(self._digest)
        self._validate, self._data, self.history = validate, data, history
        self._initial, self._writer, self._lock_timeout, self._level = initial, dict(writer or {}), lock_timeout, level
        self._expire, self._on_event = expire_on_success, on_event
        self._session: Session | None = None
        self._resumed: Resumed | None = None
        self._latest: StateHeader | None = None
        self._state: Any = initial
        self._run: list[int | str] = []
        self._skipped = 0
        self._completed = False
        self._expired = False

    # ---- resuming --------------------------------------------------------------------------------

    def _open(self) -> Session:
        if self._session is not None:
            return self._session
        if self._completed:
            raise WorkflowError(
                f"workflow {self.workflow_id!r} was already completed by summary()",
                hint="create a new Workflow object to run it again",
            )
        session = self.store.session(self.workflow_id, timeout=self._lock_timeout, owner=self._writer)
        try:
            resumed = resume(
                session,
                workflow_id=self.workflow_id,
                digest=self._digest,
                options=self.options,
                validate=self._validate,
                data=self._data,
                depth=self.history,
            )
        except BaseException:
            session.close()
            raise
        session.mark("running")
        self._session, self._resumed = session, resumed
        self._latest = resumed.header
        self._state = resumed.state if resumed.header is not None else self._initial
        self._emit("resumed", self._resume_info())
        return session

    def resume(self) -> Workflow:
        """Take the lock and decide where to resume now (otherwise the first use does it)."""
        self._open()
        return self

    @property
    def state(self) -> Any:
        """The last saved state (after resuming), or ``initial`` before the first step."""
        if not self._completed:
            self._open()
        return self._state

    @property
    def resumed_from(self) -> StateHeader | None:
        """The header of the state the workflow resumed from (None: it started from the first step)."""
        self._open()
        assert self._resumed is not None
        return self._resumed.header

    @property
    def latest(self) -> StateHeader | None:
        if not self._completed:
            self._open()
        return self._latest

    def steps(self, items: Iterable[Any]) -> Iterator[Any]:
        """Yield the steps still to run: those after the step of the resume point."""
        items = [validate_step(s) for s in items]
        keys = [step_key(s) for s in items]
        if len(set(keys)) != len(keys):
            dup = next(s for s, k in zip(items, keys, strict=True) if keys.count(k) > 1)
            raise WorkflowError(
                f"step {dup!r} appears twice in the steps of workflow {self.workflow_id!r}",
                hint="give each step a distinct name",
            )
        self._open()
        start = 0
        if self._latest is not None:
            key = step_key(self._latest.step)
            if key not in keys:
                shown = ", ".join(map(repr, items[:10])) + (" ..." if len(items) > 10 else "")
                raise UnknownStepError(
                    f"workflow {self.workflow_id!r} was saved after step {self._latest.step!r}, which is not among "
                    f"the steps [{shown}]",
                    hint="run it with the steps it was saved with (2025 and '2025' are different steps), use "
                    "resume_from=<step> to re-run from a saved one, or force_restart=True to start over",
                )
            start = keys.index(key) + 1
        self._skipped = start
        if start:
            log.info(
                "Workflow %r: %d of %d step(s) already done; running %d",
                self.workflow_id,
                start,
                len(items),
                len(items) - start,
            )
        yield from items[start:]

    # ---- saving ----------------------------------------------------------------------------------

    def save(
        self, step: Any, state: Any, *, fingerprints: Mapping[str, Any] | None = None, data: bool | None = None
    ) -> StateHeader:
        """Save ``state`` as the result of ``step``, atomically.

        Nothing is written if the state (or a fingerprint) cannot be serialised. With data
        targets, a data checkpoint is taken first (``data=False`` skips it for this step) and
        recorded in the state's header.
        """
        step = validate_step(step)
        raw, encoding = raw_state(state, what=f"the state of step {step!r}")
        payload: bytes | StreamedPayload
        if len(raw) >= STREAM_THRESHOLD:  # compressed while written: the store fills in size and sha256
            payload, compression, size, sha256 = StreamedPayload(raw, level=self._level), "zstd", 0, ""
        else:
            enc = encode_raw(raw, encoding, level=self._level)
            payload, compression, size, sha256 = enc.payload, enc.compression, enc.size, enc.sha256
        if fingerprints is None and self._validate is not None:
            fingerprints = self._validate(step)
        prints = dict(fingerprints or {})
        encode_json(prints, what=f"the fingerprints of step {step!r}")
        session = self._open()
        checkpoint_id = None
        if data if data is not None else self._data is not None:
            if self._data is None:
                raise WorkflowError(
                    f"save(..., data=True) for step {step!r}, but workflow {self.workflow_id!r} has no data targets",
                    hint="pass data=... when creating the workflow",
                )
            checkpoint_id = self._data.capture(self.workflow_id, step)
        header = StateHeader(
            workflow_id=self.workflow_id,
            seq=0,
            step=step,
            parent=self._latest.seq if self._latest else None,
            saved_at=format_ts(utcnow()),
            config_hash=self.config_hash,
            config_digest=self._digest,
            fingerprints=prints,
            data_checkpoint=checkpoint_id,
            encoding=encoding,
            compression=compression,
            size=size,
            raw_size=len(raw),
            sha256=sha256,
            writer=self._writer,
        )
        saved = session.append(header, payload, keep=self.history)
        self._latest, self._state = saved, state
        self._run.append(step)
        log.info(
            "Workflow %r: saved step %r as state %d (%d bytes stored, %d raw%s)",
            self.workflow_id,
            step,
            saved.seq,
            saved.size,
            saved.raw_size,
            f"; data checkpoint {checkpoint_id}" if checkpoint_id else "",
        )
        self._emit("saved", saved.public())
        return saved

    # ---- finishing -------------------------------------------------------------------------------

    def complete(self) -> None:
        """Mark the workflow completed (and delete its states with ``expire_on_success``); release the lock."""
        session = self._open()
        try:
            if self._expire:
                n = session.reset()
                self._expired = True
                log.info("Workflow %r completed; expire_on_success deleted its %d state(s)", self.workflow_id, n)
            else:
                session.mark("completed")
            self._completed = True
            self._emit("completed", self.summary_dict())
        finally:
            self.close()

    def summary(self) -> dict[str, Any]:
        """Complete the workflow and return a small JSON summary (for XCom)."""
        if not self._completed:
            self.complete()
        return self.summary_dict()

    def summary_dict(self) -> dict[str, Any]:
        resumed = self._resumed or Resumed()
        return {
            "workflow_id": self.workflow_id,
            "store": self.store.location,
            "status": "expired" if self._expired else ("completed" if self._completed else "running"),
            **self._resume_info(),
            "steps_run": list(self._run),
            "steps_skipped": self._skipped,
            "latest": self._latest.public() if self._latest else None,
            "config_hash": self.config_hash,
            "data_checkpoints": []
            if not self._latest or not self._latest.data_checkpoint
            else [self._latest.data_checkpoint],
            "discarded": resumed.discarded,
        }

    def _resume_info(self) -> dict[str, Any]:
        r = self._resumed or Resumed()
        return {
            "resumed_from": {"step": r.header.step, "seq": r.header.seq} if r.header else None,
            "fallbacks": list(r.fallbacks),
            "config_drift": list(r.drift),
            "restored_data": r.restored,
            "validated_steps": list(r.validated),
        }

    def close(self) -> None:
        """Release the workflow's lock (idempotent)."""
        if self._session is not None:
            session, self._session = self._session, None
            session.close()

    def __enter__(self) -> Workflow:
        return self.resume()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _emit(self, kind: str, info: dict[str, Any]) -> None:
        if self._on_event is not None:
            self._on_event(kind, info)
