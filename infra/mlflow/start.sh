#!/usr/bin/env bash
# Start:  MLFLOW_AUTH_ADMIN_PASSWORD='<12+ characters>' infra/mlflow/start.sh
#
# MLflow tracking server for sweeps (DESIGN §7): basic auth (`--app-name basic-auth`), an SQLite
# backend by default (PostgreSQL via MLFLOW_BACKEND_STORE_URI) and a proxied artifact store, so
# clients need only the server's URL and a user name and password, never bucket credentials.
# Listens on 127.0.0.1 unless MLFLOW_HOST says otherwise. Clients authenticate with
# MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD.
#
# Settings (environment; only the admin password is needed, and only on the first start):
#   MLFLOW_AUTH_ADMIN_PASSWORD   creates the admin user on first start (MLflow's own variable)
#   MLFLOW_AUTH_ADMIN_USERNAME   admin user name (default: admin)
#   MLFLOW_STATE_DIR             SQLite files, local artifacts, Flask key (default: ./mlflow-server)
#   MLFLOW_BACKEND_STORE_URI     runs and metrics (default: sqlite:///$MLFLOW_STATE_DIR/mlflow.db),
#                                e.g. postgresql://mlflow@db-host:5432/mlflow with PGPASSWORD set
#   MLFLOW_AUTH_DB_URI           users and permissions (default: sqlite:///$STATE/basic_auth.db)
#   MLFLOW_ARTIFACTS_DESTINATION artifacts (default: $MLFLOW_STATE_DIR/artifacts; s3://…, gs://…)
#   MLFLOW_HOST, MLFLOW_PORT     default 127.0.0.1 and 5000; 0.0.0.0 on a cluster head, where
#                                the cloud firewall keeps the port private to the cluster
#   MLFLOW_ALLOWED_HOSTS         Host headers to accept, comma-separated; replaces MLflow's
#                                default (localhost and private IP addresses)
#   MLFLOW_WORKERS               server processes (default: 2)
#   PYTHON                       interpreter with mlflow[auth] installed (default: python3)
set -euo pipefail

state="${MLFLOW_STATE_DIR:-./mlflow-server}"
mkdir -p "$state"
state="$(cd "$state" && pwd)"
artifacts="${MLFLOW_ARTIFACTS_DESTINATION:-$state/artifacts}"
case "$artifacts" in *://*) ;; *) mkdir -p "$artifacts" ;; esac

# Users and permissions live in their own store; MLflow reads this file via MLFLOW_AUTH_CONFIG_PATH.
cat > "$state/basic_auth.ini" <<INI
[mlflow]
default_permission = READ
database_uri = ${MLFLOW_AUTH_DB_URI:-sqlite:///$state/basic_auth.db}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
export MLFLOW_AUTH_CONFIG_PATH="$state/basic_auth.ini"

# CSRF protection needs one static key shared by all server processes: keep one beside the data.
if [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]; then
  key_file="$state/flask_secret_key"
  if [ ! -s "$key_file" ]; then
    (umask 077 && "${PYTHON:-python3}" -c 'import secrets; print(secrets.token_hex(32))' > "$key_file")
  fi
  MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat "$key_file")"
  export MLFLOW_FLASK_SERVER_SECRET_KEY
fi

args=(
  --app-name basic-auth
  --backend-store-uri "${MLFLOW_BACKEND_STORE_URI:-sqlite:///$state/mlflow.db}"
  --artifacts-destination "$artifacts"
  --serve-artifacts
  --host "${MLFLOW_HOST:-127.0.0.1}"
  --port "${MLFLOW_PORT:-5000}"
  --workers "${MLFLOW_WORKERS:-2}"
)
if [ -n "${MLFLOW_ALLOWED_HOSTS:-}" ]; then
  args+=(--allowed-hosts "$MLFLOW_ALLOWED_HOSTS")
fi
exec "${PYTHON:-python3}" -m mlflow server "${args[@]}"
