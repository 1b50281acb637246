"""Helpers of the workflow checkpoint tests."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any


def restart_postgres(services_module, info: dict[str, Any]) -> None:
    """``pg_ctl restart -m fast`` of a server started by scripts/services.py (its clients are cut off)."""
    import pwd

    user = pwd.getpwnam(services_module.PG_SUPERUSER)
    services_module._make_traversable(Path(info["data_dir"]).parent, user.pw_uid, user.pw_gid)  # pytest re-0700s
    cmd = services_module._as_pg_user(
        [
            str(Path(info["bin_dir"]) / "pg_ctl"),
            "-D",
            info["data_dir"],
            "-l",
            info["log"],
            "-m",
            "fast",
            "-w",
            "-t",
            "60",
            "restart",
        ]
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, cwd="/")
    assert proc.returncode == 0, proc.stdout + proc.stderr
