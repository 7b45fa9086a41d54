#!/usr/bin/env python3
"""`make bench-storage`: the store at production volume (issue 15), measured in one run.

Loads a database of its own with >= 50 million events (SQL `INSERT ... SELECT` into the schema
the service migrated: day partitions of `events`, one `chunks` row per 100 events, the last
days' idempotency keys in `event_keys`), then measures:

  * ingest rate (100 events per request, 32 connections, `bench --load-only`) at 50M stored
    against a second, empty database, runs interleaved; plus the keyed SQL write path (the
    service's insert statement with an eventId on every event) in the database, same way;
  * retention of one day (>= 5M events): DETACH + DROP of its partition (what `forwarder
    purge` does) against the DELETE-based purge of before partitioning on a copy of the same
    rows — wall time and WAL; the day's chunk rows and one day's idempotency keys too;
  * replay of one tenant's hour (the service's page query, 1000 rows per page) and its plan;
  * `/health` and the pending-gauge query at 50M stored;
  * disk use per million events.

Prints progress on stderr and a markdown report on stdout, written to
`bench/results/<YYYY-MM-DD-HHMM>-storage.md`. It reports; it never fails on a figure. It
needs ~35 GB free on PostgreSQL's disk and about an hour on 2 cores. Standard library only:
PostgreSQL through `psql`, RabbitMQ clean-up through `rabbitmqctl`.

Every phase is bounded in time; the databases are dropped and the processes it started are
stopped at the end, on failure and on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import queue
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

API_KEY = "bench-key-0123456789"
REPO = Path(__file__).resolve().parent.parent
SEP = "\x1f"  # psql field separator: no generated value contains it
STARTED = time.monotonic()

# The service's statements, copied (crates/interaction-store/src/...); the store's test
# `bench_statements` fails when a copy below differs from the service's text (whitespace aside).
# delivery.rs, REPLAY_PAGE ($1 tenant, $2 since, $3 until, $4 after_id, $5 limit).
REPLAY_PAGE = (
    "SELECT id, chunk_id, tenant, event_id, occurred_at, subscriber, asset_id, interaction, "
    "rating, comment, context_id, device, received_at, original_occurred_at FROM events "
    "WHERE tenant = $1 AND received_at >= $2 AND received_at < $3 AND (received_at, id) > ($2, $4) "
    "ORDER BY received_at, id LIMIT $5"
)
# lib.rs, Store::pending_event_count (diesel: `state = ANY($1)`, a prepared statement).
PENDING_GAUGE = "SELECT sum(event_count) FROM chunks WHERE state = ANY($1)"
# trace.rs, PENDING_BY_TENANT (the forwarder's pending_events{tenant} gauge).
PENDING_BY_TENANT = (
    "SELECT tenant, sum(event_count - "
    "(SELECT coalesce(sum(upper(r) - lower(r)), 0) FROM unnest(delivered) AS r) - "
    "(SELECT coalesce(sum(upper(r) - lower(r)), 0) FROM unnest(refused) AS r))::int8 AS pending "
    "FROM chunks WHERE state IN ('pending', 'published') GROUP BY tenant ORDER BY tenant"
)
# partitions.rs, UNFINISHED_CHUNKS, PURGE_CHUNKS and EXPIRE_KEYS.
UNFINISHED_CHUNKS = (
    "SELECT count(*) AS n FROM chunks WHERE state IN ('pending', 'published') "
    "AND ($1::timestamptz IS NULL OR created_at >= $1) AND created_at < $2"
)
PURGE_CHUNKS = (
    "WITH doomed AS ("
    "(SELECT c.id FROM chunks c WHERE c.state = 'forwarded' "
    "AND ($1::timestamptz IS NULL OR c.created_at >= $1) AND c.created_at < $2 "
    "AND NOT EXISTS (SELECT 1 FROM events_default e WHERE e.chunk_id = c.id) "
    "ORDER BY c.created_at LIMIT $3) "
    "UNION ALL "
    "(SELECT c.id FROM chunks c WHERE c.state = 'failed' "
    "AND ($1::timestamptz IS NULL OR c.created_at >= $1) AND c.created_at < $2 "
    "AND NOT EXISTS (SELECT 1 FROM events_default e WHERE e.chunk_id = c.id) "
    "AND NOT EXISTS (SELECT 1 FROM event_failures f WHERE f.chunk_id = c.id) "
    "ORDER BY c.created_at LIMIT $3)"
    "), "
    "gone AS (DELETE FROM chunks WHERE id IN (SELECT id FROM doomed) RETURNING 1) "
    "SELECT count(*) AS n FROM gone"
)
EXPIRE_KEYS = (
    "WITH gone AS (DELETE FROM event_keys WHERE ctid = ANY (ARRAY("
    "SELECT ctid FROM event_keys WHERE received_at < $1 LIMIT $2)) RETURNING 1) "
    "SELECT count(*) AS n FROM gone"
)
# The purge of before partitioning (issue 15's "today's DELETE-based purge"), on `events_old`.
OLD_PURGE = (
    "WITH doomed AS (SELECT e.id FROM events_old e JOIN chunks c ON c.id = e.chunk_id "
    "WHERE e.received_at < $1 AND c.state = 'forwarded' LIMIT $2), "
    "gone AS (DELETE FROM events_old WHERE id IN (SELECT id FROM doomed) RETURNING 1) "
    "SELECT count(*) FROM gone"
)
# chunks.rs, INSERT_CHUNK_SQL, with the UNNEST of bound arrays replaced by generated rows
# (`gen` below): the same CTEs, so the same work in the database for the same rows.
INSERT_CHUNK_GENERATED = """
WITH chunk AS (SELECT nextval(pg_get_serial_sequence('chunks', 'id')) AS id, %(tenant)s::text AS tenant),
numbered AS (
    SELECT u.*, row_number() OVER (PARTITION BY u.event_id ORDER BY u.ord) = 1 AS first
    FROM (SELECT %(key)s AS event_id, now() - random() * interval '10 minutes' AS occurred_at,
                 'sub_' || lpad(floor(random() * 1000000)::int::text, 8, '0') AS subscriber,
                 'asset_' || lpad(floor(random() * 10000)::int::text, 4, '0') AS asset_id,
                 'play' AS interaction, 0.5::float8 AS rating, NULL::text AS comment,
                 NULL::text AS context_id, 'web' AS device, NULL::timestamptz AS original_occurred_at,
                 g AS ord
          FROM generate_series(1, %(n)s) AS g) AS u
),
keyed AS (
    INSERT INTO event_keys (tenant, event_id, chunk_id)
    SELECT chunk.tenant, n.event_id, chunk.id FROM chunk, numbered AS n
    WHERE n.event_id IS NOT NULL AND n.first
    ON CONFLICT (tenant, event_id) DO NOTHING
    RETURNING event_id
),
inserted AS (
    INSERT INTO events (chunk_id, tenant, event_id, occurred_at, subscriber, asset_id,
                        interaction, rating, comment, context_id, device, original_occurred_at)
    SELECT chunk.id, chunk.tenant, n.event_id, n.occurred_at, n.subscriber, n.asset_id,
           n.interaction, n.rating, n.comment, n.context_id, n.device, n.original_occurred_at
    FROM chunk, numbered AS n
    WHERE n.event_id IS NULL OR (n.first AND n.event_id IN (SELECT event_id FROM keyed))
    ORDER BY n.ord
    RETURNING event_id
),
counted AS (SELECT count(*) AS n FROM inserted),
new_chunk AS (
    INSERT INTO chunks (id, tenant, event_count)
    SELECT chunk.id, chunk.tenant, counted.n FROM chunk, counted WHERE counted.n > 0
    RETURNING id
)
SELECT (SELECT id FROM new_chunk) AS chunk_id, (SELECT n FROM counted) AS inserted
"""
INTERACTIONS = [
    "play", "play_complete", "select", "recommendationImpression", "rate",
    "deselect", "share", "add_to_cart", "purchase",
]


# --------------------------------------------------------------------------------------------
# Output


def key_sql(kind: str, at: str) -> str:
    """SQL for an eventId received at `at`: a UUIDv7 (48-bit millisecond time, then random
    bits; what the web SDK sends, and what docs/client-integration.md recommends) or a random
    UUIDv4. The kind decides where keys land in `event_keys`' primary key: v7 keys of a tenant
    go to its rightmost leaf, v4 keys to a random leaf of the whole index."""
    if kind == "v4":
        return "gen_random_uuid()::text"
    hex_ms = f"lpad(to_hex(floor(extract(epoch FROM {at}) * 1000)::int8), 12, '0')"
    rand = "md5(random()::text || clock_timestamp()::text)"
    return (f"(substr({hex_ms}, 1, 8) || '-' || substr({hex_ms}, 9, 4) || '-7' || "
            f"substr({rand}, 1, 3) || '-8' || substr({rand}, 4, 3) || '-' || substr({rand}, 7, 12))")


def log(message: str) -> None:
    elapsed = int(time.monotonic() - STARTED)
    print(f"bench-storage [{elapsed // 60:3d}:{elapsed % 60:02d}] {message}", file=sys.stderr, flush=True)


def thousands(x: float) -> str:
    return f"{x:,.0f}"


def secs(x: float) -> str:
    return f"{x:,.1f} s" if x < 10 else f"{x:,.0f} s"


def mib(n: float) -> str:
    if n < 1024 * 1024:
        return f"{n / 1024:,.1f} KiB"
    if n < 1024**3:
        return f"{n / 1024 / 1024:,.1f} MiB"
    return f"{n / 1024**3:,.2f} GiB"


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round((len(ordered) - 1) * q))]


def lit(value: object) -> str:
    """An SQL literal for `value` (text, number, None)."""
    if value is None:
        return "NULL"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def bind(sql: str, *params: object) -> str:
    """`sql` with $1.. replaced by literals, highest first ($10 before $1). Literals are typed
    by their context, as bound parameters are, so the planner sees the values (a custom plan,
    as PostgreSQL makes for the service's statements)."""
    for i in range(len(params), 0, -1):
        sql = sql.replace(f"${i}", lit(params[i - 1]))
    return sql


# --------------------------------------------------------------------------------------------
# Processes: everything started is registered here and stopped at the end.

CHILDREN: set[subprocess.Popen] = set()
CHILDREN_LOCK = threading.Lock()


def spawn(args: list[str], **kwargs) -> subprocess.Popen:
    process = subprocess.Popen(args, **kwargs)
    with CHILDREN_LOCK:
        CHILDREN.add(process)
    return process


def forget(process: subprocess.Popen) -> None:
    with CHILDREN_LOCK:
        CHILDREN.discard(process)


def stop_process(process: subprocess.Popen, grace: float = 10.0) -> None:
    if process.poll() is None:
        try:
            process.terminate()
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        except ProcessLookupError:
            pass
    forget(process)


def stop_all_children() -> None:
    with CHILDREN_LOCK:
        children = list(CHILDREN)
    for process in children:
        try:
            stop_process(process, grace=5.0)
        except Exception as error:  # noqa: BLE001 - clean-up goes on
            log(f"could not stop pid {process.pid}: {error}")


def run(args: list[str], timeout: float, input_text: str | None = None, env: dict | None = None,
        check: bool = True) -> subprocess.CompletedProcess:
    """subprocess.run, registered for clean-up, killed on timeout."""
    process = spawn(args, stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = process.communicate(input_text, timeout=timeout)
    except BaseException:
        process.kill()
        process.communicate()
        forget(process)
        raise
    forget(process)
    result = subprocess.CompletedProcess(args, process.returncode, out, err)
    if check and process.returncode != 0:
        raise RuntimeError(f"{args[0]} exited {process.returncode}: {err.strip()[-2000:]}")
    return result


# --------------------------------------------------------------------------------------------
# PostgreSQL through psql


class Pg:
    def __init__(self, host: str, port: int, user: str):
        self.host, self.port, self.user = host, port, user

    def url(self, db: str) -> str:
        return f"postgres://{self.user}@{self.host}:{self.port}/{db}"

    def args(self, db: str, quiet: bool = True) -> list[str]:
        return ["psql", "-X", *(["-q"] if quiet else []), "-A", "-t", "-F", SEP,
                "-h", self.host, "-p", str(self.port), "-U", self.user, "-d", db]

    @staticmethod
    def env(statement_timeout_s: float | None) -> dict:
        env = dict(os.environ)
        env["PGOPTIONS"] = f"-c statement_timeout={int(statement_timeout_s * 1000) if statement_timeout_s else 0}"
        env["PGAPPNAME"] = "bench-storage"
        return env

    def rows(self, db: str, sql: str, timeout: float = 120) -> list[list[str]]:
        """Runs `sql` (one or more statements) in one psql; rows of every result, split."""
        result = run(self.args(db) + ["-v", "ON_ERROR_STOP=1"], timeout=timeout,
                     input_text=sql, env=self.env(timeout))
        return [line.split(SEP) for line in result.stdout.splitlines() if line != ""]

    def value(self, db: str, sql: str, timeout: float = 120) -> str:
        rows = self.rows(db, sql, timeout)
        return rows[-1][0] if rows else ""

    def script(self, db: str, sql: str, timeout: float) -> str:
        """Runs a script, not quiet (command tags are printed); returns its output."""
        result = run(self.args(db, quiet=False) + ["-v", "ON_ERROR_STOP=1"], timeout=timeout,
                     input_text=sql, env=self.env(timeout))
        return result.stdout


class SqlError(RuntimeError):
    pass


ERROR_LINE = re.compile(r"^(psql:[^ ]*: )?(ERROR|FATAL|PANIC):")
NOTICE_LINE = re.compile(r"^(psql:[^ ]*: )?(NOTICE|WARNING|DETAIL|HINT|CONTEXT|LINE \d+|INFO):|^\s+\^$")


class Session:
    """One psql kept open: statements one after another on one connection, each with a
    timeout (the backend's query is cancelled, then the call fails)."""

    def __init__(self, pg: Pg, db: str, statement_timeout_s: float = 0):
        self.pg, self.db = pg, db
        self.process = spawn(pg.args(db) + ["-v", "ON_ERROR_STOP=0"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                             env=pg.env(statement_timeout_s))
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.count = 0
        self.notices: list[str] = []
        self.pid = int(self.query("SELECT pg_backend_pid()", timeout=30)[0][0])

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def query(self, sql: str, timeout: float = 120) -> list[list[str]]:
        self.count += 1
        marker = f"__bench_storage_{self.count}__"
        assert self.process.stdin is not None
        text = sql.strip()
        if not text.startswith("\\"):  # a meta-command takes no semicolon
            text = text.rstrip(";") + ";"
        self.process.stdin.write(text + "\n\\echo " + marker + "\n")
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout
        out, errors = [], []
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.cancel()
                raise TimeoutError(f"statement over {timeout:.0f} s: {sql.strip()[:120]}")
            if line is None:
                raise SqlError(f"psql exited: {errors or out[-5:]}")
            if line == marker:
                break
            if ERROR_LINE.match(line):
                errors.append(line)
            elif NOTICE_LINE.match(line):
                self.notices.append(line)
            elif line != "":
                out.append(line)
        if errors:
            raise SqlError(f"{errors[0]} (in: {sql.strip()[:200]})")
        return [line.split(SEP) for line in out]

    def timed(self, sql: str, timeout: float = 120) -> tuple[float, list[list[str]]]:
        started = time.perf_counter()
        rows = self.query(sql, timeout)
        return time.perf_counter() - started, rows

    def cancel(self) -> None:
        try:
            self.pg.rows("postgres", f"SELECT pg_cancel_backend({self.pid})", timeout=20)
        except Exception:  # noqa: BLE001
            pass
        # Drain to the marker of the cancelled statement (or give up after a while).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None or line.startswith("__bench_storage_"):
                return

    def close(self) -> None:
        try:
            assert self.process.stdin is not None
            self.process.stdin.write("\\q\n")
            self.process.stdin.flush()
            self.process.wait(timeout=10)
        except Exception:  # noqa: BLE001
            pass
        stop_process(self.process, grace=2)


# --------------------------------------------------------------------------------------------
# WAL: the cluster's LSN difference, and the records that touched this database (pg_walinspect)


class Wal:
    """WAL written between two points. `lsn` is the whole cluster's (other databases on the
    shared server write too); `attributed` sums the records that touched a relation of this
    database, or were written by a transaction that did (commit records, locks)."""

    def __init__(self, session: Session, db_oid: int, walinspect: bool):
        self.session, self.db_oid, self.walinspect = session, db_oid, walinspect

    def lsn(self) -> str:
        return self.session.query("SELECT pg_current_wal_insert_lsn()")[0][0]

    def between(self, start: str, end: str) -> tuple[int, int | None]:
        lsn_bytes = int(self.session.query(f"SELECT pg_wal_lsn_diff('{end}', '{start}')::int8")[0][0])
        if not self.walinspect or lsn_bytes == 0:
            return lsn_bytes, (0 if self.walinspect else None)
        error: Exception | None = None
        for _ in range(20):
            try:
                # The function refuses an end not flushed yet: wait for it.
                self.session.query(f"""DO $w$ BEGIN
                    WHILE pg_current_wal_flush_lsn() < '{end}'::pg_lsn LOOP PERFORM pg_sleep(0.02); END LOOP;
                    END $w$""", timeout=30)
                rows = self.session.query(
                    f"""WITH r AS (SELECT xid, record_length, block_ref
                                    FROM pg_get_wal_records_info('{start}', '{end}')),
                             ours AS (SELECT DISTINCT xid FROM r
                                      WHERE xid <> '0' AND block_ref LIKE '%/{self.db_oid}/%')
                        SELECT coalesce(sum(record_length), 0)::int8 FROM r
                        WHERE block_ref LIKE '%/{self.db_oid}/%' OR xid IN (SELECT xid FROM ours)""",
                    timeout=600)
                return lsn_bytes, int(rows[0][0])
            except (SqlError, TimeoutError) as e:
                error = e
                if "future end LSN" not in str(e):
                    break
                time.sleep(0.25)
        log(f"pg_walinspect could not read {start}..{end} ({str(error)[:160]}); cluster LSN only")
        return lsn_bytes, None


# --------------------------------------------------------------------------------------------
# Autoanalyze, when the server runs without autovacuum


class AutoAnalyze:
    """ANALYZEs every table whose changes since its last analyze pass autovacuum's default
    threshold (50 rows + 10 %), every `interval` seconds, in `dbs`. Started only when the
    server runs with autovacuum off: without it today's partition, filling during the ingest
    runs, keeps the statistics of when it was empty, and the relay's `chunk_id = ANY(...)`
    reads it whole (a Parallel Seq Scan) instead of through its index — a server setting,
    not what production (autovacuum on, PostgreSQL's default) does."""

    def __init__(self, pg: Pg, dbs: list[str], interval: float = 15):
        self.pg, self.dbs, self.interval = pg, dbs, interval
        self.stopping = threading.Event()
        self.analyzed = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.wait(self.interval):
            for db in self.dbs:
                try:
                    tables = self.pg.rows(db, """
                        SELECT format('%I.%I', s.schemaname, s.relname)
                        FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
                        WHERE c.relkind = 'r' AND s.relname <> 'events_old'
                          AND s.n_mod_since_analyze > 50 + 0.1 * greatest(c.reltuples, 0)""", timeout=60)
                    for (table,) in tables:
                        if self.stopping.is_set():
                            return
                        self.pg.rows(db, f"SET lock_timeout = '1s'; ANALYZE {table}", timeout=300)
                        self.analyzed += 1
                except Exception:  # noqa: BLE001 - a table dropped meanwhile, a lock: next round
                    pass

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=330)


# --------------------------------------------------------------------------------------------
# ingest-api


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class IngestApi:
    def __init__(self, bin_dir: Path, name: str, pg: Pg, db: str, amqp_url: str, prefix: str,
                 workdir: Path):
        self.name, self.prefix = name, prefix
        self.port, self.admin_port = free_port(), free_port()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "DATABASE_URL": pg.url(db),
            "AMQP_URL": amqp_url,
            "AMQP_PREFIX": prefix,
            "RUST_LOG": "warn",
            "INGEST_ADDR": f"127.0.0.1:{self.port}",
            "INGEST_ADMIN_ADDR": f"127.0.0.1:{self.admin_port}",
            "API_KEYS": f"bench:{API_KEY}",
            # Unlimited: the default 100,000 events/s per key would cap both stores alike and
            # hide a difference between them.
            "RATE_LIMIT_EVENTS_PER_SEC": "0",
        }
        self.log_path = workdir / f"{name}.log"
        self.log_file = open(self.log_path, "w")
        self.process = spawn([str(bin_dir / "ingest-api")], cwd=workdir, env=env,
                             stdin=subprocess.DEVNULL, stdout=self.log_file,
                             stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 180) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited during start-up; log: {self.log_path}:\n"
                                   + self.log_path.read_text()[-3000:])
            try:
                if http_get(f"{self.url}/readyz", timeout=2)[0] == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready after {timeout:.0f} s; log: {self.log_path}")

    def stop(self) -> None:
        stop_process(self.process, grace=25)
        self.log_file.close()


def rabbitmqctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess | None:
    if shutil.which("rabbitmqctl") is None:
        return None
    try:
        return run(["rabbitmqctl", *args], timeout=timeout, check=False)
    except Exception as error:  # noqa: BLE001
        log(f"rabbitmqctl {' '.join(args)}: {error}")
        return None


def purge_queue(prefix: str) -> None:
    rabbitmqctl("purge_queue", "-p", "/", f"{prefix}.forward")


def delete_topology(prefix: str) -> None:
    listed = rabbitmqctl("list_queues", "-p", "/", "-q", "--no-table-headers", "name")
    if listed is not None:
        for name in listed.stdout.split():
            if name.startswith(prefix + "."):
                rabbitmqctl("delete_queue", "-p", "/", name)
    for exchange in (f"{prefix}.events", f"{prefix}.dlx"):
        rabbitmqctl("eval", f'rabbit_exchange:delete(rabbit_misc:r(<<"/">>, exchange, '
                            f'<<"{exchange}">>), false, <<"bench-storage">>).')


# --------------------------------------------------------------------------------------------
# The run


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.a = args
        self.pg = Pg(args.pg_host, args.pg_port, args.pg_user)
        self.started = dt.datetime.now(dt.timezone.utc)
        self.stamp = self.started.strftime("%Y-%m-%d-%H%M")
        self.db = f"bench_storage_{os.getpid()}"
        self.empty_db = f"bench_storage_{os.getpid()}_empty"
        self.prefix = f"bench-storage-{os.getpid()}"
        self.workdir = Path(f"/tmp/bench-storage-{self.stamp}-{os.getpid()}")
        self.services: list[IngestApi] = []
        self.sessions: list[Session] = []
        self.created_dbs: list[str] = []
        self.r: dict = {}  # results
        self.today = self.started.date()
        self.days = [self.today - dt.timedelta(days=args.days - i) for i in range(args.days)]
        self.chunks_per_day = args.events_per_day // args.chunk_events
        self.autoanalyze: AutoAnalyze | None = None

    # -- helpers --

    def session(self, db: str, statement_timeout_s: float = 0) -> Session:
        s = Session(self.pg, db, statement_timeout_s)
        self.sessions.append(s)
        return s

    def partition(self, day: dt.date) -> str:
        return f"events_p{day.strftime('%Y%m%d')}"

    @staticmethod
    def day_start(day: dt.date) -> str:
        return f"{day.isoformat()} 00:00:00+00"

    # -- phases --

    def preflight(self) -> None:
        bins = [self.a.bin_dir / "ingest-api", self.a.bin_dir / "bench"]
        missing = [str(b) for b in bins if not os.access(b, os.X_OK)]
        if missing:
            raise SystemExit(f"missing binaries {missing}: cargo build --release --locked --bins")
        for tool in ("psql",):
            if shutil.which(tool) is None:
                raise SystemExit(f"{tool} not found")
        info = self.pg.rows("postgres", """
            SELECT current_setting('server_version'), current_setting('shared_buffers'),
                   current_setting('max_wal_size'), current_setting('data_directory'),
                   current_setting('checkpoint_timeout'), current_setting('wal_level'),
                   EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_walinspect'),
                   current_setting('autovacuum')""",
                            timeout=30)[0]
        self.r["pg"] = {"version": info[0], "shared_buffers": info[1], "max_wal_size": info[2],
                        "checkpoint_timeout": info[4], "wal_level": info[5], "autovacuum": info[7]}
        self.walinspect_available = info[6] == "t"
        try:
            free = shutil.disk_usage(info[3]).free
        except OSError:
            free = shutil.disk_usage("/").free
        need = self.a.days * self.a.events_per_day * 500  # bytes: events, keys, copy, WAL, margin
        log(f"PostgreSQL {info[0]}; {free / 1e9:.0f} GB free on its disk (need ~{need / 1e9:.0f} GB)")
        if free < need:
            raise SystemExit(f"not enough free disk: {free / 1e9:.0f} GB < {need / 1e9:.0f} GB")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cores = os.cpu_count() or 0
        mem = 0.0
        cpu = ""
        try:
            mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
            cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                        if l.startswith("model name")), "")
        except OSError:
            pass
        self.r["machine"] = f"{cores} cores, {mem:.0f} GiB, {cpu}"
        head = run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], timeout=30, check=False)
        dirty = run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                    timeout=30, check=False)
        self.r["commit"] = head.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")

    def create_databases(self) -> None:
        for db in (self.db, self.empty_db):
            self.pg.rows("postgres", f'CREATE DATABASE "{db}"', timeout=120)
            self.created_dbs.append(db)
        self.db_oid = int(self.pg.value("postgres", f"SELECT oid FROM pg_database WHERE datname = '{self.db}'"))
        self.walinspect = False
        if self.walinspect_available:
            try:
                self.pg.rows(self.db, "CREATE EXTENSION pg_walinspect", timeout=60)
                self.walinspect = True
            except RuntimeError as error:
                log(f"pg_walinspect unavailable ({error}); WAL from the cluster's LSN only")
        log(f"databases {self.db} (to load) and {self.empty_db} (kept empty); logs in {self.workdir}")

    def start_services(self, quiet: bool = False) -> None:
        self.generation = getattr(self, "generation", 0) + 1
        for name, db in ((f"ingest-api-loaded-{self.generation}", self.db),
                         (f"ingest-api-empty-{self.generation}", self.empty_db)):
            service = IngestApi(self.a.bin_dir, name, self.pg, db, self.a.amqp_url,
                                f"{self.prefix}-{'loaded' if db == self.db else 'empty'}", self.workdir)
            self.services.append(service)
            seconds = service.wait_ready()
            if not quiet:
                log(f"{name} ready in {seconds:.1f} s (migrated {db}) on {service.url}")
        self.loaded_api, self.empty_api = self.services

    def load(self) -> None:
        a = self.a
        started = time.monotonic()
        # Partitions first, one at a time (each ATTACH locks the parent against other DDL).
        for day in self.days:
            outcome = self.pg.value(self.db, f"SELECT events_create_partition('{day.isoformat()}')")
            if outcome not in ("created", "exists"):
                raise RuntimeError(f"partition of {day}: {outcome}")
        budget_end = time.monotonic() + a.load_timeout
        log(f"loading {a.days} days × {thousands(a.events_per_day)} events "
            f"({thousands(a.days * a.events_per_day)}), {a.parallel} at a time")
        done = 0
        counts: dict[str, int] = {}

        def load_day(i: int) -> tuple[int, float, int]:
            day = self.days[i]
            t0 = time.monotonic()
            left = budget_end - t0
            if left <= 0:
                raise TimeoutError("load budget spent")
            out = self.pg.script(self.db, self.day_sql(i), timeout=left)
            inserted = [int(m) for m in re.findall(r"^INSERT 0 (\d+)$", out, re.M)]
            if len(inserted) != 2 or inserted[1] != a.events_per_day:
                raise RuntimeError(f"day {day}: unexpected output {out[-500:]}")
            return i, time.monotonic() - t0, inserted[1]

        with concurrent.futures.ThreadPoolExecutor(max_workers=a.parallel) as pool:
            futures = [pool.submit(load_day, i) for i in range(a.days)]
            try:
                for future in concurrent.futures.as_completed(futures):
                    i, seconds, n = future.result()
                    done += n
                    counts[self.partition(self.days[i])] = n
                    log(f"  {self.days[i]}: {thousands(n)} events in {seconds:.0f} s "
                        f"({thousands(n / seconds)}/s per session); {thousands(done)} loaded, "
                        f"{time.monotonic() - started:.0f} s")
            except BaseException:
                for f in futures:
                    f.cancel()
                stop_all_children()  # the psql of the days in progress
                raise
        self.r["load_events_seconds"] = time.monotonic() - started
        self.r["loaded_events"] = done
        self.r["loaded_chunks"] = a.days * self.chunks_per_day
        total = a.days * a.events_per_day
        self.pg.rows(self.db, f"""
            SELECT setval(pg_get_serial_sequence('events', 'id'), {total});
            SELECT setval(pg_get_serial_sequence('chunks', 'id'), {a.days * self.chunks_per_day});""")

        # Idempotency keys of the days within DEDUP_WINDOW (7 days): without the primary key
        # while loading, then the key built once (a sorted build instead of 30M random inserts).
        t0 = time.monotonic()
        key_days = [d for d in self.days if (self.today - d).days <= a.key_days]
        pkey = self.pg.value(self.db, "SELECT conname FROM pg_constraint WHERE conrelid = 'event_keys'::regclass AND contype = 'p'")
        keys = 0
        if key_days and a.key_days > 0:
            log(f"loading the idempotency keys of {len(key_days)} days ({key_days[0]} .. {key_days[-1]})")
            self.pg.rows(self.db, f'ALTER TABLE event_keys DROP CONSTRAINT "{pkey}"')

            def load_keys(day: dt.date) -> int:
                out = self.pg.script(self.db, f"""
                    INSERT INTO event_keys (tenant, event_id, chunk_id, received_at)
                    SELECT tenant, event_id, chunk_id, received_at FROM {self.partition(day)}
                    WHERE event_id IS NOT NULL;""", timeout=max(60, budget_end - time.monotonic()))
                return int(re.findall(r"^INSERT 0 (\d+)$", out, re.M)[0])

            # One day after the other: keys arrive in time order, and `event_keys_received`
            # (BRIN) is only as selective as that order.
            with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
                try:
                    for day, n in zip(key_days, pool.map(load_keys, key_days)):
                        keys += n
                        log(f"  keys of {day}: {thousands(n)}; {thousands(keys)} so far")
                except BaseException:
                    stop_all_children()
                    raise
            log("building event_keys' primary key")
            self.pg.rows(self.db, f"""
                SET maintenance_work_mem = '1GB';
                ALTER TABLE event_keys ADD CONSTRAINT "{pkey}" PRIMARY KEY (tenant, event_id);""",
                         timeout=max(600, budget_end - time.monotonic()))
        self.r["loaded_keys"] = keys
        self.r["key_days"] = key_days
        self.r["load_keys_seconds"] = time.monotonic() - t0

        # Vacuumed and analyzed, as autovacuum leaves a table some time after its inserts:
        # measurements then run against a settled store, not during the first autovacuum.
        t0 = time.monotonic()
        log("VACUUM (ANALYZE) of every table loaded")
        tables = [self.partition(d) for d in self.days] + ["event_keys", "chunks"]

        def vacuum(table: str) -> None:
            self.pg.rows(self.db, f"VACUUM (ANALYZE) {table}", timeout=max(600, budget_end - time.monotonic()))

        with concurrent.futures.ThreadPoolExecutor(max_workers=a.parallel) as pool:
            try:
                list(pool.map(vacuum, tables))
            except BaseException:
                stop_all_children()
                raise
        self.pg.rows(self.db, "ANALYZE events", timeout=600)  # the parent: autovacuum never does
        self.r["vacuum_seconds"] = time.monotonic() - t0
        self.r["load_seconds"] = time.monotonic() - started
        log(f"store loaded in {self.r['load_seconds']:.0f} s "
            f"(events {self.r['load_events_seconds']:.0f} s, keys {self.r['load_keys_seconds']:.0f} s, "
            f"vacuum {self.r['vacuum_seconds']:.0f} s)")
        self.wait_autovacuum()

    def day_sql(self, i: int) -> str:
        a = self.a
        day = self.days[i]
        cpd = self.chunks_per_day
        c0, c1 = i * cpd + 1, (i + 1) * cpd
        step_us = 86_400_000_000 // cpd
        epc = a.chunk_events
        # Tenants skewed like real traffic: tenant_00 ~27 %, the smallest a fraction of 1 %.
        tenant = (f"'tenant_' || lpad(least({a.tenants - 1}, floor({a.tenants} * power("
                  f"(hashint8(c) & 1048575)::float8 / 1048576.0, 3))::int)::text, 2, '0')")
        interactions = "ARRAY[" + ", ".join(lit(x) for x in INTERACTIONS) + "]"
        return f"""
SET work_mem = '64MB';
SET synchronous_commit = off;
BEGIN;
CREATE TEMP TABLE gen_chunks ON COMMIT DROP AS
    SELECT c, {tenant} AS tenant,
           timestamptz '{self.day_start(day)}' + (c - {c0}) * interval '{step_us} microseconds' AS ts
    FROM generate_series({c0}::int8, {c1}::int8) AS c;
INSERT INTO chunks (id, tenant, event_count, state, created_at, published_at, forwarded_at,
                    delivered, last_delivered_at)
    SELECT c, tenant, {epc}, 'forwarded', ts, ts + interval '0.04 seconds', ts + interval '0.35 seconds',
           int4multirange(int4range(0, {epc})), ts + interval '0.35 seconds'
    FROM gen_chunks ORDER BY c;
INSERT INTO events (id, chunk_id, tenant, event_id, occurred_at, subscriber, asset_id,
                    interaction, rating, comment, context_id, device, received_at)
    SELECT (g.c - 1) * {epc} + k + 1, g.c, g.tenant,
           CASE WHEN random() < {a.keyed_percent / 100.0} THEN {key_sql(a.key_kind, 'g.ts')} END,
           g.ts - random() * interval '10 minutes',
           'sub_' || lpad(floor(random() * {a.subscribers})::int::text, 8, '0'),
           'asset_' || lpad(floor(random() * 10000)::int::text, 4, '0'),
           ({interactions})[1 + floor(random() * {len(INTERACTIONS)})::int],
           floor(random() * 11) / 10,
           CASE WHEN random() < 0.02 THEN 'User watched 90% of the episode.' END,
           CASE WHEN random() < 0.3 THEN 'ctx_' || floor(random() * 1000)::int END,
           (ARRAY['web', 'ios_app', 'android_app'])[1 + floor(random() * 3)::int],
           g.ts
    FROM gen_chunks AS g CROSS JOIN LATERAL generate_series(0 * g.c, {epc - 1}) AS k;
COMMIT;
"""

    def wait_autovacuum(self, limit: float = 300) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            n = int(self.pg.value("postgres", f"""SELECT count(*) FROM pg_stat_activity
                WHERE backend_type = 'autovacuum worker' AND datname IN ('{self.db}', '{self.empty_db}')""", timeout=30))
            if n == 0:
                return
            time.sleep(2)
        log(f"autovacuum still busy in the databases after {limit:.0f} s; going on")

    def disk(self) -> None:
        rows = self.pg.rows(self.db, """
            SELECT p.name, pg_relation_size(p.name::regclass), pg_indexes_size(p.name::regclass),
                   pg_total_relation_size(p.name::regclass), greatest(c.reltuples, 0)::int8
            FROM events_partitions() p JOIN pg_class c ON c.oid = p.name::regclass;
            SELECT 'event_keys', pg_relation_size('event_keys'), pg_indexes_size('event_keys'),
                   pg_total_relation_size('event_keys'), greatest(reltuples, 0)::int8 FROM pg_class WHERE oid = 'event_keys'::regclass;
            SELECT 'chunks', pg_relation_size('chunks'), pg_indexes_size('chunks'),
                   pg_total_relation_size('chunks'), greatest(reltuples, 0)::int8 FROM pg_class WHERE oid = 'chunks'::regclass;""",
                            timeout=300)
        sizes = {r[0]: {"heap": int(r[1]), "indexes": int(r[2]), "total": int(r[3]), "rows": int(r[4])} for r in rows}
        loaded = [self.partition(d) for d in self.days]
        index_rows = self.pg.rows(self.db, f"""
            SELECT i.indexrelid::regclass::text, pg_relation_size(i.indexrelid)
            FROM pg_index i WHERE i.indrelid = '{loaded[len(loaded) // 2]}'::regclass ORDER BY 1""")
        events_total = sum(sizes[p]["total"] for p in loaded)
        events_heap = sum(sizes[p]["heap"] for p in loaded)
        n_events = self.r["loaded_events"]
        n_keys = self.r["loaded_keys"]
        per_m = 1e6 / n_events
        self.r["disk"] = {
            "events_total": events_total, "events_heap": events_heap,
            "events_per_m": events_total * per_m, "events_heap_per_m": events_heap * per_m,
            "keys_total": sizes["event_keys"]["total"],
            "keys_per_m": sizes["event_keys"]["total"] * 1e6 / max(1, n_keys),
            "chunks_total": sizes["chunks"]["total"],
            "chunks_per_m": sizes["chunks"]["total"] * per_m,
            "day_partition": loaded[len(loaded) // 2],
            "day_indexes": index_rows,
            "day_heap": sizes[loaded[len(loaded) // 2]]["heap"],
        }
        d = self.r["disk"]
        # Steady state per million events stored: events + chunks + the keys of keyed events
        # that are within DEDUP_WINDOW (7 of the retention's days: here the fraction loaded).
        d["total_per_m"] = (events_total + sizes["event_keys"]["total"] + sizes["chunks"]["total"]) * per_m
        log(f"disk: events {mib(events_total)} ({mib(d['events_per_m'])}/M), event_keys "
            f"{mib(d['keys_total'])} ({mib(d['keys_per_m'])}/M keys), chunks {mib(d['chunks_total'])}")

    def stored_events(self) -> int:
        """Events in the loaded store now: the loaded days' plus those written since (today's
        partition, or any partition after the loaded days, and the default one)."""
        since = self.day_start(self.today)
        return self.r["loaded_events"] + int(self.pg.value(
            self.db, f"SELECT count(*) FROM events WHERE received_at >= '{since}'", timeout=300) or 0)

    def start_autoanalyze(self) -> None:
        if self.r["pg"]["autovacuum"] == "on":
            return
        log("the server runs with autovacuum off: ANALYZE as autovacuum would (50 rows + 10 % changed), "
            "every 15 s, until the retention phase")
        self.autoanalyze = AutoAnalyze(self.pg, [self.db, self.empty_db])

    def stop_autoanalyze(self) -> None:
        if self.autoanalyze is not None:
            self.autoanalyze.stop()
            self.r["autoanalyzed"] = self.autoanalyze.analyzed
            self.autoanalyze = None

    def restart_loaded(self) -> None:
        """A fresh ingest-api on the loaded store: its start-up (migrations, partition upkeep)
        at 50M, and connections that start after the load, as after a deploy."""
        old = self.loaded_api
        old.stop()
        self.services.remove(old)
        service = IngestApi(self.a.bin_dir, "ingest-api-loaded-restarted", self.pg, self.db, self.a.amqp_url,
                            old.prefix, self.workdir)
        self.services.insert(0, service)
        self.loaded_api = service
        self.r["startup_seconds"] = service.wait_ready()
        log(f"ingest-api restarted on the loaded store: ready in {self.r['startup_seconds']:.1f} s")

    def empty_the_empty_store(self) -> None:
        self.pg.rows(self.empty_db, "SET lock_timeout = '20s'; TRUNCATE events, chunks, event_keys", timeout=60)

    def server_counters(self) -> tuple[str, int]:
        """The cluster's WAL insert position and requested + timed checkpoints so far."""
        row = self.pg.rows("postgres", "SELECT pg_current_wal_insert_lsn(), "
                                       "checkpoints_req + checkpoints_timed FROM pg_stat_bgwriter", timeout=30)[0]
        return row[0], int(row[1])

    def counters_since(self, before: tuple[str, int], events: int) -> dict:
        after = self.server_counters()
        wal = int(self.pg.value("postgres", f"SELECT pg_wal_lsn_diff('{after[0]}', '{before[0]}')::int8", timeout=30))
        return {"wal_per_event": wal / max(1, events), "checkpoints": after[1] - before[1]}

    def ingest_run(self, service: IngestApi, seconds: int) -> dict:
        bench = self.a.bin_dir / "bench"
        before = self.server_counters()
        result = run([str(bench), "--load-only", f"127.0.0.1:{service.port}", "--clients",
                      str(self.a.clients), "--seconds", str(seconds), "--events", "100"],
                     timeout=seconds + 120, env={**os.environ, "RUST_LOG": "warn"})
        start = result.stdout.find("{")
        out = json.loads(result.stdout[start:])
        out.update(self.counters_since(before, out["events"]))
        return out

    def ingest(self) -> None:
        a = self.a
        log(f"ingest: 100 events/request, {a.clients} clients, {a.ingest_seconds} s a run, "
            f"{a.ingest_runs} runs per store, interleaved (warm-up 5 s each first)")
        for service in (self.loaded_api, self.empty_api):
            self.ingest_run(service, 5)
            purge_queue(service.prefix)
        self.empty_the_empty_store()
        runs: dict[str, list[dict]] = {"loaded": [], "empty": []}
        pattern = (["loaded", "empty", "empty", "loaded"] * a.ingest_runs)[: 2 * a.ingest_runs]
        for which in pattern:
            service = self.loaded_api if which == "loaded" else self.empty_api
            stored = self.stored_events() if which == "loaded" else 0
            time.sleep(3)
            result = self.ingest_run(service, a.ingest_seconds)
            result["stored_before"] = stored
            runs[which].append(result)
            log(f"  {which:6s} store ({thousands(stored)} events): {thousands(result['events_per_s'])} "
                f"events/s, p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
                f"{result['errors']} errors; WAL {result['wal_per_event']:.0f} B/event, "
                f"{result['checkpoints']} checkpoints")
            purge_queue(service.prefix)
            if which == "empty":
                self.empty_the_empty_store()
        self.r["ingest"] = runs

    def keyed_writes(self) -> None:
        """The service's insert statement with an eventId on every event, in the database:
        `bench --load-only` sends none, so the HTTP runs never touch `event_keys`' 30M-key
        primary key. WRITERS (4) sessions, WRITE_BATCH_EVENTS (1000) events a statement, a
        commit each, like ingest-api's writers under load."""
        a = self.a
        if a.keyed_seconds <= 0:
            return
        log(f"keyed SQL writes: 4 sessions × 1000 keyed events per statement, {a.keyed_seconds} s "
            f"a run, {a.keyed_runs} runs per store, interleaved")
        runs: dict[str, list[dict]] = {"loaded": [], "empty": []}
        statement = INSERT_CHUNK_GENERATED % {
            "tenant": "'tenant_' || lpad(floor(random() * 50)::int::text, 2, '0')",
            "n": 1000,
            "key": key_sql(a.key_kind, "clock_timestamp()"),
        }
        block = ("DO $bench$ DECLARE deadline timestamptz := clock_timestamp() + interval '%d seconds'; "
                 "BEGIN WHILE clock_timestamp() < deadline LOOP EXECUTE %s; COMMIT; END LOOP; END $bench$;"
                 % (a.keyed_seconds, lit(statement)))
        # The chunks written here are left `pending`, as the service writes them: its relay would
        # publish them (and read their events) during the runs. The services are stopped
        # meanwhile, and the chunks marked forwarded after each run.
        for service in list(self.services):
            service.stop()
        self.services.clear()
        pattern = (["loaded", "empty", "empty", "loaded"] * a.keyed_runs)[: 2 * a.keyed_runs]
        for which in pattern:
            db = self.db if which == "loaded" else self.empty_db
            if which == "empty":
                self.empty_the_empty_store()
            seq = int(self.pg.value(db, "SELECT coalesce(max(id), 0) FROM chunks") or 0)
            time.sleep(2)
            before = self.server_counters()
            t0 = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
                futures = [pool.submit(self.pg.rows, db, block, a.keyed_seconds + 120) for _ in range(4)]
                try:
                    for f in futures:
                        f.result()
                except BaseException:
                    stop_all_children()
                    raise
            seconds = time.monotonic() - t0
            events = int(self.pg.value(db, f"SELECT coalesce(sum(event_count), 0) FROM chunks WHERE id > {seq}"))
            rate = events / max(seconds, a.keyed_seconds)
            run_result = {"events_per_s": rate, **self.counters_since(before, events)}
            runs[which].append(run_result)
            log(f"  {which:6s} store: {thousands(rate)} keyed events/s; WAL {run_result['wal_per_event']:.0f} "
                f"B/event, {run_result['checkpoints']} checkpoints")
            self.pg.rows(db, f"""UPDATE chunks SET state = 'forwarded', published_at = created_at,
                                 forwarded_at = now(), delivered = int4multirange(int4range(0, event_count))
                                 WHERE id > {seq} AND state = 'pending'""", timeout=300)
        self.empty_the_empty_store()
        self.r["keyed"] = runs
        self.start_services(quiet=True)

    def health(self) -> None:
        a = self.a
        log(f"/health ({a.health_requests} requests) and the pending gauges on the loaded store")
        status, body = http_get(f"{self.loaded_api.url}/health")
        times = []
        for _ in range(a.health_requests):
            out = run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
                       f"{self.loaded_api.url}/health"], timeout=30, check=False).stdout.split()
            if len(out) == 2:
                times.append(float(out[1]) * 1000)
        try:
            pending = json.loads(body).get("pending_interactions")
        except ValueError:
            pending = None
        self.r["health"] = {"status": status, "pending": pending, "ms": times, "stored": self.stored_events()}

        s = self.session(self.db, statement_timeout_s=60)
        s.query("\\timing on")
        s.query("PREPARE pending_gauge(text[]) AS " + PENDING_GAUGE)
        s.query("PREPARE pending_by_tenant AS " + PENDING_BY_TENANT)

        def timings(sql: str, n: int) -> list[float]:
            found = []
            for _ in range(n):
                rows = s.query(sql)
                # "Time: 0.412 ms" lines come on stdout with the rows.
                for row in rows:
                    m = re.match(r"Time: ([\d.]+) ms", row[0])
                    if m:
                        found.append(float(m.group(1)))
            return found

        gauge = timings("EXECUTE pending_gauge('{pending,published}')", a.gauge_queries)
        by_tenant = timings("EXECUTE pending_by_tenant", max(10, a.gauge_queries // 5))
        s.query("\\timing off")
        plan = [r[0] for r in s.query("EXPLAIN (ANALYZE, BUFFERS) EXECUTE pending_gauge('{pending,published}')")]
        counts = s.query("SELECT count(*), count(*) FILTER (WHERE state IN ('pending', 'published')) FROM chunks")[0]
        s.close()
        self.r["gauge"] = {"ms": gauge, "by_tenant_ms": by_tenant, "plan": plan,
                           "chunks": int(counts[0]), "unfinished": int(counts[1])}
        h = self.r["health"]
        log(f"  /health {status}: p50 {quantile(times, .5):.2f} ms, p99 {quantile(times, .99):.2f} ms; "
            f"pending gauge p50 {quantile(gauge, .5):.2f} ms ({counts[0]} chunks, {counts[1]} unfinished); "
            f"stored {thousands(h['stored'])}")

    def replay(self) -> None:
        a = self.a
        day = self.days[-3] if len(self.days) >= 3 else self.days[-1]
        since = f"{day.isoformat()} 12:00:00+00"
        until = f"{day.isoformat()} 13:00:00+00"
        tenant = "tenant_00"
        s = self.session(self.db, statement_timeout_s=120)
        expected = int(s.query(bind("SELECT count(*) FROM events WHERE tenant = $1 AND received_at >= $2 "
                                    "AND received_at < $3", tenant, since, until))[0][0])
        log(f"replay: {tenant}, {since} .. {until} ({thousands(expected)} events), pages of {a.replay_page}")
        plan = [r[0] for r in s.query("EXPLAIN (ANALYZE, BUFFERS) " + bind(
            REPLAY_PAGE, tenant, since, until, 0, a.replay_page))]
        passes = []
        for attempt in range(2):
            cursor_at, cursor_id = since, 0
            rows_total, pages, page_ms = 0, 0, []
            t_start = time.monotonic()
            while True:
                if time.monotonic() - t_start > a.replay_timeout:
                    raise TimeoutError(f"replay over {a.replay_timeout} s")
                seconds, rows = s.timed(bind(REPLAY_PAGE, tenant, cursor_at, until, cursor_id, a.replay_page))
                page_ms.append(seconds * 1000)
                pages += 1
                rows_total += len(rows)
                if len(rows) < a.replay_page:
                    break
                last = rows[-1]
                cursor_at, cursor_id = last[12], int(last[0])
            total = sum(page_ms) / 1000
            passes.append({"rows": rows_total, "pages": pages, "seconds": total,
                           "rows_per_s": rows_total / total, "page_p50_ms": quantile(page_ms, .5),
                           "page_max_ms": max(page_ms)})
            log(f"  pass {attempt + 1}: {thousands(rows_total)} rows in {pages} pages, {total:.2f} s, "
                f"{thousands(rows_total / total)} rows/s")
        # The same pages read in the server (PL/pgSQL, EXECUTE … USING: planned with the values,
        # as the service's statement is): what the database takes, without the client's share.
        page_sql = REPLAY_PAGE.replace("$1", "$1::text").replace("$5", "$5::int8")
        s.notices.clear()
        s.query(f"""DO $replay$
            DECLARE since timestamptz := {lit(since)}; after_id int8 := 0; n int8 := 0; pages int := 0;
                    got int; r record; t0 timestamptz := clock_timestamp();
            BEGIN
                LOOP
                    got := 0;
                    FOR r IN EXECUTE {lit(page_sql)} USING {lit(tenant)}, since, {lit(until)}::timestamptz,
                                                         after_id, {a.replay_page} LOOP
                        got := got + 1; since := r.received_at; after_id := r.id;
                    END LOOP;
                    n := n + got; pages := pages + 1;
                    EXIT WHEN got < {a.replay_page};
                END LOOP;
                RAISE NOTICE 'replay rows=% pages=% seconds=%', n, pages,
                    extract(epoch FROM clock_timestamp() - t0);
            END $replay$""", timeout=a.replay_timeout)
        server = None
        for line in s.notices:
            m = re.search(r"replay rows=(\d+) pages=(\d+) seconds=([\d.]+)", line)
            if m:
                server = {"rows": int(m.group(1)), "pages": int(m.group(2)), "seconds": float(m.group(3))}
                server["rows_per_s"] = server["rows"] / max(server["seconds"], 1e-9)
                log(f"  in the server: {thousands(server['rows'])} rows in {server['seconds']:.3f} s, "
                    f"{thousands(server['rows_per_s'])} rows/s")
        s.close()
        if passes[0]["rows"] != expected:
            log(f"  replay read {passes[0]['rows']} rows, expected {expected}")
        self.r["replay"] = {"tenant": tenant, "since": since, "until": until, "expected": expected,
                            "passes": passes, "plan": plan, "server": server}

    def retention(self) -> None:
        a = self.a
        day = self.days[0]
        name = self.partition(day)
        low = self.day_start(day)
        high = self.day_start(day + dt.timedelta(days=1))
        rows = int(self.pg.value(self.db, f"SELECT count(*) FROM {name}", timeout=300))
        log(f"retention of {name} ({thousands(rows)} events); setting up events_old, the same rows "
            "in an unpartitioned table with the indexes of before")
        t0 = time.monotonic()
        self.pg.rows(self.db, f"""
            SET maintenance_work_mem = '512MB';
            CREATE TABLE events_old (LIKE events INCLUDING DEFAULTS);
            INSERT INTO events_old SELECT * FROM {name} ORDER BY id;
            ALTER TABLE events_old ADD PRIMARY KEY (id);
            CREATE INDEX events_old_chunk ON events_old (chunk_id);
            CREATE INDEX events_old_received_brin ON events_old USING brin (received_at) WITH (autosummarize = on);
            CREATE INDEX events_old_tenant_received ON events_old (tenant, received_at, id);
            CREATE UNIQUE INDEX events_old_tenant_event_id ON events_old (tenant, event_id) WHERE event_id IS NOT NULL;
            VACUUM (ANALYZE) events_old;""", timeout=a.setup_timeout)
        log(f"  events_old ready in {time.monotonic() - t0:.0f} s")
        self.wait_autovacuum(120)

        s = self.session(self.db)
        wal = Wal(s, self.db_oid, self.walinspect)
        s.query("CHECKPOINT") if a.checkpoint_before_retention else None

        # New: what Store::drop_partition does, in one transaction.
        start = wal.lsn()
        seconds, out = s.timed(f"""
            BEGIN;
            SET LOCAL lock_timeout = '2s';
            SELECT extract(epoch FROM clock_timestamp())::text;
            {bind("SELECT coalesce((SELECT greatest(reltuples, 0)::int8 FROM pg_class WHERE oid = to_regclass($1)), 0) AS n", name)};
            ALTER TABLE events DETACH PARTITION "{name}";
            SELECT extract(epoch FROM clock_timestamp())::text;
            {bind(UNFINISHED_CHUNKS, low, high)};
            SELECT extract(epoch FROM clock_timestamp())::text;
            DROP TABLE "{name}";
            SELECT extract(epoch FROM clock_timestamp())::text;
            COMMIT""", timeout=120)
        marks = [float(x[0]) for x in (out[0], out[2], out[4], out[5])]
        out = [out[1], out[3]]
        steps = {"detach_ms": (marks[1] - marks[0]) * 1000, "unfinished_ms": (marks[2] - marks[1]) * 1000,
                 "drop_ms": (marks[3] - marks[2]) * 1000}
        end = wal.lsn()
        lsn_bytes, ours = wal.between(start, end)
        drop = {"seconds": seconds, "lsn_bytes": lsn_bytes, "attributed": ours, "rows": rows,
                "estimated": int(out[0][0]), "unfinished": int(out[1][0]), **steps}
        log(f"  DETACH + DROP: {seconds * 1000:.0f} ms (DETACH {steps['detach_ms']:.0f}, unfinished chunks "
            f"{steps['unfinished_ms']:.0f}, DROP {steps['drop_ms']:.0f}), WAL "
            f"{mib(ours if ours is not None else lsn_bytes)} (cluster LSN {mib(lsn_bytes)})")

        # Old: the DELETE-based purge of the same rows from events_old, 10,000 a statement
        # (it joins `chunks`: before the day's chunk rows are deleted below).
        old = self.delete_loop(s, wal, bind(OLD_PURGE, high, a.batch), rows, a.old_purge_cap, "old purge")
        if old["complete"] and a.vacuum_cap > 0:
            start = wal.lsn()
            try:
                seconds, _ = s.timed("VACUUM events_old", timeout=a.vacuum_cap)
                end = wal.lsn()
                lsn_bytes, ours = wal.between(start, end)
                old["vacuum"] = {"seconds": seconds, "lsn_bytes": lsn_bytes, "attributed": ours}
                log(f"  VACUUM events_old after it: {seconds:.1f} s, WAL {mib(ours if ours is not None else lsn_bytes)}")
            except TimeoutError:
                old["vacuum"] = None
        s.query("DROP TABLE events_old")

        # Both ways delete the day's chunk rows (Store::purge_chunks over the dropped range).
        chunk_batches, chunk_seconds, chunk_rows = 0, 0.0, 0
        start = wal.lsn()
        while True:
            seconds, out = s.timed(bind(PURGE_CHUNKS, low, high, a.batch), timeout=300)
            n = int(out[0][0])
            chunk_seconds += seconds
            chunk_rows += n
            chunk_batches += 1
            if n == 0:
                break
        end = wal.lsn()
        lsn_bytes, ours = wal.between(start, end)
        chunks = {"seconds": chunk_seconds, "rows": chunk_rows, "batches": chunk_batches,
                  "lsn_bytes": lsn_bytes, "attributed": ours}
        log(f"  chunk rows: {thousands(chunk_rows)} in {chunk_seconds:.2f} s, WAL {mib(ours if ours is not None else lsn_bytes)}")

        # Idempotency keys (DEDUP_WINDOW): deleted row by row on their own schedule. One day's.
        keys = None
        if self.r["key_days"]:
            key_day = self.r["key_days"][0]
            cutoff = self.day_start(key_day + dt.timedelta(days=1))
            n_keys = int(s.query(f"SELECT count(*) FROM event_keys WHERE received_at < '{cutoff}'", timeout=300)[0][0])
            log(f"key expiry of {key_day} ({thousands(n_keys)} keys)")
            keys = self.delete_loop(s, wal, bind(EXPIRE_KEYS, cutoff, a.batch), n_keys, a.keys_cap, "key expiry")
            keys["day"] = str(key_day)
        s.close()
        self.r["retention"] = {"partition": name, "drop": drop, "chunks": chunks, "old": old, "keys": keys}

    def delete_loop(self, s: Session, wal: Wal, sql: str, total: int, cap: float, what: str) -> dict:
        """Runs `sql` (deletes a batch, returns the count) until 0 or `cap` seconds of
        statements; WAL per batch, read right after each (the loop may write more WAL than
        max_wal_size, so segments are recycled before its end)."""
        deleted, seconds, batches, lsn_total, ours_total, batch_ms = 0, 0.0, 0, 0, 0, []
        ours_known = self.walinspect
        complete = False
        last_report = time.monotonic()
        while seconds < cap:
            start = wal.lsn()
            took, out = s.timed(sql, timeout=max(60, cap - seconds + 60))
            end = wal.lsn()
            n = int(out[0][0])
            seconds += took
            batch_ms.append(took * 1000)
            batches += 1
            deleted += n
            lsn_bytes, ours = wal.between(start, end)
            lsn_total += lsn_bytes
            if ours is None:
                ours_known = False
            else:
                ours_total += ours
            if n == 0:
                complete = True
                break
            if time.monotonic() - last_report > 30:
                last_report = time.monotonic()
                log(f"  {what}: {thousands(deleted)}/{thousands(total)} rows, {seconds:.0f} s of statements, "
                    f"last batch {took * 1000:.0f} ms")
        result = {"rows": deleted, "total": total, "seconds": seconds, "batches": batches,
                  "complete": complete, "lsn_bytes": lsn_total,
                  "attributed": ours_total if ours_known else None,
                  "first_batch_ms": batch_ms[0] if batch_ms else None,
                  "batch_p50_ms": quantile(batch_ms, .5) if batch_ms else None,
                  "batch_max_ms": max(batch_ms) if batch_ms else None,
                  "slow_batches": sum(1 for t in batch_ms if t > 1000),
                  "last_batch_ms": (batch_ms[-2] if complete and len(batch_ms) > 1
                                    else batch_ms[-1] if batch_ms else None)}
        wal_bytes = result["attributed"] if result["attributed"] is not None else lsn_total
        if not complete and deleted:
            result["extrapolated_seconds"] = seconds * total / deleted
            result["extrapolated_wal"] = wal_bytes * total / deleted
            # Batches re-read the dead rows of the ones before: fit t_k = a + b k to the batch
            # times and sum it over every batch the whole delete needs.
            times = batch_ms
            m = len(times)
            if m >= 3:
                ks = range(1, m + 1)
                mean_k, mean_t = sum(ks) / m, sum(times) / m
                b = sum((k - mean_k) * (t - mean_t) for k, t in zip(ks, times)) / sum((k - mean_k) ** 2 for k in ks)
                a0 = mean_t - b * mean_k
                n = -(-total // max(1, deleted // batches))
                if b > 0:
                    result["fitted_seconds"] = (n * a0 + b * n * (n + 1) / 2) / 1000
        log(f"  {what}: {thousands(deleted)} of {thousands(total)} rows in {seconds:.1f} s, "
            f"WAL {mib(wal_bytes)}{'' if complete else ' (capped)'}")
        return result

    # -- report --

    def report(self) -> str:
        r, a = self.r, self.a
        out: list[str] = []
        w = out.append
        finished = dt.datetime.now(dt.timezone.utc)
        w(f"# `make bench-storage`, {self.started:%Y-%m-%d %H:%M} UTC — the store at "
          f"{thousands(r['loaded_events'] / 1e6)} million events (issue 15)")
        w("")
        pg = r["pg"]
        w(f"Machine: {r['machine']}. PostgreSQL {pg['version']} (shared, as configured: shared_buffers "
          f"{pg['shared_buffers']}, max_wal_size {pg['max_wal_size']}, wal_level {pg['wal_level']}). "
          f"Binaries built from `{r['commit']}`. Run time {(finished - self.started).total_seconds() / 60:.0f} min.")
        if pg.get("autovacuum") == "off":
            w("")
            w(f"The server runs with `autovacuum = off`: the script ANALYZEd tables as autovacuum's default "
              f"threshold would (50 rows + 10 % changed, checked every 15 s; {r.get('autoanalyzed', 0)} ANALYZEs) "
              f"from the end of the load to the retention phase, and VACUUMed the loaded tables once after loading. "
              f"No other vacuum ran (in production autovacuum would also vacuum `chunks`, today's partition and "
              f"the table the old purge deletes from).")
        w("")
        w(f"Store: {thousands(r['loaded_events'])} events in {a.days} day partitions "
          f"({self.days[0]} .. {self.days[-1]}, {thousands(a.events_per_day)} a day, one chunk row per "
          f"{a.chunk_events} events, all `forwarded`), {a.tenants} tenants (tenant_00 ~27 %), "
          f"{thousands(a.subscribers)} subscribers, {a.keyed_percent} % with an eventId ({'UUIDv7, time-ordered like the web SDK sends' if a.key_kind == 'v7' else 'random UUIDv4'}); `event_keys`: "
          f"{thousands(r['loaded_keys'])} keys of the {len(r['key_days'])} days within DEDUP_WINDOW (7 d). "
          f"Loaded with `INSERT … SELECT` ({a.parallel} sessions) in {r['load_seconds'] / 60:.1f} min: events "
          f"{r['load_events_seconds']:.0f} s, keys + primary key {r['load_keys_seconds']:.0f} s, VACUUM (ANALYZE) "
          f"{r['vacuum_seconds']:.0f} s.")
        w("")
        w("| measure | result | target | met |")
        w("|---|---|---|:-:|")
        ing = r.get("ingest")
        if ing:
            lo = statistics.median(x["events_per_s"] for x in ing["loaded"])
            em = statistics.median(x["events_per_s"] for x in ing["empty"])
            ratio = lo / em if em else 0
            stored = min(x["stored_before"] for x in ing["loaded"])
            w(f"| ingest, 100 events/request, {a.clients} clients: {thousands(stored / 1e6)}M+ stored vs empty "
              f"(median of {len(ing['loaded'])} × {a.ingest_seconds} s each, interleaved) | "
              f"{thousands(lo)} vs {thousands(em)} events/s (**{ratio * 100:.0f} %**) | ≥ 90 % | "
              f"{'yes' if ratio >= 0.9 else '**no**'} |")
        keyed = r.get("keyed")
        if keyed and keyed["loaded"] and keyed["empty"]:
            lo = statistics.median(x["events_per_s"] for x in keyed["loaded"])
            em = statistics.median(x["events_per_s"] for x in keyed["empty"])
            w(f"| keyed SQL writes (every event with an eventId; 4 sessions × 1000 events/statement, no HTTP): "
              f"{thousands(r['loaded_keys'] / 1e6)}M keys vs empty | {thousands(lo)} vs {thousands(em)} events/s "
              f"({lo / em * 100:.0f} %) | (≥ 90 %) | {'yes' if lo / em >= 0.9 else '**no**'} |")
        ret = r.get("retention")
        if ret:
            d = ret["drop"]
            wal = d["attributed"] if d["attributed"] is not None else d["lsn_bytes"]
            met = d["seconds"] < 1 and wal < 1024 * 1024
            w(f"| retention of one day, DETACH + DROP of `{ret['partition']}` ({thousands(d['rows'])} events) | "
              f"{d['seconds'] * 1000:,.0f} ms, {mib(wal)} WAL | < 1 s, < 1 MiB | {'yes' if met else '**no**'} |")
            o = ret["old"]
            owal = o["attributed"] if o["attributed"] is not None else o["lsn_bytes"]
            if o["complete"]:
                res = f"{secs(o['seconds'])}, {mib(owal)} WAL ({o['batches'] - 1} DELETEs)"
            else:
                res = (f"capped at {secs(o['seconds'])} after {thousands(o['rows'])} rows ({mib(owal)} WAL); "
                       f"all {thousands(o['total'])}: ≥ {secs(o.get('extrapolated_seconds', 0))} and "
                       f"{mib(o.get('extrapolated_wal', 0))} WAL at the rate so far"
                       + (f", ≈ {secs(o['fitted_seconds'])} if batches keep slowing down as they did"
                          if o.get("fitted_seconds") else ""))
            if o.get("vacuum"):
                v = o["vacuum"]
                vwal = v["attributed"] if v["attributed"] is not None else v["lsn_bytes"]
                res += f"; then VACUUM {secs(v['seconds'])}, {mib(vwal)} WAL"
            ratio_t = (o.get("extrapolated_seconds") or o["seconds"]) / max(d["seconds"], 1e-6)
            ratio_w = (o.get("extrapolated_wal") or owal) / max(wal, 1)
            w(f"| the same rows, the DELETE purge of before (10,000 a statement, on a copy with the old indexes) | "
              f"{res} | (comparison: ≥ {ratio_t:,.0f}× the time, {ratio_w:,.0f}× the WAL) | |")
            c = ret["chunks"]
            cwal = c["attributed"] if c["attributed"] is not None else c["lsn_bytes"]
            w(f"| the day's chunk rows, deleted both ways (`purge_chunks`, {thousands(c['rows'])} rows) | "
              f"{c['seconds']:,.2f} s, {mib(cwal)} WAL | – | |")
            k = ret.get("keys")
            if k:
                kwal = k["attributed"] if k["attributed"] is not None else k["lsn_bytes"]
                if k["complete"]:
                    res = f"{secs(k['seconds'])}, {mib(kwal)} WAL"
                else:
                    res = (f"capped at {secs(k['seconds'])} after {thousands(k['rows'])} keys ({mib(kwal)} WAL); all "
                           f"{thousands(k['total'])}: ≥ {secs(k.get('extrapolated_seconds', 0))} and "
                           f"{mib(k.get('extrapolated_wal', 0))} WAL at the rate so far"
                           + (f", ≈ {secs(k['fitted_seconds'])} if batches keep slowing down as they did"
                              if k.get("fitted_seconds") else ""))
                w(f"| one day's idempotency keys expired (`expire_keys`, {k['day']}, {thousands(k['total'])} keys, "
                  f"DELETE by 10,000) | {res} | – | |")
        rp = r.get("replay")
        if rp:
            p1, p2 = rp["passes"]
            sv = rp.get("server")
            w(f"| replay of one tenant's hour ({rp['tenant']}, {thousands(p1['rows'])} events, "
              f"{p1['pages']} pages of {a.replay_page}) | "
              + (f"in the server {thousands(sv['rows_per_s'])} rows/s ({sv['seconds'] * 1000:,.0f} ms); " if sv else "")
              + f"to a psql client {thousands(p1['rows_per_s'])} rows/s (page p50 {p1['page_p50_ms']:.1f} ms, "
              f"max {p1['page_max_ms']:.1f}), again {thousands(p2['rows_per_s'])} rows/s | – | |")
        h = r.get("health")
        if r.get("startup_seconds") is not None:
            w(f"| ingest-api start on the loaded store (migrations, partition upkeep) to `/readyz` | "
              f"{r['startup_seconds']:.1f} s | – | |")
        if h:
            w(f"| `/health` at {thousands(h['stored'] / 1e6)}M stored ({len(h['ms'])} requests, curl) | "
              f"HTTP {h['status']}, p50 {quantile(h['ms'], .5):.2f} ms, p99 {quantile(h['ms'], .99):.2f} ms, "
              f"max {max(h['ms']):.2f} ms | – | |")
            g = r["gauge"]
            w(f"| pending gauge query (`pending_event_count`, prepared; {thousands(g['chunks'])} chunk rows, "
              f"{thousands(g['unfinished'])} unfinished) | p50 {quantile(g['ms'], .5):.2f} ms, "
              f"p99 {quantile(g['ms'], .99):.2f} ms | – | |")
            w(f"| forwarder's `pending_events{{tenant}}` query (same chunks) | p50 "
              f"{quantile(g['by_tenant_ms'], .5):.2f} ms, max {max(g['by_tenant_ms']):.2f} ms | – | |")
        dk = r.get("disk")
        if dk:
            w(f"| disk per million events stored | {mib(dk['events_per_m'] + dk['chunks_per_m'])} (events "
              f"{mib(dk['events_per_m'])}, of which heap {mib(dk['events_heap_per_m'])}; chunks "
              f"{mib(dk['chunks_per_m'])}) + {mib(dk['keys_per_m'])} per million keyed events while their key is "
              f"kept (DEDUP_WINDOW); this store as loaded: {mib(dk['total_per_m'])} per million events | – | |")
        w("")
        if ing:
            w("Ingest runs (`bench --load-only`, events/s, in the order run):")
            w("")
            w("| store | stored before | events/s | p50 ms | p99 ms | errors | WAL B/event | checkpoints |")
            w("|---|---:|---:|---:|---:|---:|---:|---:|")
            order = []
            li, ei = iter(ing["loaded"]), iter(ing["empty"])
            pattern = (["loaded", "empty", "empty", "loaded"] * a.ingest_runs)[: 2 * a.ingest_runs]
            for which in pattern:
                order.append((which, next(li if which == "loaded" else ei)))
            for which, x in order:
                w(f"| {which} | {thousands(x['stored_before'])} | {thousands(x['events_per_s'])} | "
                  f"{x['p50_ms']:.1f} | {x['p99_ms']:.1f} | {x['errors']} | {x['wal_per_event']:,.0f} | "
                  f"{x['checkpoints']} |")
            w("")
            if keyed:
                w("Keyed SQL writes (`INSERT_CHUNK_SQL` with generated rows, 1000 keyed events a statement, 4 "
                  "sessions), per run: " + "; ".join(
                      f"{which} {thousands(x['events_per_s'])} events/s, WAL {x['wal_per_event']:,.0f} B/event, "
                      f"{x['checkpoints']} checkpoints"
                      for which in ("loaded", "empty") for x in keyed[which]) + ".")
                w("")
        if dk:
            w(f"Disk: events {mib(dk['events_total'])} for {thousands(r['loaded_events'])} events; `event_keys` "
              f"{mib(dk['keys_total'])} for {thousands(r['loaded_keys'])} keys; `chunks` {mib(dk['chunks_total'])}. "
              f"One day, `{dk['day_partition']}`: heap {mib(dk['day_heap'])}, "
              + ", ".join(f"`{n}` {mib(int(b))}" for n, b in dk["day_indexes"]) + ".")
            w("")
        if ret:
            d = ret["drop"]
            w(f"WAL: \"attributed\" sums the records (pg_walinspect) that touched this database's relations or "
              f"belong to a transaction that did; the cluster's LSN moved {mib(d['lsn_bytes'])} during the "
              f"DETACH + DROP (other databases share the server). The drop transaction is "
              f"`drop_partition`'s: DETACH {d['detach_ms']:,.0f} ms (its lock included), the count of "
              f"unfinished chunks of the day {d['unfinished_ms']:,.0f} ms ({d['unfinished']}), DROP "
              f"{d['drop_ms']:,.0f} ms, the rest commit and round trips.")
            o = ret["old"]
            w(f"Old purge batches: first {o['first_batch_ms'] or 0:,.0f} ms, p50 {o['batch_p50_ms'] or 0:,.0f} ms, "
              f"max {o['batch_max_ms'] or 0:,.0f} ms, last full one {o['last_batch_ms'] or 0:,.0f} ms.")
            k = ret.get("keys")
            if k:
                w(f"Key expiry batches: first {k['first_batch_ms'] or 0:,.0f} ms, p50 {k['batch_p50_ms'] or 0:,.0f} ms, "
                  f"max {k['batch_max_ms'] or 0:,.0f} ms ({k['slow_batches']} over 1 s), last full one "
                  f"{k['last_batch_ms'] or 0:,.0f} ms.")
            w("")
        if rp:
            w(f"Replay page plan (first page, `EXPLAIN (ANALYZE, BUFFERS)` of `REPLAY_PAGE`, "
              f"{rp['since']} .. {rp['until']}):")
            w("")
            w("```")
            out.extend(rp["plan"])
            w("```")
            w("")
        if h:
            w("Pending gauge plan:")
            w("")
            w("```")
            out.extend(r["gauge"]["plan"])
            w("```")
            w("")
        return "\n".join(out) + "\n"

    # -- clean-up --

    def cleanup(self) -> None:
        if self.autoanalyze is not None:
            self.autoanalyze.stopping.set()
        for s in self.sessions:
            try:
                s.close()
            except Exception:  # noqa: BLE001
                pass
        for service in self.services:
            try:
                service.stop()
            except Exception as error:  # noqa: BLE001
                log(f"stopping {service.name}: {error}")
        stop_all_children()
        for db in self.created_dbs:
            try:
                self.pg.rows("postgres", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)', timeout=300)
                log(f"dropped database {db}")
            except Exception as error:  # noqa: BLE001
                log(f"could not drop database {db}: {error} — drop it by hand")
        for service in self.services:
            delete_topology(service.prefix)
        shutil.rmtree(self.workdir, ignore_errors=True) if self.a.remove_logs else None


def main() -> int:
    default_target = os.environ.get("CARGO_TARGET_DIR", str(REPO / "target"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--bin-dir", type=Path, default=Path(default_target) / "release",
                   help="where ingest-api and bench are (release build)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--pg-host", default=os.environ.get("PGHOST", "127.0.0.1"))
    p.add_argument("--pg-port", type=int, default=int(os.environ.get("PGPORT", "5432")))
    p.add_argument("--pg-user", default=os.environ.get("PGUSER", "postgres"))
    p.add_argument("--amqp-url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
    p.add_argument("--days", type=int, default=10, help="past days loaded, one partition each")
    p.add_argument("--events-per-day", type=int, default=5_000_000)
    p.add_argument("--chunk-events", type=int, default=100, help="events per chunk row")
    p.add_argument("--tenants", type=int, default=50)
    p.add_argument("--subscribers", type=int, default=1_000_000)
    p.add_argument("--keyed-percent", type=int, default=90, help="events with an eventId")
    p.add_argument("--key-kind", choices=["v7", "v4"], default="v7",
                   help="eventIds: time-ordered like the web SDK's UUIDv7 (v7), or random (v4)")
    p.add_argument("--key-days", type=int, default=7, help="days whose keys are in event_keys (DEDUP_WINDOW)")
    p.add_argument("--parallel", type=int, default=2, help="loading sessions")
    p.add_argument("--load-timeout", type=float, default=3600, help="bound of the whole load, s")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--ingest-seconds", type=int, default=20)
    p.add_argument("--ingest-runs", type=int, default=3, help="runs per store")
    p.add_argument("--keyed-seconds", type=int, default=20, help="0: skip the keyed SQL writes")
    p.add_argument("--keyed-runs", type=int, default=2)
    p.add_argument("--health-requests", type=int, default=500)
    p.add_argument("--gauge-queries", type=int, default=200)
    p.add_argument("--replay-page", type=int, default=1000)
    p.add_argument("--replay-timeout", type=float, default=600)
    p.add_argument("--batch", type=int, default=10_000, help="rows per DELETE (PURGE_BATCH)")
    p.add_argument("--setup-timeout", type=float, default=1200, help="bound of the events_old copy, s")
    p.add_argument("--old-purge-cap", type=float, default=600, help="seconds of old DELETEs at most")
    p.add_argument("--vacuum-cap", type=float, default=300, help="VACUUM after the old purge, s (0: skip)")
    p.add_argument("--keys-cap", type=float, default=300, help="seconds of key-expiry DELETEs at most")
    p.add_argument("--checkpoint-before-retention", action="store_true",
                   help="CHECKPOINT first (WAL then includes the full-page images a steady state has)")
    p.add_argument("--remove-logs", action="store_true", help="delete the services' logs at the end")
    args = p.parse_args()
    args.bin_dir = args.bin_dir.resolve()

    bench = Bench(args)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    report = None
    try:
        bench.preflight()
        bench.create_databases()
        bench.start_services()
        bench.load()
        bench.disk()
        bench.start_autoanalyze()
        bench.restart_loaded()
        bench.ingest()
        bench.keyed_writes()
        bench.health()
        bench.replay()
        bench.stop_autoanalyze()
        bench.retention()
        report = bench.report()
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    except Exception as error:
        log(f"failed: {type(error).__name__}: {error}")
        if bench.r.get("loaded_events"):
            try:
                report = bench.report()
                log("partial results:\n" + report)
            except Exception:  # noqa: BLE001
                pass
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the clean-up finish
        bench.cleanup()
        log(f"total {(time.monotonic() - STARTED) / 60:.1f} min")
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{bench.stamp}-storage.md"
    path.write_text(report)
    log(f"report written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
