#!/usr/bin/env bash
# Idempotent setup of a fresh Debian 12 machine (run as root) for development,
# tests and the demo:
#   * Debian packages: PostgreSQL, Redis, zstd, Chromium and chromedriver (the
#     browser test of the Airflow UI), and a JDK 17 + Maven for the
#     OpenSearch / Elasticsearch test nodes;
#   * uv, and .venv with the project installed editable with its test extra;
#   * the Maven dependencies of both search runners (cached in ~/.m2) and their
#     compiled launchers (cached by scripts/services.py), so tests don't pay for it.
# When everything is already there it takes a few seconds.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT="$(pwd)"

step() { printf '==> %s\n' "$*"; }

# --------------------------------------------------------------------------- apt
apt_packages=(postgresql redis-server redis-tools zstd chromium chromium-driver)
if ! command -v javac >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1; then
    apt_packages+=(openjdk-17-jdk-headless)
fi
command -v mvn >/dev/null 2>&1 || apt_packages+=(maven)

missing=()
for pkg in "${apt_packages[@]}"; do
    status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
    [[ "$status" == "installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "bootstrap: missing Debian packages (${missing[*]}); run this script as root" >&2
        exit 1
    fi
    step "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    step "Debian packages present"
fi
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    echo "bootstrap: PostgreSQL server binaries not found under /usr/lib/postgresql" >&2
    exit 1
fi

# --------------------------------------------------------------------------- S3 server, in the background
# The SeaweedFS build (once per machine, cached) takes minutes of CPU; it overlaps the downloads below.
s3_log="$(mktemp)"
python3 scripts/services.py prepare --only s3 >"$s3_log" 2>&1 &
s3_pid=$!

# --------------------------------------------------------------------------- uv + venv
if ! command -v uv >/dev/null 2>&1; then
    step "pip install uv"
    python3 -m pip install -q uv 2>/dev/null \
        || python3 -m pip install -q --break-system-packages uv
    hash -r
    if ! command -v uv >/dev/null 2>&1; then
        # pip --user / system installs may land outside PATH
        export PATH="$HOME/.local/bin:/usr/local/bin:$PATH"
    fi
fi
command -v uv >/dev/null 2>&1 || { echo "bootstrap: uv is not on PATH after installing it" >&2; exit 1; }

if [[ ! -x .venv/bin/python ]]; then
    step "uv venv -p 3.11 .venv"
    uv venv -q -p 3.11 .venv
fi

# Reinstall only when the project's metadata changed (an editable install
# follows source edits by itself).
stamp=.venv/.bootstrap-stamp
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]] \
    || ! .venv/bin/python -c 'import airflow_checkpoint_provider, pytest' >/dev/null 2>&1; then
    step "uv pip install -e '.[test]'"
    uv pip install -q -p .venv -e '.[test]'
    echo "$want" >"$stamp"
else
    step ".venv up to date"
fi

# --------------------------------------------------------------------------- search runners
step "search runner dependencies (Maven) and launchers"
.venv/bin/python scripts/services.py prepare --only opensearch,elasticsearch
step "S3 server (SeaweedFS, built once with go and cached)"
if ! wait "$s3_pid"; then
    cat "$s3_log" >&2
    echo "bootstrap: preparing the S3 server failed (above)" >&2
    exit 1
fi
rm -f "$s3_log"

step "bootstrap done ($REPO_ROOT)"
