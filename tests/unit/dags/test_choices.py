"""The restore form's checkpoint choices: cheap (sidecars only, bounded), labelled, never failing a parse."""

from __future__ import annotations

from airflow_checkpoint_provider.core import Store
from airflow_checkpoint_provider.dags.choices import checkpoint_choices
from tests.unit.core.helpers import make_checkpoint


def _store(tmp_path) -> Store:
    return Store.open(tmp_path / "store", create=True, lock_timeout=30)


def test_labels_show_id_time_size_tags_and_the_lkg_mark(tmp_path):
    store = _store(tmp_path)
    old = make_checkpoint(store, "r1", tags=("scheduled",))
    new = make_checkpoint(store, "r2", tags=("pre-migration", "migration:m1"))
    store.mark_lkg(old.checkpoint_id, result=store.verify(old.checkpoint_id))
    ids, labels = checkpoint_choices(str(store.root))
    assert ids[0] == "last-known-good" and set(ids[1:]) == {old.checkpoint_id, new.checkpoint_id}
    label = labels[old.checkpoint_id]
    assert label.startswith(old.checkpoint_id) and label.endswith("LKG")
    assert old.created_at[:10] in label and "tags: scheduled" in label and "KiB" in label
    assert not labels[new.checkpoint_id].endswith("LKG")
    assert "tags: migration:m1, pre-migration" in labels[new.checkpoint_id]
    assert old.checkpoint_id in labels["last-known-good"]
    assert set(labels) == set(ids)


def test_choices_are_bounded_newest_first(tmp_path):
    store = _store(tmp_path)
    made = [make_checkpoint(store, f"r{i}").checkpoint_id for i in range(4)]
    ids, _ = checkpoint_choices(str(store.root), limit=2)
    assert len(ids) == 3 and set(ids[1:]) <= set(made)


def test_a_damaged_sidecar_hides_only_itself_and_archives_are_never_read(tmp_path):
    store = _store(tmp_path)
    good = make_checkpoint(store, "r1").checkpoint_id
    bad = make_checkpoint(store, "r2").checkpoint_id
    (tmp_path / "store" / "checkpoints" / f"{bad}.manifest.json").write_text('{"not": "a manifest"')
    (tmp_path / "store" / "checkpoints" / f"{good}.tar").chmod(0)  # reading an archive would fail
    ids, labels = checkpoint_choices(str(store.root))
    assert ids == ["last-known-good", good] and good in labels[good]


def test_a_missing_store_offers_only_last_known_good(tmp_path):
    assert checkpoint_choices(str(tmp_path / "nowhere")) == (
        ["last-known-good"],
        {"last-known-good": "last-known-good (none set yet)"},
    )
