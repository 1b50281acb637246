"""Pure logic of the Redis engine's own copies: the RDB db filter, retention, markers, pause bounds.

No server here: hand-built RDB bytes (``test_rdb.build_rdb``) and plain values. The same
logic runs against real servers in tests/integration/test_redis_copies.py and test_redis_crash.py.
"""

from __future__ import annotations

import io
import json
import math
from datetime import timedelta

import pytest

from airflow_checkpoint_provider.core.engines.redis._swap import (
    MAX_JOURNALED_FUNCTIONS,
    decode_commands,
    encode_commands,
)
from airflow_checkpoint_provider.core.engines.redis.copies import PREFIX, Copy, parse_marker, rollback_policy
from airflow_checkpoint_provider.core.engines.redis.fence import MAX_PAUSE_S, pause_ms
from airflow_checkpoint_provider.core.engines.redis.rdb import DbFilter, RdbParser
from airflow_checkpoint_provider.core.errors import CheckpointError
from airflow_checkpoint_provider.core.manifest import format_ts, utcnow
from tests.unit.core.engines.test_rdb import ENTRIES, ENTRIES_DB1, Chunked, build_rdb

# --------------------------------------------------------------------------- the RDB db filter


def _small(entries: list) -> list:
    return [e for e in entries if e[1] != b"str:big"]  # 3 MB in 1-byte reads would be slow


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096, 1 << 20])
@pytest.mark.parametrize("exclude", [{1}, {0}])
def test_db_filter_leaves_out_exactly_the_excluded_db_sections(chunk, exclude) -> None:
    db0, db1 = (ENTRIES, ENTRIES_DB1) if chunk >= 4096 else (_small(ENTRIES), _small(ENTRIES_DB1))
    out = bytearray()
    flt = DbFilter(out.extend, exclude)
    parser = RdbParser(Chunked(build_rdb(entries=db0 + db1), chunk), db_filter=flt)
    fingerprints = parser.scan()
    flt.finish()
    expected = build_rdb(entries=db1 if exclude == {0} else db0)
    assert bytes(out) == expected  # header, aux, functions, the kept db, EOF and a new valid CRC64
    assert fingerprints == RdbParser(io.BytesIO(expected)).scan()
    assert parser.checksum_verified  # the source's own CRC64 was still checked
    assert flt.written == len(expected) and flt.dropped > 0


def test_db_filter_with_nothing_excluded_copies_the_stream_unchanged() -> None:
    out = bytearray()
    flt = DbFilter(out.extend, set())
    RdbParser(io.BytesIO(build_rdb()), db_filter=flt).scan()
    flt.finish()
    assert bytes(out) == build_rdb()


# --------------------------------------------------------------------------- retention


def _copy(db: int, of_db: int, hours_ago: float, *, state: str = "rollback", restore_id: str = "") -> Copy:
    made = format_ts(utcnow() - timedelta(hours=hours_ago))
    rid = restore_id or f"r{db}"
    return Copy(
        db=db,
        marker=PREFIX + rid.encode() + b":00",
        state=state,
        of_db=of_db,
        checkpoint_id="c",
        restore_id=rid,
        created_at=made,
    )


def test_rollback_policy_keeps_the_newest_per_db_and_none_too_old() -> None:
    copies = [_copy(15, 0, 3), _copy(14, 1, 3), _copy(13, 0, 2), _copy(12, 1, 2), _copy(11, 0, 1), _copy(10, 1, 30)]
    # oldest first; per target db the newest stays (db11 of db0, db12 of db1)
    assert [c.db for c in rollback_policy(copies, keep=1, max_age=None)] == [10, 15, 14, 13]
    assert [c.db for c in rollback_policy(copies, keep=2, max_age=None)] == [10, 15]
    # db10 is older than a day: dropped whatever keep says
    assert [c.db for c in rollback_policy(copies, keep=None, max_age=86400)] == [10]
    assert [c.db for c in rollback_policy(copies, keep=5, max_age=86400)] == [10]
    assert [c.db for c in rollback_policy(copies, keep=None, max_age=None)] == []
    assert sorted(c.db for c in rollback_policy(copies, keep=0, max_age=None)) == [10, 11, 12, 13, 14, 15]


def test_rollback_policy_never_drops_loading_copies_or_those_of_running_restores() -> None:
    copies = [_copy(15, 0, 48, state="loading"), _copy(14, 0, 48, restore_id="running"), _copy(13, 0, 48)]
    assert [c.db for c in rollback_policy(copies, keep=0, max_age=0, live_restore_ids=["running"])] == [13]


# --------------------------------------------------------------------------- markers


def _marker(**over) -> bytes:
    body = {
        "format": "airflow-checkpoint-redis-copy",
        "state": "rollback",
        "checkpoint_id": "c",
        "restore_id": "r1",
        "db": 0,
        "spare": 15,
        "created_at": format_ts(utcnow()),
        **over,
    }
    return json.dumps(body).encode()


def test_marker_is_recognised_only_where_it_was_set() -> None:
    name = PREFIX + b"r1:0123456789abcdef"
    copy = parse_marker(name, _marker(), 15)
    assert copy is not None and (copy.db, copy.state, copy.of_db, copy.restore_id) == (15, "rollback", 0, "r1")
    assert parse_marker(name, _marker(), 3) is None  # copied into another db (a capture that included it)
    assert parse_marker(PREFIX + b"r2:0123456789abcdef", _marker(), 15) is None  # names another restore
    assert parse_marker(b"__airflow_checkpoint_rollback__", _marker(), 15) is None  # not our prefix
    assert parse_marker(name, b"application value", 15) is None
    assert parse_marker(name, _marker(state="other"), 15) is None
    assert parse_marker(name, None, 15) is None  # nil, or a non-string key (WRONGTYPE)


# --------------------------------------------------------------------------- bounds and journal encoding


def test_pause_longer_than_the_bound_is_refused() -> None:
    assert pause_ms(True, 2) == 2000 and pause_ms(True) == 30_000 and pause_ms(MAX_PAUSE_S) == MAX_PAUSE_S * 1000
    for value in (MAX_PAUSE_S + 1, math.inf, math.nan, "inf"):
        with pytest.raises(CheckpointError, match="at most 600 s"):
            pause_ms(value)
        with pytest.raises(CheckpointError, match="at most 600 s"):
            pause_ms(True, value)
    with pytest.raises(CheckpointError, match="pause_timeout=0"):
        pause_ms(True, 0)
    assert pause_ms(False, 0) is None  # no fence: the timeout does not matter


def test_function_commands_round_trip_through_the_journal() -> None:
    cmds = [("FUNCTION", "FLUSH"), ("FUNCTION", "LOAD", "REPLACE", b"#!lua name=x\n\xff\x00")]
    encoded = encode_commands(cmds)
    assert json.loads(json.dumps(encoded)) == encoded and decode_commands(encoded) == cmds
    assert encode_commands([("FUNCTION", "RESTORE", b"x" * (MAX_JOURNALED_FUNCTIONS + 1))]) is None
