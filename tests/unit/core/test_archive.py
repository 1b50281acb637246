"""The reader refuses hostile archives and names the offending entry."""

from __future__ import annotations

import io
import tarfile

import pytest

from airflow_checkpoint_provider.core.archive import ArchiveReader, ArchiveWriter, read_embedded_manifest
from airflow_checkpoint_provider.core.errors import FormatError, IntegrityError, UnsafeArchiveError
from airflow_checkpoint_provider.core.verify import ProblemKind, verify_archive

_DATA: dict[int, bytes] = {}


def _tar(*entries: tarfile.TarInfo, fmt=tarfile.USTAR_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for ti in entries:
            data = _DATA.get(id(ti), b"")
            ti.size = len(data) if ti.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
            tf.addfile(ti, io.BytesIO(data) if ti.size else None)
    return buf.getvalue()


def _file(name: str, data: bytes = b"x") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    _DATA[id(ti)] = data
    return ti


def _special(name: str, type_: bytes, **kw) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = type_
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


HOSTILE = {
    "dotdot": (_file("artifacts/../../etc/passwd"), "'..' path component"),
    "absolute": (_file("/etc/passwd"), "absolute path"),
    "symlink": (_special("artifacts/link", tarfile.SYMTYPE, linkname="/etc/shadow"), "symbolic link"),
    "hardlink": (_special("artifacts/hard", tarfile.LNKTYPE, linkname="/etc/shadow"), "hard link"),
    "chardev": (_special("artifacts/null", tarfile.CHRTYPE, devmajor=1, devminor=3), "character device"),
    "blockdev": (_special("artifacts/sda", tarfile.BLKTYPE, devmajor=8, devminor=0), "block device"),
    "fifo": (_special("artifacts/fifo", tarfile.FIFOTYPE), "FIFO"),
    "directory": (_special("artifacts/dir", tarfile.DIRTYPE), "directory"),
    "odd_name": (_file("evil.sh"), "not 'manifest.json'"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_strict_reader_refuses_hostile_entry_and_names_it(case):
    entry, reason = HOSTILE[case]
    data = _tar(_file("manifest.json", b"{}"), entry)
    with pytest.raises(UnsafeArchiveError) as info:
        for _member, stream in ArchiveReader(io.BytesIO(data), source="evil.tar"):
            stream.read()
    assert entry.name in str(info.value) and reason in str(info.value)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_verify_reports_hostile_entry_without_reading_its_data(case):
    entry, reason = HOSTILE[case]
    data = _tar(_file("manifest.json", b"{}"), entry)
    result = verify_archive(io.BytesIO(data), checkpoint_id="x", source="evil.tar")
    unsafe = [p for p in result.problems if p.kind is ProblemKind.UNSAFE_MEMBER]
    assert [p.subject for p in unsafe] == [entry.name]
    assert reason in unsafe[0].detail
    assert not result.ok


def test_pax_headers_are_refused():
    data = _tar(_file("manifest.json", b"{}"), _file("artifacts/" + "a" * 120), fmt=tarfile.PAX_FORMAT)
    with pytest.raises(UnsafeArchiveError, match="pax extended header"):
        list(ArchiveReader(io.BytesIO(data)))


def test_duplicate_member_is_refused():
    data = _tar(_file("manifest.json", b"{}"), _file("artifacts/a"), _file("artifacts/a"))
    with pytest.raises(UnsafeArchiveError, match="appears twice"):
        list(ArchiveReader(io.BytesIO(data)))


def test_writer_output_is_readable_by_stdlib_tar_and_round_trips():
    buf = io.BytesIO()
    w = ArchiveWriter(buf)
    w.add_bytes("manifest.json", b"{}")
    payload = bytes(range(256)) * 5000
    w.add_stream("artifacts/postgres/a.dump.zst", io.BytesIO(payload), len(payload))
    w.close()
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
        assert tf.getnames() == ["manifest.json", "artifacts/postgres/a.dump.zst"]
        assert tf.extractfile("artifacts/postgres/a.dump.zst").read() == payload
    got = {m.name: s.read() for m, s in ArchiveReader(io.BytesIO(buf.getvalue()))}
    assert got == {"manifest.json": b"{}", "artifacts/postgres/a.dump.zst": payload}


def test_writer_refuses_unsafe_names_and_short_or_changed_sources():
    w = ArchiveWriter(io.BytesIO())
    with pytest.raises(FormatError, match="refusing to write archive member '../x'"):
        w.add_bytes("../x", b"")
    with pytest.raises(IntegrityError, match="ended after 3 of 10 bytes"):
        w.add_stream("artifacts/a", io.BytesIO(b"abc"), 10)
    with pytest.raises(IntegrityError, match="staged bytes hash to"):
        w.add_stream("artifacts/b", io.BytesIO(b"abc"), 3, expect_sha256="0" * 64)


def test_reader_detects_truncation_in_data_and_in_end_marker():
    buf = io.BytesIO()
    w = ArchiveWriter(buf)
    w.add_bytes("manifest.json", b"{}")
    w.add_stream("artifacts/a", io.BytesIO(b"z" * 5000), 5000)
    w.close()
    full = buf.getvalue()
    for cut in (len(full) - 512, 512 + 512 + 100, 700):
        with pytest.raises(FormatError, match="truncated"):
            for _m, s in ArchiveReader(io.BytesIO(full[:cut])):
                s.read()


def test_embedded_manifest_must_come_first():
    data = _tar(_file("artifacts/a"), _file("manifest.json", b"{}"))
    with pytest.raises(FormatError, match="first member is 'artifacts/a'"):
        read_embedded_manifest(io.BytesIO(data))
