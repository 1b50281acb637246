# The two commands of the README, plus helpers. Everything installs what it needs first.
.PHONY: setup demo test lint unit bench services-stop

setup:
	bash scripts/bootstrap.sh

# Main job: seed the local services, checkpoint them into the default store, list and verify.
demo: setup
	.venv/bin/python scripts/demo.py

# Lint, then every test, with real PostgreSQL, Redis, OpenSearch and Elasticsearch started by the tests
# (two workers, whole modules per worker; each worker starts its own servers).
test: setup lint
	.venv/bin/python -m pytest -n 2 --dist loadfile --durations=30

# ruff (lint and format check) over the package, the tests, the scripts and the benchmarks; mypy (--strict on core/).
lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

# Unit tests only (no servers).
unit: setup
	.venv/bin/python -m pytest tests/unit -m "not integration"

# Benchmarks against the raw tools, on the same data in the same run (several minutes each).
bench: setup
	.venv/bin/python bench/archive_throughput.py
	.venv/bin/python bench/pg_capture.py
	.venv/bin/python bench/pg_restore.py --s3
	.venv/bin/python bench/redis_capture.py
	.venv/bin/python bench/redis_restore.py
	.venv/bin/python bench/workflow.py
	.venv/bin/python bench/verify_throughput.py
	.venv/bin/python bench/verify_deep.py
	.venv/bin/python bench/retention_plan.py
	.venv/bin/python bench/list_checkpoints.py
	.venv/bin/python scripts/services.py start --dir .local/bench-s3 --only s3
	.venv/bin/python bench/s3_throughput.py --services-dir .local/bench-s3; rc=$$?; \
		.venv/bin/python scripts/services.py stop --dir .local/bench-s3; exit $$rc

services-stop:
	.venv/bin/python scripts/services.py stop --dir .local/services
