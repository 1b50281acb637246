"""Deep check of PostgreSQL dumps: ``pg_restore --list`` of each, against the manifest's fingerprints.

No server is needed. The dump is streamed out of the archive into ``pg_restore --list`` (custom
format), or its ``toc.dat`` is extracted first (directory format). The check passes when
pg_restore reads the table of contents without an error and it holds a ``TABLE DATA`` entry for
at least as many tables as the capture counted rows in.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from airflow_checkpoint_provider.core.engines.contract import DeepCheck
from airflow_checkpoint_provider.core.engines.postgres import _conn as C
from airflow_checkpoint_provider.core.engines.postgres._dump import DumpInfo, untar_dump_directory
from airflow_checkpoint_provider.core.engines.postgres.capture import KIND_CUSTOM, _private_dir
from airflow_checkpoint_provider.core.errors import CheckpointError
from airflow_checkpoint_provider.core.manifest import Artifact
from airflow_checkpoint_provider.core.streams import CHUNK_SIZE


def pg_restore_path() -> str | None:
    """The newest ``/usr/lib/postgresql/<major>/bin/pg_restore`` (it reads every older dump), else PATH's."""
    found = []
    for d in Path("/usr/lib/postgresql").glob("*/bin/pg_restore"):
        with contextlib.suppress(ValueError):
            found.append((int(d.parent.parent.name), str(d)))
    return max(found)[1] if found else shutil.which("pg_restore")


def _list(exe: str, args: list[str], feed: Any = None) -> tuple[int, str, str]:
    """Run ``pg_restore --list`` (stdin fed by ``feed`` in a thread); returns (rc, stdout, stderr)."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [exe, "--list", *args],
            stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=C.tool_env(),
            close_fds=True,
        )
        worker = None
        if feed is not None:
            worker = threading.Thread(target=feed, args=(proc.stdin,), daemon=True)
            worker.start()
        assert proc.stdout is not None
        out = proc.stdout.read().decode("utf-8", "replace")
        rc = proc.wait()
        if worker is not None:
            worker.join()
        err.seek(0)
        return rc, out, err.read().decode("utf-8", "replace")[-2000:]


def _feeder(store: Any, checkpoint_id: str, art: Artifact) -> Any:
    def feed(pipe: Any) -> None:
        try:
            with store.open_artifact(checkpoint_id, art.name) as src:
                while chunk := src.read(CHUNK_SIZE):
                    pipe.write(chunk)
        except (BrokenPipeError, OSError, CheckpointError):
            pass  # pg_restore stops reading after the table of contents; its exit code says the rest
        finally:
            with contextlib.suppress(OSError):
                pipe.close()

    return feed


def check_dump(store: Any, checkpoint_id: str, art: Artifact, exe: str) -> tuple[list[str], dict[str, Any]]:
    """Problems found in one dump artifact, and the evidence (TOC entries, TABLE DATA entries)."""
    if art.kind == KIND_CUSTOM:
        rc, out, err = _list(exe, ["--format=custom"], _feeder(store, checkpoint_id, art))
    else:
        with _private_dir(None, "ckpt-deep-") as work:
            toc = os.path.join(work, "toc")
            os.mkdir(toc, 0o700)
            try:
                with store.open_artifact(checkpoint_id, art.name) as src:
                    untar_dump_directory(src, toc, source=f"{checkpoint_id}:{art.name}", only_toc=True)
            except CheckpointError as exc:
                return [f"the dump directory cannot be unpacked: {exc.message}"], {}
            rc, out, err = _list(exe, ["--format=directory", toc])
    if rc != 0:
        return [f"pg_restore --list failed (exit {rc}): {err.strip() or 'no message'}"], {}
    info = DumpInfo()
    info.parse_listing(out)
    data = sum(1 for line in out.splitlines() if " TABLE DATA " in line and not line.startswith(";"))
    rows = art.fingerprints.get("rows") or {}
    with_rows = sum(1 for n in rows.values() if isinstance(n, int) and n > 0)
    evidence = {"toc_entries": info.entries, "table_data_entries": data, "tables_with_rows": with_rows}
    problems = []
    if info.entries == 0:
        problems.append("pg_restore --list found no entry in the dump's table of contents")
    if data < with_rows:
        problems.append(f"the dump holds {data} TABLE DATA entries, but the capture counted rows in {with_rows} tables")
    return problems, evidence


def deep_check(store: Any, checkpoint_id: str, artifacts: list[Artifact], target: Any = None) -> DeepCheck:
    """``pg_restore --list`` of every dump of the checkpoint (see the module docstring)."""
    result = DeepCheck()
    exe = pg_restore_path()
    if exe is None:
        result.unchecked.append("pg_restore is not installed on this worker (Debian: postgresql-client)")
        return result
    for art in artifacts:
        problems, evidence = check_dump(store, checkpoint_id, art, exe)
        result.problems += [(art.member, p) for p in problems]
        result.evidence[art.name] = evidence
    return result
