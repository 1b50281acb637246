"""Named crash points: the places where a test may kill the process to prove crash safety.

``crashpoint("postgres.rename.applied")`` does nothing unless the environment variable
``CHECKPOINT_CRASH_AT`` names that point (or a comma-separated list holding it); then the
process SIGKILLs itself on the spot, exactly as an out-of-memory killer or a lost worker
would. Every destructive step of a cut-over passes through two points, one right after its
intent is journaled and one right after it took effect, so the crash tests can enumerate
them from :data:`REGISTERED` (filled as engines declare their steps) and kill at each.
"""

from __future__ import annotations

import os
import signal

ENV = "CHECKPOINT_CRASH_AT"

#: every crash point an engine declared, ``{"postgres.rename.intent", ...}``
REGISTERED: set[str] = set()
#: journal phases with a crash point right after they are recorded (``<component>.phase.<phase>``)
PHASE_POINTS = ("loading", "verified", "cutting_over", "cut_over", "rolling_back")


def declare(component: str, steps: tuple[str, ...]) -> tuple[str, ...]:
    """Register the journaled steps of ``component``: points ``<component>.<step>.intent`` and
    ``.applied`` for each step, and ``<component>.phase.<phase>`` for each of :data:`PHASE_POINTS`."""
    for step in steps:
        REGISTERED.update({f"{component}.{step}.intent", f"{component}.{step}.applied"})
    REGISTERED.update(f"{component}.phase.{p}" for p in PHASE_POINTS)
    return steps


def crashpoint(name: str) -> None:
    """SIGKILL this process if ``$CHECKPOINT_CRASH_AT`` names ``name``."""
    wanted = os.environ.get(ENV)
    if wanted and name in wanted.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
