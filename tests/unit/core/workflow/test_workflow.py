"""Workflow checkpoints on the real file store: resume, fallback, drift, resume_from, refusals."""

from __future__ import annotations

import json
import os
import re
import stat

import pytest

from airflow_checkpoint_provider.core.workflow import (
    ConfigDriftError,
    DataMismatchError,
    FileWorkflowStore,
    NoIntactStateError,
    ResumeOptions,
    StateNotSerializableError,
    UnknownStepError,
    Workflow,
    expire,
)
from airflow_checkpoint_provider.core.workflow.errors import ResumeRefusedError
from airflow_checkpoint_provider.core.workflow.filestore import workflow_key

CONFIG = {"growth_rate": 0.03, "employees": 1000, "rules": {"retirement_age": 65, "raise": 0.02}}
YEARS = [2025, 2026, 2027, 2028, 2029]


def state_of(year: int) -> dict:
    """The deterministic state after ``year`` (what an uninterrupted run produces)."""
    return {"year": year, "headcount": 1000 + 10 * (year - 2024), "log": [f"year {y}" for y in range(2025, year + 1)]}


@pytest.fixture
def wstore(store) -> FileWorkflowStore:
    return FileWorkflowStore(store)


def run(wstore, years=YEARS, *, stop_after=None, config=CONFIG, **kwargs) -> tuple[Workflow, list[int]]:
    """Run the workflow like a task: returns it (closed) and the steps this attempt ran."""
    wf = Workflow(wstore, "sim", config=config, **kwargs)
    ran = []
    for year in wf.steps(years):
        previous = wf.state
        assert previous == (state_of(year - 1) if year > years[0] else None)
        ran.append(year)
        wf.save(year, state_of(year), fingerprints={"rows": year})
        if year == stop_after:
            wf.close()  # the process dies here; the lock goes with it
            return wf, ran
    wf.summary()
    return wf, ran


def state_files(wstore, sub="states") -> list[str]:
    path = wstore.fs.local_path(f"workflows/{workflow_key('sim')}/{sub}")
    return sorted(os.listdir(path)) if path.exists() else []


def test_a_second_attempt_resumes_after_the_last_saved_step(wstore):
    _, first = run(wstore, stop_after=2027)
    wf, second = run(wstore)
    assert (first, second) == ([2025, 2026, 2027], [2028, 2029])
    assert wf.summary()["resumed_from"] == {"step": 2027, "seq": 3}
    assert wstore.load("sim", 5).state() == state_of(2029)
    info = wstore.workflows()[0]
    assert (info.workflow_id, info.status, info.states, info.latest_step) == ("sim", "completed", 5, 2029)


def test_a_finished_workflow_runs_no_step_again_and_keeps_its_state(wstore):
    run(wstore)
    wf, ran = run(wstore)
    assert ran == [] and wf.state == state_of(2029)


def test_corrupted_latest_payload_falls_back_to_the_previous_state(wstore):
    run(wstore, stop_after=2027)
    path = wstore.fs.local_path(f"workflows/{workflow_key('sim')}/states/000000000003.state")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # one flipped byte in the payload
    path.write_bytes(bytes(data))
    wf, ran = run(wstore)
    assert ran == [2027, 2028, 2029]  # 2027 is computed again from 2026's state
    fallback = wf.summary()["fallbacks"]
    assert [(f["seq"], f["step"]) for f in fallback] == [(3, 2027)] and "sha256" in fallback[0]["problem"]
    assert state_files(wstore, "damaged") == ["000000000003.state"]  # set aside, kept for inspection
    assert wstore.load("sim", max(e.seq for e in wstore.entries("sim") if not e.damaged)).state() == state_of(2029)


@pytest.mark.parametrize("damage", ["truncated_header", "edited_header", "empty_file", "truncated_payload"])
def test_damaged_latest_state_of_any_kind_falls_back(wstore, damage):
    run(wstore, stop_after=2026)
    path = wstore.fs.local_path(f"workflows/{workflow_key('sim')}/states/000000000002.state")
    data = path.read_bytes()
    header, _, payload = data.partition(b"\n")
    broken = {
        "truncated_header": header[:40],
        "empty_file": b"",
        "edited_header": header.replace(b'"step":2026', b'"step":2030') + b"\n" + payload,
        "truncated_payload": data[:-5],
    }[damage]
    path.write_bytes(broken)
    wf, ran = run(wstore)
    assert ran == [2026, 2027, 2028, 2029]
    assert wf.summary()["fallbacks"][0]["seq"] == 2


def test_every_state_damaged_refuses_the_resume_instead_of_starting_over(wstore):
    run(wstore, stop_after=2026)
    for name in state_files(wstore):
        wstore.fs.local_path(f"workflows/{workflow_key('sim')}/states/{name}").write_bytes(b"garbage\n")
    with pytest.raises(NoIntactStateError, match="every saved state is damaged") as err:
        run(wstore)
    assert "force_restart" in err.value.hint


def test_changed_config_is_refused_naming_the_keys_but_not_their_values(wstore):
    run(wstore, stop_after=2026)
    changed = {**CONFIG, "growth_rate": 0.05, "rules": {"retirement_age": 67, "raise": 0.02}, "new": 1}
    with pytest.raises(ConfigDriftError) as err:
        run(wstore, config=changed)
    assert err.value.changed == ["growth_rate", "new", "rules.retirement_age"]
    assert "changed keys: growth_rate, new, rules.retirement_age" in err.value.message
    text = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "<saved_at>", str(err.value))  # a timestamp may hold any digits
    assert "0.05" not in text and "67" not in text
    assert "force_restart=True" in err.value.hint and "allow_config_drift=True" in err.value.hint
    assert len(state_files(wstore)) == 2  # refused: nothing discarded


def test_force_restart_discards_every_state_and_starts_from_the_first_step(wstore):
    run(wstore, stop_after=2027)
    wf, ran = run(wstore, config={**CONFIG, "growth_rate": 0.05}, options=ResumeOptions(force_restart=True))
    assert ran == YEARS and wf.summary()["discarded"] == 3


def test_allow_config_drift_resumes_and_the_new_states_carry_the_new_config(wstore):
    run(wstore, stop_after=2026)
    changed = {**CONFIG, "employees": 2000}
    wf, ran = run(wstore, config=changed, options=ResumeOptions(allow_config_drift=True))
    assert ran == [2027, 2028, 2029] and wf.summary()["config_drift"] == ["employees"]
    _, again = run(wstore, config=changed)  # no drift any more against the newest state
    assert again == []


def test_resume_from_reruns_from_that_step_and_discards_the_later_states(wstore):
    run(wstore)
    wf, ran = run(wstore, options=ResumeOptions(resume_from=2027))
    assert ran == [2027, 2028, 2029]
    assert wf.summary()["discarded"] == 3 and wf.summary()["resumed_from"]["step"] == 2026
    steps = [e.header.step for e in wstore.entries("sim")]
    assert steps == [2029, 2028, 2027, 2026, 2025]


def test_resume_from_the_first_step_starts_from_the_initial_state(wstore):
    run(wstore, stop_after=2026)
    _, ran = run(wstore, options=ResumeOptions(resume_from=2025))
    assert ran == YEARS


def test_resume_from_a_step_never_saved_is_refused_listing_the_saved_ones(wstore):
    run(wstore, stop_after=2026)
    with pytest.raises(UnknownStepError, match=r"saved steps, newest first: 2026, 2025"):
        run(wstore, options=ResumeOptions(resume_from="2026"))  # the string, not the int


def test_force_restart_with_resume_from_is_refused():
    with pytest.raises(ResumeRefusedError, match="contradict"):
        ResumeOptions(force_restart=True, resume_from=2027)


def test_saved_step_missing_from_the_steps_is_refused(wstore):
    run(wstore, stop_after=2026)
    with pytest.raises(UnknownStepError, match="saved after step 2026, which is not among the steps"):
        run(wstore, years=[2030, 2031])


@pytest.mark.parametrize(
    "bad,path",
    [
        ({"ids": {1, 2}}, "['ids'] is a builtins.set"),
        ({"by_year": {2025: 1}}, "['by_year'] has the key 2025 of type int"),
        ({"rate": float("nan")}, "['rate'] is nan"),
        (
            {"nested": [1, {"when": __import__("datetime").date(2025, 1, 1)}]},
            "['nested'][1]['when'] is a datetime.date",
        ),
        ({"blob": b"x"}, "['blob'] is bytes inside a JSON state"),
    ],
)
def test_unserializable_state_is_refused_naming_its_path_before_anything_is_written(wstore, bad, path):
    run(wstore, stop_after=2025)
    before = state_files(wstore)
    captured = []

    class Data:  # a stand-in data checkpointer: records whether a capture was started (our own logic)
        def capture(self, workflow_id, step):
            captured.append(step)
            return "ckpt-x"

        def restore(self, checkpoint_id):
            raise AssertionError

    wf = Workflow(wstore, "sim", config=CONFIG, data=Data())
    with pytest.raises(StateNotSerializableError) as err:
        wf.save(2026, bad)
    wf.close()
    assert f"the state of step 2026{path}" in err.value.message and "nothing was saved" in err.value.message
    assert state_files(wstore) == before and captured == []


def test_a_cycle_in_the_state_is_refused(wstore):
    loop: dict = {}
    loop["self"] = loop
    with pytest.raises(StateNotSerializableError, match="refers back to itself"):
        Workflow(wstore, "sim").save(2025, loop)


def test_fingerprint_mismatch_refuses_the_resume_naming_the_step_keys_and_values(wstore):
    live = {2025: 100, 2026: 120, 2027: 130}

    def validate(year):
        return {"rows": live[year]}

    wf = Workflow(wstore, "sim", validate=validate)
    for year in wf.steps([2025, 2026, 2027]):
        wf.save(year, {"y": year})  # fingerprints come from validate
    wf.summary()
    live[2026] = 0  # the table of 2026 lost its rows
    with pytest.raises(DataMismatchError) as err:
        _ = Workflow(wstore, "sim", validate=validate).state
    assert "step 2026: rows: saved 120, now 0" in err.value.message
    assert "resume_from=2026" in err.value.hint


def test_restore_data_restores_the_resume_points_data_checkpoint_before_validating(wstore):
    order = []
    live = {2025: 1, 2026: 2}

    class Data:  # stand-in for the engines (unit test of the resume recipe's ordering)
        def capture(self, workflow_id, step):
            return f"ckpt-{step}"

        def restore(self, checkpoint_id):
            order.append(("restore", checkpoint_id))
            live[2026] = 2  # the restore brings the data back
            return {"components": ["postgres"]}

    def validate(year):
        order.append(("validate", year))
        return {"rows": live[year]}

    wf = Workflow(wstore, "sim", validate=validate, data=Data())
    for year in wf.steps([2025, 2026, 2027]):
        wf.save(year, {"y": year})
        if year == 2026:
            break
    wf.close()
    live[2026] = 0
    order.clear()
    wf = Workflow(wstore, "sim", validate=validate, data=Data(), options=ResumeOptions(restore_data=True))
    assert list(wf.steps([2025, 2026, 2027])) == [2027]
    assert order[:2] == [("restore", "ckpt-2026"), ("validate", 2026)]
    assert wf.summary()["restored_data"] == {"checkpoint_id": "ckpt-2026", "step": 2026, "components": ["postgres"]}


def test_restore_data_without_a_data_checkpoint_is_refused(wstore):
    run(wstore, stop_after=2026)
    with pytest.raises(ResumeRefusedError, match="saved without a data checkpoint"):
        run(wstore, options=ResumeOptions(restore_data=True))


def test_history_keeps_the_newest_states_only(wstore):
    run(wstore, history=2)
    assert state_files(wstore) == ["000000000004.state", "000000000005.state"]


def test_state_files_are_private_and_their_directories_too(wstore):
    run(wstore, stop_after=2025)
    base = wstore.fs.local_path(f"workflows/{workflow_key('sim')}")
    for path in [base, base / "states", *base.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


def test_large_states_are_compressed_and_small_ones_stored_as_they_are(wstore):
    wf = Workflow(wstore, "sim")
    small = wf.save(1, {"a": 1})
    big = wf.save(2, {"rows": list(range(50_000))})
    raw = wf.save(3, bytes(range(256)) * 4096)
    wf.close()
    assert (small.compression, big.compression, raw.compression) == ("none", "zstd", "zstd")
    assert big.size < big.raw_size / 3
    assert wstore.load("sim", 3).state() == bytes(range(256)) * 4096
    header = json.loads(
        wstore.fs.local_path(f"workflows/{workflow_key('sim')}/states/000000000002.state")
        .read_bytes()
        .partition(b"\n")[0]
    )
    assert header["encoding"] == "json" and header["step"] == 2 and len(header["header_sha256"]) == 64


def test_expire_deletes_old_workflows_but_skips_one_whose_writer_runs(wstore):
    from datetime import timedelta

    run(wstore)
    busy = Workflow(wstore, "busy")
    busy.save(1, {"x": 1})  # holds its lock
    gone = expire(wstore, older_than=timedelta(seconds=0))
    assert {(g.workflow.workflow_id, g.removed, g.skipped) for g in gone} == {
        ("sim", True, None),
        ("busy", False, "a writer is running it"),
    }
    busy.close()
    assert [w.workflow_id for w in wstore.workflows()] == ["busy"]
    assert expire(wstore) == []  # nothing older than the default 7 days


def test_expire_on_success_deletes_the_states_when_the_workflow_completes(wstore):
    wf, _ = run(wstore, expire_on_success=True)
    assert wf.summary()["status"] == "expired" and wstore.workflows() == [] and wstore.entries("sim") == []


def _streamed_state(n: int = 12 * 1024 * 1024) -> bytes:
    """A state above the streaming threshold: random bytes over 16 symbols (compresses about 2:1)."""
    import random

    return random.Random(n).randbytes(n).translate(bytes(b"abcdefghijklmnop"[i % 16] for i in range(256)))


def test_a_streamed_large_state_is_published_with_its_header_first_and_comes_back_exact(wstore):
    from airflow_checkpoint_provider.core.workflow.stream import STREAM_THRESHOLD

    state = _streamed_state()
    assert len(state) >= STREAM_THRESHOLD
    wf = Workflow(wstore, "sim")
    saved = wf.save(1, state)
    wf.save(2, {"rows": [1, 2, 3]} | {"blob": state[:STREAM_THRESHOLD].decode()})  # a JSON state is streamed too
    wf.close()
    data = wstore.fs.local_path(f"workflows/{workflow_key('sim')}/states/000000000001.state").read_bytes()
    line, _, payload = data.partition(b"\n")
    header = json.loads(line)  # the header line, padded with spaces to the room left for it
    assert line.endswith(b" ") and header["size"] == len(payload) == saved.size < len(state) / 1.5
    assert header["sha256"] == saved.sha256 and header["raw_size"] == len(state) and header["compression"] == "zstd"
    again = Workflow(wstore, "sim")
    assert again.state["blob"] == state[:STREAM_THRESHOLD].decode()
    assert wstore.load("sim", 1).state() == state
    assert [e.problem for e in wstore.entries("sim")] == [None, None]


@pytest.mark.parametrize("damage", ["flipped_byte", "truncated", "appended"])
def test_a_damaged_streamed_state_is_refused_and_the_resume_falls_back(wstore, damage):
    state = _streamed_state()
    wf = Workflow(wstore, "sim")
    wf.save(1, {"first": True})
    wf.save(2, state)
    wf.close()
    path = wstore.fs.local_path(f"workflows/{workflow_key('sim')}/states/000000000002.state")
    data = bytearray(path.read_bytes())
    if damage == "flipped_byte":
        data[len(data) // 2] ^= 0x01
    path.write_bytes(
        {"flipped_byte": bytes(data), "truncated": bytes(data[:-1000]), "appended": bytes(data) + b"x"}[damage]
    )
    with pytest.raises(Exception, match="sha256|bytes, the header says") as err:
        wstore.load("sim", 2).state()
    assert "the header says" in str(err.value) or "sha256" in str(err.value)
    again = Workflow(wstore, "sim")
    assert again.state == {"first": True} and again.summary_dict()["fallbacks"][0]["seq"] == 2
