"""The small filesystem interface the store is written against, and its local implementation.

The store only ever needs: read a file, write a file atomically (all or nothing,
visible under its final name only when complete), list a directory, delete, move, and
an exclusive lock. That is what object storage offers too (a PUT is atomic), so
an object-storage backend can implement :class:`StoreFS` later without the store
changing. Paths given to a ``StoreFS`` are relative, '/'-separated and never
contain ``..``. :mod:`.fs_s3` is that backend for S3-compatible object storage.

Beyond plain files the store needs two conditional writes, which both backends offer:
:meth:`StoreFS.create_bytes` (create only if absent: ``If-None-Match: *`` on S3, a hard
link here) and :meth:`StoreFS.replace_if` (compare-and-swap on the tag
:meth:`StoreFS.read_tagged` returned: the ETag and ``If-Match`` on S3, a content hash
compared under a lock here).

:class:`LocalFS` creates every file with mode 0600 and every directory with mode
0700 whatever the umask: checkpoints hold application data.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol

from airflow_checkpoint_provider.core.errors import (
    ConcurrentUpdateError,
    LockTimeoutError,
    StoreError,
    StoreFullError,
    StoreNotFoundError,
    StorePermissionError,
)

FILE_MODE = 0o600
DIR_MODE = 0o700
TMP_MARK = ".tmp-"


def translate_os_error(exc: OSError, path: str | os.PathLike[str], action: str) -> StoreError:
    """Turn an OSError into the store error a user can act on."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreFullError(
            f"no space left while {action} {path} ({reason})",
            hint="free space on that device, expire old checkpoints, or point [checkpoint] storage_root "
            "at a larger volume; nothing was published",
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorePermissionError(
            f"cannot write {path} while {action} ({reason})",
            hint="make the store root writable by the user running Airflow, or set [checkpoint] "
            "storage_root to a writable location",
        )
    if exc.errno == errno.ENOENT:
        return StoreNotFoundError(
            f"{path} does not exist ({action})",
            hint="check [checkpoint] storage_root",
        )
    return StoreError(f"I/O error while {action} {path}: {reason}")


class AtomicFile(Protocol):
    def write(self, data: bytes | bytearray | memoryview, /) -> int: ...
    def pwrite(self, data: bytes, offset: int, /) -> None: ...
    def commit(self, *, create_only: bool = False) -> None: ...


class StoreFS(Protocol):
    """What the store needs from a filesystem or object store."""

    root: str

    def exists(self, rel: str) -> bool: ...
    def listdir(self, rel: str) -> list[str]: ...
    def size(self, rel: str) -> int: ...
    def open_read(self, rel: str) -> BinaryIO: ...
    def read_bytes(self, rel: str) -> bytes: ...
    def write_bytes(self, rel: str, data: bytes) -> None: ...
    def atomic_writer(self, rel: str) -> AbstractContextManager[AtomicFile]: ...
    def makedirs(self, rel: str) -> None: ...
    def remove(self, rel: str) -> None: ...
    def remove_tree(self, rel: str) -> None: ...
    def rename(self, src: str, dst: str) -> None:
        """Move ``src`` to ``dst`` (replacing it); :class:`StoreNotFoundError` if ``src`` does not exist."""
        ...

    def walk(self, rel: str) -> Iterator[tuple[str, float]]:
        """Every file below ``rel`` (at any depth) as ``(path relative to the root, mtime)``."""
        ...

    def lock(self, rel: str, timeout: float) -> AbstractContextManager[None]: ...
    def local_path(self, rel: str) -> Path | None: ...
    def is_dir(self, rel: str) -> bool: ...
    def mtime(self, rel: str) -> float | None: ...
    def create_bytes(self, rel: str, data: bytes) -> None:
        """Write ``rel`` whole, only if it does not exist yet (:class:`ConcurrentUpdateError` otherwise)."""
        with self.atomic_writer(rel) as w:
            w.write(data)
            w.commit(create_only=True)

    def read_tagged(self, rel: str) -> tuple[bytes, str] | None: ...
    def replace_if(self, rel: str, data: bytes, tag: str | None) -> None: ...
    def pending_uploads(self, rel: str = "") -> list[PendingUpload]: ...
    def abort_upload(self, upload: PendingUpload) -> None: ...


class PendingUpload(Protocol):
    """A write that never completed (an object store's multipart upload a crashed writer left)."""

    @property
    def rel(self) -> str: ...
    @property
    def active(self) -> float:
        """Epoch seconds of its last write."""
        ...


class _LocalAtomicFile:
    """Writes to ``<dir>/.tmp-<name>-<random>``; :meth:`commit` fsyncs and renames into place."""

    def __init__(self, fs: LocalFS, rel: str) -> None:
        self._fs = fs
        self.final = fs.path(rel)
        self.tmp = self.final.with_name(f"{TMP_MARK}{self.final.name}-{secrets.token_hex(4)}")
        self.committed = False
        try:
            fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
            os.fchmod(fd, FILE_MODE)
        except OSError as exc:
            raise translate_os_error(exc, self.final, "creating") from None
        self._f = os.fdopen(fd, "wb", buffering=CHUNK)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        try:
            return self._f.write(data)
        except OSError as exc:
            raise translate_os_error(exc, self.final, "writing") from None

    def pwrite(self, data: bytes, offset: int) -> None:
        """Overwrite bytes written earlier (a header whose fields are known only at the end)."""
        try:
            self._f.flush()
            os.pwrite(self._f.fileno(), data, offset)
        except OSError as exc:
            raise translate_os_error(exc, self.final, "writing") from None

    def commit(self, *, create_only: bool = False) -> None:
        """Publish under the final name; with ``create_only``, only if that name does not exist yet."""
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            if create_only:
                os.link(self.tmp, self.final)
                os.unlink(self.tmp)
            else:
                os.replace(self.tmp, self.final)
            self._fs.fsync_dir(self.final.parent)
        except FileExistsError:
            raise ConcurrentUpdateError(
                f"{self.final} already exists", hint="another writer created it first; nothing was overwritten"
            ) from None
        except OSError as exc:
            raise translate_os_error(exc, self.final, "publishing") from None
        self.committed = True

    def abort(self) -> None:
        try:
            self._f.close()
        except OSError:
            pass
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


CHUNK = 1024 * 1024


class LocalFS:
    """A :class:`StoreFS` over a local (or network-mounted) directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root_path = Path(root).expanduser().absolute()
        self.root = str(self.root_path)

    def path(self, rel: str) -> Path:
        parts = [p for p in rel.split("/") if p]
        if any(p == ".." for p in parts):
            raise StoreError(f"refusing path {rel!r} with '..'")
        return self.root_path.joinpath(*parts)

    def local_path(self, rel: str) -> Path:
        return self.path(rel)

    def exists(self, rel: str) -> bool:
        return self.path(rel).exists()

    def listdir(self, rel: str) -> list[str]:
        try:
            return sorted(os.listdir(self.path(rel)))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise translate_os_error(exc, self.path(rel), "listing") from None

    def size(self, rel: str) -> int:
        return self.path(rel).stat().st_size

    def open_read(self, rel: str) -> BinaryIO:
        try:
            return open(self.path(rel), "rb", buffering=CHUNK)
        except OSError as exc:
            raise translate_os_error(exc, self.path(rel), "opening") from None

    def read_bytes(self, rel: str) -> bytes:
        with self.open_read(rel) as f:
            return f.read()

    @contextmanager
    def atomic_writer(self, rel: str) -> Iterator[_LocalAtomicFile]:
        """Yield a writer; the file appears under ``rel`` only if ``commit()`` is called.

        If the block raises, or exits without committing, the temporary file is removed.
        """
        w = _LocalAtomicFile(self, rel)
        try:
            yield w
        finally:
            if not w.committed:
                w.abort()

    def write_bytes(self, rel: str, data: bytes) -> None:
        with self.atomic_writer(rel) as w:
            w.write(data)
            w.commit()

    def makedirs(self, rel: str) -> None:
        p = self.path(rel)
        try:
            missing = []
            q = p
            while not q.exists():
                missing.append(q)
                q = q.parent
            for d in reversed(missing):
                os.mkdir(d, DIR_MODE)
                os.chmod(d, DIR_MODE)
        except FileExistsError:
            pass
        except OSError as exc:
            raise translate_os_error(exc, p, "creating directory") from None

    def remove(self, rel: str) -> None:
        try:
            os.unlink(self.path(rel))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise translate_os_error(exc, self.path(rel), "deleting") from None

    def remove_tree(self, rel: str) -> None:
        shutil.rmtree(self.path(rel), ignore_errors=True)

    def walk(self, rel: str) -> Iterator[tuple[str, float]]:
        """Every file below ``rel`` (its temporary ones too), with its mtime; nothing if ``rel`` is missing."""
        for folder, _, files in os.walk(self.path(rel)):
            for name in files:
                path = Path(folder, name)
                try:
                    mtime = path.lstat().st_mtime
                except FileNotFoundError:
                    continue
                yield path.relative_to(self.root_path).as_posix(), mtime

    def rename(self, src: str, dst: str) -> None:
        """``rename(2)`` of ``src`` to ``dst`` (replacing it), then fsync of both directories."""
        old, new = self.path(src), self.path(dst)
        try:
            os.rename(old, new)
            self.fsync_dir(new.parent)
            if old.parent != new.parent:
                self.fsync_dir(old.parent)
        except OSError as exc:
            raise translate_os_error(exc, old, f"moving to {new}") from None

    def is_dir(self, rel: str) -> bool:
        return self.path(rel).is_dir()

    def mtime(self, rel: str) -> float | None:
        try:
            return self.path(rel).stat().st_mtime
        except FileNotFoundError:
            return None

    def create_bytes(self, rel: str, data: bytes) -> None:
        """Write ``rel`` whole, only if it does not exist yet (a hard link of a complete file)."""
        final = self.path(rel)
        head, _, name = rel.rpartition("/")
        with self.atomic_writer(f"{head}/{TMP_MARK}link-{name}-{secrets.token_hex(4)}") as w:
            w.write(data)
            w.commit()
        tmp = w.final
        try:
            os.link(tmp, final)
        except FileExistsError:
            raise ConcurrentUpdateError(
                f"{final} already exists", hint="another writer created it first; nothing was overwritten"
            ) from None
        except OSError as exc:
            raise translate_os_error(exc, final, "creating") from None
        finally:
            os.unlink(tmp)
        self.fsync_dir(final.parent)

    def read_tagged(self, rel: str) -> tuple[bytes, str] | None:
        """The content of ``rel`` and its tag (sha256 of the content), or None if it does not exist."""
        try:
            data = self.read_bytes(rel)
        except StoreNotFoundError:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def replace_if(self, rel: str, data: bytes, tag: str | None) -> None:
        """Replace ``rel`` only if its tag is still ``tag`` (``None``: only if it does not exist)."""
        name = rel.rsplit("/", 1)
        with self.lock(f"{name[0]}/.lock-{name[-1]}" if len(name) == 2 else f".lock-{rel}", 30.0):
            current = self.read_tagged(rel)
            if (current[1] if current else None) != tag:
                raise ConcurrentUpdateError(
                    f"{self.path(rel)} was changed by another writer",
                    hint="read it again and retry; nothing was overwritten",
                )
            self.write_bytes(rel, data)

    def pending_uploads(self, rel: str = "") -> list[PendingUpload]:
        """None here: a local write in progress is a ``.tmp-`` file, which ``cleanup`` finds itself."""
        return []

    def abort_upload(self, upload: PendingUpload) -> None:
        raise StoreError(f"no pending upload {upload.rel} on a local store")

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextmanager
    def lock(self, rel: str, timeout: float) -> Iterator[None]:
        """Exclusive advisory lock (flock). The kernel drops it if the holder dies, even by SIGKILL."""
        p = self.path(rel)
        try:
            fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            raise translate_os_error(exc, p, "opening lock") from None
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    if _still_at(fd, p):
                        break
                    # the file was deleted (or replaced) while we waited: lock the one now at the path
                    fresh = os.open(p, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
                    os.close(fd)
                    fd = fresh
                    continue
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        holder = _read_holder(fd)
                        raise LockTimeoutError(
                            f"store lock {p} is held by {holder}; waited {timeout:.0f}s",
                            hint="another checkpoint or restore is writing this store; retry when it has "
                            "finished, or raise [checkpoint] lock_timeout",
                        ) from None
                    time.sleep(0.05)
            holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, holder.encode(), 0)
            except OSError:
                pass  # the holder note is informational; a full disk must not break locking
            yield
        finally:
            os.close(fd)  # closing releases the flock


def _still_at(fd: int, path: Path) -> bool:
    """Whether ``fd`` is the file at ``path``: a lock file may be deleted by whoever holds it."""
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info.get('pid')} on {info.get('host')}"
    except (OSError, ValueError):
        return "another process"
