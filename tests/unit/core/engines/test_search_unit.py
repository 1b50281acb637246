"""Pure logic of the search engine: names, response parsing, error mapping, state interpretation.

The response bodies below were recorded from OpenSearch 2.19.1 and Elasticsearch 7.10.2; the
integration tests (tests/integration/test_search_engine.py) exercise the same paths against
the real servers.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest

from airflow_checkpoint_provider.core.engines.search import _logic as L
from airflow_checkpoint_provider.core.engines.search._client import _auth_header, _client_kwargs, safe_url
from airflow_checkpoint_provider.core.engines.targets import SearchTarget
from airflow_checkpoint_provider.core.errors import (
    AuthenticationError,
    CaptureError,
    EngineError,
    NotFoundError,
)

WHERE = "http://127.0.0.1:9200"

OPENSEARCH_ROOT = {
    "name": "Node 1",
    "cluster_name": "checkpoint-opensearch",
    "cluster_uuid": "StxZbJNeSmuChwDECyrz1w",
    "version": {
        "distribution": "opensearch",
        "number": "2.19.1",
        "build_type": "unknown",
        "lucene_version": "9.12.1",
        "minimum_wire_compatibility_version": "7.10.0",
    },
    "tagline": "The OpenSearch Project: https://opensearch.org/",
}
ES7_ROOT = {
    "name": "Node 1",
    "cluster_name": "checkpoint-elasticsearch",
    "cluster_uuid": "4YT7fnOrTeqGcOjf48yxaA",
    "version": {"number": "7.10.2", "build_flavor": "unknown", "lucene_version": "8.7.0"},
    "tagline": "You Know, for Search",
}
PARTIAL = {
    "snapshot": "s2",
    "uuid": "R5F-VMQQS0GI_7ZETF1_CQ",
    "version_id": 7100299,
    "version": "7.10.2",
    "indices": ["okidx", "unassigned1"],
    "data_streams": [],
    "include_global_state": False,
    "state": "PARTIAL",
    "start_time": "2026-11-22T13:08:03.415Z",
    "start_time_in_millis": 1795352883415,
    "end_time": "2026-11-22T13:08:03.616Z",
    "end_time_in_millis": 1795352883616,
    "duration_in_millis": 201,
    "failures": [
        {
            "index": "unassigned1",
            "index_uuid": "unassigned1",
            "shard_id": 0,
            "reason": "primary shard is not allocated",
            "status": "INTERNAL_SERVER_ERROR",
        }
    ],
    "shards": {"total": 2, "failed": 1, "successful": 1},
}
PATH_REPO_ERROR = {
    "error": {
        "root_cause": [
            {
                "type": "repository_exception",
                "reason": "[bad] location [/tmp/elsewhere] doesn't match any of the locations specified by path.repo",
            }
        ],
        "type": "repository_exception",
        "reason": "[bad] failed to create repository",
        "caused_by": {
            "type": "repository_exception",
            "reason": "[bad] location [/tmp/elsewhere] doesn't match any of the locations specified by path.repo",
        },
    },
    "status": 500,
}
INDEX_NOT_FOUND = {
    "error": {
        "root_cause": [
            {
                "type": "index_not_found_exception",
                "reason": "no such index [nonexist]",
                "index": "nonexist",
                "resource.id": "nonexist",
                "resource.type": "index_or_alias",
                "index_uuid": "_na_",
            }
        ],
        "type": "index_not_found_exception",
        "reason": "no such index [nonexist]",
        "index": "nonexist",
    },
    "status": 404,
}
NO_PRIMARY = {
    "error": {
        "root_cause": [
            {
                "type": "snapshot_exception",
                "reason": "[r1:s1/6V4UIfF6THWL_ooWPFNNyQ] Indices don't have primary shards [unassigned1]",
            }
        ],
        "type": "snapshot_exception",
        "reason": "[r1:s1/6V4UIfF6THWL_ooWPFNNyQ] Indices don't have primary shards [unassigned1]",
    },
    "status": 500,
}


# --------------------------------------------------------------------------- info and snapshots


def test_parse_info_flavors():
    assert L.parse_info(WHERE, OPENSEARCH_ROOT) == {
        "flavor": "opensearch",
        "version": "2.19.1",
        "cluster_name": "checkpoint-opensearch",
        "cluster_uuid": "StxZbJNeSmuChwDECyrz1w",
    }
    assert L.parse_info(WHERE, ES7_ROOT)["flavor"] == "elasticsearch"
    assert L.parse_info(WHERE, ES7_ROOT)["version"] == "7.10.2"
    with pytest.raises(EngineError, match=f"{WHERE} did not answer like"):
        L.parse_info(WHERE, {"ok": True})


def test_parse_snapshot_and_times():
    state = L.parse_snapshot(PARTIAL)
    assert state["state"] == "PARTIAL"
    assert state["indices"] == ["okidx", "unassigned1"]
    assert state["shards"] == {"total": 2, "successful": 1, "failed": 1}
    assert state["failures"] == [
        {
            "index": "unassigned1",
            "shard": 0,
            "reason": "primary shard is not allocated",
            "status": "INTERNAL_SERVER_ERROR",
            "node_id": "",
        }
    ]
    # exact milliseconds, no float rounding
    assert state["start_time"] == "2026-11-22T13:08:03.415000Z"
    assert state["end_time"] == "2026-11-22T13:08:03.616000Z"
    assert L.ms_to_ts(1795352879835) == "2026-11-22T13:07:59.835000Z"
    assert L.ms_to_ts(0) == L.ms_to_ts(None) == ""


def test_pick_snapshot_shapes():
    assert L.pick_snapshot(WHERE, "r", "s2", {"snapshots": [PARTIAL]})["uuid"] == PARTIAL["uuid"]
    assert L.pick_snapshot(WHERE, "r", "s2", {"responses": [{"repository": "r", "snapshots": [PARTIAL]}]})
    with pytest.raises(NotFoundError, match="r:other"):
        L.pick_snapshot(WHERE, "r", "other", {"snapshots": [PARTIAL]})


@pytest.mark.parametrize("state,expected", [("IN_PROGRESS", False), ("SUCCESS", True)])
def test_snapshot_done(state, expected):
    assert L.snapshot_done(WHERE, "r", {"state": state, "snapshot": "s"}) is expected


@pytest.mark.parametrize("state", ["PARTIAL", "FAILED", "INCOMPATIBLE"])
def test_failed_states_list_the_shard_failures(state):
    parsed = {**L.parse_snapshot(PARTIAL), "state": state, "reason": "Indices don't have primary shards"}
    with pytest.raises(L.SnapshotFailedError) as exc:
        L.snapshot_done(WHERE, "r1", parsed)
    message = str(exc.value)
    assert isinstance(exc.value, CaptureError)
    assert exc.value.state is parsed
    assert f"snapshot r1:s2 ended {state}: 1 of 2 shards failed" in message
    assert "failed indices: unassigned1" in message
    assert "index unassigned1 shard 0: primary shard is not allocated (INTERNAL_SERVER_ERROR)" in message
    assert "reason: Indices don't have primary shards" in message
    assert WHERE in message and "DELETE /_snapshot/r1/s2" in message and "HINT:" in message
    deleted = str(L.snapshot_failure(WHERE, "r1", parsed, deleted=True))
    assert "was deleted" in deleted and "DELETE /_snapshot" not in deleted


def test_unknown_state_is_an_error():
    with pytest.raises(CaptureError, match="unknown state 'WEIRD'"):
        L.snapshot_done(WHERE, "r", {"state": "WEIRD", "snapshot": "s"})


def test_many_failures_are_capped():
    failures = [{"index": f"i{n}", "shard": 0, "reason": "x", "status": ""} for n in range(60)]
    lines = L.format_failures(failures, limit=50)
    assert len(lines) == 51 and lines[-1] == "  - ... and 10 more"


# --------------------------------------------------------------------------- the poll loop rules


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_snapshot_wait_polls_until_success_and_times_out():
    clock = Clock()
    wait = L.SnapshotWait(WHERE, "r", "s", poll_interval=2, timeout=5, clock=clock)
    running = {"state": "IN_PROGRESS", "snapshot": "s", "shards": {"total": 4, "successful": 1, "failed": 0}}
    assert wait.on_state(running) is False
    assert wait.next_delay() == 2
    clock.now += 4
    assert wait.on_state(running) is False
    assert wait.next_delay() == 1  # never sleeps past the deadline
    clock.now += 1
    assert wait.on_state(running) is False
    with pytest.raises(L.SnapshotTimeoutError, match=r"r:s still IN_PROGRESS after 5s \(1 of 4 shards done\)"):
        wait.next_delay()
    assert wait.on_state({"state": "SUCCESS", "snapshot": "s"}) is True


def test_snapshot_wait_tolerates_a_few_connection_errors():
    clock = Clock()
    wait = L.SnapshotWait(WHERE, "r", "s", timeout=60, max_transient_errors=2, clock=clock)
    err = EngineError("boom")
    wait.on_error(err)
    wait.on_error(err)
    with pytest.raises(EngineError, match="boom"):
        wait.on_error(err)
    wait.on_state({"state": "IN_PROGRESS", "snapshot": "s"})  # resets the streak
    wait.on_error(err)


# --------------------------------------------------------------------------- error mapping


def test_path_repo_error_quotes_the_server():
    err = L.error_for(WHERE, "register snapshot repository 'bad'", 500, PATH_REPO_ERROR)
    assert type(err) is EngineError
    text = str(err)
    assert "[bad] location [/tmp/elsewhere] doesn't match any of the locations specified by path.repo" in text
    assert WHERE in text and "HINT:" in text and "every master and data node" in text


def test_not_found_kinds():
    err = L.error_for(WHERE, "resolve index expression 'nonexist'", 404, INDEX_NOT_FOUND)
    assert isinstance(err, NotFoundError) and "no such index 'nonexist'" in str(err)
    repo_missing = {
        "error": {
            "root_cause": [{"type": "repository_missing_exception", "reason": "[nope] missing"}],
            "type": "repository_missing_exception",
            "reason": "[nope] missing",
        },
        "status": 404,
    }
    err = L.error_for(WHERE, "read snapshot repository 'nope'", 404, repo_missing)
    assert isinstance(err, NotFoundError) and "repository does not exist: repository_missing_exception: [nope]" in str(
        err
    )
    snap_missing = {"error": {"type": "snapshot_missing_exception", "reason": "[r1:s1] is missing"}, "status": 404}
    assert "snapshot does not exist" in str(L.error_for(WHERE, "x", 404, snap_missing))


def test_snapshot_refused_is_a_capture_error_naming_the_index():
    err = L.error_for(WHERE, "start snapshot r1:s1", 500, NO_PRIMARY)
    assert isinstance(err, CaptureError)
    assert "Indices don't have primary shards [unassigned1]" in str(err)


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors(status):
    body = {
        "error": {
            "type": "security_exception",
            "reason": "action [cluster:admin/snapshot/create] is unauthorized for user [bob]",
        },
        "status": status,
    }
    err = L.error_for(WHERE, "start snapshot r:s", status, body)
    assert isinstance(err, AuthenticationError) and "unauthorized for user [bob]" in str(err)
    assert "HINT:" in str(err)


def test_error_details_handle_odd_bodies():
    assert L.error_details({"error": "plain text"}) == [("", "plain text")]
    assert L.error_details("<html>bad gateway</html>") == [("", "<html>bad gateway</html>")]
    assert L.error_details({"message": "Forbidden"}) == [("", "Forbidden")]
    assert L.error_text({}) == "no error details"
    err = L.error_for(WHERE, "x", 503, "upstream down")
    assert type(err) is EngineError and "unavailable" in str(err)


# --------------------------------------------------------------------------- names and indices


def test_snapshot_names():
    now = datetime(2026, 11, 22, 12, 30, 42, tzinfo=UTC)
    assert L.generate_snapshot_name("Checkpoint_Scheduled__scheduled_2026-0a1b2c3d4e", now) == (
        "ckpt-checkpoint_scheduled__scheduled_2026-0a1b2c3d4e-20261122t123042z"
    )
    long = L.generate_snapshot_name("k" * 300, now)
    assert len(long) < 200 and long == long.lower()
    assert L.generate_snapshot_name("!!!", now) == "ckpt-20261122t123042z"
    for good in ("snap-1", "a", "nightly.2026-11-22", "x+y"):
        assert L.validate_snapshot_name(good) == good
    for bad in ("", "Upper", "has space", "_under", "-dash", "a/b", "a,b", "a*", "é", "x" * 201):
        with pytest.raises(EngineError, match="invalid snapshot name"):
            L.validate_snapshot_name(bad)


def test_repository_names():
    assert L.validate_repository_name("checkpoints") == "checkpoints"
    for bad in ("", "_x", "a b", "a/b", "a,b", "a#b"):
        with pytest.raises(EngineError, match="invalid snapshot repository name"):
            L.validate_repository_name(bad)


def test_index_expressions():
    assert L.split_index_expressions(None) == ["*"]
    assert L.split_index_expressions("") == ["*"]
    assert L.split_index_expressions([]) == ["*"]
    assert L.split_index_expressions(" a, b* ,,") == ["a", "b*"]
    assert L.split_index_expressions(["a,b", "c"]) == ["a", "b", "c"]
    names = [".kibana_1", "logs-1", ".ds-logs-x", "app"]
    assert L.select_resolved("*", names) == ["app", "logs-1"]
    # the server did the matching; only the dot rule is applied on top
    assert L.select_resolved(".k*", [".kibana_1", ".kibana_2"]) == [".kibana_1", ".kibana_2"]
    assert L.select_resolved("my-alias", [".hidden-backing"]) == [".hidden-backing"]
    assert L.apply_exclusions(["logs-1", "logs-debug", "app"], ["logs-d*"]) == ["app", "logs-1"]


def test_url_batches():
    names = [f"index-{i:04d}" for i in range(1000)]
    batches = list(L.url_batches(names, budget=300))
    assert [n for b in batches for n in b] == names
    assert all(len(",".join(b)) <= 300 for b in batches)
    assert list(L.url_batches([])) == []


def test_mapping_hash_is_canonical():
    a = {"properties": {"b": {"type": "keyword"}, "a": {"type": "scaled_float", "scaling_factor": 100.0}}}
    b = json.loads(json.dumps(a, indent=4, sort_keys=False))
    assert L.mapping_sha256(a) == L.mapping_sha256(b)
    expected = hashlib.sha256(json.dumps(a, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert L.mapping_sha256(a) == expected
    assert L.mapping_sha256(None) == L.mapping_sha256({}) == hashlib.sha256(b"{}").hexdigest()


# --------------------------------------------------------------------------- repository settings


def test_repository_settings_shapes_and_comparison():
    assert L.normalize_repository_settings({"type": "fs", "settings": {"location": "/r"}}) == ("fs", {"location": "/r"})
    assert L.normalize_repository_settings({"location": "/r", "compress": True}) == (
        "fs",
        {"location": "/r", "compress": True},
    )
    assert L.normalize_repository_settings({"type": "s3", "bucket": "b"}) == ("s3", {"bucket": "b"})
    with pytest.raises(EngineError, match="unknown top-level keys"):
        L.normalize_repository_settings({"settings": {}, "typo": 1})
    with pytest.raises(EngineError, match="JSON object"):
        L.normalize_repository_settings("fs:/r")  # type: ignore[arg-type]
    existing = {"type": "fs", "settings": {"location": "/r", "compress": "true"}}
    assert L.repository_matches(existing, "fs", {"location": "/r", "compress": True})
    assert not L.repository_matches(existing, "fs", {"location": "/r"})
    assert not L.repository_matches(existing, "url", {"location": "/r", "compress": True})


def test_redact_settings():
    settings = {
        "bucket": "b",
        "access_key": "AKIA",
        "secret_key": "s",
        "session_token": "t",
        "sas_token": "x",
        "client": {"password": "p", "endpoint": "e"},
        "location": "/r",
        "chunk_size": "1g",
    }
    assert L.redact_settings(settings) == {
        "bucket": "b",
        "access_key": "<redacted>",
        "secret_key": "<redacted>",
        "session_token": "<redacted>",
        "sas_token": "<redacted>",
        "client": {"password": "<redacted>", "endpoint": "e"},
        "location": "/r",
        "chunk_size": "1g",
    }


# --------------------------------------------------------------------------- transport settings


def test_safe_url_and_auth():
    assert safe_url("http://bob:pw@host:9200/") == "http://host:9200"
    assert safe_url("https://host:9200") == "https://host:9200"
    assert _auth_header(SearchTarget("http://h", api_key="id1:secret")) == {"Authorization": "ApiKey aWQxOnNlY3JldA=="}
    assert _auth_header(SearchTarget("http://h", api_key="aWQxOnNlY3JldA==")) == {
        "Authorization": "ApiKey aWQxOnNlY3JldA=="
    }
    kw = _client_kwargs(SearchTarget("https://h:9200", username="u", password="p", verify_certs=False))
    assert kw["auth"] == ("u", "p") and kw["verify"] is False and kw["base_url"] == "https://h:9200/"
    kw = _client_kwargs(SearchTarget("https://h:9200", username="u", password="p", api_key="k"))
    assert kw["auth"] is None and kw["headers"]["Authorization"] == "ApiKey k"


# --------------------------------------------------------------------------- own copies, templates, journal steps
# (pure logic of the provider's own: no server involved)


def test_own_copy_names_are_recognised_and_trailing_newlines_refused():
    from airflow_checkpoint_provider.core.engines.search import _names as N

    assert N.is_own_copy("orders__restoring_7c4e1a") and N.is_own_copy("orders__rollback_7c4e1a_20260101000000")
    assert N.is_own_copy("orders__drill_x") and not N.is_own_copy("orders") and not N.is_own_copy("my__rest")
    assert N.ROLLBACK_RE.match("orders__rollback_7c4e1a_20260101000000").group("source") == "orders"
    assert not N.ROLLBACK_RE.match("orders__rollback_7c4e1a_20260101000000\n")
    assert not N.STAGING_RE.match("orders__restoring_7c4e1a\n")
    assert N.rollback_snapshot_name("7c4e1a", "20260101000000") == "ckpt-rollback-7c4e1a-20260101000000"
    L.validate_snapshot_name(N.rollback_snapshot_name("7c4e1a-2", "20260101000000"))


def test_rollback_copies_name_their_checkpoint_through_the_short_id():
    from airflow_checkpoint_provider.core.engines.search._maintenance import _checkpoint_of

    cids = ["ckpt-20260101T000000Z-aaaaaa", "ckpt-20260102T000000Z-7c4e1a"]
    assert _checkpoint_of("7c4e1a", cids) == cids[1]
    assert _checkpoint_of("7c4e1a-3", cids) == cids[1]  # a second restore of the same checkpoint
    assert _checkpoint_of("bbbbbb", cids) is None


def test_template_difference_names_each_differing_setting():
    from airflow_checkpoint_provider.core.engines.search._templates import difference

    have = {"index_patterns": ["a-*"], "template": {"settings": {"index": {"number_of_shards": "3"}}}, "priority": 1}
    want = {
        "index_patterns": ["a-*"],
        "template": {"settings": {"index": {"number_of_shards": "1"}}},
        "priority": 1,
        "version": 2,
    }
    text = difference(have, want)
    assert "template.settings.index.number_of_shards: '3' (checkpoint: '1')" in text
    assert "version: '<absent>' (checkpoint: 2)" in text and "priority" not in text


def test_every_journaled_step_of_the_search_engine_has_crash_points():
    from airflow_checkpoint_provider.core import crashpoints
    from airflow_checkpoint_provider.core.engines.search import _steps

    for step in _steps.STEPS:
        assert {f"search.{step}.intent", f"search.{step}.applied"} <= crashpoints.REGISTERED
    assert not set(_steps.FORWARD_STEPS) & set(_steps.BACKWARD_STEPS)
