#!/usr/bin/env bash
# The whole test suite (and the linter), on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --browser
.venv/bin/ruff check src tests benchmarks
exec .venv/bin/python -m pytest "$@"
