"""Concurrent writers do not corrupt the store or the LKG pointer."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.unit.core.test_crash import ROOT_DIR

WRITER = textwrap.dedent("""
    import sys
    from airflow_checkpoint_provider.core import Store
    from tests.unit.core.helpers import make_checkpoint
    store = Store.open(sys.argv[1], lock_timeout=120)
    for i in range(int(sys.argv[3])):
        m = make_checkpoint(store, run=f"{sys.argv[2]}-{i}")
        store.mark_lkg(m.checkpoint_id, reason=sys.argv[2])
        print(m.checkpoint_id, flush=True)
""")


def test_concurrent_writers_keep_store_and_lkg_consistent(store):
    writers, each = 4, 5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, store.root, f"w{w}", str(each)],
            cwd=ROOT_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(writers)
    ]
    made = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        made += out.split()
    assert len(set(made)) == writers * each
    listed = [i.checkpoint_id for i in store.list()]
    assert sorted(listed) == sorted(made)
    for cid in listed:
        assert store.verify(cid).ok, cid
    # the LKG history is a single chain: each move's "previous" is the move before it
    history = list(reversed(store.lkg_history()))
    assert len(history) == writers * each
    assert history[0].previous is None
    for before, after in zip(history, history[1:], strict=False):
        assert after.previous == before.checkpoint_id
    assert store.lkg() == history[-1]
    assert not [f for f in os.listdir(os.path.join(store.root, "checkpoints")) if f.startswith(".tmp-")]
