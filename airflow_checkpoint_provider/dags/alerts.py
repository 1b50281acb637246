"""Failure alerts of the ready-made DAGs: notifiers from the factory's arguments and the ``[checkpoint]`` options.

Every shipped DAG factory takes ``notifiers`` (any ``BaseNotifier``, or a plain callable of the
task's context) and adds the configured ones:

- ``[checkpoint] notify_on_failure``: ``package.module:function`` returning a notifier or a list of them;
- ``[checkpoint] notify_email``: recipients of an ``SmtpNotifier`` (``notify_from``, ``notify_smtp_conn_id``).

They become every task's ``on_failure_callback``: the alert names the DAG, the task, the run and
carries the error, which names the checkpoint.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from airflow_checkpoint_provider import settings
from airflow_checkpoint_provider.core.errors import CheckpointError

Notifier = Callable[..., Any]

SUBJECT = "Checkpoint alert: {{ ti.dag_id }}.{{ ti.task_id }} failed (run {{ ti.run_id }})"
BODY = (
    "<p>DAG <b>{{ ti.dag_id }}</b>, task <b>{{ ti.task_id }}</b>, run {{ ti.run_id }}, "
    "try {{ ti.try_number }}: {{ ti.state }}.</p><pre>{{ exception }}</pre><p>Log: {{ ti.log_url }}</p>"
)


def _factory(path: str) -> Callable[[], Any]:
    module, _, attr = path.partition(":")
    if not module or not attr:
        raise CheckpointError(
            f"[checkpoint] notify_on_failure is {path!r}, not an import path",
            hint="write it as 'package.module:function', a function returning a notifier or a list of notifiers",
        )
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(
            f"[checkpoint] notify_on_failure {path!r} cannot be imported: {exc}",
            hint="install the module on the scheduler and workers, or fix the option",
        ) from exc


def configured_notifiers() -> list[Notifier]:
    """The notifiers the ``[checkpoint]`` options ask for (none by default)."""
    out: list[Notifier] = []
    path = settings.notify_on_failure()
    if path:
        made = _factory(path)()
        out.extend(made if isinstance(made, (list, tuple)) else [made])
    recipients = settings.notify_email()
    if recipients:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        out.append(
            SmtpNotifier(
                to=recipients,
                from_email=settings.notify_from(),
                subject=SUBJECT,
                html_content=BODY,
                smtp_conn_id=settings.notify_smtp_conn_id(),
            )
        )
    return out


def alert_args(notifiers: Sequence[Notifier] | None = None, **default_args: Any) -> dict[str, Any]:
    """``default_args`` of a DAG with its failure notifiers: the factory's, then the configured ones."""
    callbacks = [*(notifiers or ()), *configured_notifiers()]
    if callbacks:
        default_args["on_failure_callback"] = callbacks
    return default_args
