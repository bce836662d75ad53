#!/usr/bin/env bash
# One command from a fresh clone: set up, then run the main job, a CQL alpha sweep
# (its dataset is generated from the spec's recipe on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/poke-tune run search_spaces/cql_alpha.yaml
