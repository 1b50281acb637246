"""The tree model's pure logic: entry rules, tree order, listing lines, the Merkle root."""

from __future__ import annotations

import hashlib
import io

import pytest

from airflow_checkpoint_provider.core.engines.files._tree import (
    MAX_LINE_BYTES,
    Entry,
    Tally,
    TreeOrder,
    entry_problem,
    read_listing,
)
from airflow_checkpoint_provider.core.errors import FormatError

SHA = hashlib.sha256(b"x").hexdigest()


@pytest.mark.parametrize(
    ("path", "kind", "target", "why"),
    [
        ("", "file", "", "empty name"),
        ("/etc/passwd", "file", "", "absolute path"),
        ("C:evil", "file", "", "absolute path"),
        ("a/../../x", "file", "", "'..' path component"),
        ("..", "dir", "", "'..' path component"),
        ("a\\b", "file", "", "backslash or NUL"),
        ("a\x00b", "file", "", "backslash or NUL"),
        ("a//b", "file", "", "empty or '.' path component"),
        ("./a", "file", "", "empty or '.' path component"),
        ("a/", "dir", "", "empty or '.' path component"),
        ("bad-\udcff", "file", "", "not valid UTF-8"),
        ("fifo", "FIFO", "", "is a FIFO"),
        ("l", "symlink", "/etc/passwd", "absolute path '/etc/passwd'"),
        ("l", "symlink", "..", "points outside the tree"),
        ("a/b/l", "symlink", "../../../x", "points outside the tree"),
        ("a/l", "symlink", "b/../../..", "points outside the tree"),
        ("l", "symlink", "", "empty target"),
    ],
)
def test_unsafe_entries_are_named_with_their_reason(path, kind, target, why):
    problem = entry_problem(path, kind, target)
    assert problem is not None and why in problem, problem


@pytest.mark.parametrize(
    ("path", "target"), [("l", "a/b"), ("a/b/l", "../../c"), ("a/l", "../a/./x"), ("l", "missing"), ("ü/l", "../日本")]
)
def test_links_inside_the_tree_are_kept(path, target):
    assert entry_problem(path, "symlink", target) is None


def test_tree_order_is_the_order_of_component_tuples():
    order = TreeOrder("t")
    for path, kind in [
        ("a", "dir"),
        ("a/b", "file"),
        ("a/c", "dir"),
        ("a/c/d", "file"),
        ("a.txt", "file"),
        ("b", "file"),
    ]:
        order.enter(path, kind)


@pytest.mark.parametrize(
    ("entries", "why"),
    [
        ([("b", "file"), ("a", "file")], "out of tree order, or a duplicate"),
        ([("a", "file"), ("a", "file")], "out of tree order, or a duplicate"),
        ([("a", "file"), ("a/x", "file")], "'a' is not one that came before it"),  # below a file
        ([("l", "symlink"), ("l/x", "file")], "'l' is not one that came before it"),  # below a link
        ([("a/x", "file")], "'a' is not one that came before it"),  # parent missing
        ([("a", "dir"), ("b", "file"), ("a/x", "file")], "out of tree order"),
    ],
)
def test_entries_out_of_order_below_a_non_directory_or_twice_are_refused(entries, why):
    order = TreeOrder("t")
    with pytest.raises(FormatError, match=why):
        for path, kind in entries:
            order.enter(path, kind)


def test_tree_order_reports_the_directories_left_innermost_first():
    order = TreeOrder("t")
    order.enter("a", "dir")
    order.enter("a/b", "dir")
    order.enter("a/b/c", "file")
    assert order.enter("d", "file") == [("a", "b"), ("a",)]


def test_a_listing_line_round_trips_and_only_the_canonical_form_is_read():
    entry = Entry("ü/x.txt", "file", 0o640, 1_700_000_000_123_456_789, size=1, sha256=SHA)
    line = entry.to_line()
    assert (
        line
        == (
            '{"mode":416,"mtime_ns":1700000000123456789,"path":"ü/x.txt","sha256":"'
            + SHA
            + '","size":1,"type":"file"}\n'
        ).encode()
    )
    assert Entry.from_line(line, "t") == entry
    assert Entry.from_line(Entry("d", "dir", 0o755, 5).to_line(), "t").type == "dir"


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"not json\n", "malformed"),
        (b'{"mode":416,"mtime_ns":1,"path":"x","size":1,"type":"file"}\n', "a file needs its sha256"),
        (b'{"mode":416,"mtime_ns":1.5,"path":"x","sha256":"%s","size":1,"type":"file"}\n' % SHA.encode(), "integers"),
        (b'{"mode":99999,"mtime_ns":1,"path":"x","type":"dir"}\n', "integers in range"),
        (b'{"mode":1,"mtime_ns":1,"path":"x","type":"dir","owner":"root"}\n', "not an entry object"),
        (b'{"path":"x","type":"dir","mode":1,"mtime_ns":1}\n', "canonical form"),
        (b'{"mode":1,"mtime_ns":1,"path":7,"type":"dir"}\n', "must be strings"),
        (b'{"mode":1,"mtime_ns":1,"path":"../x","type":"dir"}\n', "listing entry '../x' contains a '..'"),
        (b'{"mode":1,"mtime_ns":1,"path":"x","type":"fifo"}\n', "is a fifo"),
        (b'{"mode":1,"mtime_ns":1,"path":"\\ud800","type":"dir"}\n', "malformed"),
    ],
)
def test_a_malformed_listing_line_is_refused_naming_it(line, why):
    with pytest.raises(FormatError, match=why):
        Entry.from_line(line, "t")


def test_an_overlong_or_unterminated_listing_is_refused():
    with pytest.raises(FormatError, match="longer than"):
        list(read_listing(io.BytesIO(b"x" * (MAX_LINE_BYTES + 10)), "t"))
    line = Entry("a", "dir", 0o755, 1).to_line()
    with pytest.raises(FormatError, match="ends inside a line"):
        list(read_listing(io.BytesIO(line + line[:-1].replace(b'"a"', b'"b"')), "t"))
    assert [e.path for e in read_listing(io.BytesIO(line), "t")] == ["a"]


def test_the_merkle_root_is_sha256_over_the_documented_lines():
    entries = [
        Entry("a", "dir", 0o755, 1),
        Entry("a/f", "file", 0o644, 1, size=1, sha256=SHA),
        Entry("l", "symlink", 0o777, 1, target="a/f"),
    ]
    tally = Tally()
    for entry in entries:
        tally.add(entry)
    link = hashlib.sha256(b"a/f").hexdigest()
    expected = hashlib.sha256(f"a\0d\0\na/f\0f\0{SHA}\nl\0l\0{link}\n".encode()).hexdigest()
    assert tally.fingerprints() == {"files": 1, "dirs": 1, "symlinks": 1, "bytes": 1, "merkle_root": expected}
