#!/bin/bash
# The main job on embedded defaults: set up .venv, then `cloudprov demo` (local transport, memory
# directory). Arguments go to the demo: scripts/demo.sh --users 1000
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/cloudprov demo "$@"
