"""The provider registers with Airflow and declares its [checkpoint] options."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points

import jsonschema

from airflow_checkpoint_provider.get_provider_info import get_provider_info


def test_entry_point_leads_to_provider_info():
    eps = [ep for ep in entry_points(group="apache_airflow_provider") if ep.value.startswith("airflow_checkpoint")]
    assert len(eps) == 1
    info = eps[0].load()()
    assert info["package-name"] == eps[0].dist.name == "airflow-checkpoint-provider"


def test_provider_info_matches_airflow_schema():
    import airflow

    schema_path = os.path.join(os.path.dirname(airflow.__file__), "provider_info.schema.json")
    with open(schema_path) as f:
        jsonschema.validate(get_provider_info(), json.load(f))
    options = get_provider_info()["config"]["checkpoint"]["options"]
    assert options["storage_root"]["default"] == "{AIRFLOW_HOME}/checkpoints_data"
    assert all(o["description"] for o in options.values())


def test_airflow_providers_list_shows_the_provider(tmp_path):
    env = dict(os.environ, AIRFLOW_HOME=str(tmp_path))
    airflow_bin = os.path.join(os.path.dirname(sys.executable), "airflow")
    out = subprocess.run(
        [airflow_bin, "providers", "list", "--output", "json"], env=env, capture_output=True, text=True, check=True
    ).stdout
    rows = {row["package_name"]: row for row in json.loads(out)}
    assert rows["airflow-checkpoint-provider"]["version"] == get_provider_info()["versions"][0]


def test_storage_root_default_is_under_airflow_home(tmp_path):
    env = dict(os.environ, AIRFLOW_HOME=str(tmp_path))
    env.pop("AIRFLOW__CHECKPOINT__STORAGE_ROOT", None)
    airflow_bin = os.path.join(os.path.dirname(sys.executable), "airflow")
    out = subprocess.run(
        [airflow_bin, "config", "get-value", "checkpoint", "storage_root"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == f"{tmp_path}/checkpoints_data"
    code = "from airflow_checkpoint_provider import settings; print(settings.storage_root())"
    assert (
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()
        == f"{tmp_path}/checkpoints_data"
    )


def test_readme_configuration_table_lists_every_checkpoint_option():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]*) \|", section, re.M))
    options = get_provider_info()["config"]["checkpoint"]["options"]
    assert set(rows) == set(options), (
        f"README lacks {set(options) - set(rows)}, or has extra {set(rows) - set(options)}"
    )
    for name, option in options.items():
        shown = rows[name].strip()
        assert shown == (f"`{option['default']}`" if option["default"] else "(empty)"), (name, shown)
