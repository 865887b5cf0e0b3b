#!/usr/bin/env bash
# Sets up .venv (idempotent) and runs the whole test suite, the real-model smoke test included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/python -m pytest tests -q "$@"
