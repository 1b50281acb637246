"""docker-compose.yml cannot run here (no Docker engine), so check what it declares.

The layout follows Airflow's official docker-compose.yaml: one ``x-airflow-common`` anchor,
an init service, separate api-server, scheduler, dag-processor and triggerer.
"""

from __future__ import annotations

import pathlib
import re

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
COMMANDS = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
}


def _text() -> str:
    return (ROOT / "docker-compose.yml").read_text()


def _compose() -> dict:
    return yaml.safe_load(_text())


def test_services_and_images_are_pinned():
    services = _compose()["services"]
    assert set(services) == {
        *AIRFLOW_SERVICES,
        "airflow-init",
        "airflow-db",
        "postgres",
        "redis",
        "elasticsearch-init",
        "elasticsearch",
    }
    assert re.fullmatch(r"postgres:15\.\d+", services["postgres"]["image"])
    assert re.fullmatch(r"postgres:16\.\d+", services["airflow-db"]["image"])
    assert re.fullmatch(r"redis:7\.\d+\.\d+", services["redis"]["image"])
    assert re.fullmatch(
        r"docker\.elastic\.co/elasticsearch/elasticsearch:8\.\d+\.\d+", services["elasticsearch"]["image"]
    )
    for name, service in services.items():
        image = service.get("image", "")
        assert ":" in image and not image.endswith(":latest"), f"{name} image {image!r} is not pinned"


def test_airflow_services_share_the_common_anchor():
    assert "x-airflow-common: &airflow-common" in _text()
    for name in (*AIRFLOW_SERVICES, "airflow-init"):
        assert re.search(rf"^  {name}:\n    <<: \*airflow-common$", _text(), re.M), name
    services = _compose()["services"]
    for name, command in COMMANDS.items():
        assert services[name]["command"] == command
        assert "healthcheck" in services[name]
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_airflow_runs_as_airflow_uid_and_init_makes_the_volumes_writable():
    services = _compose()["services"]
    for name in AIRFLOW_SERVICES:
        assert services[name]["user"] == "${AIRFLOW_UID:-50000}:0"
    init = services["airflow-init"]
    assert init["user"] == "0:0"
    script = "\n".join(init["command"])
    assert 'chown -R "${AIRFLOW_UID}:0"' in script and "/opt/airflow/checkpoints_data" in script
    assert init["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"
    assert init["environment"]["_AIRFLOW_WWW_USER_CREATE"] == "true"
    # the search snapshot volume is handed to Elasticsearch's user before it starts
    es_init = services["elasticsearch-init"]
    assert "chown -R 1000:0 /usr/share/elasticsearch/snapshots" in " ".join(es_init["entrypoint"])
    assert (
        services["elasticsearch"]["depends_on"]["elasticsearch-init"]["condition"] == "service_completed_successfully"
    )
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "mkdir -p /opt/airflow/checkpoints_data" in dockerfile  # a new named volume inherits its owner


def test_airflow_is_the_pinned_official_33_image_with_this_provider_installed():
    build = _compose()["x-airflow-common"]["build"]
    dockerfile = (ROOT / build["context"] / build["dockerfile"]).read_text()
    assert re.search(r"^FROM apache/airflow:3\.3\.\d+-python3\.\d+$", dockerfile, re.M)
    assert 'pip install --no-cache-dir "apache-airflow==3.3.2" /opt/provider' in dockerfile
    assert "COPY --chown=airflow:root airflow_checkpoint_provider" in dockerfile
    assert "postgresql-client" in dockerfile  # pg_dump / pg_restore


def test_mounts_connections_and_the_search_repository_location():
    compose = _compose()
    common = compose["x-airflow-common"]
    for mount in (
        "./dags:/opt/airflow/dags",
        "./logs:/opt/airflow/logs",
        "./config:/opt/airflow/config",
        "./plugins:/opt/airflow/plugins",
        "checkpoints_data:/opt/airflow/checkpoints_data",
    ):
        assert mount in common["volumes"]
    env = common["environment"]
    assert env["AIRFLOW__CHECKPOINT__STORAGE_ROOT"] == "/opt/airflow/checkpoints_data"
    for conn in ("POSTGRES_DEFAULT", "REDIS_DEFAULT", "ELASTICSEARCH_DEFAULT", "AIRFLOW_API"):
        assert f"AIRFLOW_CONN_{conn}" in env
    es = compose["services"]["elasticsearch"]
    repo = es["environment"]["path.repo"]
    assert any(v.endswith(":" + repo) for v in es["volumes"])  # snapshots land on a volume
    location = env["AIRFLOW__CHECKPOINT__SEARCH_REPOSITORY_LOCATION"]
    assert location.startswith(repo + "/")  # inside path.repo, so the first capture can register it
    for dep in ("postgres", "redis", "elasticsearch", "airflow-db"):
        assert common["depends_on"][dep]["condition"] == "service_healthy"
        assert "healthcheck" in compose["services"][dep]


def test_ports_are_published_on_loopback_only():
    published = [(name, p) for name, s in _compose()["services"].items() for p in s.get("ports", [])]
    assert published == [("airflow-apiserver", "127.0.0.1:8080:8080")]


def test_every_named_volume_is_declared():
    compose = _compose()
    mounts = [v for s in (*compose["services"].values(), compose["x-airflow-common"]) for v in s.get("volumes", [])]
    used = {v.split(":")[0] for v in mounts if not v.startswith((".", "/"))}
    assert used <= set(compose["volumes"])
