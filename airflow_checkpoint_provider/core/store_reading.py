"""Reading sealed checkpoints: an artifact streamed out of its archive, and verification. Mixed into :class:`Store`."""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast

import zstandard

from airflow_checkpoint_provider.core.archive import ArchiveReader
from airflow_checkpoint_provider.core.errors import CheckpointError, FormatError, IntegrityError, StoreError
from airflow_checkpoint_provider.core.lkg import LKG_ALIASES
from airflow_checkpoint_provider.core.manifest import MAX_METADATA_BYTES, Artifact, Manifest, validate_checkpoint_id
from airflow_checkpoint_provider.core.reading import CheckedReader, RawSizeReader
from airflow_checkpoint_provider.core.streams import CHUNK_SIZE
from airflow_checkpoint_provider.core.verify import ProblemKind, VerifyResult, verify_archive

if TYPE_CHECKING:
    from airflow_checkpoint_provider.core.crypt import Cipher, DataKey
    from airflow_checkpoint_provider.core.fs import StoreFS
    from airflow_checkpoint_provider.core.lkg import LkgPointer
    from airflow_checkpoint_provider.core.store import CheckpointInfo, DamagedCheckpoint


class _ReadingMixin:
    """Artifacts out of sealed archives, and the archive verification. Mixed into :class:`Store`."""

    if TYPE_CHECKING:  # provided by Store and its other mixins
        fs: StoreFS
        cipher: Cipher | None

        def get(self, checkpoint_id: str) -> CheckpointInfo: ...
        def resolve(self, checkpoint_id: str) -> str: ...
        def exists(self, checkpoint_id: str) -> bool: ...
        def scan(
            self, *, tag: str | None = None, cached: bool = True
        ) -> tuple[builtins.list[CheckpointInfo], builtins.list[DamagedCheckpoint]]: ...
        def data_key(self, checkpoint_id: str) -> DataKey: ...
        def _current_lkg(self) -> LkgPointer: ...
        def _read_manifest(self, cid: str) -> Manifest: ...
        def _binding_problem(self, pointer: LkgPointer, manifest: Manifest | None = None) -> str | None: ...
        def _lkg_fallback_hint(self, pointer: LkgPointer) -> str: ...
        @staticmethod
        def _archive_rel(cid: str) -> str: ...
        @staticmethod
        def _manifest_rel(cid: str) -> str: ...

    def open_archive(self, checkpoint_id: str) -> BinaryIO:
        return self.fs.open_read(self.get(checkpoint_id).archive)

    @contextmanager
    def open_artifact(self, checkpoint_id: str, name: str, *, decompress: bool = True) -> Iterator[BinaryIO]:
        """Stream one artifact out of a sealed archive, decompressed, checking its sha256.

        The archive is read strictly (hostile members are refused by name). The stored bytes
        are hashed as they are read; if the reader reaches the end and size or sha256 differ
        from the manifest, :class:`IntegrityError` is raised. Decompressed bytes are bounded
        by the manifest's ``raw_size``: reading more (a zstd bomb) or fewer raises
        :class:`IntegrityError` naming the artifact. Verify the whole archive before changing
        anything: these checks are a second line of defence, not the first.
        """
        info = self.get(checkpoint_id)
        art = info.manifest.artifact(name)
        with self.fs.open_read(info.archive) as f:
            for member, stream in ArchiveReader(f, source=info.archive):
                if member.name != art.member:
                    continue
                checked = CheckedReader(stream, art)
                plain: Any = checked
                if "encryption" in art.meta:
                    plain = self._decrypting(checked, art, info.checkpoint_id)
                if decompress and art.compression == "zstd":
                    with zstandard.ZstdDecompressor().stream_reader(
                        cast(IO[bytes], plain), read_size=CHUNK_SIZE, closefd=False
                    ) as reader:
                        yield RawSizeReader(reader, art, checked)  # type: ignore[misc]
                else:
                    yield plain
                return
        raise IntegrityError(
            f"{info.archive} has no member {art.member}", hint="verify the checkpoint; the archive lost an artifact"
        )

    def _decrypting(self, checked: CheckedReader, art: Artifact, cid: str) -> Any:
        if "data_key_id" in art.meta["encryption"]:
            data_key = self.data_key(cid)
            return data_key.reader(cast(BinaryIO, checked), art.name, art.meta["encryption"], source=cid)
        if self.cipher is None:  # the direct scheme: the artifact was encrypted with the master key itself
            raise IntegrityError(
                f"artifact {art.name} of {cid} is encrypted (key id {art.meta['encryption'].get('key_id')}) and no "
                "key is configured",
                hint="set [checkpoint] encryption_key_file to the key file with that id",
            )
        return self.cipher.reader(cast(BinaryIO, checked), art.name, art.meta["encryption"], source=cid)

    def read_artifact(self, checkpoint_id: str, name: str, *, limit: int = MAX_METADATA_BYTES) -> bytes:
        """Read a small artifact (metadata such as ``search/snapshot.json``) whole, decompressed.

        Refused before anything is read if the manifest says it is larger than ``limit``;
        while reading, bounded by its ``raw_size`` as :meth:`open_artifact` is.
        """
        info = self.get(checkpoint_id)
        art = info.manifest.artifact(name)
        raw = art.raw_size if art.raw_size is not None else art.size
        if raw > limit:
            raise IntegrityError(
                f"artifact {name} of {info.checkpoint_id} is {raw} bytes decompressed; an artifact read whole into "
                f"memory may have at most {limit}",
                hint="the manifest is damaged or forged; verify the checkpoint and restore another one",
            )
        with self.open_artifact(info.checkpoint_id, name) as f:
            return f.read()

    def verify(self, checkpoint_id: str, *, deep: bool = False) -> VerifyResult:
        """Check the archive against the store's manifest copy; collects every problem.

        For ``last-known-good`` the pointer's ``manifest_sha256`` must also match the manifest.
        """
        pointer = self._current_lkg() if checkpoint_id in LKG_ALIASES else None
        cid = pointer.checkpoint_id if pointer else self.resolve(checkpoint_id)
        if not self.exists(cid):
            self.get(cid)  # raises the helpful not-found error
        manifest_rel = self._manifest_rel(cid)
        sidecar_error = None
        try:
            expected: Manifest | None = self._read_manifest(cid)
        except CheckpointError as exc:
            expected = None  # the embedded manifest still gets checked; the sidecar problem is reported
            sidecar_error = exc.message
        try:
            with self.fs.open_read(self._archive_rel(cid)) as f:
                result = verify_archive(
                    f, checkpoint_id=cid, expected=expected, source=self._archive_rel(cid), deep=deep
                )
        except StoreError as exc:
            result = VerifyResult(checkpoint_id=cid)
            result.add(ProblemKind.UNREADABLE, self._archive_rel(cid), exc.message)
        if sidecar_error:
            result.add(
                ProblemKind.BAD_MANIFEST, manifest_rel, f"the store's copy of the manifest is damaged: {sidecar_error}"
            )
        elif expected is not None and expected.checkpoint_id != cid:
            result.add(
                ProblemKind.ID_MISMATCH,
                manifest_rel,
                f"describes checkpoint {expected.checkpoint_id!r}, but its file name says {cid!r}",
            )
        if pointer is not None and result.manifest is not None:
            problem = self._binding_problem(pointer, result.manifest)
            if problem:
                result.add(ProblemKind.LKG_MISMATCH, "refs/lkg.json", problem, hint=self._lkg_fallback_hint(pointer))
        return result

    def verify_all(self, *, deep: bool = False) -> builtins.list[VerifyResult]:
        """Verify every checkpoint, newest first; a damaged entry gets a failed result, not an exception."""
        infos, damaged = self.scan(cached=False)
        results = [self.verify(i.checkpoint_id, deep=deep) for i in infos]
        for entry in damaged:
            try:
                validate_checkpoint_id(entry.checkpoint_id)
            except FormatError:
                result = VerifyResult(checkpoint_id=entry.checkpoint_id)
                result.add(ProblemKind.BAD_MANIFEST, entry.path, entry.problem)
            else:
                result = self.verify(entry.checkpoint_id, deep=deep)
            results.append(result)
        return results
