"""A :class:`~.fs.StoreFS` over S3-compatible object storage, through boto3.

The store root is ``s3://<bucket>/<prefix>``; every store path ``rel`` is the key
``<prefix>/<rel>``. What the local filesystem gives the store, restated for objects:

* **atomic files:** :meth:`S3FS.atomic_writer` streams into a multipart upload, a part
  (``part_size``, 8 MiB by default) filling while at most two upload. The object appears under its key
  only when the upload completes; a writer that dies leaves an incomplete upload that is
  never listed, and that ``cleanup`` aborts (:meth:`S3FS.pending_uploads`). Small files
  are one PUT.
* **create only if absent:** ``If-None-Match: *`` on the PUT (and on the completion of a
  multipart upload), so two writers can never both create one key.
* **compare-and-swap:** :meth:`S3FS.read_tagged` returns the object's ETag and
  :meth:`S3FS.replace_if` writes with ``If-Match`` on it.
* **the lock:** a lease object created with ``If-None-Match: *``, renewed by its holder
  (``If-Match`` on its own ETag) while held, and taken over only once it has expired,
  again by ``If-Match``. A holder killed by SIGKILL frees the store after one lease.
* **directories** are key prefixes: :meth:`S3FS.makedirs` does nothing.
* **moving** (:meth:`S3FS.rename`) is a server-side copy, then the delete of the source: a crash
  between the two leaves both objects, never neither.

Credentials come from :class:`S3Options`, built by the caller (an Airflow connection, or a
JSON file); they are handed to boto3 directly, never through the environment or argv, and
their repr hides them. boto3's default chain (its shared credentials file) is used when
none are given.
"""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from airflow_checkpoint_provider.core.crashpoints import crashpoint
from airflow_checkpoint_provider.core.errors import (
    ConcurrentUpdateError,
    LockTimeoutError,
    StoreError,
    StoreNotFoundError,
    StorePermissionError,
)
from airflow_checkpoint_provider.core.fs import CHUNK, PendingUpload

log = logging.getLogger(__name__)

DEFAULT_PART_SIZE = 8 * 1024 * 1024
LEASE_SECONDS = 30.0
MAX_COPY_OBJECT = 5 * 1024**3  #: the largest object one CopyObject request copies
PARTS_IN_FLIGHT = 2  #: parts uploading while the next one fills: memory <= (PARTS_IN_FLIGHT + 1) parts
_MISSING = {"404", "NoSuchKey", "NotFound"}
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
_CONFLICT = {"412", "PreconditionFailed", "409", "ConditionalRequestConflict"}


@dataclass(frozen=True)
class S3Options:
    """Where and as whom to reach the object store. The secrets are left out of ``repr``."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    verify_tls: bool | str = True
    part_size: int = DEFAULT_PART_SIZE
    lease_seconds: float = LEASE_SECONDS  #: how long a lock outlives a holder that died without releasing it

    def __post_init__(self) -> None:
        if not 1.0 <= self.lease_seconds <= 3600.0:
            raise StoreError(
                f"S3 lease of {self.lease_seconds} seconds is outside 1..3600",
                hint=f"leave lease_seconds at its default ({LEASE_SECONDS:.0f}) unless the writers' clocks and "
                "pauses call for another",
            )
        if self.part_size < 5 * 1024 * 1024:
            raise StoreError(
                f"S3 part size {self.part_size} is below the 5 MiB S3 requires",
                hint="set part_size to 5 MiB or more (the default is 8 MiB)",
            )
        if bool(self.access_key_id) != bool(self.secret_access_key):
            raise StorePermissionError(
                "the S3 credentials have an access key id without a secret key, or the other way round",
                hint="give both in the storage connection (login and password), or neither",
            )

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> S3Options:
        """Read ``{"endpoint_url", "region", "access_key_id", "secret_access_key", ...}`` from a JSON file."""
        try:
            obj = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(
                f"cannot read the S3 credentials file {path}: {exc}",
                hint="it must be a JSON object with endpoint_url, access_key_id and secret_access_key",
            ) from None
        known = {k: obj[k] for k in cls.__dataclass_fields__ if k in obj}
        return cls(**known)


@dataclass(frozen=True)
class S3Upload:
    """An incomplete multipart upload: ``rel`` is its key relative to the store root."""

    rel: str
    active: float  #: epoch seconds of its last part (or of its start)
    key: str
    upload_id: str


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``."""
    rest = url[len("s3://") :] if url.startswith("s3://") else url
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if not bucket or ".." in prefix.split("/"):
        raise StoreNotFoundError(
            f"store root {url!r} names no bucket (or has '..' in its prefix)",
            hint="set [checkpoint] storage_root to s3://<bucket>/<prefix>",
        )
    return bucket, prefix


def _code(exc: Exception) -> str:
    resp = getattr(exc, "response", None) or {}
    err = resp.get("Error", {}) if isinstance(resp, dict) else {}
    status = str(resp.get("ResponseMetadata", {}).get("HTTPStatusCode", "")) if isinstance(resp, dict) else ""
    return str(err.get("Code") or status)


class S3FS:
    """A :class:`StoreFS` over one bucket and key prefix."""

    def __init__(self, url: str, options: S3Options | None = None, *, client: Any = None) -> None:
        self.bucket, self.prefix = split_url(url)
        self.options = options or S3Options()
        self.root = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.client = client or _make_client(self.options)

    # ---- keys and errors ---------------------------------------------------------------------------

    def key(self, rel: str) -> str:
        parts = [p for p in rel.split("/") if p]
        if any(p == ".." for p in parts):
            raise StoreError(f"refusing path {rel!r} with '..'")
        return "/".join([self.prefix, *parts] if self.prefix else parts)

    def _dir_key(self, rel: str) -> str:
        key = self.key(rel)
        return f"{key}/" if key else ""

    def _error(self, exc: Exception, rel: str, action: str) -> StoreError:
        code, where = _code(exc), f"{self.root}/{rel}".rstrip("/")
        if code == "NoSuchBucket":
            return StoreNotFoundError(
                f"bucket {self.bucket!r} does not exist ({action} {where})",
                hint="create the bucket, or fix the bucket in [checkpoint] storage_root",
            )
        if code in _MISSING:
            return StoreNotFoundError(f"{where} does not exist ({action})", hint="check [checkpoint] storage_root")
        if code in _DENIED:
            return StorePermissionError(
                f"the object store refused {action} {where} ({code})",
                hint="check the access key, secret and permissions of [checkpoint] storage_conn_id",
            )
        if code in _CONFLICT:
            return ConcurrentUpdateError(
                f"{where} was changed by another writer ({code} while {action})",
                hint="another writer got there first; read it again and retry; nothing was overwritten",
            )
        return StoreError(
            f"object store error while {action} {where}: {code or type(exc).__name__}: {exc}",
            hint="check the endpoint_url of [checkpoint] storage_conn_id and that the object store is up",
        )

    def _call(self, rel: str, action: str, method: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(Bucket=self.bucket, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, rel, action) from None

    # ---- reading -----------------------------------------------------------------------------------

    def _head(self, rel: str) -> dict[str, Any] | None:
        try:
            return dict(self._call(rel, "reading", "head_object", Key=self.key(rel)))
        except StoreNotFoundError as exc:
            if "bucket" in exc.message:
                raise
            return None

    def exists(self, rel: str) -> bool:
        return self._head(rel) is not None or self.is_dir(rel)

    def is_dir(self, rel: str) -> bool:
        resp = self._call(rel, "listing", "list_objects_v2", Prefix=self._dir_key(rel), MaxKeys=1)
        return bool(resp.get("KeyCount") or resp.get("Contents"))

    def _pages(self, rel: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        token: dict[str, str] = {}
        while True:
            resp = self._call(rel, "listing", "list_objects_v2", Prefix=self._dir_key(rel), **kwargs, **token)
            yield resp
            if not resp.get("IsTruncated"):
                return
            token = {"ContinuationToken": resp["NextContinuationToken"]}

    def listdir(self, rel: str) -> list[str]:
        """The names directly below ``rel``: objects, and sub-prefixes that still hold an object.

        (Some servers, SeaweedFS among them, keep reporting a prefix whose objects were all
        deleted; an empty prefix is no directory here.)"""
        base = self._dir_key(rel)
        names: set[str] = set()
        for page in self._pages(rel, Delimiter="/"):
            names.update(o["Key"][len(base) :] for o in page.get("Contents", ()))
            subs = (p["Prefix"][len(base) :].rstrip("/") for p in page.get("CommonPrefixes", ()))
            names.update(sub for sub in subs if sub and self.is_dir(f"{rel}/{sub}" if rel else sub))
        names.discard("")
        return sorted(names)

    def _walk(self, rel: str) -> Iterator[dict[str, Any]]:
        for page in self._pages(rel):
            yield from page.get("Contents", ())

    def walk(self, rel: str) -> Iterator[tuple[str, float]]:
        """Every object below ``rel`` as ``(key relative to the root, LastModified)``; incomplete uploads are not."""
        strip = len(self._dir_key(""))
        for obj in self._walk(rel):
            yield obj["Key"][strip:], float(obj["LastModified"].timestamp())

    def size(self, rel: str) -> int:
        head = self._head(rel)
        if head is None:
            raise StoreNotFoundError(f"{self.root}/{rel} does not exist", hint="check [checkpoint] storage_root")
        return int(head["ContentLength"])

    def mtime(self, rel: str) -> float | None:
        """An object's time, or for a prefix the newest time of anything below it."""
        head = self._head(rel)
        if head is not None:
            return float(head["LastModified"].timestamp())
        times = [o["LastModified"].timestamp() for o in self._walk(rel)]
        return max(times) if times else None

    def open_read(self, rel: str) -> BinaryIO:
        """A seekable reader that streams the object by ranged GETs (never the whole object in memory)."""
        return io.BufferedReader(_S3Reader(self, rel, self.size(rel)), CHUNK)

    def read_bytes(self, rel: str) -> bytes:
        got = self.read_tagged(rel)
        if got is None:
            raise StoreNotFoundError(f"{self.root}/{rel} does not exist", hint="check [checkpoint] storage_root")
        return got[0]

    def read_tagged(self, rel: str) -> tuple[bytes, str] | None:
        try:
            resp = self._call(rel, "reading", "get_object", Key=self.key(rel))
        except StoreNotFoundError as exc:
            if "bucket" in exc.message:
                raise
            return None
        with resp["Body"] as body:
            return body.read(), str(resp["ETag"])

    def local_path(self, rel: str) -> Path | None:
        return None

    # ---- writing -----------------------------------------------------------------------------------

    def write_bytes(self, rel: str, data: bytes) -> None:
        self._call(rel, "writing", "put_object", Key=self.key(rel), Body=data)

    def create_bytes(self, rel: str, data: bytes) -> None:
        """PUT with ``If-None-Match: *``: :class:`ConcurrentUpdateError` if the key exists."""
        self._call(rel, "creating", "put_object", Key=self.key(rel), Body=data, IfNoneMatch="*")

    def replace_if(self, rel: str, data: bytes, tag: str | None) -> None:
        """PUT with ``If-Match: <tag>`` (``If-None-Match: *`` for ``None``)."""
        cond = {"IfMatch": tag} if tag is not None else {"IfNoneMatch": "*"}
        self._call(rel, "replacing", "put_object", Key=self.key(rel), Body=data, **cond)

    @contextmanager
    def atomic_writer(self, rel: str) -> Iterator[S3AtomicFile]:
        """Yield a multipart writer; the object appears under ``rel`` only if ``commit()`` is called."""
        w = S3AtomicFile(self, rel)
        try:
            yield w
        finally:
            if not w.committed:
                w.abort()

    def makedirs(self, rel: str) -> None:
        """Nothing to do: prefixes exist as soon as a key below them does."""

    def remove(self, rel: str) -> None:
        self._call(rel, "deleting", "delete_object", Key=self.key(rel))

    def rename(self, src: str, dst: str) -> None:
        """Server-side copy of ``src`` to ``dst``, then delete ``src`` (the copy first: a crash leaves both)."""
        source = {"Bucket": self.bucket, "Key": self.key(src)}
        if self.size(src) <= MAX_COPY_OBJECT:
            self._call(src, "copying", "copy_object", Key=self.key(dst), CopySource=source)
        else:  # one CopyObject copies at most 5 GiB: boto3's managed copy does it part by part
            self._call(src, "copying", "copy", Key=self.key(dst), CopySource=source)
        self.remove(src)

    def remove_tree(self, rel: str) -> None:
        """Delete every key below ``rel`` and abort the incomplete uploads there."""
        batch: list[dict[str, str]] = []
        for obj in self._walk(rel):
            batch.append({"Key": obj["Key"]})
            if len(batch) == 1000:
                self._delete_batch(rel, batch)
                batch = []
        if batch:
            self._delete_batch(rel, batch)
        for upload in self.pending_uploads(rel):
            self.abort_upload(upload)

    def _delete_batch(self, rel: str, batch: list[dict[str, str]]) -> None:
        resp = self._call(rel, "deleting", "delete_objects", Delete={"Objects": batch, "Quiet": True})
        if resp.get("Errors"):
            first = resp["Errors"][0]
            raise StoreError(
                f"could not delete {first.get('Key')} below {self.root}/{rel}: {first.get('Code')}",
                hint="check the delete permission of [checkpoint] storage_conn_id, then run cleanup again",
            )

    # ---- incomplete uploads ------------------------------------------------------------------------

    def pending_uploads(self, rel: str = "") -> list[PendingUpload]:
        """Multipart uploads started below ``rel`` and never completed nor aborted."""
        base, out, marker = self._dir_key(rel), list[PendingUpload](), dict[str, str]()
        strip = len(self._dir_key(""))
        while True:
            resp = self._call(rel, "listing uploads", "list_multipart_uploads", Prefix=base, **marker)
            for up in resp.get("Uploads", ()):
                parts = self._call(rel, "listing parts", "list_parts", Key=up["Key"], UploadId=up["UploadId"])
                times = [p["LastModified"].timestamp() for p in parts.get("Parts", ())]
                active = max([up["Initiated"].timestamp(), *times])
                out.append(S3Upload(up["Key"][strip:], active, up["Key"], up["UploadId"]))
            if not resp.get("IsTruncated"):
                return out
            marker = {"KeyMarker": resp["NextKeyMarker"], "UploadIdMarker": resp["NextUploadIdMarker"]}

    def abort_upload(self, upload: PendingUpload) -> None:
        up = cast(S3Upload, upload)
        try:
            self._call(up.rel, "aborting", "abort_multipart_upload", Key=up.key, UploadId=up.upload_id)
        except StoreNotFoundError:
            pass  # completed or aborted meanwhile

    # ---- the lock ----------------------------------------------------------------------------------

    @contextmanager
    def lock(self, rel: str, timeout: float) -> Iterator[None]:
        """An exclusive lease on ``rel`` (see the module docstring); :class:`LockTimeoutError` after ``timeout``."""
        lease = _Lease(self, rel)
        lease.acquire(timeout)
        try:
            yield
        finally:
            lease.release()


class S3AtomicFile:
    """Buffers one part and hands it to an upload thread while the next one fills (at most
    :data:`PARTS_IN_FLIGHT` parts in flight, so memory stays bounded); :meth:`commit` completes the upload."""

    def __init__(self, fs: S3FS, rel: str) -> None:
        self._fs, self.rel, self.key = fs, rel, fs.key(rel)
        self._part_size = fs.options.part_size
        self._buf = bytearray()
        self._parts: list[Future[dict[str, Any]]] = []
        self._pool: ThreadPoolExecutor | None = None
        self.upload_id: str | None = None
        self.committed = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._buf += data
        while len(self._buf) >= self._part_size:
            self._upload_part(self._part_size)
        return len(data)

    def pwrite(self, data: bytes, offset: int) -> None:
        raise StoreError(
            f"cannot overwrite bytes of {self._fs.root}/{self.rel} already sent to the object store",
            hint="this writer does not support rewriting a header on S3",
        )

    def _upload_part(self, n: int) -> None:
        if self.upload_id is None:
            resp = self._fs._call(self.rel, "starting upload of", "create_multipart_upload", Key=self.key)
            self.upload_id = str(resp["UploadId"])
            self._pool = ThreadPoolExecutor(max_workers=PARTS_IN_FLIGHT, thread_name_prefix="s3-part")
        body = bytes(self._buf[:n])
        del self._buf[:n]
        pending = [f for f in self._parts if not f.done()]
        if len(pending) >= PARTS_IN_FLIGHT:
            pending[0].result()  # wait for the oldest: never more than PARTS_IN_FLIGHT parts in memory
        assert self._pool is not None
        self._parts.append(self._pool.submit(self._send, len(self._parts) + 1, body))

    def _send(self, number: int, body: bytes) -> dict[str, Any]:
        resp = self._fs._call(
            self.rel, "uploading", "upload_part", Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
        )
        crashpoint("s3.upload.part")
        return {"ETag": resp["ETag"], "PartNumber": number}

    def commit(self, *, create_only: bool = False) -> None:
        """Make the object visible; with ``create_only``, only if the key does not exist yet."""
        cond = {"IfNoneMatch": "*"} if create_only else {}
        if self.upload_id is None:
            body = bytes(self._buf)
            self._buf.clear()
            self._fs._call(self.rel, "writing", "put_object", Key=self.key, Body=body, **cond)
        else:
            if self._buf:
                self._upload_part(len(self._buf))
            parts = [f.result() for f in self._parts]  # the first failed part raises here
            crashpoint("s3.upload.complete")
            self._fs._call(
                self.rel,
                "publishing",
                "complete_multipart_upload",
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": parts},
                **cond,
            )
            self._close_pool()
        self.committed = True

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def abort(self) -> None:
        self._buf.clear()
        self._close_pool()
        if self.upload_id is not None:
            try:
                self._fs.abort_upload(S3Upload(self.rel, 0.0, self.key, self.upload_id))
            except StoreError as exc:
                log.warning("Could not abort the upload of %s (cleanup will): %s", self.rel, exc.message)


class _S3Reader(io.RawIOBase):
    """Ranged GETs from the current position; a seek elsewhere starts a new GET on the next read."""

    def __init__(self, fs: S3FS, rel: str, size: int) -> None:
        self._fs, self._rel, self._size = fs, rel, size
        self._pos = 0
        self._body: Any = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        new = {io.SEEK_SET: offset, io.SEEK_CUR: self._pos + offset, io.SEEK_END: self._size + offset}[whence]
        if new != self._pos:
            self._drop()
            self._pos = max(0, new)
        return self._pos

    def readinto(self, b: Any) -> int:
        want = min(len(b), self._size - self._pos)
        if want <= 0:
            return 0
        for attempt in (1, 2):
            if self._body is None:
                resp = self._fs._call(
                    self._rel, "reading", "get_object", Key=self._fs.key(self._rel), Range=f"bytes={self._pos}-"
                )
                self._body = resp["Body"]
            try:
                data = self._body.read(want)
            except OSError:  # a dropped connection: start a new GET where we are, once
                self._drop()
                if attempt == 2:
                    raise
                continue
            break
        if not data:
            raise StoreError(
                f"{self._fs.root}/{self._rel} ended at byte {self._pos}, before its size {self._size}",
                hint="the object changed while it was read; verify the checkpoint again",
            )
        b[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def _drop(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def close(self) -> None:
        self._drop()
        super().close()


class _Lease:
    """The lock object: ``{"owner", "host", "pid", "expires"}``, created and renewed conditionally."""

    def __init__(self, fs: S3FS, rel: str) -> None:
        self._fs, self._rel = fs, rel
        self._owner = secrets.token_hex(8)
        self._tag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        info = {"owner": self._owner, "host": socket.gethostname(), "pid": os.getpid()}
        expires = time.time() + self._fs.options.lease_seconds
        return json.dumps({**info, "since": time.time(), "expires": expires}).encode()

    def _put(self, **cond: str) -> bool:
        try:
            resp = self._fs._call(
                self._rel, "locking", "put_object", Key=self._fs.key(self._rel), Body=self._body(), **cond
            )
        except ConcurrentUpdateError:
            return False
        self._tag = str(resp["ETag"])
        return True

    def acquire(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._put(IfNoneMatch="*"):
                break
            held = self._fs.read_tagged(self._rel)
            if held is not None:
                holder = _parse(held[0])
                if float(holder.get("expires", 0)) < time.time() and self._put(IfMatch=held[1]):
                    log.warning(
                        "Took over the expired store lock of pid %s on %s", holder.get("pid"), holder.get("host")
                    )
                    break
                if time.monotonic() >= deadline:
                    raise LockTimeoutError(
                        f"store lock {self._fs.root}/{self._rel} is held by pid {holder.get('pid')} on "
                        f"{holder.get('host')}; waited {timeout:.0f}s",
                        hint="another checkpoint or restore is writing this store; retry when it has finished, "
                        "or raise [checkpoint] lock_timeout",
                    )
            time.sleep(0.1)
        self._thread = threading.Thread(target=self._renew, name="s3-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self._fs.options.lease_seconds / 3):
            try:
                if self._tag is None or not self._put(IfMatch=self._tag):
                    log.error("Lost the store lock %s/%s to another writer", self._fs.root, self._rel)
                    return
            except StoreError as exc:
                log.warning("Could not renew the store lock (will retry): %s", exc.message)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        held = self._fs.read_tagged(self._rel)
        if held is not None and held[1] == self._tag:
            try:
                self._fs._call(self._rel, "unlocking", "delete_object", Key=self._fs.key(self._rel), IfMatch=self._tag)
            except ConcurrentUpdateError:
                pass  # taken over after our lease expired


def _parse(data: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def _make_client(options: S3Options) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise StoreError(
            "an s3:// store needs boto3, which is not installed",
            hint="pip install 'airflow-checkpoint-provider[s3]'",
        ) from None
    session = boto3.session.Session(
        aws_access_key_id=options.access_key_id,
        aws_secret_access_key=options.secret_access_key,
        aws_session_token=options.session_token,
        region_name=options.region or "us-east-1",
    )
    config = Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": 5, "mode": "standard"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=10,
        read_timeout=120,
    )
    return session.client("s3", endpoint_url=options.endpoint_url, config=config, verify=options.verify_tls)
