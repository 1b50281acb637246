"""Shared helpers of the Redis restore tests: private real servers, checkpoints, damage, state.

No fakes: every server is a real ``redis-server`` started by ``scripts/services.py``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from airflow_checkpoint_provider.core import Store, staging_key
from airflow_checkpoint_provider.core.engines.redis import capture
from airflow_checkpoint_provider.core.engines.redis import restore as R
from airflow_checkpoint_provider.core.engines.redis.copies import PREFIX
from airflow_checkpoint_provider.core.engines.redis.health import library_name
from airflow_checkpoint_provider.core.engines.redis.resp import connect
from airflow_checkpoint_provider.core.engines.targets import RedisTarget
from airflow_checkpoint_provider.core.errors import EngineError
from airflow_checkpoint_provider.core.manifest import Manifest
from airflow_checkpoint_provider.core.recovery import RestoreReport, RestoreRequest, restore

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import sample_data as S

ALL = range(16)
SEEDED = range(2)


@pytest.fixture
def server(services_module: Any, tmp_path: Path) -> Callable[[str], dict[str, Any]]:
    """Start private Redis servers (``server("a")``); all are stopped at the end, even restarted ones."""
    started: list[tuple[Path, dict[str, Any]]] = []

    def start(name: str = "a") -> dict[str, Any]:
        state = tmp_path / f"svc-{name}"
        info = services_module.start(state, only=["redis"])["redis"]
        started.append((state, info))
        client(info).config_set("repl-diskless-sync-delay", 0)  # no 5 s wait for more replicas per capture
        return info

    yield start
    for state, info in started:
        with contextlib.suppress(EngineError, OSError):  # a restarted server has another pid than services.json says
            with connect(target(info)) as conn:
                conn.call_nothrow("SHUTDOWN", "NOSAVE")
        services_module.stop(state)


def client(info: dict[str, Any], db: int = 0, **kw: Any) -> redis.Redis:
    return redis.Redis(host=info["host"], port=info["port"], password=info["password"], db=db, **kw)


def target(info: dict[str, Any], **kw: Any) -> RedisTarget:
    kw.setdefault("password", info["password"])
    return RedisTarget(host=info["host"], port=int(info["port"]), socket_timeout=30, **kw)


def checkpoint(store: Store, info: dict[str, Any], mode: str = "rdb") -> Manifest:
    staging = store.staging(staging_key("test", mode, str(len(store.list()))))
    capture(target(info), staging, mode=mode)
    return store.seal(staging)


def run_restore(
    store: Store,
    cid: str,
    info: dict[str, Any],
    *,
    made: list | None = None,
    cls: type = R.RedisRestore,
    tgt: RedisTarget | None = None,
    dry_run: bool = False,
    safety: bool = True,
    artifacts: Callable | None = None,
    **kw: Any,
) -> RestoreReport:
    def build(s: Store, m: Manifest, r: RestoreRequest) -> list:
        arts = artifacts(m.artifacts) if artifacts else m.artifacts
        part = cls(tgt or target(info), s, m.checkpoint_id, arts, mode=r.mode, **kw)
        if made is not None:
            made.append(part)
        return [part]

    mode = kw.pop("mode", "side_by_side")
    request = RestoreRequest(
        checkpoint_id=cid, components=("redis",), mode=mode, dry_run=dry_run, safety_checkpoint=safety
    )
    return restore(store, request, build)


def damage(info: dict[str, Any]) -> None:
    r0, r1 = client(info, 0), client(info, 1)
    r0.delete(*[f"session:{i}" for i in range(10)], "list:small", "stream:events")
    r0.set("junk:1", "x")
    r0.hset("junk:2", mapping={"a": "b"})
    r0.expire("counter", 50)
    r0.persist("hash:small")
    r0.set("big:text", "overwritten")
    r1.flushdb()
    r0.function_delete("checkpointlib")


def functions(info: dict[str, Any]) -> list[str]:
    return sorted(library_name(lib) for lib in client(info).function_list())


def full_state(info: dict[str, Any]) -> tuple[dict, list[str]]:
    return S.state_redis(info, ALL), functions(info)


def unchanged(before: tuple[dict, list[str]], info: dict[str, Any]) -> bool:
    """Every key of every db (type, value; TTLs within 30 s of time passing) and the functions."""
    state, libs = full_state(info)
    diffs = S.same_redis_state(before[0], state, ttl_tolerance_ms=30_000)
    assert (diffs, libs) == ([], before[1])
    return True


def without_marker(state: dict[int, dict]) -> dict[int, dict]:
    out = {}
    for db, keys in state.items():
        keys = {k: v for k, v in keys.items() if not k.startswith(PREFIX)}
        if keys:
            out[db] = keys
    return out


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "store", create=True)


def markers(info: dict[str, Any]) -> dict[int, list[bytes]]:
    """Every key named like a marker, per db (a full scan)."""
    out = {}
    for db in ALL:
        found = list(client(info, db).scan_iter(match=PREFIX + b"*", count=1000))
        if found:
            out[db] = found
    return out


def restart_script(info: dict[str, Any], folder: Path) -> Path:
    """A restart command for file placement: stop without saving, start in the background."""
    script = folder / "restart.sh"
    script.write_text(f"""#!/bin/sh
redis-cli -h {info["host"]} -p {info["port"]} SHUTDOWN NOSAVE >/dev/null 2>&1
i=0
while redis-cli -h {info["host"]} -p {info["port"]} PING >/dev/null 2>&1; do
  i=$((i+1)); [ $i -gt 100 ] && exit 1; sleep 0.1
done
cd {info["dir"]} && setsid redis-server {info["config"]} >> {info["dir"]}/restart.log 2>&1 < /dev/null &
""")
    script.chmod(0o700)
    return script
