"""Hostile trees: a restore refuses every entry the archive rules refuse, naming it and why, and
leaves the live directory exactly as it was, with no side-by-side copy.

Each checkpoint is forged the way a tampering writer would (helpers.forge: a tar and a listing
built by hand, sealed into a real store, so that the archive's own checksums hold and only the
tree's rules can catch it), then restored through ``core.recovery.restore`` onto a real directory.
"""

from __future__ import annotations

import tarfile

import pytest

from airflow_checkpoint_provider.core.engines.files import FilesTarget
from airflow_checkpoint_provider.core.recovery import RestoreFailedError, RestoreRefusedError
from tests.unit.core.engines.files.helpers import forge, line, member, run_restore, siblings, state

CASES = {
    "dotdot": ([member("../evil", data=b"x")], [line("evil", data=b"x")], "entry '../evil' contains a '..' path"),
    "absolute": ([member("/abs", data=b"x")], [line("abs", data=b"x")], "entry '/abs' has an absolute path"),
    "pax path": (
        [member("ok", data=b"x", pax={"path": "../x"})],
        [line("ok", data=b"x")],
        "entry '../x' contains a '..' path",
    ),
    "absolute link": (
        [member("l", tarfile.SYMTYPE, link="/etc/passwd")],
        [line("l", "symlink", target="x")],
        "entry 'l' is a symbolic link to the absolute path '/etc/passwd'",
    ),
    "link out": (
        [member("a", tarfile.DIRTYPE), member("a/l", tarfile.SYMTYPE, link="../../etc")],
        [line("a", "dir"), line("a/l", "symlink", target="x")],
        "'a/l' is a symbolic link to '../../etc', which points outside the tree",
    ),
    "hard link": ([member("h", tarfile.LNKTYPE, link="ok")], [line("h")], "entry 'h' is a hard link"),
    "device": ([member("dev", tarfile.CHRTYPE)], [line("dev")], "entry 'dev' is a character device"),
    "block device": ([member("blk", tarfile.BLKTYPE)], [line("blk")], "entry 'blk' is a block device"),
    "fifo": ([member("p", tarfile.FIFOTYPE)], [line("p")], "entry 'p' is a FIFO"),
    "duplicate": (
        [member("a", data=b"1"), member("a", data=b"1")],
        [line("a", data=b"1"), line("a", data=b"1")],
        "entry 'a' comes after 'a': out of tree order, or a duplicate",
    ),
    "below a link": (
        [member("l", tarfile.SYMTYPE, link="sub"), member("l/x", data=b"x")],
        [line("l", "symlink", target="sub"), line("l/x", data=b"x")],
        "entry 'l/x' is not inside a directory of the tree",
    ),
    "out of order": (
        [member("b", data=b""), member("a", data=b"")],
        [line("b"), line("a")],
        "entry 'a' comes after 'b'",
    ),
    "other bytes": ([member("f", data=b"evil")], [line("f", data=b"good")], "'f' holds 4 bytes hashing to"),
    "tar has more": (
        [member("a", data=b""), member("b", data=b"")],
        [line("a")],
        "entry 'b' is in the tar but not in the listing",
    ),
    "listing has more": ([member("a", data=b"")], [line("a"), line("b")], "the listing names 'b', which the tar"),
    "type differs": (
        [member("a", tarfile.DIRTYPE)],
        [line("a")],
        r"entry 'a' \(dir, 0 bytes\) is not what "
        "the listing says comes next",
    ),
    "not utf-8": (
        [member("bad-\udcff", data=b"")],
        [line("ok")],
        r"a member's name or link target is not valid UTF-8 \(near b'.*bad-\\xff",
    ),
}


@pytest.fixture
def live(tmp_path):
    root = tmp_path / "srv" / "uploads"
    (root / "keep").mkdir(parents=True)
    (root / "keep" / "data.txt").write_bytes(b"the live data")
    return root


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_tree_is_refused_naming_the_entry_and_nothing_changes(store, live, case):
    members, lines, why = CASES[case]
    cid = forge(store, str(live), members, lines)
    before = state(live)
    with pytest.raises(RestoreFailedError, match=why) as err:
        run_restore(store, cid, FilesTarget(str(live)))
    assert "nothing was replaced" in err.value.hint
    assert state(live) == before and siblings(live) == []
    assert not (live.parent.parent / "etc").exists() and not (live.parent / "evil").exists()


def test_a_tree_of_an_unknown_format_is_refused_in_the_plan(store, live):
    cid = forge(store, str(live), [], [], edit=lambda meta: meta.update(format=2))
    with pytest.raises(RestoreRefusedError, match="has format 2; this version reads format 1"):
        run_restore(store, cid, FilesTarget(str(live)))
    assert siblings(live) == []


def test_a_tree_that_extracts_but_differs_from_its_fingerprints_is_removed_unused(store, live):
    cid = forge(
        store,
        str(live),
        [member("a", data=b"x")],
        [line("a", data=b"x")],
        fingerprints={"files": 2, "dirs": 0, "symlinks": 0, "bytes": 1, "merkle_root": "0" * 64},
    )
    before = state(live)
    with pytest.raises(RestoreFailedError, match=r"differs from checkpoint .*files is 1, the checkpoint says 2"):
        run_restore(store, cid, FilesTarget(str(live)))
    assert state(live) == before and siblings(live) == []
