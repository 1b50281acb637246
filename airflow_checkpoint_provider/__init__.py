"""Apache Airflow provider: checkpoint and restore state kept in PostgreSQL, Redis and search.

Plain-Python logic lives in :mod:`airflow_checkpoint_provider.core`; operators, sensors,
hooks and DAG helpers are thin layers over it. Importing this package does not import Airflow.
"""

from airflow_checkpoint_provider.version import __version__

__all__ = ["__version__"]
