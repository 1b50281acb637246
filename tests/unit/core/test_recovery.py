"""The restore recipe's ordering and failure handling, with in-memory components.

These stand in for our own ComponentRestore protocol only (no server is faked); the real
engines are exercised against real servers in tests/integration.
"""

from __future__ import annotations

import json

import pytest

from airflow_checkpoint_provider.core.errors import VerificationFailedError
from airflow_checkpoint_provider.core.recovery import (
    RestoreFailedError,
    RestoreRefusedError,
    RestoreRequest,
    restore,
)
from airflow_checkpoint_provider.core.restore import HealthCheck, PlanItem, RestoreOutcome
from tests.unit.core.helpers import archive_path, flip_byte, make_checkpoint, member_data_offsets


class Target:
    def __init__(self, component):
        self.component = component

    def public(self):
        return {"host": f"{self.component}.internal", "port": 1}


class Part:
    def __init__(self, component, calls, *, fail=None, problems=()):
        self.component, self.calls, self.fail, self.problems = component, calls, fail, list(problems)
        self.target = Target(component)

    def _do(self, step):
        self.calls.append(f"{self.component}.{step}")
        if self.fail == step:
            raise RuntimeError(f"{self.component} {step} broke")

    def plan(self):
        self._do("plan")
        return [PlanItem(self.component, "src", "dst", "replace")], self.problems

    def safety_capture(self, staging):
        self._do("safety_capture")
        with staging.artifact(f"{self.component}/current", store=self.component, kind="test") as sink:
            sink.write(b"current state")
        return [sink.artifact]

    def prepare(self):
        self._do("prepare")

    def cutover(self):
        self._do("cutover")
        return RestoreOutcome(self.component, restored=["dst"], rollback=["dst__rollback"])

    def rollback(self):
        self._do("rollback")

    def abort(self):
        self._do("abort")

    def health(self, tolerance):
        self._do("health")
        return [HealthCheck(self.component, "rows", True, 1, 1)]


def run(store, cid, calls, fails=(), problems=(), **req):
    parts = [
        Part(c, calls, fail=dict(fails).get(c), problems=dict(problems).get(c, ()))
        for c in ("postgres", "redis", "search")
    ]
    return restore(store, RestoreRequest(checkpoint_id=cid, **req), lambda s, m, r: parts)


def test_happy_path_order(store):
    m = make_checkpoint(store)
    calls = []
    report = run(store, m.checkpoint_id, calls)
    assert calls == [
        "postgres.plan",
        "redis.plan",
        "search.plan",
        "postgres.safety_capture",
        "redis.safety_capture",
        "search.safety_capture",
        "postgres.prepare",
        "redis.prepare",
        "search.prepare",
        "postgres.cutover",
        "redis.cutover",
        "search.cutover",
        "postgres.health",
        "redis.health",
        "search.health",
    ]
    safety = store.get(report.safety_checkpoint_id)
    assert "safety" in safety.tags and f"before-restore-of:{m.checkpoint_id}" in safety.tags
    assert report.healthy and [o.component for o in report.outcomes] == ["postgres", "redis", "search"]


def test_dry_run_only_plans(store):
    m = make_checkpoint(store)
    calls = []
    report = run(store, m.checkpoint_id, calls, dry_run=True)
    assert calls == ["postgres.plan", "redis.plan", "search.plan"]
    assert report.dry_run and report.outcomes == [] and len(store.list()) == 1


def test_plan_problems_refuse_before_any_change(store):
    m = make_checkpoint(store)
    calls = []
    with pytest.raises(RestoreRefusedError, match="pg_restore 14 is older"):
        run(store, m.checkpoint_id, calls, problems={"postgres": ["pg_restore 14 is older than the dump"]})
    assert all(c.endswith(".plan") for c in calls) and len(store.list()) == 1


def test_dry_run_with_plan_problems_is_refused_not_green(store):
    m = make_checkpoint(store)
    calls = []
    with pytest.raises(RestoreRefusedError) as info:
        run(store, m.checkpoint_id, calls, dry_run=True, problems={"redis": ["RDB version 12 is too new"]})
    assert calls == ["postgres.plan", "redis.plan", "search.plan"]
    assert info.value.plan is not None and info.value.plan.problems == ["RDB version 12 is too new"]
    # the problem and the hint are the last lines of the message, each on its own line
    assert str(info.value).splitlines()[-2:] == [
        "PROBLEM: RDB version 12 is too new",
        "HINT: nothing was changed; resolve the problems or pick another checkpoint",
    ]


def test_failed_load_aborts_everything_and_replaces_nothing(store):
    m = make_checkpoint(store)
    calls = []
    with pytest.raises(RestoreFailedError, match="while loading redis") as info:
        run(store, m.checkpoint_id, calls, fails={"redis": "prepare"})
    assert "nothing was replaced" in str(info.value)
    assert not any(c.endswith(".cutover") for c in calls)
    assert calls[-2:] == ["redis.abort", "postgres.abort"]


def test_failed_cutover_rolls_back_what_was_cut_over(store):
    m = make_checkpoint(store)
    calls = []
    with pytest.raises(RestoreFailedError, match="while cutting over search"):
        run(store, m.checkpoint_id, calls, fails={"search": "cutover"})
    tail = calls[calls.index("search.cutover") + 1 :]
    assert tail == ["redis.rollback", "postgres.rollback", "search.abort"]


def test_corrupt_archive_is_refused_before_planning(store):
    m = make_checkpoint(store)
    path = archive_path(store, m.checkpoint_id)
    offset, size = member_data_offsets(path)[m.artifacts[0].member]
    flip_byte(path, offset + size // 2)
    calls = []
    with pytest.raises(VerificationFailedError, match=m.artifacts[0].member):
        run(store, m.checkpoint_id, calls)
    assert calls == []


def test_safety_checkpoint_can_be_turned_off(store):
    m = make_checkpoint(store)
    calls = []
    report = run(store, "last-known-good" if store.mark_lkg(m.checkpoint_id) else "", calls, safety_checkpoint=False)
    assert report.checkpoint_id == m.checkpoint_id and report.safety_checkpoint_id is None
    assert not any("safety" in c for c in calls)


def test_no_safety_checkpoint_when_nothing_would_be_replaced(store):
    m = make_checkpoint(store)

    class NewTarget(Part):
        def safety_capture(self, staging):
            self._do("safety_capture")
            return []

    calls = []
    report = restore(
        store, RestoreRequest(checkpoint_id=m.checkpoint_id), lambda s, man, r: [NewTarget("postgres", calls)]
    )
    assert report.safety_checkpoint_id is None and len(store.list()) == 1
    assert "postgres.cutover" in calls


def test_a_finished_restore_leaves_no_journal_and_no_lease(store):
    from airflow_checkpoint_provider.core.journal import open_journals
    from airflow_checkpoint_provider.core.lease import read_leases

    m = make_checkpoint(store)
    report = run(store, m.checkpoint_id, [])
    assert report.restore_id and open_journals(store.fs) == [] and read_leases(store.fs) == []
    # one per server, with the time it was held, and one of the checkpoint's use key (retention kept off it)
    keys = sorted(
        json.loads(store.fs.read_bytes(f"leases/history/{e}"))["key"] for e in store.fs.listdir("leases/history")
    )
    assert len(keys) == 4 and keys[0] == f"checkpoint:{m.checkpoint_id}:{report.restore_id}"


def test_a_restore_of_a_server_another_restore_holds_is_refused(store):
    from airflow_checkpoint_provider.core.lease import Lease, LeaseHeldError

    m = make_checkpoint(store)
    calls = []
    with Lease(store.fs, store.lock, "other", ["redis:redis.internal:1"]).acquire():
        with pytest.raises(LeaseHeldError, match="being restored by other"):
            run(store, m.checkpoint_id, calls)
    assert "postgres.prepare" not in calls  # nothing was touched


def test_a_failed_rollback_keeps_the_journal_for_the_replay(store):
    from airflow_checkpoint_provider.core.journal import Journal, open_journals
    from airflow_checkpoint_provider.core.lease import read_leases

    m = make_checkpoint(store)
    parts = [
        Part(c, [], fail={"postgres": "rollback", "search": "cutover"}.get(c)) for c in ("postgres", "redis", "search")
    ]
    with pytest.raises(RestoreFailedError, match="rolling back failed for postgres") as err:
        restore(store, RestoreRequest(checkpoint_id=m.checkpoint_id), lambda s, mm, r: parts)
    assert "recover-interrupted" in str(err.value)
    (rid,) = open_journals(store.fs)
    assert set(Journal.load(store.fs, rid).components) == {"postgres", "redis", "search"}
    assert read_leases(store.fs) == []  # released: the journal without a live lease is what a replay picks up


def test_a_failed_load_reports_copies_that_could_not_be_removed(store):
    from airflow_checkpoint_provider.core.journal import open_journals

    m = make_checkpoint(store)
    parts = [
        Part(c, [], fail={"redis": "prepare", "postgres": "abort"}.get(c)) for c in ("postgres", "redis", "search")
    ]
    with pytest.raises(RestoreFailedError) as err:
        restore(store, RestoreRequest(checkpoint_id=m.checkpoint_id), lambda s, mm, r: parts)
    assert "side-by-side copies of postgres could not be removed" in str(err.value)
    assert "were removed" not in str(err.value)
    assert len(open_journals(store.fs)) == 1
