"""The "Checkpoints" page and REST API inside the Airflow 3 UI.

A plugin (``airflow.plugins`` entry point, :mod:`.plugin`) mounts one FastAPI app under
``/checkpoints`` in the api-server and adds a "Checkpoints" entry to the navigation:

* ``/checkpoints/ui/`` lists every checkpoint (id, time, size, stores, tags, skew, LKG badge),
  with the LKG history, the restores recorded, and bytes and count per day as an inline SVG chart;
  ``/checkpoints/ui/{id}`` shows one: manifest fields, fingerprints per store, the restores that
  used it, a "Restore…" button that starts ``restore_checkpoint`` with the id filled in, and a
  "Verify now" button that starts ``checkpoint_verify`` for that checkpoint only;
* ``/checkpoints/api/...`` serves the same as JSON, and starts checkpoint, pre-deploy and restore
  runs (see :mod:`.app`; the schema is at ``/checkpoints/openapi.json``).

Only authenticated Airflow users get anything: every route resolves the caller through the
api-server's auth manager (the UI's session cookie or a bearer token), and the runs it starts are
created through Airflow's own REST API with the caller's token, so Airflow's permissions apply.
Everything is rendered server-side from the store's sidecars; nothing is loaded from elsewhere.
"""
