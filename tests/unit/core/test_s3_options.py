"""S3Options' own checks (no server: pure validation)."""

from __future__ import annotations

import json

import pytest

from airflow_checkpoint_provider.core.errors import StoreError
from airflow_checkpoint_provider.core.fs_s3 import LEASE_SECONDS, S3Options


@pytest.mark.parametrize("seconds", [0.0, 0.5, 7200.0])
def test_lease_length_outside_one_second_to_an_hour_is_refused_naming_it(seconds):
    with pytest.raises(StoreError, match=f"lease of {seconds} seconds is outside 1..3600") as err:
        S3Options(lease_seconds=seconds)
    assert "lease_seconds" in (err.value.hint or "")


def test_lease_length_is_read_from_the_options_file_and_defaults_to_thirty_seconds(tmp_path):
    path = tmp_path / "s3.json"
    path.write_text(json.dumps({"endpoint_url": "http://127.0.0.1:1", "lease_seconds": 4}))
    assert S3Options.from_file(path).lease_seconds == 4
    assert S3Options().lease_seconds == LEASE_SECONDS == 30.0
