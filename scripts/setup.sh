#!/bin/bash
# Create .venv and install cloudprov into it.
#   scripts/setup.sh          the product with every transport (no LDAP: bonsai needs C headers)
#   scripts/setup.sh dev      everything the tests need, LDAP included; installs the Debian packages
#                             bonsai builds against when run as root
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
extras="amqp,servicebus"

system_packages() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "setup: please install the Debian packages ${missing[*]} (as root: apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}" >&2
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
}

if [ "${1:-}" = dev ]; then
  system_packages libldap2-dev libsasl2-dev gcc python3-dev
  extras="dev"
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
log=$(mktemp)
pip_install() {
  .venv/bin/python -m pip install -q --disable-pip-version-check "$@" >"$log" 2>&1 \
    || { grep -v '^WARNING: Location' "$log" | tail -30 >&2; echo "setup: pip install $* failed" >&2; exit 1; }
}
pip_install --upgrade pip
pip_install -e ".[$extras]"
rm -f "$log"
.venv/bin/cloudprov version >/dev/null || { echo "setup: the install did not produce .venv/bin/cloudprov" >&2; exit 1; }
