"""Factory of ``example_resumable_simulation``: a multi-year simulation that resumes after a crash.

Each year writes one PostgreSQL table (``<schema>.year_<year>``: one row per employee and
salary) from the previous year's state, then saves the new state as a workflow checkpoint,
with the table's row count and payroll as fingerprints and, by default, a data checkpoint of
the database. A killed attempt's retry resumes after the last saved year; a new run with the
same *workflow id* resumes where a failed run stopped; changing the config (growth rate,
employees, seed) is refused unless the run starts over or allows the drift; ``resume_from``
re-runs from a chosen year, and with ``restore_data`` first restores the data as it was after
the year before (side by side, with a safety checkpoint). ``<schema>.simulation_log`` records
which try of which run computed each year.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from contextlib import closing
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowFailException

from airflow_checkpoint_provider import settings
from airflow_checkpoint_provider.dags.alerts import Notifier, alert_args
from airflow_checkpoint_provider.dags.capture import START

DOC = __doc__
SCHEMA_PATTERN = r"^[a-z_][a-z0-9_]{0,40}$"


class Simulation:
    """The example's model: each year's headcount grows by ``growth_rate``; salaries are drawn from
    a seeded generator, so a re-run of a year writes exactly the same table."""

    def __init__(self, conn_id: str, schema: str) -> None:
        from airflow_checkpoint_provider.workflow import engines

        self.connect, self.label, target = engines.pg_connect(conn_id)
        self.database = target.dbname
        self.schema = schema

    def _table(self, year: int) -> str:
        return f'"{self.schema}"."year_{int(year)}"'

    def run_year(
        self, year: int, state: dict[str, Any] | None, config: dict[str, Any], *, workflow_id: str, context: Any
    ) -> dict[str, Any]:
        headcount = state["headcount"] if state else int(config["employees"])
        headcount = max(1, round(headcount * (1 + float(config["growth_rate"]))))
        rng = random.Random(f"{config['seed']}:{year}:{headcount}")
        rows = [(i, rng.randrange(4_000_000, 12_000_000)) for i in range(1, headcount + 1)]
        ti = context["ti"]
        with closing(self.connect()) as conn, conn.transaction():
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{self.schema}".simulation_log (workflow_id text, year int, '
                "run_id text, try_number int, pid int, started_at timestamptz DEFAULT now())"
            )
            conn.execute(
                f'INSERT INTO "{self.schema}".simulation_log (workflow_id, year, run_id, try_number, pid) '
                "VALUES (%s, %s, %s, %s, %s)",
                (workflow_id, year, context["run_id"], ti.try_number, os.getpid()),
            )
        with closing(self.connect()) as conn, conn.transaction():
            conn.execute(f"DROP TABLE IF EXISTS {self._table(year)}")
            conn.execute(f"CREATE TABLE {self._table(year)} (employee_id int PRIMARY KEY, salary_cents bigint)")
            with conn.cursor().copy(f"COPY {self._table(year)} (employee_id, salary_cents) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        payroll = sum(s for _, s in rows)
        years = [*(state or {}).get("years", []), year]
        return {"year": year, "headcount": headcount, "payroll_cents": payroll, "years": years}

    def fingerprints(self, year: int) -> dict[str, Any]:
        """The live row count and payroll of a year's table (0 and 0 if it is missing)."""
        with closing(self.connect()) as conn:
            exists = conn.execute("SELECT to_regclass(%s)", (self._table(year),)).fetchone()[0]
            if exists is None:
                return {"rows": 0, "payroll_cents": 0}
            rows, total = conn.execute(
                f"SELECT count(*), coalesce(sum(salary_cents), 0) FROM {self._table(year)}"
            ).fetchone()
        return {"rows": int(rows), "payroll_cents": int(total)}


def example_resumable_simulation(
    dag_id: str = "example_resumable_simulation", *, notifiers: Sequence[Notifier] | None = None
) -> DAG:
    """A multi-year simulation with workflow checkpoints (see the module docstring).

    :param notifiers: called when a task fails, besides those of ``[checkpoint] notify_*``.
    """
    params = {
        "years": Param(
            list(range(2025, 2030)),
            type="array",
            items={"type": "integer"},
            minItems=1,
            title="Years",
            description="The years to simulate, in order (one per line).",
        ),
        "workflow_id": Param(
            None,
            type=["null", "string"],
            title="Workflow id",
            description="Resume across runs: a new run with the id of a failed one picks up after "
            "its last saved year. Empty: this run's own workflow (only its retries "
            "resume it).",
        ),
        "resume_from": Param(
            None,
            type=["null", "integer"],
            title="Resume from year",
            description="Re-run from this year: its saved state and the later ones are "
            "discarded. Empty: resume after the last saved year.",
        ),
        "restore_data": Param(
            False,
            type="boolean",
            title="Restore the data first",
            description="Before resuming, restore the data checkpoint saved with the year before "
            "(side by side, after a safety checkpoint of the current data).",
        ),
        "force_restart": Param(
            False,
            type="boolean",
            title="Force restart",
            description="Discard every saved year and start from the first one.",
        ),
        "allow_config_drift": Param(
            False,
            type="boolean",
            title="Allow config drift",
            description="Resume even if growth rate, employees or seed changed since the "
            "last saved year (otherwise the run is refused, naming them).",
        ),
        "growth_rate": Param(
            0.03,
            type="number",
            minimum=-0.5,
            maximum=1,
            title="Growth rate",
            description="Yearly headcount growth (part of the config hash).",
        ),
        "employees": Param(
            1000,
            type="integer",
            minimum=1,
            maximum=1_000_000,
            title="Employees",
            description="Headcount before the first year (part of the config hash).",
        ),
        "seed": Param(42, type="integer", title="Seed", description="Seed of the salaries (part of the config hash)."),
        "checkpoint_data": Param(
            True,
            type="boolean",
            title="Data checkpoint per year",
            description="Take a checkpoint of the simulation database after each year, so that "
            "restore_data can bring it back.",
        ),
        "schema": Param(
            "simulation",
            type="string",
            pattern=SCHEMA_PATTERN,
            title="Schema",
            description="PostgreSQL schema of the yearly tables and of simulation_log.",
        ),
        "postgres_conn_id": Param(
            settings.postgres_conn_id(),
            type="string",
            minLength=1,
            title="PostgreSQL connection id",
            description="Airflow connection of the simulation database. Default: [checkpoint] postgres_conn_id.",
        ),
        "workflow_store": Param(
            "file",
            type="string",
            enum=["file", "postgresql"],
            title="Workflow store",
            description="Where the yearly states are kept: the checkpoint store's files, or a PostgreSQL table.",
        ),
        "workflow_store_conn_id": Param(
            None,
            type=["null", "string"],
            title="Workflow store connection id",
            description="Airflow connection (type postgres) of the workflow store, used "
            "when the workflow store is postgresql. Unlike the [checkpoint] "
            "connection options it has no default: keep it apart from the "
            "simulation database.",
        ),
        "year_seconds": Param(
            None,
            type=["null", "number"],
            minimum=0,
            maximum=600,
            title="Seconds per year",
            description="Extra seconds each year takes (to watch, or interrupt, a run).",
        ),
        "expire_on_success": Param(
            False,
            type="boolean",
            title="Expire on success",
            description="Delete the saved states once every year is done.",
        ),
    }
    with DAG(
        dag_id=dag_id,
        description="Multi-year simulation that resumes from its last saved year",
        schedule=None,
        start_date=START,
        catchup=False,
        params=params,
        tags=["checkpoint", "example", "workflow"],
        doc_md=DOC,
        max_active_runs=4,
        default_args=alert_args(notifiers),
    ) as dag:

        @task(retries=settings.task_retries(), retry_delay=timedelta(seconds=settings.retry_delay()))
        def simulate(**context: Any) -> dict[str, Any]:
            from airflow_checkpoint_provider.workflow import (
                DataTargets,
                workflow_checkpoints,
            )

            p = context["params"]
            sim = Simulation(p["postgres_conn_id"], p["schema"])
            config = {"growth_rate": p["growth_rate"], "employees": p["employees"], "seed": p["seed"]}
            data = (
                DataTargets(postgres=[sim.database], postgres_conn_id=p["postgres_conn_id"])
                if p["checkpoint_data"]
                else None
            )
            store_conn = p["workflow_store_conn_id"] if p["workflow_store"] == "postgresql" else None
            if p["workflow_store"] == "postgresql" and not store_conn:
                raise AirflowFailException(
                    "workflow_store is 'postgresql' but no workflow_store_conn_id was given. "
                    "HINT: name the PostgreSQL connection that holds the workflow states"
                )
            wf = workflow_checkpoints(
                context,
                config=config,
                validate=sim.fingerprints,
                data=data,
                postgres_conn_id=store_conn,
                expire_on_success=p["expire_on_success"],
            )
            for year in wf.steps(p["years"]):
                state = sim.run_year(year, wf.state, config, workflow_id=wf.workflow_id, context=context)
                time.sleep(p["year_seconds"] or 0)
                wf.save(year, state)
            return {**wf.summary(), "result": wf.state}

        simulate()
    return dag
