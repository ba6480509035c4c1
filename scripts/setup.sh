#!/bin/bash
# Create .venv and install cloudprov into it.
#   scripts/setup.sh          the product with every transport (no LDAP: bonsai needs C headers)
#   scripts/setup.sh dev      everything the tests need, LDAP included; installs the Debian packages
#                             bonsai builds against when run as root
# The hot modules are compiled with mypyc (setup.py; gcc and Python's headers, installed when run as
# root); CLOUDPROV_COMPILE=0 installs plain Python.
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
pip_install --upgrade pip "setuptools>=77"

# The request path is compiled with mypyc as cloudprov installs (setup.py): that needs a C compiler,
# Python's headers, mypy, and cloudprov's dependencies installed first. Without a compiler cloudprov
# installs as plain Python (the same code, more CPU per request).
compiler_ready() {
  command -v cc >/dev/null 2>&1 && .venv/bin/python - <<'PY'
import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
PY
}
compile=${CLOUDPROV_COMPILE:-1}
if [ "$compile" != 0 ] && ! compiler_ready && [ "$(id -u)" = 0 ]; then
  system_packages gcc python3-dev
fi
if [ "$compile" != 0 ] && ! compiler_ready; then
  echo "setup: no C compiler or Python headers: installing plain Python (apt-get install gcc python3-dev to compile)" >&2
  compile=0
fi
CLOUDPROV_COMPILE=0 pip_install -e ".[$extras]"  # the dependencies, and cloudprov as plain Python
if [ "$compile" = 0 ]; then  # compiled modules left from an earlier setup would shadow the source
  find agent cli plugins protocol service transports -name '*.so' -delete
else
  pip_install "mypy>=2.4,<3" types-PyYAML  # mypyc, and the stubs it checks yaml with
  CLOUDPROV_COMPILE=1 pip_install --no-build-isolation --no-deps -e .
fi
rm -f "$log"
.venv/bin/cloudprov version >/dev/null || { echo "setup: the install did not produce .venv/bin/cloudprov" >&2; exit 1; }
