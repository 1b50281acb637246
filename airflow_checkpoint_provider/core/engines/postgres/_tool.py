"""Running pg_restore: the tool, its input (streamed or materialized), its failures, the dump's TOC."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, BinaryIO

from airflow_checkpoint_provider.core.engines.postgres import _conn as C
from airflow_checkpoint_provider.core.engines.postgres import _secrets as S
from airflow_checkpoint_provider.core.engines.postgres._base import _RestoreBase
from airflow_checkpoint_provider.core.engines.postgres._common import (
    _F_SETPIPE_SZ,
    PG_RESTORE_APPLICATION_NAME,
    _Item,
    _major,
    log,
)
from airflow_checkpoint_provider.core.engines.postgres._dump import (
    DumpInfo,
    untar_dump_directory,
)
from airflow_checkpoint_provider.core.engines.postgres.capture import (
    _private_dir,
    _StderrCollector,
    _stop,
)
from airflow_checkpoint_provider.core.errors import (
    AuthenticationError,
    EngineError,
    ToolError,
)
from airflow_checkpoint_provider.core.streams import CHUNK_SIZE


class _ToolMixin(_RestoreBase):
    """Running pg_restore: the tool, its input (streamed or materialized), its failures, the dump's TOC. Mixed into :class:`~.restore.PostgresRestore`."""

    def _tool(self) -> C.ToolVersion:
        if self._tool_cache is None:
            self._tool_cache = C.tool_version(self.target, self.pg_restore, "pg_restore")
        return self._tool_cache

    @contextlib.contextmanager
    def _artifact(self, item: _Item) -> Iterator[BinaryIO]:
        with self.store.open_artifact(self.checkpoint_id, item.artifact.name) as src:
            yield src

    def _feed(self, item: _Item) -> Callable[[IO[bytes]], None]:
        def feed(out: IO[bytes]) -> None:
            with contextlib.suppress(OSError):
                fcntl.fcntl(out.fileno(), _F_SETPIPE_SZ, 1024 * 1024)
            with self._artifact(item) as src:
                while True:
                    chunk = src.read(CHUNK_SIZE)
                    if not chunk:
                        break
                    out.write(chunk)

        return feed

    def _materialize(self, item: _Item, work: str) -> str:
        """Write the artifact where pg_restore can seek in it: the dump file, or the extracted directory."""
        t0 = time.monotonic()
        with self._artifact(item) as src:
            if item.fmt == "custom":
                path = os.path.join(work, "dump")
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK_SIZE)
            else:
                path = os.path.join(work, "dump.d")
                os.mkdir(path, 0o700)
                untar_dump_directory(src, path, source=f"{self.checkpoint_id}:{item.artifact.name}")
        item.details["extract_seconds"] = round(time.monotonic() - t0, 3)
        return path

    def _run_tool(
        self,
        argv: list[str],
        auth: S.ToolAuth | None,
        *,
        dbname: str,
        feed: Callable[[IO[bytes]], None] | None = None,
        capture: bool = False,
    ) -> str:
        """Run pg_restore (``auth``: its secrets, None when it does not connect); stdin fed by
        ``feed`` (in a thread when capturing stdout). Returns stdout."""
        log.debug("argv: %s", argv)
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
                stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=auth.env if auth else C.tool_env(),
                close_fds=True,
                pass_fds=auth.pass_fds if auth else (),
            )
        except OSError as exc:
            raise ToolError(
                f"{self.target.label}/{dbname}: cannot start {argv[0]!r}: {exc}",
                hint="check the pg_restore path and its permissions",
            ) from None
        errors = _StderrCollector(proc.stderr)  # type: ignore[arg-type]
        errors.start()
        failure: list[BaseException] = []

        def run_feed() -> None:
            assert proc.stdin is not None and feed is not None
            try:
                feed(proc.stdin)
            except BrokenPipeError:
                pass  # pg_restore stopped reading: its exit code says why
            except BaseException as exc:
                failure.append(exc)
                _stop(proc)
            finally:
                with contextlib.suppress(OSError):
                    proc.stdin.close()

        out = b""
        try:
            if feed and capture:
                feeder = threading.Thread(target=run_feed, daemon=True, name="pg_restore-feed")
                feeder.start()
                assert proc.stdout is not None
                out = proc.stdout.read()
                feeder.join()
            elif feed:
                run_feed()
            elif capture:
                assert proc.stdout is not None
                out = proc.stdout.read()
            rc = proc.wait()
            errors.join()
        except BaseException:
            _stop(proc)
            raise
        finally:
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        if failure:
            raise failure[0]
        if rc != 0:
            raise (auth.failure() if auth else None) or self._tool_failure(dbname, rc, errors.text())
        return out.decode("utf-8", "replace")

    def _tool_failure(self, dbname: str, rc: int, stderr: str) -> EngineError:
        err = C.scrub_target(stderr.strip(), self.target) or "(no output)"
        where = f"{self.target.label}/{dbname}"
        low = err.lower()
        how = f"was killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
        if "unsupported version" in low or "does not appear to be a valid archive" in low:
            wanted = self._dump_tool_version(None)
            return ToolError(
                f"{where}: pg_restore cannot read the dump:\n{err}",
                hint="pass pg_restore= the path of a pg_restore "
                + (f"of major version {wanted} or newer" if wanted else "at least as new as the dump's pg_dump"),
            )
        if any(m in low for m in ("password authentication failed", "no pg_hba.conf entry", "no password supplied")):
            return AuthenticationError(
                f"{where}: pg_restore could not log in as {self.target.user!r}:\n{err}",
                hint="check the login and password of the connection",
            )
        if 'role "' in low and "does not exist" in low:
            return ToolError(
                f"{where}: pg_restore {how}: a role of the dump is missing on the target:\n{err}",
                hint="create the role on the target server, or restore with no_privileges=True (and no_owner=True)",
            )
        if "permission denied" in low or "must be owner" in low:
            return AuthenticationError(
                f"{where}: pg_restore {how}: user {self.target.user!r} lacks a permission:\n{err}",
                hint="restore with a role that owns the database (or a superuser)",
            )
        if "terminating connection" in low or "server closed the connection" in low:
            return ToolError(
                f"{where}: pg_restore {how}: the server ended its session:\n{err}",
                hint="an administrator command or a server restart interrupted the restore; retry",
            )
        return ToolError(
            f"{where}: pg_restore {how}:\n{err}",
            hint="read the pg_restore message above; the PostgreSQL server log may say more",
        )

    def _dump_tool_version(self, item: _Item | None) -> str | None:
        items = [item] if item else self.items
        versions = [i.artifact.meta.get("pg_dump_version") for i in items if i.artifact.meta.get("pg_dump_version")]
        return str(max(versions, key=lambda v: _major(v) or 0)).split(".")[0] if versions else None

    def _with_options(self, env: dict[str, str], *, with_options: bool) -> dict[str, str]:
        """``env`` plus ``PGOPTIONS`` carrying the session options (when ``with_options``)."""
        env = dict(env)
        if with_options and self.session_options:

            def esc(value: str) -> str:
                return str(value).replace("\\", "\\\\").replace(" ", "\\ ")

            extra = " ".join(f"-c {esc(k)}={esc(v)}" for k, v in self.session_options.items())
            env["PGOPTIONS"] = f"{env['PGOPTIONS']} {extra}" if env.get("PGOPTIONS") else extra
        return env

    def _inspect(self, item: _Item) -> DumpInfo:
        """Read the dump's TOC with ``pg_restore -C -l`` (only the TOC is streamed); cached."""
        if item.info is not None:
            return item.info
        tool = self._tool()
        info = DumpInfo()
        source = f"{self.checkpoint_id}:{item.artifact.name}"
        with _private_dir(None, "ckpt-pgrestore-") as work:
            if item.fmt == "directory":
                toc_dir = os.path.join(work, "toc")
                os.mkdir(toc_dir, 0o700)
                with self._artifact(item) as src:
                    untar_dump_directory(src, toc_dir, source=source, only_toc=True)
                args, feed = ["--format=directory", toc_dir], None
            else:
                args, feed = ["--format=custom"], self._feed(item)
            listing = self._run_tool(
                [tool.path, "--create", "--list", *args], None, dbname=item.target_db, feed=feed, capture=True
            )
            db_lines = info.parse_listing(listing)
            if db_lines:
                list_file = os.path.join(work, "database.list")
                with open(list_file, "w", encoding="utf-8") as fh:
                    fh.write("\n".join(db_lines) + "\n")
                text = self._run_tool(
                    [tool.path, "--create", "--schema-only", f"--use-list={list_file}", "--file=-", *args],
                    None,
                    dbname=item.target_db,
                    feed=self._feed(item) if feed else None,
                    capture=True,
                )
                info.parse_database_sql(text)
        item.info = info
        return info

    def _pg_restore(self, item: _Item, dbname: str, *, in_place: bool) -> None:
        tool = self._tool()
        argv = [tool.path, "--no-password", "--exit-on-error", f"--format={item.fmt}"]
        if self.no_owner:
            argv.append("--no-owner")
        if self.no_privileges:
            argv.append("--no-privileges")
        if in_place:
            argv += ["--clean", "--if-exists"]
            if self.jobs == 1:
                argv.append("--single-transaction")
        if self.jobs > 1:
            argv.append(f"--jobs={self.jobs}")
        stream = item.fmt == "custom" and self.jobs == 1 and not in_place
        item.details["pg_restore"] = {"jobs": self.jobs, "input": "stdin" if stream else "file", "options": argv[1:]}
        log.info(
            "pg_restore of %s into %s/%s (%s format, %d job(s), %s)",
            item.artifact.name,
            self.target.label,
            dbname,
            item.fmt,
            self.jobs,
            "streamed" if stream else "from a temporary copy",
        )
        t0 = time.monotonic()
        with S.tool_auth(self.target) as auth:
            auth.env = self._with_options(auth.env, with_options=not in_place)
            argv.insert(1, f"--dbname={auth.conninfo(dbname, PG_RESTORE_APPLICATION_NAME)}")
            if stream:
                self._run_tool(argv, auth, dbname=dbname, feed=self._feed(item))
            else:
                with _private_dir(self.workdir, ".tmp-pgrestore-") as work:
                    path = self._materialize(item, work)
                    self._run_tool([*argv, path], auth, dbname=dbname)
        item.details["pg_restore_seconds"] = round(time.monotonic() - t0, 3)
        log.info("pg_restore into %s/%s finished in %.1fs", self.target.label, dbname, time.monotonic() - t0)
