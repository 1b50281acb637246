"""Child process for the crash tests: seal (and mark LKG), dying by SIGKILL at a chosen point.

Usage: python -m tests.unit.core.crash_child STORE_ROOT KILL_POINT [PAYLOAD_MB]
"""

from __future__ import annotations

import os
import signal
import sys

from airflow_checkpoint_provider.core import Store, staging_key
from airflow_checkpoint_provider.core import fs as fsmod


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main(root: str, point: str, payload_mb: int = 8) -> None:
    store = Store.open(root)
    staging = store.staging(staging_key("crash", point))
    with staging.artifact("redis/dump.rdb", store="redis", kind="redis/rdb", compression="none") as sink:
        for _ in range(payload_mb):
            sink.write(os.urandom(1024 * 1024))

    if point == "mid_archive":  # die after half the archive bytes went to the temp file
        original = fsmod._LocalAtomicFile.write
        written = {"n": 0}

        def write(self, data):
            if self.final.name.endswith(".tar"):
                written["n"] += len(data)
                if written["n"] > payload_mb * 512 * 1024:
                    die()
            return original(self, data)

        fsmod._LocalAtomicFile.write = write
    elif point in ("before_manifest", "before_lkg_pointer", "before_lkg_history"):
        target = {
            "before_manifest": ".manifest.json",
            "before_lkg_pointer": "refs/lkg.json",
            "before_lkg_history": "refs/lkg-history/",
        }[point]
        original_wb, original_cb = fsmod.LocalFS.write_bytes, fsmod.LocalFS.create_bytes

        def dies_at(original):
            def write(self, rel, data):
                if rel.endswith(target) or (target.endswith("/") and rel.startswith(target)):
                    die()
                return original(self, rel, data)

            return write

        fsmod.LocalFS.write_bytes = dies_at(original_wb)
        fsmod.LocalFS.create_bytes = dies_at(original_cb)  # the manifest copy is created, never replaced
    elif point == "external":
        print("sealing", flush=True)  # the parent kills us from outside while we seal

    manifest = store.seal(staging)
    print("sealed", manifest.checkpoint_id, flush=True)
    store.mark_lkg(manifest.checkpoint_id)
    print("marked", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:]))
