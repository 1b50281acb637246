"""What the page reads from the live stores: the rollback copies restores left there.

The servers come from the Airflow connections the api-server can read (``[checkpoint]
<engine>_conn_id``). Each store is asked in its own thread with a deadline; a store that cannot be
reached, or a connection that is not defined, becomes a problem line for the page, never an error.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from airflow_checkpoint_provider import engines
from airflow_checkpoint_provider.core import rollbacks

#: seconds the page waits for all the stores together
DEADLINE = 15.0


def _one(name: str, conn_id: str, store: Any) -> list[dict[str, Any]]:
    target = engines.target(name, conn_id)
    return [{**c.to_dict(), "conn_id": conn_id} for c in rollbacks.list_copies(name, target, store)]


def _why(exc: BaseException, option: str) -> str:
    if type(exc).__name__ == "AirflowNotFoundException":
        return f"the connection is not defined; add it, or set [checkpoint] {option} to one that is"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else 'no message'}"


def rollback_copies(store: Any, deadline: float = DEADLINE) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(copies newest first, problems): every engine's rollback copies on its default connection."""
    options = {name: engine.conn_param for name, engine in engines.engines().items()}
    conns = {name: engines.default_conn_id(engine) for name, engine in engines.engines().items()}
    copies: list[dict[str, Any]] = []
    problems: list[dict[str, Any]] = []
    pool = ThreadPoolExecutor(max_workers=len(conns) or 1, thread_name_prefix="rollbacks")
    futures = {name: pool.submit(_one, name, conn_id, store) for name, conn_id in conns.items()}
    wait(futures.values(), timeout=deadline)
    for name, future in futures.items():
        error = future.exception() if future.done() else None
        if not future.done():
            problems.append({"component": name, "conn_id": conns[name], "error": f"no answer within {deadline:.0f} s"})
        elif error is not None:
            problems.append({"component": name, "conn_id": conns[name], "error": _why(error, options[name])})
        else:
            copies += future.result()
    pool.shutdown(wait=False, cancel_futures=True)
    copies.sort(key=lambda c: (c["created_at"], c["name"]), reverse=True)
    return copies, problems
