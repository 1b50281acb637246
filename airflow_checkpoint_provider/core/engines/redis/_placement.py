"""File placement for self-managed Redis servers: put ``dump.rdb`` in place and restart.

A mixin of :class:`~.restore.RedisRestore`: the decompressed RDB is written next to the live
``dump.rdb`` (CRC and key counts checked, fsynced), the server is saved so the rollback file
is the live state, the files are swapped by rename, and the configured restart command runs
(with the password in ``REDISCLI_AUTH``, never on its command line). Any failure puts the
previous file back and restarts again.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import tempfile
import time
from array import array
from pathlib import Path

from airflow_checkpoint_provider.core.errors import EngineError
from airflow_checkpoint_provider.core.manifest import utcnow
from airflow_checkpoint_provider.core.restore import RestoreOutcome

from ._base import _RestoreBase
from ._load import _HORIZON_MS, RedisRestoreError, _fsync_dir, _Tee
from .capture import RDB_KIND
from .health import (
    db_sizes,
    wait_ready,
)
from .resp import Connection, RespError, connect, info

log = logging.getLogger(__name__)


class _PlacementMixin(_RestoreBase):
    """The file-placement steps of a Redis restore."""

    def _placement_checks(self, conn: Connection) -> list[str]:
        label, problems = self.target.label, []
        if self.kind != RDB_KIND:
            problems.append(
                "file placement needs an RDB artifact, and this checkpoint holds a logical capture: "
                "restore without placement_dir/restart_command"
            )
        folder = Path(self.placement_dir or "")
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            problems.append(f"placement_dir {str(folder)!r} is not a writable directory")
        if self.dbs != sorted(self.expected):
            problems.append("file placement replaces the whole server: a subset of dbs needs mode='side_by_side'")
        config = {}
        for name in ("dir", "dbfilename", "appendonly"):
            reply = conn.call_nothrow("CONFIG", "GET", name)
            if isinstance(reply, list) and len(reply) == 2:
                config[name] = reply[1].decode("utf-8", "replace")
        self._placed["name"] = config.get("dbfilename") or "dump.rdb"
        if config.get("appendonly") == "yes":
            problems.append(f"{label} runs with appendonly yes: it would load its AOF at start, not the placed RDB")
        server_dir = str(config.get("dir") or "")
        self._placed["same_dir"] = (
            bool(server_dir) and folder.is_dir() and os.path.realpath(server_dir) == os.path.realpath(folder)
        )
        return problems

    def _prepare_placement(self) -> None:
        folder, name = Path(self.placement_dir or ""), self._placed.get("name", "dump.rdb")
        tmp = folder / f"{name}.tmp-{secrets.token_hex(4)}"
        self.journal.note(
            mode="file_placement",
            checkpoint_id=self.checkpoint_id,
            restore_id=self.restore_id,
            dir=str(folder),
            name=name,
            tmp=tmp.name,
        )
        self.journal.phase("loading", file=tmp.name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._placed["tmp"] = str(tmp)
        counts: dict[int, int] = {}
        soon: dict[int, array[int]] = {}
        horizon = int(time.time() * 1000) + _HORIZON_MS
        try:
            with os.fdopen(fd, "wb") as out, self._open() as src:
                tee = _Tee(src, out)
                items, _ = self._items(tee, values=False)
                for item in items:
                    if type(item) is tuple:
                        counts[item[0]] = counts.get(item[0], 0) + 1
                        if item[4] is not None and item[4] < horizon:
                            soon.setdefault(item[0], array("q")).append(item[4])
                while tee.read(1 << 20):
                    pass
                out.flush()
                os.fsync(out.fileno())
            wrong = {d: n for d, n in counts.items() if n != self.expected.get(d, 0)}
            if wrong or set(self.expected) - set(counts):
                raise RedisRestoreError(f"the RDB's key counts {counts} differ from its fingerprints {self.expected}")
        except BaseException:
            self.abort()
            raise
        self._placed["soon"] = soon
        self.journal.phase("verified")

    def _cutover_placement(self) -> RestoreOutcome:
        folder, name = Path(self.placement_dir or ""), self._placed.get("name", "dump.rdb")
        final, tmp = folder / name, Path(self._placed["tmp"])
        self.journal.phase("cutting_over")
        saved = False
        if self._placed.get("same_dir"):
            saved = self._save()
        backup = folder / f"{name}.rollback-{utcnow().strftime('%Y%m%dT%H%M%SZ')}" if final.exists() else None
        with connect(self.target) as conn:
            self._placed["run_id"] = info(conn, "server").get("run_id", "")
        self.journal.note(backup=backup.name if backup else None, run_id=self._placed["run_id"])
        renames = ([[name, backup.name]] if backup else []) + [[tmp.name, name]]
        with self.journal.step(
            "place_file",
            intent={"dir": str(folder), "rename": renames},
            undo={
                "dir": str(folder),
                "rename": [[backup.name, name]] if backup else [],
                "remove": [] if backup else [name],
            },
        ):
            if backup is not None:
                os.replace(final, backup)
                self._placed["rollback"] = str(backup)
            os.replace(tmp, final)
            self._placed.pop("tmp", None)
            _fsync_dir(folder)
            self._placed["placed"] = True
        try:
            with self.journal.step(
                "restart",
                intent={"file": name, "command": "the configured restart command"},
                undo={"rename": [[backup.name, name]] if backup else [], "then": "restart"},
            ):
                self._restart()
                self._verify_placement()
            with connect(self.target) as conn:
                self.journal.note(run_id_placed=info(conn, "server").get("run_id", ""))
        except Exception as exc:
            try:
                self._rollback_placement()
            except Exception as again:
                raise RedisRestoreError(
                    f"the file-placement restore into {self.target.label} failed ({exc}) and "
                    f"putting the previous file back failed too: {again}",
                    hint=f"check {folder} and the server; restore the safety checkpoint",
                ) from exc
            raise RedisRestoreError(
                f"the file-placement restore into {self.target.label} failed: {exc}",
                hint="the previous file was put back and the server restarted",
            ) from exc
        rollback = [self._placed["rollback"]] if self._placed.get("rollback") else []
        self.journal.phase("cut_over")
        return RestoreOutcome(
            self.component,
            restored=[f"db{d}" for d in sorted(self.expected)],
            rollback=rollback,
            details={"mode": "file_placement", "file": str(final), "live_state_saved": saved},
        )

    def _save(self) -> bool:
        """``SAVE``, so that the live state becomes the rollback file (waiting out a running BGSAVE,
        e.g. the fork of the safety checkpoint's SYNC)."""
        deadline = time.monotonic() + 60
        try:
            with connect(self.target) as conn:
                while True:
                    reply = conn.call_nothrow("SAVE")
                    if (
                        not isinstance(reply, RespError)
                        or "in progress" not in reply.message
                        or time.monotonic() > deadline
                    ):
                        break
                    time.sleep(0.2)
        except EngineError as exc:
            reply = RespError(exc.message)
        if isinstance(reply, RespError):
            log.warning(
                "SAVE on %s failed (%s): the rollback file is the previous %s, not the live state",
                self.target.label,
                reply.message,
                self._placed.get("name"),
            )
            return False
        return True

    def _restart(self) -> None:
        env = dict(os.environ)
        if self.target.password:
            env["REDISCLI_AUTH"] = self.target.password
        with tempfile.TemporaryFile() as out:  # not a pipe: a server started in the background keeps it open
            try:
                rc = subprocess.run(
                    ["/bin/sh", "-c", self.restart_command or "true"],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    timeout=self.restart_timeout,
                    check=False,
                ).returncode
            except subprocess.TimeoutExpired:
                raise RedisRestoreError(
                    f"the restart command did not finish within {self.restart_timeout:g}s",
                    hint="it must return once the server runs (start it in the background)",
                ) from None
            if rc:
                out.seek(0)
                text = out.read()[-2000:].decode("utf-8", "replace")
                if self.target.password:
                    text = text.replace(self.target.password, "***")
                raise RedisRestoreError(f"the restart command exited with status {rc}: {text.strip()}")
        wait_ready(self.target, self.restart_timeout)

    def _verify_placement(self) -> None:
        with connect(self.target) as conn:
            secs, usecs = conn.call("TIME")
            now = int(secs) * 1000 + int(usecs) // 1000 + 1000
            sizes = db_sizes(conn, sorted(self.expected))
        gone = {d: sum(1 for e in a if e <= now) for d, a in self._placed.get("soon", {}).items()}
        self._placed["expired"] = gone
        bad = [
            f"db{d} holds {sizes[d]} keys, expected {n}"
            for d, n in sorted(self.expected.items())
            if not n - gone.get(d, 0) <= sizes[d] <= n
        ]
        if bad:
            raise RedisRestoreError(
                "after the restart "
                + "; ".join(bad)
                + " (does the restart command save on shutdown, or the server use another file?)"
            )

    def _rollback_placement(self) -> None:
        if not self._placed.get("placed"):
            return
        folder, name = Path(self.placement_dir or ""), self._placed.get("name", "dump.rdb")
        final = folder / name
        backup = self._placed.get("rollback")
        try:
            with connect(self.target, timeout=5.0) as conn:
                self.journal.note(run_id_unplace=info(conn, "server").get("run_id", ""))
        except EngineError:
            self.journal.note(run_id_unplace=None)  # the server is down: any later run id means it restarted
        with self.journal.step(
            "unplace_file",
            intent={
                "dir": str(folder),
                "rename": [[Path(backup).name, name]] if backup else [],
                "remove": [] if backup else [name],
                "then": "restart",
            },
            undo={"note": "placing the restored file again finishes the cut-over"},
        ):
            if backup:
                os.replace(backup, final)
            else:
                final.unlink(missing_ok=True)
            _fsync_dir(folder)
            self._placed["placed"] = False
            self._restart()
        self.journal.phase("rolled_back")
