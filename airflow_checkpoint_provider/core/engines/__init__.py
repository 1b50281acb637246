"""Engines: capture, restore, fingerprint and health for each kind of data store.

Each engine takes a plain target (``targets.py``: host, port, credentials; no Airflow)
and a :class:`~airflow_checkpoint_provider.core.staging.Staging`, streams its artifacts
into staging and returns their :class:`~airflow_checkpoint_provider.core.manifest.Artifact`
descriptors.
"""
