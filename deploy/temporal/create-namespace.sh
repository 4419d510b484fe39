#!/bin/sh
# One-shot step run from temporalio/admin-tools once the Temporal server is healthy (service
# `temporal-namespace` in docker-compose.yml): creates the namespace the app uses, which the
# plain temporalio/server image does not do, and waits until the frontend serves it. The app's
# search attributes are then registered by `lifecycle temporal-setup` (service `temporal-setup`).
#
# Safe on every `docker compose up`: an existing namespace is left as it is.
#
# Environment:
#   TEMPORAL_ADDRESS     host:port of the frontend
#   NAMESPACE            namespace to create (the app's LIFECYCLE_TEMPORAL_NAMESPACE)
#   NAMESPACE_RETENTION  retention of closed workflows for a new namespace (default 30d)
set -eu

: "${TEMPORAL_ADDRESS:?TEMPORAL_ADDRESS is required}"
: "${NAMESPACE:?NAMESPACE is required}"
retention="${NAMESPACE_RETENTION:-30d}"

# Like temporalio/samples-server compose/scripts/create-namespace.sh: dial the resolved IP, as
# the CLI has been seen to fail on the container host name.
host=${TEMPORAL_ADDRESS%:*}
port=${TEMPORAL_ADDRESS##*:}
ip=$(getent ahosts "$host" | awk '/STREAM/ { print $1; exit }')
address="${ip:-$host}:$port"

temporal_cli() {
    temporal "$@" --address "$address"
}

# retry WHAT COMMAND...: run COMMAND until it succeeds, 60 tries 2 seconds apart.
retry() {
    what=$1
    shift
    tries=0
    until "$@" >/dev/null 2>&1; do
        tries=$((tries + 1))
        if [ "$tries" -ge 60 ]; then
            echo "$what: still failing after $tries tries" >&2
            "$@"
            exit 1
        fi
        sleep 2
    done
}

retry "Temporal at $TEMPORAL_ADDRESS serving" temporal_cli operator cluster health

if temporal_cli operator namespace describe --namespace "$NAMESPACE" >/dev/null 2>&1; then
    echo "namespace $NAMESPACE: exists"
else
    temporal_cli operator namespace create --namespace "$NAMESPACE" --retention "$retention"
    echo "namespace $NAMESPACE: created (retention $retention)"
fi

# A new namespace reaches the frontend's namespace cache a few seconds after it is created;
# search attributes can be listed and added only from then on.
retry "namespace $NAMESPACE served" \
    temporal_cli operator search-attribute list --namespace "$NAMESPACE"
echo "namespace $NAMESPACE: ready"
