"""Run one DAG with ``dag.test()`` in this process and print a JSON summary on the last line.

    python scripts/run_dag.py DAG_ID [RUN_CONF_JSON]

The caller prepares the environment (AIRFLOW_HOME with a migrated database, the dags
folder, AIRFLOW_CONN_* for the real services). Output: run state, every task's state,
the return-value XCom of every task, and the asset events the run emitted.
"""

from __future__ import annotations

import json
import os
import sys


def main(dag_id: str, conf: dict) -> dict:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.asset import AssetEvent
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    bag = DagBag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        raise SystemExit(f"import errors: {bag.import_errors}")
    dag = bag.dags[dag_id]
    dr = dag.test(run_conf=conf or None)
    with create_session() as session:
        tis = {ti.task_id: ti.state for ti in dr.get_task_instances(session=session)}
        xcoms = {
            x.task_id: x.value
            for x in session.query(XComModel).filter(
                XComModel.dag_id == dag_id, XComModel.run_id == dr.run_id, XComModel.key == "return_value"
            )
        }
        events = [
            {"asset": e.asset.name, "extra": e.extra}
            for e in session.query(AssetEvent).filter(
                AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == dr.run_id
            )
        ]
    return {
        "run_id": dr.run_id,
        "state": str(dr.state),
        "tasks": {k: str(v) for k, v in tis.items()},
        "xcom": {k: _decode(v) for k, v in xcoms.items()},
        "asset_events": events,
    }


def _decode(value):
    if isinstance(value, (bytes, str)):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


if __name__ == "__main__":
    result = main(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})
    print("DAG_RESULT " + json.dumps(result, default=str))
