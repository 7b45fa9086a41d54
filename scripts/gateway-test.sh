#!/usr/bin/env bash
# `make gateway-test`: the nginx gateway configuration of deploy/nginx/, tested for real.
#
# Starts a real ingest-api on this machine's PostgreSQL and RabbitMQ (its own database
# `gateway_<id>` and AMQP prefix `gateway-<id>`), renders deploy/nginx/gateway.conf.template
# for it, runs Debian's nginx with it in the foreground (its own prefix, pid, logs and temp
# dirs in a temp dir, a free loopback port), sends requests through the gateway and checks
# what comes back. Ends with `gateway: N passed, M failed`, removes everything it made
# (processes, database, queues, exchanges) and exits non-zero when a check failed.
#
# Installs nginx with apt-get when it is missing. Uses the ingest-api binary of the target dir
# (INGEST_API_BIN overrides), building it when missing. Bounded: ~15 s when it passes.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

log() { printf '[gateway] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

PG_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
AMQP_URL=${TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
INGEST_API_BIN=${INGEST_API_BIN:-$TARGET_DIR/debug/ingest-api}
API_KEY=gateway-test-key

# --- tools ---------------------------------------------------------------------------------------
if ! command -v nginx >/dev/null; then
  [ "$(id -u)" = 0 ] || die "nginx is not installed: sudo apt-get install -y nginx"
  log "installing nginx (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq nginx >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq nginx >/dev/null; }
fi
nginx_bin=$(command -v nginx)
for tool in curl psql python3 envsubst; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done

scripts/ensure-services.sh

if [ ! -x "$INGEST_API_BIN" ]; then
  log "building ingest-api (no binary at $INGEST_API_BIN)"
  cargo build --locked -p ingest-api
fi

# --- everything this run makes, and its removal ----------------------------------------------------
id=$(python3 -c 'import uuid; print(uuid.uuid4().hex[:12])')
db="gateway_$id"
prefix="gateway-$id"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gateway-test.XXXXXX")
# nginx's workers run as `nobody` when the master is root: they must reach the temp dirs.
chmod 755 "$tmp"
api_pid=
nginx_pid=

stop_pid() { # pid: SIGTERM, then SIGKILL after 10 s
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

delete_exchange() { # name: through the management API when it is enabled, else rabbitmqctl eval
  local name=$1
  if curl -fsS -o /dev/null -u guest:guest -X DELETE --max-time 5 \
      "http://127.0.0.1:15672/api/exchanges/%2f/$name" </dev/null 2>/dev/null; then
    return 0
  fi
  rabbitmqctl -q eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$name\">>), false, <<\"gateway-test\">>)." \
    </dev/null >/dev/null 2>&1 || log "could not delete exchange $name (delete it by hand)"
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  [ -n "$nginx_pid" ] && stop_pid "$nginx_pid"
  [ -n "$api_pid" ] && stop_pid "$api_pid"
  psql "$PG_URL" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 \
    || log "could not drop database $db"
  if command -v rabbitmqctl >/dev/null; then
    local name
    while read -r name; do
      [ -n "$name" ] && { rabbitmqctl -q delete_queue "$name" </dev/null >/dev/null 2>&1 \
        || log "could not delete queue $name"; }
    done < <(rabbitmqctl -q list_queues --no-table-headers name 2>/dev/null | grep -F "$prefix." || true)
    while read -r name; do
      [ -n "$name" ] && delete_exchange "$name"
    done < <(rabbitmqctl -q list_exchanges --no-table-headers name 2>/dev/null | grep -F "$prefix." || true)
  fi
  if [ "$status" != 0 ] && [ -z "${GATEWAY_TEST_DONE:-}" ]; then
    log "failed before the checks ended; ingest-api's log:"
    tail -n 20 "$tmp/ingest-api.log" 2>/dev/null >&2 || true
    log "nginx's error log:"
    tail -n 20 "$tmp/error.log" 2>/dev/null >&2 || true
  fi
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() { # url seconds pid: until the URL answers 2xx, the process dies, or time runs out
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; do
    kill -0 "$3" 2>/dev/null || return 1
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# --- ingest-api ----------------------------------------------------------------------------------------
psql "$PG_URL" -qc "CREATE DATABASE \"$db\"" >/dev/null
api_port=$(free_port)
log "ingest-api on 127.0.0.1:$api_port (database $db, AMQP prefix $prefix)"
# Started from the temp dir, so a developer's .env in the repository does not leak in.
(
  cd "$tmp"
  exec env DATABASE_URL="${PG_URL%/*}/$db" AMQP_URL="$AMQP_URL" AMQP_PREFIX="$prefix" \
    INGEST_ADDR="127.0.0.1:$api_port" INGEST_ADMIN_ADDR="127.0.0.1:$(free_port)" API_KEYS="gateway:$API_KEY" HTTP_WORKERS=2 \
    SHUTDOWN_TIMEOUT=5s LOG_FORMAT=text RUST_LOG=warn "$INGEST_API_BIN"
) >"$tmp/ingest-api.log" 2>&1 &
api_pid=$!
wait_http "http://127.0.0.1:$api_port/readyz" 60 "$api_pid" || die "ingest-api did not become ready"

# --- nginx with deploy/nginx/gateway.conf.template ------------------------------------------------------
gw_port=$(free_port)
mkdir -p "$tmp/conf"
GATEWAY_LISTEN="127.0.0.1:$gw_port" GATEWAY_UPSTREAM="127.0.0.1:$api_port" \
  GATEWAY_RATE_LIMIT=5r/s GATEWAY_RATE_BURST=20 \
  envsubst '${GATEWAY_LISTEN} ${GATEWAY_UPSTREAM} ${GATEWAY_RATE_LIMIT} ${GATEWAY_RATE_BURST}' \
  <deploy/nginx/gateway.conf.template >"$tmp/conf/gateway.conf"
# The main context is this harness's (what the nginx image's nginx.conf is in compose): its own
# pid, error log and temp dirs, in the foreground, one worker.
cat >"$tmp/conf/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/error.log warn;
events { worker_connections 256; }
http {
  client_body_temp_path $tmp/client_body;
  proxy_temp_path $tmp/proxy;
  fastcgi_temp_path $tmp/fastcgi;
  uwsgi_temp_path $tmp/uwsgi;
  scgi_temp_path $tmp/scgi;
  include $tmp/conf/gateway.conf;
}
CONF
nginx_args=(-p "$tmp/" -c "$tmp/conf/nginx.conf" -e "$tmp/error.log")
"$nginx_bin" -t -q "${nginx_args[@]}" || die "nginx refuses the configuration (above)"
"$nginx_bin" "${nginx_args[@]}" >"$tmp/access.log" 2>>"$tmp/error.log" &
nginx_pid=$!
gw="http://127.0.0.1:$gw_port"
wait_http "$gw/livez" 15 "$nginx_pid" || die "nginx did not start: $(cat "$tmp/error.log")"
log "nginx $("$nginx_bin" -v 2>&1 | sed 's/.*nginx\///') on $gw"

# --- checks ------------------------------------------------------------------------------------------------
passed=0
failed=0
check() { # name condition-exit-status detail
  if [ "$2" = 0 ]; then
    passed=$((passed + 1))
    printf '  ok    %s\n' "$1"
  else
    failed=$((failed + 1))
    printf '  FAIL  %s: %s\n' "$1" "$3"
  fi
}
# request: method path [curl args...] -> $code, $headers (lowercased names), $body
request() {
  local method=$1 path=$2
  shift 2
  : >"$tmp/headers"
  code=$(curl -sS --max-time 15 -X "$method" -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}' \
    "$@" "$gw$path" 2>"$tmp/curl.err") || code="curl-error: $(cat "$tmp/curl.err")"
  headers=$(tr -d '\r' <"$tmp/headers" | tr 'A-Z' 'a-z')
  body=$(tr -d '\000' <"$tmp/body" 2>/dev/null || true)
}
header() { printf '%s\n' "$headers" | sed -n "s/^$1: //p" | tail -n 1; }
json() { # python expression on `j` (the body as JSON): prints the result, fails when falsy
  python3 -c 'import json, sys
j = json.loads(sys.argv[1])
r = eval(sys.argv[2])
print(r)
sys.exit(0 if r else 1)' "$body" "$1" >/dev/null 2>&1
}

now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
batch='[{"timestamp": "'$now'", "subscriber": "gw_user_1", "assetId": "gw_article_1",
  "interaction": "select", "ratingEquivalent": 0.25, "setting": {"device": "web"}},
 {"timestamp": "'$now'", "subscriber": "gw_user_1", "assetId": "gw_article_1",
  "interaction": "share", "setting": {"device": "android_app"}}]'
json_headers=(-H 'Content-Type: application/json' -H "X-API-Key: $API_KEY")

echo "gateway checks (nginx on $gw -> ingest-api on 127.0.0.1:$api_port):"

request POST /api/v1/logs "${json_headers[@]}" --data-binary "$batch"
check "valid batch: 202 with the API's JSON body" "$([ "$code" = 202 ] && json 'j["status"] == "success" and j["count"] == 2' && echo 0 || echo 1)" "got $code: $body"

rid=$(header x-request-id)
check "X-Request-Id generated by the gateway" "$([[ "$rid" =~ ^[0-9a-f]{32}$ ]] && echo 0 || echo 1)" "X-Request-Id: '$rid'"

request GET /livez -H 'X-Request-Id: client-trace-42'
check "a client's X-Request-Id is kept" "$([ "$code" = 200 ] && [ "$(header x-request-id)" = client-trace-42 ] && echo 0 || echo 1)" "got $code, X-Request-Id: '$(header x-request-id)'"

request GET /health
check "/health passes through (200, database and broker up)" "$([ "$code" = 200 ] && json 'j["status"] == "ok" and j["database"] is True and j["rabbitmq"] is True' && echo 0 || echo 1)" "got $code: $body"

request POST /api/v1/logs -H 'Content-Type: application/json' --data-binary "$batch"
check "missing API key: the API's 401 passes through" "$([ "$code" = 401 ] && json '"API key" in j["message"]' && echo 0 || echo 1)" "got $code: $body"

python3 -c 'import sys; sys.stdout.write("[" + " " * (2 * 1024 * 1024) + "]")' >"$tmp/big.json"
request POST /api/v1/logs "${json_headers[@]}" --data-binary "@$tmp/big.json"
check "2 MiB body: 413 from nginx, in the API's error shape" "$([ "$code" = 413 ] && json 'j["status"] == "error" and "gateway" in j["message"]' && [ -n "$(header x-request-id)" ] && echo 0 || echo 1)" "got $code: $body"

python3 -c 'import sys; sys.stdout.write("[" + " " * (1024 * 1024 + 16 * 1024) + "]")' >"$tmp/near.json"
request POST /api/v1/logs "${json_headers[@]}" --data-binary "@$tmp/near.json"
check "1 MiB + 16 KiB body: reaches the API, whose own 413 passes through" "$([ "$code" = 413 ] && json 'j["status"] == "error" and "gateway" not in j["message"]' && echo 0 || echo 1)" "got $code: $body"

printf '%s' "$batch" | gzip >"$tmp/batch.json.gz"
request POST /api/v1/logs "${json_headers[@]}" -H 'Content-Encoding: gzip' --data-binary "@$tmp/batch.json.gz"
check "gzip request body passes through untouched (202)" "$([ "$code" = 202 ] && json 'j["count"] == 2' && echo 0 || echo 1)" "got $code: $body"

request GET /openapi.json -H 'Accept-Encoding: gzip'
gunzip_ok=$(python3 -c 'import gzip, json, sys; json.loads(gzip.open(sys.argv[1]).read()); print(0)' "$tmp/body" 2>/dev/null || echo 1)
check "responses are gzip-compressed for clients that accept it" "$([ "$code" = 200 ] && [ "$(header content-encoding)" = gzip ] && [ "$gunzip_ok" = 0 ] && echo 0 || echo 1)" "got $code, Content-Encoding: '$(header content-encoding)'"

request GET /metrics
check "/metrics is not exposed through the gateway (404)" "$([ "$code" = 404 ] && echo 0 || echo 1)" "got $code"

# The access log: the line of the request sent with the client's id is JSON and names the upstream.
log_ok=$(python3 - "$tmp/access.log" "$api_port" <<'PY' 2>&1 || true
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
hits = [l for l in lines if l["request_id"] == "client-trace-42"]
assert hits, f"no line with request_id client-trace-42 among {len(lines)}"
l = hits[0]
assert l["status"] == 200 and l["uri"] == "/livez", l
assert l["upstream_addr"].endswith(":" + sys.argv[2]), l
assert all(len(x["request_id"]) > 0 for x in lines)
print("ok")
PY
)
check "JSON access log, one object per line, with request_id and upstream" "$([ "$log_ok" = ok ] && echo 0 || echo 1)" "$log_ok"

# 80 requests in a row on one connection: 5 r/s with a burst of 20 turns most of them into 429s,
# even on a loaded machine (the checks above stay well inside the burst). Every response body
# goes to /dev/null (`-o` per URL), so only the codes are counted.
codes=$(curl -sS --max-time 20 -w '%{http_code}\n' $(for _ in $(seq 80); do echo "-o /dev/null $gw/livez"; done) | sort | uniq -c | tr -s ' \n' ' ' || true)
# Then one refused request, to read its shape. The bucket refills a token every 200 ms, and a
# loaded machine may take that long between two requests: ask until one is refused (bounded).
for _ in $(seq 20); do
  request GET /livez
  [ "$code" = 429 ] && break
done
rate_body_ok=1
if [ "$code" = 429 ] && json '"retry after" in j["message"]' && [ "$(header retry-after)" = 1 ]; then rate_body_ok=0; fi
check "rate limit: 429 with Retry-After in the API's error shape" "$([[ "$codes" == *" 429"* ]] && [ "$rate_body_ok" = 0 ] && echo 0 || echo 1)" "status counts: $codes; then $code: $body"

# ingest-api away: the gateway answers 503 itself, with Retry-After, in the API's shape.
stop_pid "$api_pid"
api_pid=
sleep 1.2  # the rate limit above refills
request POST /api/v1/logs "${json_headers[@]}" --data-binary "$batch"
check "ingest-api down: 503 with Retry-After from the gateway" "$([ "$code" = 503 ] && json '"nothing was stored" in j["message"]' && [ "$(header retry-after)" = 5 ] && echo 0 || echo 1)" "got $code: $body"

GATEWAY_TEST_DONE=1
echo "gateway: $passed passed, $failed failed"
if [ "$failed" != 0 ]; then
  log "nginx's error log (rate-limit lines left out):"
  grep -v 'limiting requests' "$tmp/error.log" | tail -n 20 >&2 || true
  exit 1
fi
