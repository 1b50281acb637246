"""One small sample application per engine, for the engine-contract test: seed it, damage it, read it.

Each sample works on the session's real server (or a real directory), in names of its own, and
reads state back with the independent readers of ``scripts/sample_data.py`` and the engines'
test helpers, never with the code under test. A new engine needs an entry in :data:`SAMPLES`:
tests/integration/test_engine_contract.py fails for an engine without one.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from psycopg import sql

from airflow_checkpoint_provider.core.engines.files import FilesTarget
from airflow_checkpoint_provider.core.engines.targets import SearchTarget
from airflow_checkpoint_provider.core.rollbacks import RollbackCopy

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import sample_data as S


class Sample:
    """What the contract test needs from one engine's sample (see the module docstring)."""

    #: options of the engine's ``capture`` and ``restore`` for this sample's data only
    capture_options: dict[str, Any] = {}
    restore_options: dict[str, Any] = {}
    leftover_options: dict[str, Any] = {}

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.tag = uuid.uuid4().hex[:8]

    target: Any

    def seed(self) -> None:
        raise NotImplementedError

    def state(self) -> Any:
        raise NotImplementedError

    def damage(self) -> None:
        raise NotImplementedError

    def differences(self, expected: Any, actual: Any) -> list[str]:
        """What differs between two states (empty: the same data)."""
        return [] if expected == actual else ["the states differ"]

    def mine(self, copy: RollbackCopy) -> bool:
        """A rollback copy of this sample's data (the server may hold others'; the test also
        requires the copy to name the restored checkpoint)."""
        raise NotImplementedError

    def mine_leftover(self, line: str) -> bool:
        return self.tag in line

    def cleanup(self) -> None:
        pass


class PostgresSample(Sample):
    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        from tests.integration.test_postgres_restore import make_target

        super().__init__(request, tmp_path)
        self.pg = request.getfixturevalue("pg")
        self.db = f"contract_{self.tag}"
        self.target = make_target(self.pg)
        self.capture_options = self.restore_options = {"databases": [self.db]}

    def seed(self) -> None:
        S.seed_postgres(self.pg, self.db, customers=60, orders=240)

    def state(self) -> Any:
        return S.state_postgres(self.pg, self.db)

    def damage(self) -> None:
        from tests.integration.test_postgres_restore import damage

        damage(self.pg, self.db)

    def mine(self, copy: RollbackCopy) -> bool:
        return copy.of == self.db

    def cleanup(self) -> None:
        from tests.integration.test_postgres_restore import admin, databases

        with admin(self.pg) as conn:
            for db in databases(self.pg):
                if db.startswith(self.db):
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))


class RedisSample(Sample):
    """Every value type, TTLs, streams with groups, two dbs and a function library (the session's
    server is flushed first: every Redis test seeds its own data)."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        from tests.integration.redis_support import target

        super().__init__(request, tmp_path)
        self.info = request.getfixturevalue("redis_server")
        self.target = target(self.info)

    def seed(self) -> None:
        S.seed_redis(self.info)

    def state(self) -> Any:
        from tests.integration.redis_support import SEEDED, functions

        return S.state_redis(self.info, SEEDED), functions(self.info)

    def damage(self) -> None:
        from tests.integration.redis_support import damage

        damage(self.info)

    def differences(self, expected: Any, actual: Any) -> list[str]:
        return S.same_redis_state(expected[0], actual[0], ttl_tolerance_ms=60_000) + (
            [f"functions {actual[1]} instead of {expected[1]}"] if expected[1] != actual[1] else []
        )

    def mine(self, copy: RollbackCopy) -> bool:
        return copy.of in ("db0", "db1")


class SearchSample(Sample):
    """Two indices with nested documents on the session's OpenSearch, in their own repository."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        super().__init__(request, tmp_path)
        node = request.getfixturevalue("opensearch")
        self.url, self.prefix, self.repository = node["url"], f"contract{self.tag}-", f"contract-{self.tag}"
        settings = {"type": "fs", "settings": {"location": str(Path(node["path_repo"]) / self.repository)}}
        self.target = SearchTarget(url=self.url, timeout=120)
        self.indices = [f"{self.prefix}products", f"{self.prefix}reviews"]
        self.capture_options = {"repository": self.repository, "repository_settings": settings, "indices": self.indices}
        self.restore_options = {"indices": self.indices, "repository_settings": settings}
        self.leftover_options = {"repository": self.repository}

    def seed(self) -> None:
        S.seed_search(self.url, {"products": 40, "reviews": 60}, prefix=self.prefix)

    def state(self) -> Any:
        return S.state_search(self.url, self.indices)

    def damage(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as http:
            http.delete(f"/{self.prefix}reviews").raise_for_status()
            http.post(
                f"/{self.prefix}products/_delete_by_query",
                params={"refresh": "true"},
                json={"query": {"range": {"n": {"lt": 10}}}},
            ).raise_for_status()
            http.put(
                f"/{self.prefix}products/_doc/junk", params={"refresh": "true"}, json={"n": -1, "name": "junk"}
            ).raise_for_status()

    def mine(self, copy: RollbackCopy) -> bool:
        return copy.of in self.indices

    def cleanup(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as http:
            http.delete(f"/{self.prefix}*", params={"expand_wildcards": "all"})
            snaps = http.get(f"/_snapshot/{self.repository}/_all")
            for snap in snaps.json().get("snapshots", []) if snaps.status_code == 200 else []:
                http.delete(f"/_snapshot/{self.repository}/{snap['snapshot']}")
            http.delete(f"/_snapshot/{self.repository}")


class FilesSample(Sample):
    """A directory with nested and empty directories, modes, nanosecond mtimes, links and unicode names."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        super().__init__(request, tmp_path)
        self.root = tmp_path / f"srv-{self.tag}" / "uploads"
        self.target = FilesTarget(str(self.root))

    def seed(self) -> None:
        from tests.unit.core.engines.files.helpers import make_tree

        make_tree(self.root)

    def state(self) -> Any:
        from tests.unit.core.engines.files.helpers import state

        return state(self.root)

    def damage(self) -> None:
        from tests.unit.core.engines.files.helpers import damage

        damage(self.root)

    def mine(self, copy: RollbackCopy) -> bool:
        return copy.of == str(self.root)


#: engine name -> its sample
SAMPLES: dict[str, type[Sample]] = {
    "postgres": PostgresSample,
    "redis": RedisSample,
    "search": SearchSample,
    "files": FilesSample,
}
