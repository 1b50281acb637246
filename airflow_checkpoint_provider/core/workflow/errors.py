"""Errors of workflow checkpoints. Every one is a :class:`CheckpointError`: the message names
the offending value and the ``HINT:`` says what to do next. The tree::

    CheckpointError
    └── WorkflowError                   a workflow checkpoint cannot be saved, read or resumed
        ├── StateNotSerializableError   the state (or a fingerprint) holds a value JSON cannot carry;
        │                               raised before anything is written
        ├── StateDamagedError           a saved state fails its checksums (resume falls back past it)
        ├── WorkflowLockLostError       the PostgreSQL store lost the workflow's lock and another writer took it
        └── ResumeRefusedError          the saved progress must not be resumed as it stands
            ├── ConfigDriftError        the config differs from the saved state's; names the changed keys
            ├── DataMismatchError       the live data differs from a step's saved fingerprints
            ├── NoIntactStateError      every saved state is damaged
            └── UnknownStepError        a step named by ``resume_from`` or the saved state is not known
"""

from __future__ import annotations

from airflow_checkpoint_provider.core.errors import CheckpointError, IntegrityError


class WorkflowError(CheckpointError):
    """Root of the workflow checkpoint errors."""


class StateNotSerializableError(WorkflowError):
    """A state or fingerprint value cannot be stored; nothing was written."""


class StateDamagedError(WorkflowError, IntegrityError):
    """A saved state's header or payload does not match its checksums or sizes."""


class WorkflowLockLostError(WorkflowError):
    """The store's lock on the workflow was lost (e.g. a database restart) and could not be taken back."""


class ResumeRefusedError(WorkflowError):
    """The saved progress is not resumed: the run fails with this message and nothing is changed."""


class ConfigDriftError(ResumeRefusedError):
    """The config hash differs from the one the resume point was saved with.

    ``changed`` lists the changed, added and removed keys (dotted paths), never their values."""

    def __init__(self, message: str, *, hint: str | None = None, changed: list[str] | None = None) -> None:
        super().__init__(message, hint=hint)
        self.changed = list(changed or [])


class DataMismatchError(ResumeRefusedError):
    """The validator found live data that differs from the fingerprints saved with a step."""


class NoIntactStateError(ResumeRefusedError):
    """Saved states exist, but every one of them is damaged."""


class UnknownStepError(ResumeRefusedError):
    """A step is not among the saved states, or the saved state's step is not among the steps run."""
