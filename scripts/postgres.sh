#!/usr/bin/env bash
# Start a PostgreSQL server for the store tests, on loopback only, and print its URL.
# Idempotent: installs Debian's postgresql if missing, starts the default cluster, and
# creates the test role and database once.
set -euo pipefail

if ! command -v pg_ctlcluster >/dev/null; then
  echo "postgres: installing Debian's postgresql" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
VERSION="$(ls /etc/postgresql | sort -V | tail -1)"
if ! pg_lsclusters -h | grep -q "^$VERSION main"; then
  pg_createcluster "$VERSION" main >&2
fi
CONF="/etc/postgresql/$VERSION/main/postgresql.conf"
grep -q "^listen_addresses = '127.0.0.1'" "$CONF" || echo "listen_addresses = '127.0.0.1'" >> "$CONF"
# pg_ctlcluster may chat on stdout ("Removed stale pid file."); only the URL goes there.
pg_ctlcluster "$VERSION" main status >/dev/null 2>&1 || pg_ctlcluster "$VERSION" main start >&2
PORT="$(pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" {print $3}')"

as_postgres() { su postgres -s /bin/sh -c "psql -p $PORT -qtA -c \"$1\""; }
[ "$(as_postgres "SELECT 1 FROM pg_roles WHERE rolname = 'facesearch'")" = 1 ] ||
  as_postgres "CREATE ROLE facesearch LOGIN PASSWORD 'facesearch'" >/dev/null
# CREATEDB: tests that run several processes against PostgreSQL each create a database of their own.
[ "$(as_postgres "SELECT rolcreatedb FROM pg_roles WHERE rolname = 'facesearch'")" = t ] ||
  as_postgres "ALTER ROLE facesearch CREATEDB" >/dev/null
[ "$(as_postgres "SELECT 1 FROM pg_database WHERE datname = 'facesearch_test'")" = 1 ] ||
  as_postgres "CREATE DATABASE facesearch_test OWNER facesearch" >/dev/null
echo "postgresql+psycopg://facesearch:facesearch@127.0.0.1:$PORT/facesearch_test"
