"""docker-compose.yml cannot run here (no Docker engine), so check what it declares."""

from __future__ import annotations

import pathlib
import re

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_images():
    services = _compose()["services"]
    assert set(services) == {"airflow", "airflow-db", "postgres", "redis", "elasticsearch"}
    assert re.fullmatch(r"postgres:15(\.\d+)?", services["postgres"]["image"])
    assert services["redis"]["image"].startswith("redis:7")
    assert re.match(r"docker\.elastic\.co/elasticsearch/elasticsearch:8\.", services["elasticsearch"]["image"])


def test_airflow_is_the_official_33_image_with_this_provider_installed():
    airflow = _compose()["services"]["airflow"]
    dockerfile = (ROOT / airflow["build"]["context"] / airflow["build"]["dockerfile"]).read_text()
    assert re.search(r"^FROM apache/airflow:3\.3\.\d+", dockerfile, re.M)
    assert "pip install --no-cache-dir /opt/provider" in dockerfile
    assert "COPY --chown=airflow:root airflow_checkpoint_provider" in dockerfile
    assert "postgresql-client" in dockerfile  # pg_dump / pg_restore


def test_mounts_volumes_and_connections():
    compose = _compose()
    airflow = compose["services"]["airflow"]
    assert "./dags:/opt/airflow/dags" in airflow["volumes"]
    assert "checkpoints_data:/opt/airflow/checkpoints_data" in airflow["volumes"]
    env = airflow["environment"]
    assert env["AIRFLOW__CHECKPOINT__STORAGE_ROOT"] == "/opt/airflow/checkpoints_data"
    for conn in ("POSTGRES_DEFAULT", "REDIS_DEFAULT", "ELASTICSEARCH_DEFAULT"):
        assert f"AIRFLOW_CONN_{conn}" in env
    assert set(compose["volumes"]) >= {"checkpoints_data", "app_postgres", "app_redis", "app_es", "es_snapshots"}
    es = compose["services"]["elasticsearch"]
    repo = es["environment"]["path.repo"]
    assert any(v.endswith(":" + repo) for v in es["volumes"])  # snapshots land on a volume
    for dep in ("postgres", "redis", "elasticsearch", "airflow-db"):
        assert airflow["depends_on"][dep]["condition"] == "service_healthy"
        assert "healthcheck" in compose["services"][dep]


def test_every_named_volume_is_declared():
    compose = _compose()
    used = {v.split(":")[0] for s in compose["services"].values() for v in s.get("volumes", [])
            if not v.startswith((".", "/"))}
    assert used <= set(compose["volumes"])
