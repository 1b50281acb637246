"""Nothing under core/ imports airflow: it stays usable when Airflow itself is down."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import airflow_checkpoint_provider.core as core

CORE = pathlib.Path(core.__file__).parent


def test_no_module_under_core_imports_airflow():
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            offenders += [f"{path.name}: {n}" for n in names if n == "airflow" or n.startswith("airflow.")]
    assert offenders == []


def test_importing_core_does_not_load_airflow():
    code = (
        "import sys, airflow_checkpoint_provider.core, airflow_checkpoint_provider.core.store; "
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
