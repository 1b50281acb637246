"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

from airflow_checkpoint_provider.version import __version__

DISTRIBUTION = "airflow-checkpoint-provider"


def _option(description: str, type_: str, default: str | None, example: str | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "version_added": "0.1.0",
        "type": type_,
        "example": example,
        "default": default,
    }


CONFIG: dict[str, Any] = {
    "checkpoint": {
        "description": "Where checkpoints are kept and how they are written.",
        "options": {
            "storage_root": _option(
                "Root of the checkpoint store: a directory path or file:// URI, or s3://<bucket>/<prefix> "
                "for S3-compatible object storage (see storage_conn_id). It holds the sealed "
                "archives, the staging area of running captures and the last-known-good pointer. Capture "
                "tasks on different workers must all reach it.",
                "string",
                "{AIRFLOW_HOME}/checkpoints_data",
                "/srv/checkpoints",
            ),
            "encryption_key_file": _option(
                "A file of 64 hex digits (mode 0600): new artifacts are encrypted at rest with it "
                "(AES-256-GCM in authenticated 1 MiB chunks), and encrypted ones need it to be restored. "
                "Empty: no encryption.",
                "string",
                "",
                "/etc/airflow/checkpoint.key",
            ),
            "encryption_key_variable": _option(
                "Instead of encryption_key_file: the Airflow Variable whose value is the master key (64 hex "
                "digits). At most one of encryption_key_file, encryption_key_variable and "
                "encryption_key_conn_id may be set.",
                "string",
                "",
                "checkpoint_master_key",
            ),
            "encryption_key_conn_id": _option(
                "Instead of encryption_key_file: the Airflow connection whose password (or extra field "
                '"key") is the master key (64 hex digits).',
                "string",
                "",
                "checkpoint_master_key",
            ),
            "storage_conn_id": _option(
                "Airflow connection (type aws) of an s3:// storage_root: login = access key id, password = "
                "secret access key, extra endpoint_url and region_name. Unused for a local store.",
                "string",
                "aws_default",
            ),
            "lock_timeout": _option(
                "Seconds a writer waits for the store lock (held briefly while publishing a checkpoint, "
                "deleting one or moving the last-known-good pointer) before failing.",
                "integer",
                "300",
            ),
            "compression_level": _option(
                "zstd level used for artifacts (1 fastest .. 19 smallest).",
                "integer",
                "3",
            ),
            "stale_staging_after": _option(
                "Seconds after which the staging area of a run that never sealed is considered abandoned "
                "and removed by `airflow-checkpoint cleanup`.",
                "integer",
                "86400",
            ),
            "postgres_conn_id": _option(
                "Connection id of the PostgreSQL server the ready-made DAGs checkpoint (overridable per run).",
                "string",
                "postgres_default",
            ),
            "redis_conn_id": _option(
                "Connection id of the Redis server the ready-made DAGs checkpoint.",
                "string",
                "redis_default",
            ),
            "elasticsearch_conn_id": _option(
                "Connection id of the Elasticsearch or OpenSearch cluster the ready-made DAGs checkpoint.",
                "string",
                "elasticsearch_default",
            ),
            "schedule": _option(
                "Schedule of the checkpoint_scheduled DAG (cron expression or preset).",
                "string",
                "*/30 * * * *",
                "@hourly",
            ),
            "capture_queues": _option(
                "Executor queue of each capture task of the ready-made DAGs, and of the bundle: a JSON object "
                "keyed by component (postgres, redis, search, files) or 'bundle'. With the CeleryExecutor each "
                "capture can run on a worker near its server; the workers must share the checkpoint store.",
                "string",
                "",
                '{"postgres": "db-workers", "redis": "cache-workers", "search": "cache-workers"}',
            ),
            "task_retries": _option(
                "Retries of the ready-made DAGs' capture tasks on transient errors (an unreachable server). "
                "Errors a retry cannot fix (bad credentials, unknown names, refused settings) fail at once.",
                "integer",
                "1",
            ),
            "retry_delay": _option(
                "Seconds between those retries.",
                "integer",
                "120",
            ),
            "search_repository": _option(
                "Snapshot repository the search snapshots go to.",
                "string",
                "checkpoints",
            ),
            "search_repository_location": _option(
                "If set, the DAGs register the search repository as an 'fs' repository at this location "
                "(it must be listed in path.repo on every node). If empty, the repository must already exist.",
                "string",
                "",
                "/mnt/snapshots/checkpoints",
            ),
            "capture_lease_wait": _option(
                "Seconds a capture waits for a running restore of the same server to finish before it fails "
                "(a checkpoint of a half-restored server must never become last-known-good).",
                "integer",
                "600",
            ),
            "lease_ttl": _option(
                "Seconds after its last heartbeat that a restore's lease on its servers counts as dead (a "
                "killed restore on another machine). On the same machine a dead process is seen at once.",
                "integer",
                "120",
            ),
            "orphan_snapshot_after": _option(
                "Seconds after which a search snapshot the provider took, that no sealed checkpoint references "
                "(its capture was killed), is deleted by the next capture or `airflow-checkpoint cleanup`. "
                "Keep it above the longest capture.",
                "integer",
                "7200",
            ),
            "rollback_keep": _option(
                "Rollback copies kept after each successful restore, per restored database, Redis db or "
                "index: 'last=N' keeps the newest N, 'max_age=SECONDS' drops older ones; both may be given, "
                "comma-separated. 'all' keeps every copy.",
                "string",
                "last=1,max_age=86400",
                "last=2",
            ),
            "drain_command": _option(
                "Shell command the restore DAGs run before a restore to quiesce writers (stdout and stderr go "
                "to the task log). Only this option or the DAG file sets it, never a run's trigger conf; a dry "
                "run does not run it.",
                "string",
                "",
                "systemctl stop app-workers",
            ),
            "resume_command": _option(
                "Shell command the restore DAGs run after a restore, whether it succeeded or not.",
                "string",
                "",
                "systemctl start app-workers",
            ),
            "drain_callable": _option(
                "'package.module:function' the restore DAGs call with action='drain' before and action='resume' "
                "after a restore.",
                "string",
                "",
                "myapp.ops:quiesce",
            ),
            "airflow_api_conn_id": _option(
                "HTTP connection to Airflow's REST API (host of the api-server, login and password of a user "
                "allowed to pause DAGs). The restore DAGs use it to pause the capture DAGs during a restore. "
                "Where it is not defined they fall back to direct database access, which only works outside "
                "supervised task processes (dag.test()); otherwise they log a warning and restore anyway.",
                "string",
                "airflow_api",
                "airflow_api",
            ),
            "workflow_history": _option(
                "Workflow checkpoints: how many saved states each workflow keeps (its history); a resume_from "
                "can go back as far as these reach.",
                "integer",
                "10",
            ),
            "workflow_retention_days": _option(
                "Workflow checkpoints: `airflow-checkpoint workflow expire` deletes workflows not saved for this "
                "many days.",
                "float",
                "7",
            ),
            "task_state_offload_bytes": _option(
                "With [workers] state_store_backend = airflow_checkpoint_provider.workflow.CheckpointStateBackend, "
                "task_state_store values of at least this many bytes (as JSON) go into the checkpoint store "
                "(task-state/, compressed and checksummed); smaller ones stay in Airflow's database.",
                "integer",
                "4096",
            ),
            "lkg_requires": _option(
                "The state a checkpoint must be in before the last-known-good pointer moves to it: 'verified' "
                "(a passed standard or deep verification; the bundle step verifies every new checkpoint) or "
                "'drilled' (a passed restore drill). A corrupt or drill_failed checkpoint never becomes LKG.",
                "string",
                "verified",
                "drilled",
            ),
            "verify_level": _option(
                "Level of the checkpoint_verify DAG: 'basic' (sizes and manifest checksums), 'standard' (the "
                "sha256 of every artifact) or 'deep' (also decompress and parse every artifact, and check the "
                "search snapshot in its repository).",
                "string",
                "standard",
                "deep",
            ),
            "verify_schedule": _option(
                "Schedule of the checkpoint_verify DAG.",
                "string",
                "@daily",
                "0 4 * * *",
            ),
            "verify_sample": _option(
                "How many already verified checkpoints each checkpoint_verify run verifies again (those verified "
                "longest ago first), besides every checkpoint not yet verified at the level.",
                "integer",
                "3",
            ),
            "retention": _option(
                "Retention policy of the checkpoint_retention DAG and `airflow-checkpoint expire`, as JSON: "
                "keep_last, keep_within (e.g. '7d', '36h'), keep_hourly, keep_daily, keep_weekly, keep_monthly, "
                "keep_yearly, max_total_bytes, and 'tags': {tag: rules} for checkpoints carrying that tag "
                "(judged by those rules instead). The LKG, pinned checkpoints, the newest checkpoint in the "
                "lkg_requires state and checkpoints a restore uses are always kept.",
                "string",
                '{"keep_within": "7d", "keep_last": 3, "tags": {"safety": {"keep_within": "7d"}, '
                '"pre-migration": {"keep_within": "90d"}}}',
                '{"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 12, "max_total_bytes": 500000000000}',
            ),
            "retention_schedule": _option(
                "Schedule of the checkpoint_retention DAG (02:00 UTC daily by default).",
                "string",
                "0 2 * * *",
            ),
            "drill_schedule": _option(
                "Schedule of the checkpoint_restore_drill DAG.",
                "string",
                "@weekly",
                "0 3 * * 0",
            ),
            "drill_pre_migration": _option(
                "Also run checkpoint_restore_drill after each pre-migration checkpoint, drilling that one.",
                "boolean",
                "False",
            ),
            "deployment_files": _option(
                "Config files of the deployment, comma-separated: each checkpoint records a digest of their "
                "contents, and a restore plan lists those that changed since (config drift).",
                "string",
                "",
            ),
            "deployment_env": _option(
                "Names of the environment variables the deployment requires, comma-separated: each checkpoint "
                "records whether each is set (never a value), and a restore plan lists those that changed.",
                "string",
                "",
            ),
            "deployment_packages": _option(
                "Dependencies of the deployment, comma-separated distribution names: each checkpoint records "
                "their installed versions, and a restore plan lists those that changed.",
                "string",
                "",
            ),
            "notify_on_failure": _option(
                "'package.module:function' returning a notifier (any BaseNotifier, or a callable of the task "
                "context) or a list of them: every task of the ready-made DAGs calls them when it fails.",
                "string",
                "",
                "my_company.alerts:checkpoint_notifiers",
            ),
            "notify_email": _option(
                "Comma-separated recipients of an SmtpNotifier on the failure of any task of the ready-made DAGs.",
                "string",
                "",
                "ops@example.com,dba@example.com",
            ),
            "notify_from": _option(
                "Sender of those mails; empty: the SMTP connection's from_email.",
                "string",
                "",
                "airflow@example.com",
            ),
            "notify_smtp_conn_id": _option(
                "SMTP connection of those mails.",
                "string",
                "smtp_default",
            ),
            "lkg_max_age": _option(
                "Oldest acceptable last-known-good checkpoint (e.g. '2d', '36h'): the lkg_age task of "
                "checkpoint_verify fails, naming the LKG and its age, when the LKG is older or missing. "
                "Empty: no limit.",
                "string",
                "",
                "2d",
            ),
        },
    }
}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": DISTRIBUTION,
        "name": "Checkpoint",
        "description": "Consistent, verifiable checkpoints of PostgreSQL, Redis and Elasticsearch/OpenSearch "
        "state, with a last-known-good pointer and side-by-side restores.",
        "versions": [__version__],
        "integrations": [
            {"integration-name": "Checkpoint", "tags": ["service"]},
        ],
        "config": CONFIG,
    }
