"""Child process of the drill tests: one drill of one engine, which may SIGKILL itself.

Reads one JSON line on stdin (a password travels there, never in argv or the environment):
``{"root", "checkpoint_id", "component", "target": {...}, "options": {...}}``.
``CHECKPOINT_CRASH_AT`` names the crash point. Prints the drill's state record as JSON.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from airflow_checkpoint_provider.core import Store
from airflow_checkpoint_provider.core.drill import drill
from airflow_checkpoint_provider.core.engines import registry
from airflow_checkpoint_provider.core.engines.targets import PostgresTarget, RedisTarget, SearchTarget

TARGETS = {"postgres": PostgresTarget, "redis": RedisTarget, "search": SearchTarget}


def main() -> int:
    spec = json.loads(sys.stdin.readline())
    store = Store.open(spec["root"])
    name = spec["component"]
    target = TARGETS[name](**spec["target"])

    def build(store_: Store, manifest: Any, request: Any) -> list[Any]:
        engine = registry.get(name)
        arts = engine.artifacts_of(manifest.artifacts)
        return [engine.restore(target, store_, manifest.checkpoint_id, arts, mode=request.mode, **spec["options"])]

    record = drill(store, spec["checkpoint_id"], build, components=(name,))
    print(json.dumps(record.to_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
