"""The Redis engine's record in the registry (see :mod:`..contract`)."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from airflow_checkpoint_provider.core.engines.contract import ConnectionInfo, Engine
from airflow_checkpoint_provider.core.engines.targets import RedisTarget
from airflow_checkpoint_provider.core.errors import CheckpointError
from airflow_checkpoint_provider.core.journal import ComponentEntry
from airflow_checkpoint_provider.core.manifest import Artifact
from airflow_checkpoint_provider.core.rollbacks import RollbackCopy, normal_ts

from . import copies
from ._recover import recover as _recover
from .capture import RDB_KIND, capture
from .deep import deep_check
from .health import COMPONENT, per_db
from .health import health as redis_health
from .logical import KIND as LOGICAL_KIND
from .resp import connect, server_info
from .restore import RedisRestore

log = logging.getLogger(__name__)

#: The TLS options of the connection extra, as the Airflow Redis provider hands them to redis-py.
TLS_EXTRAS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")


def _truthy(value: object) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _tls(info: ConnectionInfo) -> bool:
    """TLS is on for a ``rediss`` connection (type, or a ``rediss://`` host) or with extra ``ssl``."""
    extra = info.extra
    scheme = "rediss" if str(info.host or "").lower().startswith("rediss://") else info.conn_type
    if scheme == "rediss":
        if "ssl" in extra and not _truthy(extra["ssl"]):
            raise CheckpointError(
                f"connection {info.conn_id!r} is a rediss (TLS) connection but its extra says ssl={extra['ssl']!r}",
                hint="remove ssl from the extra, or use a redis connection for plain text",
            )
        return True
    return _truthy(extra.get("ssl", False))


def target_from_connection(info: ConnectionInfo) -> RedisTarget:
    """An Airflow ``redis`` or ``rediss`` connection: host (or a ``redis[s]://`` URL), port, login,
    password, the extra's ``db`` and the Airflow Redis provider's TLS options (``ssl``,
    ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``, ``ssl_check_hostname``)."""
    extra = info.extra
    tls = _tls(info)
    host, port = str(info.host or "localhost"), info.port
    if "://" in host:  # a URL typed into the host field
        url = urlsplit(host)
        host, port = url.hostname or "localhost", port or url.port
    if not tls and any(extra.get(k) for k in TLS_EXTRAS):
        log.warning(
            "Connection %r sets TLS options but not ssl (nor type rediss): it is used in plain text", info.conn_id
        )
    options: dict[str, Any] = {}
    if tls:
        options = {
            "ssl_ca_certs": extra.get("ssl_ca_certs") or None,
            "ssl_certfile": extra.get("ssl_certfile") or None,
            "ssl_keyfile": extra.get("ssl_keyfile") or None,
            "ssl_cert_reqs": str(extra.get("ssl_cert_reqs") or "required").strip().lower(),
            "ssl_check_hostname": _truthy(extra.get("ssl_check_hostname", True)),
        }
    return RedisTarget(
        host=host,
        port=int(port or 6379),
        username=info.login or None,
        password=info.password or None,
        db=int(extra.get("db", 0)),
        ssl=tls,
        **options,
    )


def fingerprint(target: RedisTarget, **options: Any) -> dict[str, Any]:
    """Keys per logical db, as ``INFO keyspace`` counts them now."""
    with connect(target) as conn:
        text = conn.call("INFO", "keyspace")
    keys = {}
    for line in (text.decode() if isinstance(text, bytes) else str(text)).splitlines():
        if line.startswith("db") and ":keys=" in line:
            db, rest = line.split(":", 1)
            keys[db[2:]] = int(rest.split(",")[0].split("=")[1])
    return {"keys": keys}


def restore(
    target: RedisTarget,
    store: Any,
    checkpoint_id: str,
    artifacts: list[Artifact],
    *,
    rollback_policy: Any = None,
    **options: Any,
) -> RedisRestore:
    """:class:`RedisRestore`; spare dbs that only hold rollback copies beyond ``rollback_policy``
    may be reclaimed when the restore runs short of them."""
    if rollback_policy is not None:
        options.setdefault("rollback_keep", rollback_policy.keep_last)
        options.setdefault("rollback_max_age", rollback_policy.max_age)
    return RedisRestore(target, store, checkpoint_id, artifacts, **options)


def expectations(artifacts: list[Artifact], options: dict[str, Any]) -> dict[str, Any]:
    """Keys per db from the manifest; after a restore, the keys it found already expired are
    counted as such (``options["outcome"]``: the restore's details)."""
    art = next((a for a in artifacts if a.kind == RDB_KIND), artifacts[0] if artifacts else None)
    out: dict[str, Any] = {"keys": {str(k): v for k, v in per_db(art.fingerprints.get("keys") if art else {}).items()}}
    expired = (options.get("outcome") or {}).get("skipped_expired") or {}
    if expired:
        out["expired"] = {str(k).removeprefix("db"): int(v) for k, v in expired.items()}
    return out


def health(target: RedisTarget, expected: dict[str, Any], tolerance: float = 0.0) -> list[Any]:
    return redis_health(target, expected, tolerance=tolerance)


def recover(target: RedisTarget, entry: ComponentEntry, store: Any = None) -> list[str]:
    return _recover(target, entry, store=store)


def rollbacks(target: RedisTarget, store: Any = None) -> list[RollbackCopy]:
    return [
        RollbackCopy(
            COMPONENT,
            f"db{r['db']}",
            f"db{r['of_db']}",
            str(r["checkpoint_id"] or ""),
            normal_ts(str(r["created_at"])),
            size=r.get("memory_bytes"),
            items=r.get("keys"),
        )
        for r in copies.list_rollbacks(target, store=store)
        if r["state"] == "rollback"
    ]


def drop_rollback(target: RedisTarget, name: str, store: Any = None) -> None:
    if not name.startswith("db") or not name[2:].isdigit():
        raise CheckpointError(
            f"{name!r} is not a Redis rollback copy (those are named db<N>)",
            hint="`airflow-checkpoint rollbacks list` shows them",
        )
    copies.drop_rollback(target, int(name[2:]), store=store)


def leftovers(
    target: RedisTarget, store: Any, live: set[str], protected: set[str], dry_run: bool, **options: Any
) -> list[str]:
    """Spare dbs marked ``loading`` by restores that are not running."""
    return [f"redis {x}" for x in copies.drop_leftovers(target, live, store=store, dry_run=dry_run)]


def _is_own_copy(name: str) -> bool:
    """Redis copies are whole logical dbs, told apart by their markers, not by a name."""
    return False


ENGINE = Engine(
    name=COMPONENT,
    title="Redis",
    kinds=(RDB_KIND, LOGICAL_KIND),
    conn_param="redis_conn_id",
    default_conn_id="redis_default",
    conn_types=("redis", "rediss"),
    operator="airflow_checkpoint_provider.operators.redis:RedisSnapshotOperator",
    target_from_connection=target_from_connection,
    capture=capture,
    fingerprint=fingerprint,
    restore=restore,
    health=health,
    expectations=expectations,
    recover=recover,
    rollbacks=rollbacks,
    drop_rollback=drop_rollback,
    leftovers=leftovers,
    is_own_copy=_is_own_copy,
    server_version=lambda target: server_info(target).get("redis_version", ""),
    deep_check=deep_check,
)
