"""The S3 options of the store's connection (hooks/storage.py), read by Airflow itself from ``AIRFLOW_CONN_*``."""

from __future__ import annotations

import json

import pytest

from airflow_checkpoint_provider.core.errors import CheckpointError
from airflow_checkpoint_provider.core.fs_s3 import LEASE_SECONDS
from airflow_checkpoint_provider.hooks.storage import s3_options


def _conn(monkeypatch, extra):
    body = {"conn_type": "aws", "login": "AKID", "password": "s3cr3t", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_CKPT_S3_TEST", json.dumps(body))


def test_connection_extra_sets_the_endpoint_and_the_lock_lease(monkeypatch):
    _conn(monkeypatch, {"endpoint_url": "http://127.0.0.1:9000", "region_name": "eu-west-1", "lease_seconds": 12})
    opts = s3_options("ckpt_s3_test")
    assert opts is not None and opts.endpoint_url == "http://127.0.0.1:9000" and opts.region == "eu-west-1"
    assert opts.lease_seconds == 12.0 and opts.access_key_id == "AKID"
    assert "s3cr3t" not in repr(opts)


def test_without_lease_seconds_the_lease_is_the_default(monkeypatch):
    _conn(monkeypatch, {"endpoint_url": "http://127.0.0.1:9000"})
    assert s3_options("ckpt_s3_test").lease_seconds == LEASE_SECONDS


def test_a_lease_that_is_not_a_number_is_refused_naming_the_connection(monkeypatch):
    _conn(monkeypatch, {"lease_seconds": "soon"})
    with pytest.raises(CheckpointError, match="lease_seconds of connection 'ckpt_s3_test' is 'soon'"):
        s3_options("ckpt_s3_test")
