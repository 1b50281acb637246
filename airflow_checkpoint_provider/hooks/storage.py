"""The store's connection and master key, from Airflow: :class:`S3Options` for an ``s3://`` store (an
``aws`` connection), and the :class:`Cipher` of encryption at rest (a key file, a Variable or a connection)."""

from __future__ import annotations

from typing import Any

from airflow_checkpoint_provider import settings
from airflow_checkpoint_provider.core.crypt import Cipher, parse_key
from airflow_checkpoint_provider.core.errors import CheckpointError
from airflow_checkpoint_provider.core.fs_s3 import LEASE_SECONDS, S3Options


def s3_options(conn_id: str | None = None) -> S3Options | None:
    """Endpoint and credentials of ``[checkpoint] storage_conn_id`` (None if no such connection exists).

    login = access key id, password = secret access key; the extra may hold ``endpoint_url``
    (or ``host``), ``region_name``, ``aws_session_token``, ``verify`` and ``lease_seconds`` (how long
    the store lock outlives a holder that died, 30 by default). Without the
    connection boto3's own defaults apply (its shared credentials file, an instance role).
    """
    try:
        from airflow_checkpoint_provider.hooks.lookup import get_connection

        conn = get_connection(conn_id or settings.storage_conn_id())
    except ImportError:  # the break-glass CLI without Airflow: boto3's defaults
        return None
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
        lease_seconds=_lease_seconds(extra, conn_id or settings.storage_conn_id()),
    )


def _lease_seconds(extra: dict[str, Any], conn_id: str) -> float:
    """The store lock's lease on S3: the connection extra's ``lease_seconds`` (1 to 3600), else 30."""
    value = extra.get("lease_seconds", LEASE_SECONDS)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CheckpointError(
            f"the extra lease_seconds of connection {conn_id!r} is {value!r}, not a number of seconds",
            hint=f"set it to a number from 1 to 3600, or leave it out for the default of {LEASE_SECONDS:.0f}",
        ) from None


def _variable(key: str) -> str:
    from airflow_checkpoint_provider.hooks.lookup import get_variable

    return get_variable(key)


def _connection_key(conn_id: str) -> str:
    from airflow_checkpoint_provider.hooks.lookup import get_connection

    conn = get_connection(conn_id)
    extra = conn.extra_dejson if isinstance(conn.extra_dejson, dict) else {}
    return str(conn.password or extra.get("key") or "")


def resolve_cipher(sources: dict[str, str]) -> Cipher | None:
    """The master key named by ``sources`` (``{option: value}``, at most one of ``encryption_key_file``,
    ``encryption_key_variable``, ``encryption_key_conn_id``; their ``--old-``/``--new-`` forms in
    ``rekey``); None when none is set. Errors name the source, never the key."""
    if len(sources) > 1:
        raise CheckpointError(
            f"more than one master key source is set ({', '.join(sorted(sources))})",
            hint="set exactly one of encryption_key_file, encryption_key_variable and encryption_key_conn_id",
        )
    if not sources:
        return None
    [(option, value)] = sources.items()
    if option.endswith("file"):
        return Cipher.from_file(value)
    kind, fetch = ("Variable", _variable) if option.endswith("variable") else ("connection", _connection_key)
    try:
        text = fetch(value)
    except ImportError:
        raise CheckpointError(
            f"{option} names the Airflow {kind} {value!r}, and Airflow is not importable here",
            hint="use a key file (encryption_key_file) where Airflow is down",
        ) from None
    except Exception as exc:  # not defined, or the secrets backend refused: name it, never echo a value
        raise CheckpointError(
            f"cannot read the master key from the Airflow {kind} {value!r} ({option}): {type(exc).__name__}",
            hint=f"define the {kind} {value!r} (64 hex digits{' in its password' if kind == 'connection' else ''}), "
            "in the metadata database or a secrets backend",
        ) from None
    if not text:
        raise CheckpointError(
            f"the Airflow {kind} {value!r} ({option}) holds no key",
            hint="put 64 hex digits (e.g. the output of `openssl rand -hex 32`) into it",
        )
    return Cipher(parse_key(text.encode(), f"the Airflow {kind} {value!r} ({option})", hex_only=True))


def store_kwargs(root: str) -> dict[str, Any]:
    """The extra arguments of :meth:`Store.open` for ``root``: the S3 options of an ``s3://`` root, and
    the cipher of the configured master key (see :func:`resolve_cipher`)."""
    kwargs: dict[str, Any] = {"s3": s3_options()} if root.startswith("s3://") else {}
    cipher = resolve_cipher(settings.encryption_key_sources())
    if cipher is not None:
        kwargs["cipher"] = cipher
    return kwargs
