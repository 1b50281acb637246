"""The rollback_keep policy (pure logic over listed copies)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_checkpoint_provider.core.errors import CheckpointError
from airflow_checkpoint_provider.core.manifest import format_ts, utcnow
from airflow_checkpoint_provider.core.rollbacks import RollbackCopy, RollbackPolicy


def copy(of, hours_ago, name=None, component="postgres"):
    return RollbackCopy(
        component, name or f"{of}__rb_{hours_ago}", of, "abc", format_ts(utcnow() - timedelta(hours=hours_ago))
    )


def test_policy_parses_last_and_max_age():
    assert RollbackPolicy.parse("last=1,max_age=86400") == RollbackPolicy(1, 86400.0)
    assert RollbackPolicy.parse("all") == RollbackPolicy() == RollbackPolicy.parse("")


@pytest.mark.parametrize("bad", ["last", "last=-1", "keep=3", "max_age=soon", "last=1;max_age=3"])
def test_a_bad_policy_names_the_part(bad):
    with pytest.raises(CheckpointError, match="rollback_keep") as err:
        RollbackPolicy.parse(bad)
    assert "HINT" in str(err.value)


def test_last_keeps_the_newest_per_original_and_max_age_drops_old_ones():
    copies = [copy("app", 1), copy("app", 5), copy("app", 30), copy("shop", 2), copy("db0", 40, component="redis")]
    dropped = {c.name for c in RollbackPolicy.parse("last=1,max_age=86400").expired(copies)}
    assert dropped == {"app__rb_5", "app__rb_30", "db0__rb_40"}
    assert {c.name for c in RollbackPolicy.parse("last=2").expired(copies)} == {"app__rb_30"}
    assert RollbackPolicy.parse("all").expired(copies) == []
