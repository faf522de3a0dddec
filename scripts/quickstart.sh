#!/usr/bin/env bash
# Set up (if needed), then run the quickstart: SFT then GRPO on the embedded task (~5 min, 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/rlzoo train configs/quickstart.yaml "$@"
