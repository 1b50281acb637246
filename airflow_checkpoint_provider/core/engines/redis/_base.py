"""The Redis restore's state and shared steps: the artifact, its items, loading into dbs and verifying them."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from typing import Any

from airflow_checkpoint_provider.core.engines.targets import RedisTarget
from airflow_checkpoint_provider.core.journal import (
    ComponentJournal,
    NullJournal,
)
from airflow_checkpoint_provider.core.manifest import Artifact
from airflow_checkpoint_provider.core.store import Store

from ._load import (
    MODES,
    PLAN_COUNTS,
    RedisRestoreError,
    _DbLoad,
    _logical_items,
    _ReplyError,
    _Walk,
    restore_stream,
)
from .capture import RDB_KIND
from .copies import Copy
from .encoding import TYPE_NAMES
from .health import (
    COMPONENT,
    ServerFacts,
    db_sizes,
    max_rdb_version,
    parse_version,
    per_db,
    server_for_rdb,
)
from .logical import KIND as LOGICAL_KIND
from .logical import LogicalFunctions
from .rdb import Function, ModuleAux
from .resp import Connection, encode_command

log = logging.getLogger("airflow_checkpoint_provider.core.engines.redis.restore")


def _artifact_of(artifacts: list[Artifact]) -> Artifact | None:
    mine = [a for a in artifacts if a.store == "redis" and a.kind in (RDB_KIND, LOGICAL_KIND)]
    mine.sort(key=lambda a: a.kind != RDB_KIND)
    return mine[0] if mine else None


class _RestoreBase:
    """The state and shared steps under :class:`~.restore.RedisRestore` (see its docstring for the
    arguments): the artifact, its items, loading into dbs and verifying them."""

    component = COMPONENT

    def abort(self) -> None:
        raise NotImplementedError  # the restore strategy's own (side by side, placement)

    def rollback(self) -> None:
        raise NotImplementedError

    def __init__(
        self,
        target: RedisTarget,
        store: Store,
        checkpoint_id: str,
        artifacts: list[Artifact],
        *,
        mode: str = "side_by_side",
        dbs: list[int] | None = None,
        spare_db: int | None = None,
        placement_dir: str | None = None,
        restart_command: str | None = None,
        batch: int = 1000,
        restore_functions: bool = True,
        function_policy: str = "REPLACE",
        capture_options: dict[str, Any] | None = None,
        restart_timeout: float = 120.0,
        rollback_keep: int | None = 1,
        rollback_max_age: float | None = 86400.0,
        plan_counts: str = "auto",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if plan_counts not in PLAN_COUNTS:
            raise ValueError(f"plan_counts must be one of {PLAN_COUNTS}, not {plan_counts!r}")
        self.plan_counts = plan_counts
        if function_policy.upper() not in ("REPLACE", "FLUSH"):
            raise ValueError(f"function_policy must be REPLACE or FLUSH, not {function_policy!r}")
        self.target, self.store, self.checkpoint_id, self.mode = target, store, checkpoint_id, mode
        self.spare_db, self.batch, self.restore_functions = spare_db, max(1, int(batch)), restore_functions
        self.function_policy = function_policy.upper()
        self.placement_dir, self.restart_command = placement_dir, restart_command
        self.placement = bool(placement_dir and restart_command)
        self.capture_options, self.restart_timeout = dict(capture_options or {}), restart_timeout
        self.artifact = _artifact_of(artifacts)
        fp = self.artifact.fingerprints if self.artifact else {}
        self.expected = per_db(fp.get("keys"))
        self.dbs = sorted({int(d) for d in dbs}) if dbs is not None else sorted(self.expected)
        if rollback_keep is not None and int(rollback_keep) < 0:
            raise ValueError(f"rollback_keep must be 0 or more, not {rollback_keep!r}")
        self.rollback_keep, self.rollback_max_age = rollback_keep, rollback_max_age
        self.journal: ComponentJournal = NullJournal(COMPONENT)
        self._own_id = secrets.token_hex(6)
        self.pairs: list[tuple[int, int]] = []  # (target db, spare db)
        self.facts: ServerFacts | None = None
        self._markers: dict[int, bytes] = {}  # spare db -> its marker's name
        self._reclaim: list[Copy] = []  # rollback copies beyond the policy the plan chose as spares
        self._claimed: list[int] = []
        self._swapped: list[tuple[int, int]] = []
        self._emptied: list[tuple[int, int]] = []  # swapped pairs whose target was empty: no rollback copy
        self._stats: dict[int, _DbLoad] = {}
        self._codes: list[bytes] = []
        self._fn_payload: bytes | None = None
        self._prev_functions: bytes | None = None
        self._functions_loaded = False
        self._placed: dict[str, Any] = {}

    @property
    def restore_id(self) -> str:
        """The journal's restore id (a random one without a journal): it names the markers."""
        rid = self.journal.restore_id
        return self._own_id if rid == "unjournaled" else rid

    @property
    def kind(self) -> str:
        return self.artifact.kind if self.artifact else ""

    @property
    def rdb_version(self) -> int | None:
        """The RDB version of the payloads: the RDB header's, or the capturing server's DUMP version."""
        if self.artifact is None:
            return None
        if self.kind == RDB_KIND:
            v = self.artifact.fingerprints.get("rdb_version") or self.artifact.meta.get("rdb_version")
            return int(v) if v else None
        return max_rdb_version(self.artifact.meta.get("redis_version") or self.artifact.engine_version)

    def _open(self) -> Any:
        assert self.artifact is not None
        return self.store.open_artifact(self.checkpoint_id, self.artifact.name)

    def _items(self, src: Any, *, values: bool = True) -> tuple[Iterator[Any], int | None]:
        if self.kind == RDB_KIND:
            walk = _Walk(src)
            version = walk.begin()
            top = self.facts.max_rdb if self.facts else None
            if top is not None and version > top:
                raise RedisRestoreError(self._version_problem(version))
            return walk.entries(values=values), version
        return _logical_items(src), None

    def _version_problem(self, version: int) -> str:
        facts = self.facts
        assert facts is not None
        return (
            f"the checkpoint's data is RDB version {version} (written by Redis {server_for_rdb(version)} or "
            f"newer), but {self.target.label} runs Redis {facts.version}, whose RESTORE accepts RDB versions up "
            f"to {facts.max_rdb}: restore into a Redis {server_for_rdb(version)} or newer server"
        )

    def _load(
        self, conn: Connection, mapping: dict[int, int], *, replace: bool, keep_hashes: bool = False
    ) -> dict[int, _DbLoad]:
        self._codes, self._fn_payload = [], None

        def on_record(rec: Any) -> None:
            if isinstance(rec, Function):
                self._codes.append(rec.code)
            elif isinstance(rec, LogicalFunctions):
                self._fn_payload = rec.payload
            elif isinstance(rec, ModuleAux):
                log.warning("The checkpoint holds module auxiliary data, which RESTORE cannot load: skipped")

        with self._open() as src:
            items, version = self._items(src)
            try:
                stats = restore_stream(
                    conn,
                    items,
                    version,
                    mapping,
                    replace=replace,
                    batch=self.batch,
                    keep_hashes=keep_hashes,
                    tolerate_busy=self.kind == LOGICAL_KIND,
                    on_record=on_record,
                )
            except _ReplyError as exc:
                what = (
                    f"RESTORE of key {exc.label[:100]!r}"
                    if isinstance(exc.label, bytes)
                    else " ".join(map(str, exc.label))
                )
                hint = ""
                if "payload version" in exc.message:
                    source = (
                        f"RDB version {version}"
                        if version
                        else f"DUMP payloads of Redis {self.artifact.engine_version if self.artifact else '?'}"
                    )
                    hint = (
                        f" (the checkpoint holds {source}; the server accepts RDB versions up to "
                        f"{self.facts.max_rdb if self.facts else '?'})"
                    )
                raise RedisRestoreError(
                    f"{self.target.label} refused {what} into db{exc.db}: {exc.message}{hint}"
                    + (f" ({exc.count} errors in that batch)" if exc.count > 1 else "")
                ) from None
            while src.read(1 << 20):  # to the end of the artifact: its sha256 is checked there
                pass
        return stats

    def _verify(self, conn: Connection, mapping: dict[int, int]) -> dict[int, int]:
        """Keys per db (allowing for keys that expired meanwhile), and a sample's TYPE and expiry;
        returns the keys per destination db (markers not counted)."""
        secs, usecs = conn.call("TIME")
        now = int(secs) * 1000 + int(usecs) // 1000 + 1000
        exact_ttl = (parse_version(self.facts.version if self.facts else "") or (0, 0))[0] >= 7
        sizes = db_sizes(conn, sorted(mapping.values()), self._markers)
        problems = []
        for src, dst in sorted(mapping.items()):
            st = self._stats.get(src) or _DbLoad()
            want = self.expected.get(src, 0)
            if st.streamed != want:
                problems.append(f"db{src}: the artifact holds {st.streamed} keys but its fingerprints say {want}")
            gone = sum(1 for e in st.soon if e <= now)
            loaded = st.restored
            if not loaded - gone <= sizes[dst] <= loaded:
                problems.append(
                    f"db{dst} holds {sizes[dst]} keys, expected {loaded}"
                    + (f" (or down to {loaded - gone}: keys expiring meanwhile)" if gone else "")
                )
            problems += self._check_sample(conn, dst, st.sample, now, exact_ttl)
        if problems:
            raise RedisRestoreError(
                f"verification of {self.checkpoint_id} on {self.target.label} failed: " + "; ".join(problems[:10])
            )
        return sizes

    def _check_sample(
        self, conn: Connection, db: int, sample: list[tuple[bytes, int, int | None]], now: int, exact_ttl: bool
    ) -> list[str]:
        if not sample:
            return []
        cmds = [encode_command("SELECT", db)]
        for key, _, _ in sample:
            cmds.append(encode_command("TYPE", key) + encode_command("PEXPIRETIME" if exact_ttl else "EXISTS", key))
        conn.sendall(b"".join(cmds))
        conn.read_reply()
        bad = []
        for key, t, expire in sample:
            kind, ttl = conn.read_reply(), conn.read_reply()
            if expire is not None and expire <= now and kind == "none":
                continue  # expired since
            name = TYPE_NAMES.get(t)
            if kind == "none" or (name not in (None, "module") and kind != name):
                bad.append(f"db{db} key {key[:60]!r}: TYPE is {kind}, expected {name}")
            elif exact_ttl and ttl != (-1 if expire is None else expire):
                bad.append(f"db{db} key {key[:60]!r}: expires at {ttl}, expected {expire}")
        return bad[:5]

    def _function_commands(self, major: int) -> list[tuple[Any, ...]]:
        if not self.restore_functions or major < 7:
            return []
        if self._fn_payload is not None:
            return [("FUNCTION", "RESTORE", self._fn_payload, self.function_policy)]
        cmds: list[tuple[Any, ...]] = [("FUNCTION", "FLUSH")] if self.function_policy == "FLUSH" else []
        return cmds + [("FUNCTION", "LOAD", "REPLACE", code) for code in self._codes]

    def _major(self) -> int:
        return (parse_version(self.facts.version if self.facts else "") or (0, 0))[0]

    def _details(self, fns: list[Any]) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "artifact": self.artifact.name if self.artifact else None,
            "keys": {f"db{d}": st.restored for d, st in sorted(self._stats.items())},
            "skipped_expired": {f"db{d}": st.expired for d, st in sorted(self._stats.items()) if st.expired},
            "function_commands": len(fns),
            "restore_id": self.restore_id,
        }
