from __future__ import annotations

import pytest

from airflow_checkpoint_provider.core import Store


@pytest.fixture
def store(tmp_path) -> Store:
    return Store.open(tmp_path / "store", create=True, lock_timeout=30)
