"""Every read of the provider's ``[checkpoint]`` configuration happens here.

Values come from Airflow's configuration (airflow.cfg or ``AIRFLOW__CHECKPOINT__*``
variables) when Airflow is importable, and otherwise from the same environment
variables, so the break-glass CLI works when Airflow is broken or absent.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from airflow_checkpoint_provider.get_provider_info import CONFIG

SECTION = "checkpoint"
_OPTIONS = CONFIG[SECTION]["options"]


def _airflow_home() -> str:
    return os.environ.get("AIRFLOW_HOME") or str(Path("~/airflow").expanduser())


def _cfg_file_value(key: str) -> tuple[bool, str | None]:
    """``(True, value)`` when airflow.cfg settles ``[checkpoint] key`` without Airflow (value None:
    not set there), ``(False, None)`` when only Airflow can (``key_cmd``/``key_secret``, or an
    unreadable file). Lets the CLI's store-only commands skip importing Airflow (seconds)."""
    import configparser

    path = os.environ.get("AIRFLOW_CONFIG") or os.path.join(_airflow_home(), "airflow.cfg")
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read(path, encoding="utf-8")
    except (OSError, configparser.Error):
        return False, None
    if not parser.has_section(SECTION):
        return True, None
    if parser.has_option(SECTION, f"{key}_cmd") or parser.has_option(SECTION, f"{key}_secret"):
        return False, None
    return True, parser.get(SECTION, key, fallback=None)


def _get(key: str) -> str:
    env = os.environ.get(f"AIRFLOW__{SECTION.upper()}__{key.upper()}")
    if env is not None:
        return env
    if "airflow.configuration" not in sys.modules:  # not loaded yet: read airflow.cfg if that settles it
        settled, value = _cfg_file_value(key)
        if settled:
            return value if value is not None else _OPTIONS[key]["default"]
    try:
        from airflow.configuration import conf
    except Exception:
        value = None
    else:
        value = conf.get(SECTION, key, fallback=None)
    if value is None:
        value = _OPTIONS[key]["default"]
    return value


def option(key: str, fallback: str) -> str:
    """``[checkpoint] <key>`` if set (or declared by the provider), else ``fallback``: for options an
    engine of another distribution may rely on without declaring them."""
    if key in _OPTIONS:
        return _get(key)
    env = os.environ.get(f"AIRFLOW__{SECTION.upper()}__{key.upper()}")
    if env is not None:
        return env
    try:
        from airflow.configuration import conf
    except Exception:
        return fallback
    return conf.get(SECTION, key, fallback=None) or fallback


def storage_root() -> str:
    """The store root; ``{AIRFLOW_HOME}`` in the value is replaced by $AIRFLOW_HOME."""
    return _get("storage_root").replace("{AIRFLOW_HOME}", _airflow_home())


def encryption_key_file() -> str | None:
    return _get("encryption_key_file") or None


def encryption_key_sources() -> dict[str, str]:
    """The master key settings that are set: ``{option: value}`` (file path, Variable key or conn id)."""
    names = ("encryption_key_file", "encryption_key_variable", "encryption_key_conn_id")
    return {name: value for name in names if (value := _get(name).strip())}


def storage_conn_id() -> str:
    return _get("storage_conn_id")


def lock_timeout() -> float:
    return float(_get("lock_timeout"))


def compression_level() -> int:
    return int(_get("compression_level"))


def stale_staging_after() -> float:
    return float(_get("stale_staging_after"))


def postgres_conn_id() -> str:
    return _get("postgres_conn_id")


def redis_conn_id() -> str:
    return _get("redis_conn_id")


def elasticsearch_conn_id() -> str:
    return _get("elasticsearch_conn_id")


def schedule() -> str:
    return _get("schedule")


def search_repository() -> str:
    return _get("search_repository")


def search_repository_location() -> str | None:
    return _get("search_repository_location") or None


def search_repository_settings() -> dict | None:
    """An fs repository at ``search_repository_location``, or None (the repository must exist)."""
    location = search_repository_location()
    return {"type": "fs", "settings": {"location": location}} if location else None


def capture_queues() -> dict[str, str]:
    """``{component or "bundle": executor queue}`` of the ready-made capture DAGs (empty: the default queue)."""
    import json

    text = (_get("capture_queues") or "").strip()
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(
            f"[checkpoint] capture_queues is {text!r}, which is not a JSON object of queue names; "
            'write e.g. {"postgres": "db-workers", "redis": "cache-workers", "bundle": "db-workers"}'
        )
    return value


def task_retries() -> int:
    return int(_get("task_retries"))


def retry_delay() -> float:
    return float(_get("retry_delay"))


def capture_lease_wait() -> float:
    return float(_get("capture_lease_wait"))


def lease_ttl() -> float:
    return float(_get("lease_ttl"))


def rollback_keep() -> str:
    return _get("rollback_keep")


def orphan_snapshot_after() -> float:
    return float(_get("orphan_snapshot_after"))


def drain_command() -> str | None:
    return _get("drain_command") or None


def resume_command() -> str | None:
    return _get("resume_command") or None


def drain_callable() -> str | None:
    return _get("drain_callable") or None


def airflow_api_conn_id() -> str:
    return _get("airflow_api_conn_id")


def workflow_history() -> int:
    return int(_get("workflow_history"))


def workflow_retention_days() -> float:
    return float(_get("workflow_retention_days"))


def task_state_offload_bytes() -> int:
    return int(_get("task_state_offload_bytes"))


def lkg_requires() -> str:
    return _get("lkg_requires").strip()


def verify_level() -> str:
    return _get("verify_level").strip()


def verify_schedule() -> str:
    return _get("verify_schedule")


def verify_sample() -> int:
    return int(_get("verify_sample"))


def retention() -> str:
    return _get("retention")


def retention_schedule() -> str:
    return _get("retention_schedule")


def drill_schedule() -> str:
    return _get("drill_schedule")


def drill_pre_migration() -> bool:
    return _get("drill_pre_migration").strip().lower() in ("1", "true", "yes", "on")


def deployment() -> dict[str, list[str]]:
    """The deployment's config files, required environment variable names and dependencies (config drift)."""

    def names(option: str) -> list[str]:
        return [v.strip() for v in _get(option).replace("\n", ",").split(",") if v.strip()]

    return {
        "config_files": names("deployment_files"),
        "env": names("deployment_env"),
        "packages": names("deployment_packages"),
    }


def notify_on_failure() -> str | None:
    return _get("notify_on_failure").strip() or None


def notify_email() -> list[str]:
    return [a.strip() for a in _get("notify_email").split(",") if a.strip()]


def notify_from() -> str | None:
    return _get("notify_from").strip() or None


def notify_smtp_conn_id() -> str:
    return _get("notify_smtp_conn_id")


def lkg_max_age() -> str | None:
    return _get("lkg_max_age").strip() or None
