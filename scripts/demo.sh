#!/usr/bin/env bash
# Set everything up (idempotent) and run the demo: a private nginx with TLS and two upstream
# backends, traffic, and the ngxscope window showing it live. Extra arguments go to `ngxscope demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/ngxscope demo "$@"
