"""core/progress.py: streams report their bytes to a listener, and a failing listener never fails them.

The listeners here are small recorders of our own (unit tests of our own pure logic)."""

from __future__ import annotations

from airflow_checkpoint_provider.core import progress
from tests.unit.core.helpers import make_checkpoint


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.events: list[tuple[str, str, int | None]] = []
        self.bytes: dict[tuple[str, str], int] = {}
        self.fail = fail

    def start(self, phase, name, total):
        self.events.append((phase, name, total))
        key = (phase, name)
        recorder = self

        class Handle:
            def advance(self, n):
                if recorder.fail:
                    raise RuntimeError("the terminal went away")
                recorder.bytes[key] = recorder.bytes.get(key, 0) + n

            def close(self):
                recorder.events.append(("closed", name, None))

        return Handle()


def test_nobody_listening_tracks_nothing():
    assert progress.track("verify", "x", 1) is None


def test_capture_seal_and_verify_report_every_byte(store):
    rec = Recorder()
    with progress.listening(rec):
        m = make_checkpoint(store)
        store.verify(m.checkpoint_id)
    assert progress.track("verify", "x") is None  # the listener is gone after the block
    for art in m.artifacts:
        assert rec.bytes[("capture", art.name)] == art.raw_size
        assert rec.bytes[("seal", art.member)] == art.size
        assert rec.bytes[("verify", art.member)] == art.size
        assert ("verify", art.member, art.size) in rec.events


def test_a_failing_progress_listener_never_fails_the_stream(store):
    with progress.listening(Recorder(fail=True)):
        m = make_checkpoint(store)
        assert store.verify(m.checkpoint_id).ok
