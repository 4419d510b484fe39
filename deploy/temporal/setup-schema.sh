#!/bin/sh
# One-shot step run from temporalio/admin-tools before the Temporal server starts (service
# `temporal-schema` in docker-compose.yml): creates Temporal's two PostgreSQL databases and brings
# both schemas up to the version this admin-tools image ships.
#
# Safe on every `docker compose up`: `create` tolerates an existing database, `setup-schema -v 0.0`
# leaves a newer recorded version alone, and `update-schema` applies only missing versions. Bumping
# the server and admin-tools tags together therefore upgrades the schema in place (one Temporal
# minor version at a time, as Temporal's upgrade guide requires).
#
# Same steps as temporalio/samples-server compose/scripts/setup-postgres.sh.
set -eu

: "${POSTGRES_SEEDS:?POSTGRES_SEEDS (database host) is required}"
: "${POSTGRES_USER:?POSTGRES_USER is required}"
: "${SQL_PASSWORD:?SQL_PASSWORD is required}"
port="${DB_PORT:-5432}"
schema_root=/etc/temporal/schema/postgresql/v12

sql_tool() {
    temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$port" -u "$POSTGRES_USER" "$@"
}

setup_database() {
    database=$1
    versioned_schema=$2
    echo "Temporal schema: database $database from $versioned_schema"
    sql_tool --db "$database" create
    sql_tool --db "$database" setup-schema -v 0.0
    sql_tool --db "$database" update-schema -d "$versioned_schema"
}

setup_database "${DBNAME:-temporal}" "$schema_root/temporal/versioned"
setup_database "${VISIBILITY_DBNAME:-temporal_visibility}" "$schema_root/visibility/versioned"
echo "Temporal schema: up to date"
