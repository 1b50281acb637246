"""Retention planning against an independent oracle, over 500 synthetic checkpoints spread over two years.

The oracle below is written from the rules' definitions, not from core/retention.py: for each
group it takes the set of distinct hours/days/weeks/months/years in the group, the newest N of
them, and keeps the newest checkpoint of each; ``keep_last`` and ``keep_within`` are plain
slices and comparisons; the cap removes the oldest unprotected checkpoints. (Pure logic: no
store and no server is involved.)
"""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest

from airflow_checkpoint_provider.core.errors import CheckpointError
from airflow_checkpoint_provider.core.retention import Candidate, Policy, parse_duration, plan

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
RULE_VALUES = {
    "keep_last": 5,
    "keep_within": "30d",
    "keep_hourly": 24,
    "keep_daily": 14,
    "keep_weekly": 8,
    "keep_monthly": 12,
    "keep_yearly": 3,
}
TAG_RULES = {"pre-migration": {"keep_within": "90d", "keep_monthly": 6}, "safety": {"keep_last": 2}}


def _synthetic(n: int = 500, seed: int = 11) -> list[Candidate]:
    """``n`` checkpoints over two years: bursts (several an hour), quiet weeks, tags, a few protected."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        age = rng.choice([rng.uniform(0, 3 * 86400), rng.uniform(0, 60 * 86400), rng.uniform(0, 730 * 86400)])
        tags = rng.choice([(), (), ("scheduled",), ("pre-migration",), ("safety",), ("pre-migration", "safety")])
        protected = ("pinned",) if rng.random() < 0.03 else ()
        out.append(
            Candidate(f"ckpt-{i:04d}", NOW - timedelta(seconds=round(age)), tags, rng.randint(1, 1000), protected)
        )
    return out


def _key(when: datetime, bucket: str) -> tuple:
    iso = when.isocalendar()
    return {
        "hourly": (when.date(), when.hour),
        "daily": (when.date(),),
        "weekly": (iso[0], iso[1]),
        "monthly": (when.year, when.month),
        "yearly": (when.year,),
    }[bucket]


def _oracle(cands: list[Candidate], rules: dict, tag_rules: dict, cap: int | None) -> set[str]:
    def group(c: Candidate) -> str:
        return next((t for t in tag_rules if t in c.tags), "")

    keep: set[str] = {c.checkpoint_id for c in cands if c.protected}
    for g in {group(c) for c in cands}:
        r = tag_rules[g] if g else rules
        members = sorted(
            (c for c in cands if group(c) == g), key=lambda c: (c.created_at, c.checkpoint_id), reverse=True
        )
        keep |= {c.checkpoint_id for c in members[: r.get("keep_last", 0)]}
        if r.get("keep_within"):
            limit = NOW - timedelta(seconds=parse_duration(r["keep_within"]))
            keep |= {c.checkpoint_id for c in members if c.created_at >= limit}
        for bucket in ("hourly", "daily", "weekly", "monthly", "yearly"):
            n = r.get(f"keep_{bucket}", 0)
            newest_of: dict[tuple, Candidate] = {}
            for c in members:
                newest_of.setdefault(_key(c.created_at, bucket), c)  # members are newest first
            for k in sorted(newest_of, key=lambda k: newest_of[k].created_at, reverse=True)[:n]:
                keep.add(newest_of[k].checkpoint_id)
    if cap is not None:
        by_id = {c.checkpoint_id: c for c in cands}
        total = sum(by_id[i].size for i in keep)
        for c in sorted((by_id[i] for i in keep), key=lambda c: (c.created_at, c.checkpoint_id)):
            if total <= cap:
                break
            if not c.protected:
                keep.discard(c.checkpoint_id)
                total -= c.size
    return keep


COMBOS = [combo for n in range(len(RULE_VALUES) + 1) for combo in itertools.combinations(RULE_VALUES, n)]


@pytest.mark.parametrize("with_tags", [False, True], ids=["default-rules", "tag-rules"])
@pytest.mark.parametrize("combo", COMBOS, ids=["+".join(c) or "none" for c in COMBOS])
def test_plan_keeps_exactly_what_the_oracle_keeps_for_every_rule_combination(combo, with_tags):
    cands = _synthetic()
    rules = {k: RULE_VALUES[k] for k in combo}
    tag_rules = TAG_RULES if with_tags else {}
    result = plan(cands, Policy.parse({**rules, "tags": tag_rules}), now=NOW)
    kept = {d.checkpoint_id for d in result.decisions if d.keep}
    assert kept == _oracle(cands, rules, tag_rules, None)
    assert all(d.reasons for d in result.decisions), "every checkpoint has the rule that keeps it or the reason"


@pytest.mark.parametrize("cap", [1, 5_000, 20_000, 60_000, 10**9])
@pytest.mark.parametrize("combo", [("keep_daily", "keep_weekly", "keep_monthly"), ("keep_within",), tuple(RULE_VALUES)])
def test_the_storage_cap_deletes_the_oldest_unprotected_first(combo, cap):
    cands = _synthetic()
    rules = {k: RULE_VALUES[k] for k in combo}
    result = plan(cands, Policy.parse({**rules, "tags": TAG_RULES, "max_total_bytes": cap}), now=NOW)
    kept = {d.checkpoint_id for d in result.decisions if d.keep}
    assert kept == _oracle(cands, rules, TAG_RULES, cap)
    protected_bytes = sum(c.size for c in cands if c.protected)
    assert bool(result.warnings) == (protected_bytes > cap and result.kept_bytes > cap)


def test_protected_checkpoints_are_kept_without_any_rule_and_say_why():
    cands = [
        Candidate("a", NOW - timedelta(days=400), (), 10, ("last-known-good",)),
        Candidate("b", NOW - timedelta(days=300), (), 10, ("in use by restore r1",)),
        Candidate("c", NOW - timedelta(days=200), (), 10),
    ]
    result = plan(cands, Policy.parse({}), now=NOW)
    by_id = {d.checkpoint_id: d for d in result.decisions}
    assert by_id["a"].keep and by_id["a"].reasons == ["protected: last-known-good"]
    assert by_id["b"].keep and by_id["b"].reasons == ["protected: in use by restore r1"]
    assert not by_id["c"].keep and by_id["c"].reasons == [
        "no rule of the default rules keeps it (no rule (keeps nothing))"
    ]


def test_the_reasons_name_the_rule_and_its_bucket():
    cands = [
        Candidate("new", NOW - timedelta(hours=1)),
        Candidate("same-day", NOW - timedelta(hours=2)),
        Candidate("old", NOW - timedelta(days=40)),
    ]
    result = plan(cands, Policy.parse({"keep_daily": 2, "keep_within": "1d"}), now=NOW)
    by_id = {d.checkpoint_id: d for d in result.decisions}
    assert by_id["new"].reasons == ["keep_within 1d", "keep_daily (2026-11-30)"]
    assert by_id["same-day"].reasons == ["keep_within 1d"]
    assert by_id["old"].reasons == ["keep_daily (2026-10-21)"]


def test_a_tagged_checkpoint_is_judged_by_its_tag_rules_only():
    cands = [
        Candidate("mig", NOW - timedelta(days=60), ("pre-migration",)),
        Candidate("plain", NOW - timedelta(days=60)),
    ]
    result = plan(
        cands, Policy.parse({"keep_within": "7d", "tags": {"pre-migration": {"keep_within": "90d"}}}), now=NOW
    )
    by_id = {d.checkpoint_id: d for d in result.decisions}
    assert by_id["mig"].keep and by_id["mig"].group == "pre-migration"
    assert not by_id["plain"].keep and "keep_within 7d" in by_id["plain"].reasons[0]


@pytest.mark.parametrize(
    "policy,message",
    [
        ('{"keep_daily": -1}', "keep_daily is -1"),
        ('{"keep_weekly": "4"}', "keep_weekly is '4'"),
        ('{"keep_within": "7 days"}', "keep_within is '7 days'"),
        ('{"keep_forever": 1}', "unknown rule(s) keep_forever"),
        ('{"max_total_bytes": 0}', "max_total_bytes is 0"),
        ('{"tags": {"safety": {"keep_last": true}}}', "tags.safety.keep_last is True"),
        ("keep_daily=7", "is not JSON"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_offending_value(policy, message):
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        Policy.parse(policy)
    assert err.value.hint


def test_durations_combine_units():
    assert parse_duration("1w2d") == 9 * 86400 and parse_duration("36h") == 36 * 3600 and parse_duration(90) == 90
