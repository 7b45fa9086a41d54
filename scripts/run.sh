#!/usr/bin/env bash
# `make run`: the whole pipeline on this machine — PostgreSQL and RabbitMQ (started if
# installed and stopped), the database, migrations, then ncanto-mock, ingest-api, forwarder
# and the web SDK's example page with the settings of `.env` (copied from `.env.example` when
# missing). Logs are prefixed by process. Ctrl-C stops them all cleanly and leaves no process
# behind.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${RUN_PROFILE:-debug}   # RUN_PROFILE=release for a release build
log() { printf '\033[1m[run]\033[0m %s\n' "$*" >&2; }

scripts/ensure-services.sh

if [ ! -f .env ]; then
  cp .env.example .env
  log "created .env from .env.example"
fi
set -a
# shellcheck disable=SC1091
. ./.env
set +a

# The database named in DATABASE_URL, created if missing (through the server's `postgres` db).
db_name=${DATABASE_URL##*/}
db_name=${db_name%%\?*}
admin_url="${DATABASE_URL%/*}/postgres"
if ! command -v psql >/dev/null; then
  log "psql not found: install the PostgreSQL client (sudo apt-get install -y postgresql-client)"
  exit 1
fi
if [ "$(psql "$admin_url" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db_name'")" != "1" ]; then
  psql "$admin_url" -qc "CREATE DATABASE \"$db_name\""
  log "created database $db_name"
fi

log "building ($PROFILE)"
if [ "$PROFILE" = release ]; then
  cargo build --release --locked --bins
else
  cargo build --locked --bins
fi
bin="${CARGO_TARGET_DIR:-target}/$PROFILE"

"$bin/ingest-api" migrate

pids=()
stopping=
stop_all() {
  trap - INT TERM EXIT
  stopping=1
  if [ ${#pids[@]} -gt 0 ]; then
    log "stopping"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  log "stopped"
}
trap stop_all INT TERM EXIT

start() { # name command...
  local name=$1
  shift
  # The binary runs in the background; its output goes through sed for the prefix. $! is
  # the binary's pid (process substitution), so signals reach it, not a pipe stage.
  # The prefixer ignores Ctrl-C: it ends with its input, so shutdown logs still show.
  "$@" > >(trap '' INT TERM; exec sed -u "s/^/[$name] /") 2>&1 &
  pids+=($!)
}

# The web SDK's example page, served from another origin than ingest-api's (as a site would
# be), which CORS_ALLOWED_ORIGINS then allows for this run. Skipped without Node.js.
example_addr=${EXAMPLE_ADDR:-127.0.0.1:8000}
example=
if [ -n "$example_addr" ] && command -v node >/dev/null && command -v npm >/dev/null; then
  if make -s sdk >/dev/null; then
    example=1
    export CORS_ALLOWED_ORIGINS="${CORS_ALLOWED_ORIGINS:+$CORS_ALLOWED_ORIGINS,}http://$example_addr"
  else
    log "the web SDK did not build (see above): no example page this run"
  fi
else
  log "Node.js not found: no web SDK example page this run"
fi

start ncanto-mock "$bin/ncanto-mock"
start ingest-api "$bin/ingest-api"
start forwarder "$bin/forwarder"
if [ -n "$example" ]; then
  start example node sdk/web/scripts/serve.mjs "$example_addr"
fi

port_of() { echo "${1##*:}"; }
ingest_port=$(port_of "${INGEST_ADDR:-0.0.0.0:8080}")
admin_port=$(port_of "${FORWARDER_ADMIN_ADDR:-0.0.0.0:8081}")
ingest_admin_port=$(port_of "${INGEST_ADMIN_ADDR:-0.0.0.0:8082}")
mock_port=$(port_of "${NCANTO_MOCK_ADDR:-127.0.0.1:8090}")

ready() { curl -fsS -o /dev/null "$1" 2>/dev/null; }
deadline=$((SECONDS + 60))
until ready "http://127.0.0.1:$ingest_port/readyz" && ready "http://127.0.0.1:$admin_port/readyz" \
    && ready "http://127.0.0.1:$mock_port/health" \
    && { [ -z "$example" ] || ready "http://$example_addr/examples/video.html"; }; do
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "a process exited during start-up; see its log lines above (is a port already in use?)"
      exit 1
    fi
  done
  if ((SECONDS >= deadline)); then
    log "not ready after 60 s; see the log lines above"
    exit 1
  fi
  sleep 0.5
done

key=${API_KEYS#*:}
key=${key%%,*}
cat >&2 <<TXT

  Interaction Logger is running.
    API           http://127.0.0.1:$ingest_port/api/v1/logs
    API docs      http://127.0.0.1:$ingest_port/docs
    health        http://127.0.0.1:$ingest_port/health
    metrics       http://127.0.0.1:$ingest_admin_port/metrics
    forwarder     http://127.0.0.1:$admin_port/health
    Ncanto (mock) http://127.0.0.1:$mock_port/stats

  Send the client documentation's batch example as it is written (paste all six lines):

curl -s http://127.0.0.1:$ingest_port/api/v1/logs -H 'Content-Type: application/json' -H 'X-API-Key: $key' --data-binary @- <<EOF
[{"timestamp": "2025-07-09T09:30:00Z", "subscriber": "citizen_user_12345", "assetId": "citizen_article_67890",
  "interaction": "select", "ratingEquivalent": 0.25, "setting": {"device": "web"}},
 {"timestamp": "2025-07-09T09:31:00Z", "subscriber": "citizen_user_12345", "assetId": "citizen_article_67890",
  "interaction": "share", "ratingEquivalent": 0.75, "setting": {"device": "web"}}]
EOF

  Then see it arrive at the mock: curl -s http://127.0.0.1:$mock_port/stats
TXT
if [ -n "$example" ]; then
  cat >&2 <<TXT

  A web page sending events with the SDK (impressions, clicks, play, like, add to watchlist):
    http://$example_addr/examples/video.html?endpoint=http://127.0.0.1:$ingest_port&key=$key
TXT
fi
cat >&2 <<TXT

  Ctrl-C stops everything.

TXT
# Runs until Ctrl-C, or until one of the processes dies (then the others are stopped too).
wait -n "${pids[@]}" || true
if [ -z "$stopping" ]; then
  log "a process exited; stopping the others"
  exit 1
fi
