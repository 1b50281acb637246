"""``airflow-checkpoint rollbacks`` and ``recover-interrupted`` against the real servers."""

from __future__ import annotations

import json
import time

from airflow_checkpoint_provider import cli
from airflow_checkpoint_provider.core.lease import Lease, target_key
from airflow_checkpoint_provider.core.recovery import RestoreRequest, restore
from tests.integration.test_postgres_restore import (  # noqa: F401 - fixtures
    builder,
    checkpoint,
    names,
    rollbacks_of,
    seeded,
    store,
    target,
)


def _restore_twice(store, target, db):
    manifest = checkpoint(store, target, [db])
    for _ in range(2):
        restore(
            store,
            RestoreRequest(manifest.checkpoint_id, components=("postgres",), safety_checkpoint=False),
            builder(target),
        )
        time.sleep(1.1)


def test_rollbacks_list_shows_postgres_copies_with_their_original(pg, airflow_conn_env, target, store, seeded, capsys):
    db = seeded()
    _restore_twice(store, target, db)
    assert cli.main(["--root", store.root, "rollbacks", "list", "--component", "postgres", "--json"]) == 0
    listed = [r for r in json.loads(capsys.readouterr().out) if r["of"] == db]
    assert len(listed) == 2 and all(r["age_seconds"] >= 0 and r["size"] > 0 for r in listed)


def test_rollbacks_drop_is_a_dry_run_unless_executed(pg, airflow_conn_env, target, store, seeded, capsys):
    db = seeded()
    _restore_twice(store, target, db)
    older, newer = sorted(rollbacks_of(pg, db))
    assert cli.main(["--root", store.root, "rollbacks", "drop", older, "--component", "postgres"]) == 0
    assert "would drop postgres" in capsys.readouterr().out and sorted(rollbacks_of(pg, db)) == [older, newer]
    assert cli.main(["--root", store.root, "rollbacks", "drop", older, "--component", "postgres", "--execute"]) == 0
    assert f"dropped postgres {older}" in capsys.readouterr().out
    assert rollbacks_of(pg, db) == [newer]


def test_rollbacks_drop_never_touches_a_server_a_restore_holds(pg, airflow_conn_env, target, store, seeded, capsys):
    db = seeded()
    _restore_twice(store, target, db)
    older, _ = sorted(rollbacks_of(pg, db))
    with Lease(store.fs, store.lock, "busy-restore", [target_key("postgres", target.public())]).acquire():
        assert cli.main(["--root", store.root, "rollbacks", "drop", older, "--component", "postgres", "--execute"]) == 0
    assert "restore busy-restore is running on that server" in capsys.readouterr().out
    assert older in rollbacks_of(pg, db)


def test_unknown_rollback_name_is_an_error_naming_it(pg, airflow_conn_env, store, capsys):
    assert cli.main(["--root", store.root, "rollbacks", "drop", "app__nothing", "--component", "postgres"]) == 2
    assert "not a rollback copy: app__nothing" in capsys.readouterr().err
