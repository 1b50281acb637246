"""Planning a Redis restore: compatibility, spare dbs (reclaiming expired rollback copies), permissions, what the checkpoint would replace."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from airflow_checkpoint_provider.core.journal import (
    open_journals,
)
from airflow_checkpoint_provider.core.restore import (
    PlanItem,
)

from ._load import (
    RedisRestoreError,
)
from ._placement import _PlacementMixin
from .capture import RDB_KIND
from .copies import Copy, rollback_policy
from .encoding import RdbError
from .health import (
    ServerFacts,
    parse_version,
    server_facts,
)
from .resp import Connection, RespError, connect, encode_command

log = logging.getLogger("airflow_checkpoint_provider.core.engines.redis.restore")

#: ``plan_counts="auto"`` counts exactly up to this many keys in the checkpoint (about 0.2 s of plan)
EXACT_PLAN_KEYS = 100_000
#: keys sampled per target db for an estimate
PLAN_SAMPLE = 5_000
#: keys of other dbs the sampling pass walks past before it gives up on the dbs behind them
PLAN_SAMPLE_REACH = 200_000


@dataclass(frozen=True)
class Overlap:
    """How many of the checkpoint's keys of one db exist in the target db now.

    ``how``: ``exact`` (every key looked up), ``estimate`` (``sampled`` of the checkpoint's ``of``
    keys looked up, scaled), or ``bound`` (nothing looked up: at most ``min(now, of)``)."""

    replaced: int
    how: str
    sampled: int = 0
    of: int = 0

    def conflicts(self, db: int, now: int, spare: int | None) -> list[str]:
        """The plan's lines: keys replaced, and keys that disappear (kept in the rollback copy)."""
        kept = f" (kept in the rollback copy db{spare})" if spare is not None else ""
        exact = "plan_counts='exact' counts them all"
        if self.how == "exact":
            out = [f"{self.replaced} keys of db{db} will be replaced by the checkpoint's values"]
            gone = now - self.replaced
            if gone:
                out.append(f"{gone} keys of db{db} are not in the checkpoint and will disappear{kept}")
            return out
        if self.how == "estimate":
            how = f"estimated from {self.sampled} of the checkpoint's {self.of} keys of db{db}; {exact}"
            out = [f"about {self.replaced} keys of db{db} will be replaced by the checkpoint's values ({how})"]
            if now - self.replaced:
                out.append(
                    f"about {now - self.replaced} keys of db{db} are not in the checkpoint and will disappear{kept}"
                )
            return out
        out = [
            f"up to {self.replaced} keys of db{db} will be replaced by the checkpoint's values (not counted: "
            f"the checkpoint's db{db} lies too far into the artifact to sample; {exact})"
        ]
        if now - self.replaced:
            out.append(
                f"at least {now - self.replaced} keys of db{db} are not in the checkpoint and will disappear{kept}"
            )
        return out


class _PlanMixin(_PlacementMixin):
    """Planning a Redis restore: compatibility, spare dbs (reclaiming expired rollback copies), permissions, what the checkpoint would replace. Mixed into :class:`RedisRestore`."""

    def plan(self) -> tuple[list[PlanItem], list[str]]:
        if self.artifact is None:
            return [], ["the checkpoint holds no Redis artifact (redis/rdb or redis/logical)"]
        label = self.target.label
        self.pairs = []
        with connect(self.target) as conn:
            facts = self.facts = server_facts(conn, fs=self.store.fs)
            problems = self._compat(facts)
            if self.placement:
                problems += self._placement_checks(conn)
            elif not facts.cluster:
                if self.mode == "side_by_side":
                    problems += self._pick_spares(facts)
                if self.pairs or self.mode == "in_place":
                    problems += self._permission(conn)
            counts: dict[int, Overlap] = {}
            if not problems:
                try:
                    counts = self._count_existing(conn, facts)
                except (RedisRestoreError, RdbError) as exc:
                    problems.append(f"{self.artifact.name}: {exc}")
        items = []
        for t in self.dbs:
            now, want = facts.keys(t), self.expected.get(t, 0)
            spare = dict(self.pairs).get(t)
            item = PlanItem(
                self.component,
                f"db{t}",
                f"db{t}",
                "replace" if now else "create",
                staging_name=f"db{spare}" if spare is not None else "",
                notes=[f"the checkpoint holds {want} keys; db{t} holds {now} now"],
            )
            if t in counts:
                item.conflicts += counts[t].conflicts(t, now, spare)
            if t in facts.copies:
                item.conflicts.append(f"{facts.copies[t].describe()}; it will be replaced")
            items.append(item)
        if items:
            items[0].notes += self._notes(facts)
        log.info("Planned the Redis restore of %s into %s: %d problem(s)", self.checkpoint_id, label, len(problems))
        return items, problems

    def _compat(self, facts: ServerFacts) -> list[str]:
        problems = []
        version, top = self.rdb_version, facts.max_rdb
        if version is not None and top is not None and version > top:
            problems.append(self._version_problem(version))
        if facts.cluster and not self.placement:
            problems.append(
                f"{self.target.label} runs in cluster mode: SWAPDB and logical dbs other than 0 are "
                "not available and keys would have to be routed to their shards; restore by file "
                "placement on each node instead"
            )
        bad = [d for d in self.dbs if d >= facts.databases]
        if bad:
            problems.append(
                f"{self.target.label} has {facts.databases} logical dbs ({facts.databases_source}); "
                f"the checkpoint needs db{', db'.join(map(str, bad))}: raise 'databases'"
            )
        fns = int(self.artifact.fingerprints.get("functions") or 0) if self.artifact else 0
        major = (parse_version(facts.version) or (0, 0))[0]
        if fns and self.restore_functions and major < 7 and not self.placement:
            problems.append(
                f"the checkpoint holds {fns} function libraries but {self.target.label} runs Redis "
                f"{facts.version} (functions need 7.0); pass restore_functions=False to skip them"
            )
        return problems

    def _pick_spares(self, facts: ServerFacts) -> list[str]:
        """Choose the spare dbs: empty ones, then rollback copies beyond the retention policy."""
        need = len(self.dbs)
        empty = [d for d in range(facts.databases) if not facts.keyspace.get(d) and d not in self.dbs]
        beyond = {c.db: c for c in self._beyond_policy(facts) if c.db not in self.dbs}
        self._reclaim = []
        if self.spare_db is not None:
            wanted = list(range(self.spare_db, self.spare_db + need))
            busy = [d for d in wanted if d not in empty and d not in beyond]
            if busy:
                return [
                    f"spare db{', db'.join(map(str, busy))} of {self.target.label} cannot be used: "
                    f"{'it is' if len(busy) == 1 else 'they are'} not empty, a target or beyond the "
                    f"{facts.databases} dbs; choose another spare_db or leave it unset"
                ]
        else:
            wanted = sorted(empty, reverse=True)[:need]
            oldest = sorted(beyond.values(), key=lambda c: (c.created_at, c.db))
            wanted += [c.db for c in oldest[: need - len(wanted)]]
            if len(wanted) < need:
                kept = sorted(d for d, c in facts.copies.items() if c.state == "rollback" and d not in beyond)
                held = (
                    f"; db{', db'.join(map(str, kept))} hold rollback copies within the retention policy "
                    f"({self._policy_text()}) or of restores still running"
                    if kept
                    else ""
                )
                return [
                    f"a side-by-side restore needs {need} empty logical db(s) besides the targets, but "
                    f"{self.target.label} has only {len(wanted)} ({facts.databases} dbs{held}); empty one "
                    "(prune_rollbacks or drop_rollback for old rollback copies), raise 'databases', or use "
                    "mode='in_place'"
                ]
        self._reclaim = [beyond[d] for d in wanted if d in beyond]
        self.pairs = list(zip(self.dbs, wanted, strict=True))
        return []

    def _beyond_policy(self, facts: ServerFacts) -> list[Copy]:
        running = set(open_journals(self.store.fs)) | {self.restore_id}
        return rollback_policy(
            facts.copies.values(), keep=self.rollback_keep, max_age=self.rollback_max_age, live_restore_ids=running
        )

    def _policy_text(self) -> str:
        keep = "all" if self.rollback_keep is None else str(self.rollback_keep)
        age = "" if self.rollback_max_age is None else f", none older than {self.rollback_max_age:g} s"
        return f"keep {keep} per db{age}"

    def _permission(self, conn: Connection) -> list[str]:
        """``ACL DRYRUN`` of the commands the restore needs; without it (Redis < 7.0, or ACL not
        allowed) a no-op ``SWAPDB s s`` tells whether SWAPDB is allowed."""
        if self.mode == "in_place":
            probes: list[tuple[Any, ...]] = [("RESTORE", "k", 0, "x"), ("SCAN", 0), ("UNLINK", "k"), ("SELECT", 0)]
        else:
            t, s = self.pairs[0]
            probes = [("SWAPDB", t, s), ("RESTORE", "k", 0, "x"), ("FLUSHDB",), ("SELECT", s), ("DBSIZE",)]
        if self._functions_expected():
            probes.append(("FUNCTION", "LOAD", "x") if self.kind == RDB_KIND else ("FUNCTION", "RESTORE", "x"))
        user = conn.call_nothrow("ACL", "WHOAMI")
        out = []
        if isinstance(user, bytes):
            for probe in probes:
                reply = conn.call_nothrow("ACL", "DRYRUN", user, *probe)
                if isinstance(reply, RespError):
                    break  # ACL DRYRUN itself is not available: probe SWAPDB below
                if reply != "OK":
                    out.append(
                        f"{self.target.label}: the ACL user may not run {probe[0]} "
                        f"({reply.decode('utf-8', 'replace') if isinstance(reply, bytes) else reply})"
                    )
            else:
                return out
        if self.mode == "in_place":
            return out
        reply = conn.call_nothrow("SWAPDB", s, s)  # swapping an empty db with itself changes nothing
        if isinstance(reply, RespError):
            return [f"{self.target.label} refuses SWAPDB ({reply.message}): grant +swapdb or use mode='in_place'"]
        return out

    def _functions_expected(self) -> bool:
        if not self.restore_functions or self.artifact is None:
            return False
        return bool(self.artifact.fingerprints.get("functions")) or self.function_policy == "FLUSH"

    def _count_existing(self, conn: Connection, facts: ServerFacts) -> dict[int, Overlap]:
        """Per target db with keys now: how many of the checkpoint's keys exist there (see :class:`Overlap`).

        ``plan_counts="exact"``, or ``"auto"`` with at most ``EXACT_PLAN_KEYS`` keys in the
        checkpoint: every key, with ``EXISTS`` batches over one full pass of the artifact.
        Otherwise (``"estimate"``, or ``"auto"`` on a bigger checkpoint) a sample: the first
        ``PLAN_SAMPLE`` keys of each of those dbs in the artifact (an RDB or a SCAN lists a db's
        keys in hash-table order, so its first keys are an unbiased sample), the pass stopping
        once each db has its sample; a db behind more than ``PLAN_SAMPLE_REACH`` keys of the
        others in the stream is given bounds from the key counts alone."""
        busy = {t for t in self.dbs if facts.keys(t)}
        if not busy:
            return {}
        total = sum(self.expected.values())
        exact = self.plan_counts == "exact" or (self.plan_counts == "auto" and total <= EXACT_PLAN_KEYS)
        limit = None if exact else PLAN_SAMPLE
        hits = dict.fromkeys(busy, 0)
        seen = dict.fromkeys(busy, 0)
        with self._open() as src:
            items, _ = self._items(src, values=False)
            keys: list[bytes] = []
            cur, passed = -1, 0

            def flush() -> None:
                if keys:
                    conn.sendall(encode_command("SELECT", cur) + encode_command("EXISTS", *keys))
                    replies = conn.read_reply(), conn.read_reply()
                    for reply in replies:
                        if isinstance(reply, RespError):
                            raise RedisRestoreError(f"counting the keys db{cur} would lose failed: {reply.message}")
                    hits[cur] += replies[1]
                    keys.clear()

            for item in items:
                if type(item) is not tuple:
                    continue
                if item[0] != cur:
                    flush()
                    cur = item[0]
                if cur in busy:
                    if limit is not None and seen[cur] >= limit:
                        if all(seen[d] >= min(limit, self.expected.get(d, 0)) for d in busy):
                            break  # every db has its sample
                        passed += 1
                        if passed > PLAN_SAMPLE_REACH:
                            break
                        continue
                    seen[cur] += 1
                    keys.append(item[1])
                    if len(keys) >= 1000:
                        flush()
                elif limit is not None:
                    passed += 1
                    if passed > PLAN_SAMPLE_REACH:
                        break  # the dbs still unsampled get bounds only
            else:
                flush()
                if exact:
                    while src.read(1 << 20):  # to the end: the sha256 check
                        pass
            flush()
        out = {}
        for t in busy:
            want, now = self.expected.get(t, 0), facts.keys(t)
            if seen[t] >= want:  # every key of the checkpoint's db was looked up
                out[t] = Overlap(hits[t], "exact")
            elif seen[t]:
                estimate = round(hits[t] / seen[t] * want)
                out[t] = Overlap(max(0, min(estimate, now, want)), "estimate", sampled=seen[t], of=want)
            else:
                out[t] = Overlap(min(now, want), "bound", of=want)
        return out

    def _notes(self, facts: ServerFacts) -> list[str]:
        notes = []
        if self.mode == "in_place" and not self.placement:
            notes.append(
                "in place: keys are overwritten and extra keys deleted; there is no rollback copy "
                "(the safety checkpoint is the way back)"
            )
        others = [
            d
            for d in sorted(facts.keyspace)
            if d not in self.dbs and d not in facts.copies and d not in dict(self.pairs).values()
        ]
        if others and not self.placement:
            notes.append(
                f"db{', db'.join(map(str, others))} hold keys but are not restored (not in the checkpoint "
                "or not selected): left as they are"
            )
        reclaim = {c.db for c in self._reclaim}
        for d, c in sorted(facts.copies.items()):
            if d in self.dbs:
                continue
            if d in reclaim:
                notes.append(
                    f"{c.describe()}, {c.age() / 3600:.1f} h old, is beyond the retention policy "
                    f"({self._policy_text()}): it will be dropped to make room"
                )
            else:
                notes.append(f"{c.describe()}, {c.age() / 3600:.1f} h old; drop_rollback(target, {d}) frees it")
        fns = int(self.artifact.fingerprints.get("functions") or 0) if self.artifact else 0
        if fns and self.restore_functions:
            notes.append(
                f"{fns} function libraries will be loaded at cut-over ({self.function_policy}; "
                "functions are server-wide)"
            )
        return notes
