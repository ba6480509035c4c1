#!/bin/bash
# Throwaway directory servers for the real-server tests: OpenLDAP slapd and a Samba AD DC.
#
#   scripts/servers.sh start   [slapd|samba]   # default: both; idempotent; installs packages if missing
#   scripts/servers.sh stop    [slapd|samba]   # kill and remove their state
#   scripts/servers.sh restart slapd           # kill and relaunch slapd keeping its data (fault tests)
#   scripts/servers.sh status  [slapd|samba]   # exit 1 if one is not running
#   scripts/servers.sh env                     # `export K=V` lines; also written to $STATE/env for pytest
#   scripts/servers.sh load-slapd FILE.ldif    # offline bulk load with slapadd (stops/starts slapd)
#
# Settings (environment): CLOUDPROV_SERVERS_DIR (state, default <repo>/.servers),
# CLOUDPROV_SLAPD_PORT (3389), CLOUDPROV_SLAPD_TLS_PORT (3636). Samba needs root and ports 389/636.
# Guarantees: everything listens on 127.0.0.1 only (plus slapd's ldapi socket in the state dir);
# slapd runs mdb with fsync off and the accesslog overlay (old values logged, so deletes carry
# entryUUID); both servers use a test CA written to $STATE/tls/ca.pem; a distro slapd/samba service
# never starts (policy-rc.d while installing) and one that holds our ports is stopped.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
TEMPLATES="$REPO/tests/servers"
STATE=${CLOUDPROV_SERVERS_DIR:-$REPO/.servers}
SLAPD_PORT=${CLOUDPROV_SLAPD_PORT:-3389}
SLAPD_TLS_PORT=${CLOUDPROV_SLAPD_TLS_PORT:-3636}
SLAPD_DIR="$STATE/slapd"
SAMBA_DIR="$STATE/samba"
TLS_DIR="$STATE/tls"
SUFFIX="dc=example,dc=com"
ROOTPW="secret"
READERPW="reader-secret"
REALM="EXAMPLE.TEST"
DOMAIN="EXAMPLE"
SAMBA_BASE="DC=example,DC=test"
SAMBA_ADMINPASS='Passw0rd!Adm1n'

log() { echo "servers: $*" >&2; }
die() { log "$*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }
urlencode_path() { printf %s "$1" | sed 's,/,%2F,g'; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
port_busy() { ss -Hltn "sport = :$1" | grep -q .; }

ensure_packages() {
  local missing=()
  [ -x /usr/sbin/slapd ] || missing+=(slapd)
  command -v ldapsearch >/dev/null || missing+=(ldap-utils)
  [ "${1:-}" = samba ] && { command -v samba >/dev/null && command -v samba-tool >/dev/null || missing+=(samba); }
  [ -f /usr/include/ldap.h ] || missing+=(libldap2-dev)
  [ -f /usr/include/sasl/sasl.h ] || missing+=(libsasl2-dev)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "missing packages ${missing[*]}: run as root or apt-get install them"
  log "installing ${missing[*]}"
  local guard=
  if [ ! -e /usr/sbin/policy-rc.d ]; then   # keep the distro services from starting on install
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; guard=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >"$STATE/apt.log" 2>&1 \
    || { [ -n "$guard" ] && rm -f /usr/sbin/policy-rc.d; tail -20 "$STATE/apt.log" >&2; die "apt-get failed"; }
  [ -n "$guard" ] && rm -f /usr/sbin/policy-rc.d
  return 0
}

free_port() {  # a distro service holding one of our ports is stopped; anything else is an error
  local port=$1 ours=$2
  port_busy "$port" || return 0
  alive "$ours" && return 0
  for svc in slapd samba-ad-dc samba smbd; do service "$svc" stop >/dev/null 2>&1 || true; done
  sleep 0.5
  port_busy "$port" && die "port $port is taken by another process: $(ss -Hltnp "sport = :$port")"
  return 0
}

ensure_tls() {
  [ -f "$TLS_DIR/server.pem" ] && return 0
  mkdir -p "$TLS_DIR"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=cloudprov test CA" \
    -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.pem" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$TLS_DIR/server.key" -out "$TLS_DIR/server.csr" >/dev/null 2>&1
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:%s\nextendedKeyUsage=serverAuth\n' \
    "$(hostname -f 2>/dev/null || hostname)" > "$TLS_DIR/ext.cnf"
  openssl x509 -req -in "$TLS_DIR/server.csr" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca.key" \
    -CAcreateserial -days 30 -extfile "$TLS_DIR/ext.cnf" -out "$TLS_DIR/server.pem" >/dev/null 2>&1
  chmod 600 "$TLS_DIR/server.key" "$TLS_DIR/ca.key"
}

fill() {  # fill TEMPLATE: replace @NAME@ with the values given as NAME=value arguments
  local text; text=$(cat "$1"); shift
  local pair
  for pair in "$@"; do text=${text//@${pair%%=*}@/${pair#*=}}; done
  printf '%s\n' "$text"
}

# ---------------------------------------------------------------- slapd
slapd_ldapi() { echo "ldapi://$(urlencode_path "$SLAPD_DIR/ldapi")"; }

slapd_init() {
  rm -rf "$SLAPD_DIR"; mkdir -p "$SLAPD_DIR/slapd.d" "$SLAPD_DIR/data" "$SLAPD_DIR/accesslog"
  fill "$TEMPLATES/slapd-config.ldif.in" "DIR=$SLAPD_DIR" "TLSDIR=$TLS_DIR" "SUFFIX=$SUFFIX" \
    "ROOTPW=$ROOTPW" "ROOTPW_HASH=$(/usr/sbin/slappasswd -s "$ROOTPW")" "UID=$(id -u)" "GID=$(id -g)" \
    > "$SLAPD_DIR/config.ldif"
  /usr/sbin/slapadd -n 0 -F "$SLAPD_DIR/slapd.d" -l "$SLAPD_DIR/config.ldif" >/dev/null
  fill "$TEMPLATES/slapd-base.ldif.in" "SUFFIX=$SUFFIX" \
    "READERPW_HASH=$(/usr/sbin/slappasswd -s "$READERPW")" > "$SLAPD_DIR/base.ldif"
  /usr/sbin/slapadd -F "$SLAPD_DIR/slapd.d" -b "$SUFFIX" -q -l "$SLAPD_DIR/base.ldif" >/dev/null
}

slapd_launch() {
  alive "$SLAPD_DIR/slapd.pid" && return 0
  local t0; t0=$(now)
  free_port "$SLAPD_PORT" "$SLAPD_DIR/slapd.pid"
  /usr/sbin/slapd -F "$SLAPD_DIR/slapd.d" -s 0 \
    -h "ldap://127.0.0.1:$SLAPD_PORT/ ldaps://127.0.0.1:$SLAPD_TLS_PORT/ $(slapd_ldapi)/" \
    >"$SLAPD_DIR/slapd.out" 2>&1 || { cat "$SLAPD_DIR/slapd.out" >&2; die "slapd failed to start"; }
  for _ in $(seq 1 200); do
    if ldapsearch -x -H "ldap://127.0.0.1:$SLAPD_PORT" -b "" -s base -LLL namingContexts >/dev/null 2>&1; then
      log "slapd pid $(cat "$SLAPD_DIR/slapd.pid") on ldap://127.0.0.1:$SLAPD_PORT in $(since "$t0")s"
      return 0
    fi
    sleep 0.05
  done
  die "slapd did not answer within 10 s; see $SLAPD_DIR/slapd.out"
}

slapd_kill() {
  alive "$SLAPD_DIR/slapd.pid" || return 0
  local pid; pid=$(cat "$SLAPD_DIR/slapd.pid")
  kill -CONT "$pid" 2>/dev/null || true   # a test may have paused it
  kill -INT "$pid"
  for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
  kill -KILL "$pid" 2>/dev/null || true
}

slapd_start() {
  ensure_packages slapd
  ensure_tls
  [ -f "$SLAPD_DIR/slapd.d/cn=config.ldif" ] || slapd_init
  slapd_launch
}

# ---------------------------------------------------------------- samba
samba_start() {
  alive "$SAMBA_DIR/samba.pid" && return 0
  [ "$(id -u)" = 0 ] || die "Samba AD DC needs root (ports 389/636)"
  ensure_packages samba
  ensure_tls
  free_port 389 "$SAMBA_DIR/samba.pid"
  free_port 636 "$SAMBA_DIR/samba.pid"
  local t0; t0=$(now)
  if [ ! -f "$SAMBA_DIR/private/sam.ldb" ]; then
    rm -rf "$SAMBA_DIR"; mkdir -p "$SAMBA_DIR"
    # -s /dev/null: do not merge the system /etc/samba/smb.conf
    samba-tool domain provision -s /dev/null --use-rfc2307 --realm="$REALM" --domain="$DOMAIN" \
      --server-role=dc --dns-backend=NONE --adminpass="$SAMBA_ADMINPASS" --targetdir="$SAMBA_DIR" \
      --host-ip=127.0.0.1 --option="interfaces = 127.0.0.1" --option="bind interfaces only = yes" \
      >"$STATE/samba-provision.log" 2>&1 || { tail -30 "$STATE/samba-provision.log" >&2; die "provision failed"; }
    mkdir -p "$SAMBA_DIR/run" "$SAMBA_DIR/log" "$SAMBA_DIR/cache"
    local realm_lower; realm_lower=$(echo "$REALM" | tr '[:upper:]' '[:lower:]')
    fill "$TEMPLATES/smb.conf.in" "DIR=$SAMBA_DIR" "TLSDIR=$TLS_DIR" "REALM=$REALM" "DOMAIN=$DOMAIN" \
      "REALM_LOWER=$realm_lower" "NETBIOS=$(hostname -s | tr '[:lower:]' '[:upper:]' | cut -c1-15)" \
      > "$SAMBA_DIR/etc/smb.conf"
    log "samba provisioned in $(since "$t0")s"
  fi
  setsid samba -i -s "$SAMBA_DIR/etc/smb.conf" >"$SAMBA_DIR/log/samba.out" 2>&1 </dev/null &
  echo $! > "$SAMBA_DIR/samba.pid"
  for _ in $(seq 1 600); do
    if ldapsearch -x -H ldap://127.0.0.1:389 -b "" -s base -LLL defaultNamingContext >/dev/null 2>&1; then
      log "samba pid $(cat "$SAMBA_DIR/samba.pid") answering LDAP, $(since "$t0")s after start"
      return 0
    fi
    alive "$SAMBA_DIR/samba.pid" || { tail -30 "$SAMBA_DIR/log/samba.out" >&2; die "samba exited"; }
    sleep 0.1
  done
  die "samba did not answer within 60 s; see $SAMBA_DIR/log/samba.out"
}

samba_kill() {
  alive "$SAMBA_DIR/samba.pid" || return 0
  local pid; pid=$(cat "$SAMBA_DIR/samba.pid")
  kill -TERM "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------- env
write_env() {
  local out="$STATE/env"
  : > "$out.tmp"
  if alive "$SLAPD_DIR/slapd.pid"; then
    cat >> "$out.tmp" <<EOF
CLOUDPROV_SLAPD_URL=ldap://127.0.0.1:$SLAPD_PORT
CLOUDPROV_SLAPD_LDAPS_URL=ldaps://127.0.0.1:$SLAPD_TLS_PORT
CLOUDPROV_SLAPD_LDAPI_URL=$(slapd_ldapi)
CLOUDPROV_SLAPD_BIND_DN=cn=admin,$SUFFIX
CLOUDPROV_SLAPD_PASSWORD=$ROOTPW
CLOUDPROV_SLAPD_READER_DN=cn=reader,ou=services,$SUFFIX
CLOUDPROV_SLAPD_READER_PASSWORD=$READERPW
CLOUDPROV_SLAPD_BASE=$SUFFIX
CLOUDPROV_SLAPD_CA_FILE=$TLS_DIR/ca.pem
CLOUDPROV_SLAPD_PID_FILE=$SLAPD_DIR/slapd.pid
EOF
  fi
  if alive "$SAMBA_DIR/samba.pid"; then
    cat >> "$out.tmp" <<EOF
CLOUDPROV_SAMBA_URL=ldaps://127.0.0.1:636
CLOUDPROV_SAMBA_LDAP_URL=ldap://127.0.0.1:389
CLOUDPROV_SAMBA_BIND_DN=CN=Administrator,CN=Users,$SAMBA_BASE
CLOUDPROV_SAMBA_PASSWORD=$SAMBA_ADMINPASS
CLOUDPROV_SAMBA_BASE=$SAMBA_BASE
CLOUDPROV_SAMBA_CA_FILE=$TLS_DIR/ca.pem
EOF
  fi
  echo "CLOUDPROV_SERVERS_SCRIPT=$REPO/scripts/servers.sh" >> "$out.tmp"
  mv "$out.tmp" "$out"
}

which_servers() { case ${1:-all} in slapd) echo slapd;; samba) echo samba;; all) echo slapd samba;;
  *) die "unknown server '$1' (slapd|samba)";; esac; }

cmd=${1:-}; shift || true
mkdir -p "$STATE"
case $cmd in
  start)
    for s in $(which_servers "${1:-all}"); do "${s}_start"; done
    write_env ;;
  stop)
    for s in $(which_servers "${1:-all}"); do
      "${s}_kill"
      case $s in slapd) rm -rf "$SLAPD_DIR";; samba) rm -rf "$SAMBA_DIR" "$STATE/samba-provision.log";; esac
    done
    write_env
    [ -d "$SLAPD_DIR" ] || [ -d "$SAMBA_DIR" ] || rm -rf "$STATE" ;;
  restart)
    [ "${1:-}" = slapd ] || die "restart supports slapd only"
    slapd_kill; slapd_launch; write_env ;;
  status)
    rc=0
    for s in $(which_servers "${1:-all}"); do
      pidfile="$SLAPD_DIR/slapd.pid"; [ "$s" = samba ] && pidfile="$SAMBA_DIR/samba.pid"
      if alive "$pidfile"; then echo "$s: running pid $(cat "$pidfile")"; else echo "$s: stopped"; rc=1; fi
    done
    exit $rc ;;
  env)
    write_env
    while IFS= read -r line; do printf "export %s='%s'\n" "${line%%=*}" "${line#*=}"; done < "$STATE/env" ;;
  load-slapd)
    [ -f "${1:-}" ] || die "usage: $0 load-slapd FILE.ldif"
    slapd_start; slapd_kill
    t0=$(now)
    /usr/sbin/slapadd -F "$SLAPD_DIR/slapd.d" -b "$SUFFIX" -q -l "$1" >"$SLAPD_DIR/slapadd.out" 2>&1 \
      || { cat "$SLAPD_DIR/slapadd.out" >&2; die "slapadd failed"; }
    log "slapadd $(grep -c '^dn:' "$1") entries in $(since "$t0")s"
    slapd_launch; write_env ;;
  *) sed -n '2,17p' "$0"; exit 2 ;;
esac
