#!/bin/bash
# Set up everything and run every test: Debian packages, .venv with the dev extras, the real servers
# (slapd, Samba AD DC, RabbitMQ), lint and type checks, then pytest with all markers. Servers this
# script started are stopped on exit. Extra arguments go to pytest: scripts/test.sh -k memory
set -euo pipefail
cd "$(dirname "$0")/.."
started=()
cleanup() {
  for s in "${started[@]}"; do bash scripts/servers.sh stop "$s" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

bash scripts/setup.sh dev
if [ -f scripts/servers.sh ]; then
  bash scripts/servers.sh start slapd && started+=(slapd)
  bash scripts/servers.sh start samba && started+=(samba)
fi
[ -f scripts/rabbitmq.sh ] && bash scripts/rabbitmq.sh

echo "== ruff" && .venv/bin/ruff check .
echo "== mypy" && .venv/bin/mypy
echo "== pytest"
.venv/bin/pytest "$@"
