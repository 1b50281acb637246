"""Child process for the zstd bomb tests: run one read of a checkpoint, report the error and peak RSS.

Usage: python -m tests.unit.core.bomb_child STORE_ROOT CHECKPOINT_ID plan|verify-deep [SEARCH_URL]

Prints one JSON line: ``{"error": type name or null, "message": ..., "problems": [...], "max_rss_mb": n}``
(the peak resident set size of this process).
The address space is limited to 2 GiB so that a reader that does inflate the bomb fails here
(MemoryError) instead of taking the machine's memory.
"""

from __future__ import annotations

import json
import resource
import sys

resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

from airflow_checkpoint_provider.core import Store, recovery  # noqa: E402
from airflow_checkpoint_provider.core.engines.search.component import SearchRestore  # noqa: E402
from airflow_checkpoint_provider.core.engines.targets import SearchTarget  # noqa: E402


def main(root: str, checkpoint_id: str, mode: str, url: str = "http://127.0.0.1:9") -> None:
    """``url``: the search cluster to plan against (default: the discard port, where nothing listens)."""

    def build(store, manifest, request):
        art = next(a for a in manifest.artifacts if a.store == "search")
        return [SearchRestore(SearchTarget(url, timeout=30.0), store, manifest.checkpoint_id, art)]

    store = Store.open(root)
    out: dict = {"error": None, "message": "", "problems": []}
    try:
        if mode == "plan":
            request = recovery.RestoreRequest(checkpoint_id, components=("search",), dry_run=True)
            recovery.restore(store, request, build)
        else:
            result = store.verify(checkpoint_id, deep=True)
            out["problems"] = [p.to_dict() for p in result.problems]
    except BaseException as exc:
        out["error"], out["message"] = type(exc).__name__, str(exc)
    out["max_rss_mb"] = _peak_rss_mb()
    print(json.dumps(out))


def _peak_rss_mb() -> int:
    """Peak RSS of this process image. ``getrusage``'s ru_maxrss survives execve, so a child of a
    big test process would report its parent's size; Linux's VmHWM belongs to this image only."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


if __name__ == "__main__":
    main(*sys.argv[1:5])
