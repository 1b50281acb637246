#!/usr/bin/env bash
# The full-count crash loops: 20 random SIGKILLs of recovery_lkg
# (each healed by the next run), captures racing a recovery, and 60 killed captures, against real
# servers started for the run. `make test` runs the same tests at a small count.
#
#   scripts/random_kills.sh [KILLS] [SEED]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh >/dev/null
export CHECKPOINT_RANDOM_KILLS="${1:-20}"
export CHECKPOINT_KILL_SEED="${2:-$(date +%s)}"
echo "random kills: ${CHECKPOINT_RANDOM_KILLS}, seed ${CHECKPOINT_KILL_SEED}"
exec .venv/bin/python -m pytest tests/integration/test_restore_kills.py -v -p no:cacheprovider
