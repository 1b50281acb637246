"""The files engine's target: one directory on the worker, named by an Airflow connection."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from airflow_checkpoint_provider.core.errors import CheckpointError


@dataclass(frozen=True)
class FilesTarget:
    """A directory tree, by its absolute path (no trailing slash, no ``.`` or ``..``).

    Every worker that runs a capture or a restore of it must see the directory at this path:
    a volume mounted on each of them, or tasks pinned to the one host that holds it.
    """

    path: str

    def __post_init__(self) -> None:
        path = self.path
        if not isinstance(path, str) or not path or "\0" in path:
            raise CheckpointError(
                f"directory {path!r} is not a path", hint='set the connection\'s extra to {"path": "/srv/app/uploads"}'
            )
        if not path.startswith("/"):
            raise CheckpointError(
                f"directory {path!r} is not an absolute path",
                hint="name it from the root, e.g. /srv/app/uploads: a relative path depends on "
                "the worker's working directory",
            )
        normal = os.path.normpath(path)
        if normal.startswith("//"):
            normal = "/" + normal.lstrip("/")
        if normal == "/":
            raise CheckpointError(
                "the root directory / cannot be checkpointed by the files engine",
                hint="name the directory that holds the application's files, e.g. /srv/app/uploads",
            )
        if normal != path:
            raise CheckpointError(
                f"directory {path!r} is not in its normal form ({normal!r})",
                hint=f"write it as {normal}: without '.', '..', doubled or trailing slashes",
            )

    @property
    def label(self) -> str:
        return f"file://{self.path}"

    def public(self) -> dict[str, Any]:
        """What logs, XCom, manifests and the lease key see (a path holds no secret)."""
        return {"url": self.label, "path": self.path}
