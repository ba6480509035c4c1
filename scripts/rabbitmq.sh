#!/usr/bin/env bash
# Make sure RabbitMQ answers on 127.0.0.1:5672 and the test vhost exists with guest's permissions.
# Usage: scripts/rabbitmq.sh [vhost]      (default vhost: cloudprov-test). CI calls it before the tests.
set -euo pipefail

VHOST="${1:-${CLOUDPROV_RABBITMQ_VHOST:-cloudprov-test}}"
USER_NAME="${CLOUDPROV_RABBITMQ_USER:-guest}"

if ! command -v rabbitmqctl >/dev/null 2>&1; then
    echo "rabbitmq.sh: rabbitmqctl not found (apt-get install rabbitmq-server)" >&2
    exit 1
fi

if ! rabbitmqctl -q status >/dev/null 2>&1; then
    echo "rabbitmq.sh: starting rabbitmq-server" >&2
    rabbitmq-server -detached
fi
rabbitmqctl -q await_startup --timeout 60 >/dev/null 2>&1 || {
    # the node may run with the app stopped (rabbitmqctl stop_app by a test that died midway)
    rabbitmqctl -q start_app >/dev/null
    rabbitmqctl -q await_startup --timeout 60 >/dev/null
}
if ! rabbitmqctl -q list_feature_flags name state 2>/dev/null | grep -q "quorum_queue[[:space:]]*enabled"; then
    rabbitmqctl -q enable_feature_flag quorum_queue >/dev/null
fi
if ! rabbitmqctl -q list_vhosts name | grep -qx "$VHOST"; then
    rabbitmqctl -q add_vhost "$VHOST" >/dev/null
fi
rabbitmqctl -q set_permissions -p "$VHOST" "$USER_NAME" ".*" ".*" ".*" >/dev/null
echo "rabbitmq.sh: RabbitMQ ready, vhost $VHOST for $USER_NAME"
