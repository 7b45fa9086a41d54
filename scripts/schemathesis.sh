#!/usr/bin/env bash
# Runs schemathesis (property-based API testing from the OpenAPI document) against a real
# ingest-api: its own database and AMQP prefix, removed again at the end. Checks that no
# generated request ends in a 5xx and that every response matches the document (status codes,
# content types, headers, schemas), that requests the schema forbids are refused, and that
# other methods get a 405. Exits non-zero on any failure.
#
# Every check runs but positive_data_acceptance ("a schema-valid request is accepted"): the
# API refuses, per item, what JSON Schema cannot say (a timestamp in the future or older than
# MAX_EVENT_AGE, `interaction` and `action` together or neither, actions of another rating
# profile, `rate` without a rating, blank or control-character strings), so schema-valid
# events are rightly refused with a 400 that names the field.
#
#   scripts/schemathesis.sh            # or: make schemathesis
#   SCHEMATHESIS_MAX_EXAMPLES=200 SCHEMATHESIS_MAX_TIME=300 scripts/schemathesis.sh
set -euo pipefail

SCHEMATHESIS_VERSION=${SCHEMATHESIS_VERSION:-4.32.5}
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-60}
MAX_TIME=${SCHEMATHESIS_MAX_TIME:-90}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
BIN=$TARGET/debug/ingest-api

log() { printf '[schemathesis] %s\n' "$*" >&2; }

if ! schemathesis --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  log "installing schemathesis $SCHEMATHESIS_VERSION"
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

# Always build: cargo is quick when nothing changed, and a stale binary would test old code.
(cd "$ROOT" && cargo build --quiet --locked -p ingest-api)

ID=st_$(date +%s)_$$
DB=$ID
PREFIX=$ID
WORK=$(mktemp -d)
PID=
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
KEY=schemathesis-key-0123456789

cleanup() {
  local status=$?
  if [ -n "$PID" ]; then
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 ||
    log "could not drop database $DB"
  if command -v rabbitmqctl >/dev/null; then
    for queue in $(rabbitmqctl list_queues name --quiet --no-table-headers 2>/dev/null | grep "^$PREFIX\." || true); do
      rabbitmqctl delete_queue "$queue" >/dev/null 2>&1 || log "could not delete queue $queue"
    done
    for exchange in $(rabbitmqctl list_exchanges name --quiet --no-table-headers 2>/dev/null | grep "^$PREFIX\." || true); do
      rabbitmqctl eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$exchange\">>), false, <<\"schemathesis\">>)." >/dev/null 2>&1 ||
        log "could not delete exchange $exchange"
    done
  fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT

psql -q "$PG_URL/postgres" -c "CREATE DATABASE \"$DB\"" >/dev/null

# In a temporary directory, so no .env is read: everything the app sees is set here.
(
  cd "$WORK"
  exec env -i PATH="$PATH" HOME="$HOME" \
    DATABASE_URL="$PG_URL/$DB" AMQP_URL="$AMQP_URL" AMQP_PREFIX="$PREFIX" \
    API_KEYS="acme:$KEY" INGEST_ADDR="127.0.0.1:$PORT" INGEST_ADMIN_ADDR="127.0.0.1:0" HTTP_WORKERS=2 \
    MAX_EVENT_AGE=0 RATE_LIMIT_EVENTS_PER_SEC=0 RATING_MAP_FILE= RUST_LOG=warn \
    "$BIN"
) >"$WORK/ingest-api.log" 2>&1 &
PID=$!

for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$PORT/livez" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$PID" 2>/dev/null; then
    log "ingest-api did not start:"
    cat "$WORK/ingest-api.log" >&2
    exit 1
  fi
  sleep 0.1
done

log "ingest-api on port $PORT; $MAX_EXAMPLES examples per operation, at most ${MAX_TIME}s"
START=$SECONDS
set +e
cd "$WORK" # schemathesis keeps a cache in .schemathesis/ of its working directory
schemathesis run "http://127.0.0.1:$PORT/openapi.json" \
  --header "X-API-Key: $KEY" \
  --checks all \
  --exclude-checks positive_data_acceptance \
  --max-examples "$MAX_EXAMPLES" \
  --max-time "$MAX_TIME" \
  --workers 1 \
  --seed "${SCHEMATHESIS_SEED:-1}" \
  --generation-database none \
  --suppress-health-check too_slow \
  --no-color \
  --report ndjson --report-dir "$WORK/report" | tee "$WORK/output.txt"
STATUS=${PIPESTATUS[0]}
set -e

if ! kill -0 "$PID" 2>/dev/null; then
  log "ingest-api died during the run:"
  tail -n 50 "$WORK/ingest-api.log" >&2
  STATUS=1
fi
if grep -q 'panicked' "$WORK/ingest-api.log"; then
  log "ingest-api panicked:"
  grep -A 5 'panicked' "$WORK/ingest-api.log" | head -n 40 >&2
  STATUS=1
fi
if grep -q ' ERROR ' "$WORK/ingest-api.log"; then
  # actix logs requests its HTTP parser refuses (schemathesis sends a NUL in a header) here.
  log "ingest-api logged at ERROR:"
  grep ' ERROR ' "$WORK/ingest-api.log" | sort | uniq -c | head -n 20 >&2
fi

PASSED=$(grep -oE '[0-9]+ passed' "$WORK/output.txt" | tail -n 1 | grep -oE '[0-9]+' || echo 0)
FAILED=$(grep -oE '[0-9]+ failed' "$WORK/output.txt" | tail -n 1 | grep -oE '[0-9]+' || echo 0)
echo "schemathesis: ${PASSED} passed, ${FAILED} failed ($((SECONDS - START)) s, schemathesis $SCHEMATHESIS_VERSION)"
exit "$STATUS"
