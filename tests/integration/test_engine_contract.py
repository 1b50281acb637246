"""The engine contract, proven the same way for every registered engine, on the real servers.

For each engine of the registry (built-in or from an entry point), its sample application
(tests/integration/engine_samples.py) is seeded, captured through ``engine.capture`` into a real
store and sealed, damaged, restored through ``core.recovery.restore`` with a builder over the
registry, and then:

* the data is exactly the seeded data again (each sample's independent reader), and the
  restore's own health check, and the engine's ``health`` against its ``expectations`` of the
  manifest, are green;
* the journal is closed, the replaced data is kept as a rollback copy that ``rollbacks`` lists
  and ``drop_rollback`` removes, and ``leftovers`` finds nothing of this restore.

An engine without a sample fails here: a new engine is covered as soon as it registers.
"""

from __future__ import annotations

import pytest

from airflow_checkpoint_provider.core import Store, staging_key
from airflow_checkpoint_provider.core.engines import registry
from airflow_checkpoint_provider.core.journal import open_journals
from airflow_checkpoint_provider.core.lease import read_leases
from airflow_checkpoint_provider.core.manifest import Manifest
from airflow_checkpoint_provider.core.recovery import RestoreRequest, restore
from airflow_checkpoint_provider.core.rollbacks import RollbackPolicy
from tests.integration.engine_samples import SAMPLES, Sample


def test_every_registered_engine_has_a_sample():
    missing = [name for name in registry.names() if name not in SAMPLES]
    assert not missing, (
        f"engine(s) {missing} have no sample in tests/integration/engine_samples.py: add one "
        "(seed, damage, state, its rollback copies) so that the contract test covers them"
    )


def _builder(sample: Sample):
    """Component restores from the registry, for every requested engine the checkpoint holds."""

    def build(store: Store, manifest: Manifest, request: RestoreRequest) -> list:
        parts = []
        for name in request.components:
            engine = registry.get(name)
            artifacts = engine.artifacts_of(manifest.artifacts)
            if artifacts:
                parts.append(
                    engine.restore(
                        sample.target,
                        store,
                        manifest.checkpoint_id,
                        artifacts,
                        mode=request.mode,
                        rollback_policy=RollbackPolicy.parse(request.rollback_keep),
                        **sample.restore_options,
                    )
                )
        return parts

    return build


@pytest.mark.integration
@pytest.mark.parametrize("name", registry.names())
def test_capture_damage_restore_and_health_round_trip(name, request, tmp_path):
    if name not in SAMPLES:
        pytest.fail(f"engine {name!r} has no sample in tests/integration/engine_samples.py", pytrace=False)
    engine = registry.get(name)
    sample = SAMPLES[name](request, tmp_path)
    store = Store.open(tmp_path / "store", create=True)
    try:
        sample.seed()
        original = sample.state()
        staging = store.staging(staging_key("contract", name))
        artifacts = engine.capture(sample.target, staging, **sample.capture_options)
        assert artifacts and all(engine.owns(a) for a in artifacts), [a.kind for a in artifacts]
        manifest = store.seal(staging)
        assert store.verify(manifest.checkpoint_id).ok

        sample.damage()
        assert sample.differences(original, sample.state()), "the damage changed nothing"
        report = restore(
            store, RestoreRequest(checkpoint_id=manifest.checkpoint_id, components=(name,)), _builder(sample)
        )

        assert sample.differences(original, sample.state()) == []
        assert report.healthy, [str(h) for h in report.health]
        [outcome] = report.outcomes
        expected = engine.expectations(
            engine.artifacts_of(manifest.artifacts), {**sample.restore_options, "outcome": outcome.details}
        )
        checks = engine.health(sample.target, expected, 0.0)
        assert checks and all(c.ok for c in checks), [str(c) for c in checks]
        assert report.safety_checkpoint_id and store.exists(report.safety_checkpoint_id)
        assert open_journals(store.fs) == [] and not [r for r in read_leases(store.fs) if r.live()]

        cid = manifest.checkpoint_id
        kept = [
            c for c in engine.rollbacks(sample.target, store) if sample.mine(c) and c.checkpoint and c.checkpoint in cid
        ]
        assert kept, f"{name}: the restore kept no rollback copy of the damaged data"
        for copy in kept:
            engine.drop_rollback(sample.target, copy.name, store)
        assert not [c for c in engine.rollbacks(sample.target, store) if sample.mine(c)]
        found = engine.leftovers(sample.target, store, set(), set(), True, **sample.leftover_options)
        assert not [line for line in found if sample.mine_leftover(line)], found
    finally:
        sample.cleanup()
