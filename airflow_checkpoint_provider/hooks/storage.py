"""The store's connection: an Airflow ``aws`` connection -> :class:`S3Options` for an ``s3://`` store."""

from __future__ import annotations

from typing import Any

from airflow_checkpoint_provider import settings
from airflow_checkpoint_provider.core.crypt import Cipher
from airflow_checkpoint_provider.core.fs_s3 import S3Options


def s3_options(conn_id: str | None = None) -> S3Options | None:
    """Endpoint and credentials of ``[checkpoint] storage_conn_id`` (None if no such connection exists).

    login = access key id, password = secret access key; the extra may hold ``endpoint_url``
    (or ``host``), ``region_name``, ``aws_session_token`` and ``verify``. Without the
    connection boto3's own defaults apply (its shared credentials file, an instance role).
    """
    try:
        from airflow.sdk import BaseHook
    except ImportError:  # the break-glass CLI without Airflow: boto3's defaults
        return None
    try:
        conn = BaseHook.get_connection(conn_id or settings.storage_conn_id())
    except Exception:  # the connection is not defined: boto3's defaults
        return None
    extra: dict[str, Any] = conn.extra_dejson if isinstance(conn.extra_dejson, dict) else {}
    endpoint = (
        extra.get("endpoint_url")
        or extra.get("host")
        or (f"{conn.schema or 'http'}://{conn.host}{f':{conn.port}' if conn.port else ''}" if conn.host else None)
    )
    return S3Options(
        endpoint_url=endpoint,
        region=extra.get("region_name"),
        access_key_id=conn.login or extra.get("aws_access_key_id") or None,
        secret_access_key=conn.password or extra.get("aws_secret_access_key") or None,
        session_token=extra.get("aws_session_token"),
        verify_tls=extra.get("verify", True),
    )


def store_kwargs(root: str) -> dict[str, Any]:
    """The extra arguments of :meth:`Store.open` for ``root``: the S3 options of an ``s3://`` root, and
    the cipher of ``[checkpoint] encryption_key_file``."""
    kwargs: dict[str, Any] = {"s3": s3_options()} if root.startswith("s3://") else {}
    key_file = settings.encryption_key_file()
    if key_file:
        kwargs["cipher"] = Cipher.from_file(key_file)
    return kwargs
