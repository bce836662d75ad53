#!/usr/bin/env bash
# One command from a fresh clone: set up, generate a small dataset, evaluate policies.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
mkdir -p runs
.venv/bin/poke-tune data generate runs/quickstart.jsonl.gz --battles 200 --policies random,max-damage
.venv/bin/poke-tune data info runs/quickstart.jsonl.gz
.venv/bin/poke-tune eval heuristic --opponent max-damage --battles 200
