"""Airflow's ``[core] hostname_callable`` for the Celery workers of the tests.

Two workers run on one machine here, so the host's name cannot tell them apart; each gets its
own name in ``CHECKPOINT_TEST_WORKER_NAME``, as a deployment's workers get theirs from their host.
"""

from __future__ import annotations

import os
import socket


def worker_hostname() -> str:
    return os.environ.get("CHECKPOINT_TEST_WORKER_NAME") or socket.getfqdn()
