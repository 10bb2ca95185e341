#!/usr/bin/env bash
# The main job: build 6x6 Sudoku data, train a small TRM on the CPU, solve held-out puzzles.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/trm demo "$@"
