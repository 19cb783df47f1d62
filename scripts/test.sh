#!/usr/bin/env bash
# Set everything up (idempotent) and run every check: lint, types, layering, and the whole
# test suite, capture tests included (real nginx, real eBPF: run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export QT_QPA_PLATFORM=offscreen
echo "== ruff"; .venv/bin/ruff check app tests bench
echo "== mypy"; .venv/bin/mypy
echo "== import-linter"; .venv/bin/lint-imports
echo "== pytest"
exec .venv/bin/pytest -p no:cacheprovider -q "$@"
