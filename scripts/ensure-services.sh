#!/usr/bin/env bash
# Makes sure PostgreSQL and RabbitMQ answer on this machine, starting them if they are installed
# and stopped, and that PgBouncer's binary is there for its test. CI and new machines start from
# scratch, so `make test` and `make run` call this
# rather than assume. Says exactly what to install when a service is missing.
set -euo pipefail

PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
AMQP_HOST=${AMQP_HOST:-127.0.0.1}
AMQP_PORT=${AMQP_PORT:-5672}
WAIT_SECONDS=${WAIT_SECONDS:-60}

log() { printf '[services] %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_for() { # name host port
  local deadline=$((SECONDS + WAIT_SECONDS))
  until port_open "$2" "$3"; do
    if ((SECONDS >= deadline)); then
      log "$1 did not start listening on $2:$3 within ${WAIT_SECONDS}s"
      return 1
    fi
    sleep 1
  done
}

ensure_postgres() {
  if command -v pg_isready >/dev/null && pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; then
    log "PostgreSQL is up on $PG_HOST:$PG_PORT"
    return
  fi
  if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    log "PostgreSQL is not running and not installed. Install it with:"
    log "  sudo apt-get update && sudo apt-get install -y postgresql"
    log "or point DATABASE_URL at a running server."
    return 1
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  log "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
    || pg_ctlcluster "$version" main start
  wait_for PostgreSQL "$PG_HOST" "$PG_PORT"
  until pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; do sleep 1; done
  log "PostgreSQL is up on $PG_HOST:$PG_PORT"
}

ensure_rabbitmq() {
  if port_open "$AMQP_HOST" "$AMQP_PORT"; then
    log "RabbitMQ is up on $AMQP_HOST:$AMQP_PORT"
    return
  fi
  if ! command -v rabbitmq-server >/dev/null; then
    log "RabbitMQ is not running and not installed. Install it with:"
    log "  sudo apt-get update && sudo apt-get install -y rabbitmq-server"
    log "or point AMQP_URL at a running broker."
    return 1
  fi
  log "starting RabbitMQ"
  rabbitmq-server -detached
  wait_for RabbitMQ "$AMQP_HOST" "$AMQP_PORT"
  # The port opens before the broker accepts work; wait until the app is fully booted.
  if command -v rabbitmqctl >/dev/null; then
    timeout "$WAIT_SECONDS" rabbitmqctl await_startup >/dev/null 2>&1 || true
  fi
  log "RabbitMQ is up on $AMQP_HOST:$AMQP_PORT"
}

# PgBouncer is not a service the project uses here: the store's test of transaction pooling
# starts one of its own on a free port. It only needs the binary (Debian's package); the
# package's own service is not started or configured.
ensure_pgbouncer() {
  if [ -x /usr/sbin/pgbouncer ]; then
    return
  fi
  "$(dirname "$0")/install-package.sh" pgbouncer "the PgBouncer test"
}

ensure_postgres
ensure_rabbitmq
ensure_pgbouncer
