//! `make bench`: the whole pipeline on this machine (release binaries, local PostgreSQL and
//! RabbitMQ, ncanto-mock), driven by a Rust load generator over loopback. Prints one table
//! and writes `bench/results/<date>.json`. It reports; it never fails on a figure.
//!
//! Phases: the raw limits (PostgreSQL inserts, RabbitMQ confirmed publishes of the same rows
//! and messages); ingest throughput at 100 events per request and at 1, at several
//! concurrencies (forwarder stopped, so ingest has the machine); latency at half of peak in
//! open loop; the forwarder draining the backlog that built up; then ingest and forwarding at
//! once at a fixed rate, with time from 202 to arrival.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::expect_used)] // a report is its output

mod load;
mod procs;
mod raw;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use hyper::header::HeaderValue;
use interaction_core::{Device, Event, Interaction, InteractionType, Setting};
use interaction_store::testing::TestDatabase;
use load::{LoadResult, Progress, Target};
use procs::Proc;
use raw::RawRate;
use serde::Serialize;

/// Throughput, latency and memory of the whole pipeline.
#[derive(Debug, Parser)]
struct Args {
    /// About 30 s instead of a few minutes: one concurrency level per phase, short phases.
    #[arg(long)]
    quick: bool,
    /// Where the JSON report goes.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Events per second offered in the end-to-end phase.
    #[arg(long, default_value_t = 60_000.0)]
    e2e_rate: f64,
    /// Only drive an ingest-api already running at this address (e.g. `127.0.0.1:8080`, key
    /// `bench-key-0123456789`) in closed loop and print the result: for profiling.
    #[arg(long)]
    load_only: Option<std::net::SocketAddr>,
    /// With `--load-only`: clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// With `--load-only`: seconds.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// With `--load-only`: events per request (0: `GET /livez`, the HTTP ceiling).
    #[arg(long, default_value_t = 1)]
    events: usize,
}

/// What to send to the ingest-api at `addr`: one event to `/api/v1/log`, several to
/// `/api/v1/logs`, none: `GET /livez` — the HTTP ceiling, a request that touches nothing but
/// the HTTP layer, driven by the same generator.
fn target_for(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    events: &[Event],
) -> anyhow::Result<Target> {
    let (method, path, body, expect) = match events {
        [] => (
            hyper::Method::GET,
            "/livez",
            Vec::new(),
            hyper::StatusCode::OK,
        ),
        [one] => (
            hyper::Method::POST,
            "/api/v1/log",
            serde_json::to_vec(one)?,
            hyper::StatusCode::ACCEPTED,
        ),
        many => (
            hyper::Method::POST,
            "/api/v1/logs",
            serde_json::to_vec(many)?,
            hyper::StatusCode::ACCEPTED,
        ),
    };
    Ok(Target {
        client: client.clone(),
        addr,
        method,
        path: path.into(),
        key: HeaderValue::from_static(API_KEY),
        body: body.into(),
        events: events.len() as u64,
        expect,
    })
}

/// `--load-only`: one closed-loop phase against a running ingest-api.
async fn load_only(addr: std::net::SocketAddr, args: &Args) -> anyhow::Result<()> {
    let sample = events(args.events);
    let target = target_for(&reqwest::Client::new(), addr, &sample)?;
    let result = load::closed_loop(&target, args.clients, Duration::from_secs(args.seconds)).await;
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}

struct Plan {
    phase: Duration,
    batch_levels: Vec<usize>,
    single_levels: Vec<usize>,
    e2e: Duration,
    drain_cap: Duration,
    raw: Duration,
}

const API_KEY: &str = "bench-key-0123456789";
/// The name of the HTTP-ceiling phases.
const CEILING: &str = "HTTP ceiling: GET /livez";
/// The name of the single-event phases.
const SINGLE: &str = "ingest 1/request";

fn events(n: usize) -> Vec<Event> {
    let now = chrono::Utc::now();
    (0..n)
        .map(|i| Event {
            interaction: Interaction {
                timestamp: now - chrono::TimeDelta::seconds(i as i64),
                subscriber: format!("viusasa_user_{}", 10_000 + i * 37),
                asset_id: format!("viusasa_episode_{}", 60_000 + i * 11),
                interaction: InteractionType::PlayComplete,
                rating_equivalent: 0.5,
                comment: Some("User watched 90% of the episode.".into()),
                context_id: Some("viusasa_player_context".into()),
                setting: Setting {
                    device: Device::ALL[i % 3],
                },
            },
            event_id: None,
            original_timestamp: None,
        })
        .collect()
}

#[derive(Serialize)]
struct Phase {
    name: String,
    concurrency: Option<usize>,
    result: LoadResult,
}

#[derive(Serialize, Default)]
struct EndToEnd {
    offered_events_per_s: f64,
    accepted_events_per_s: f64,
    delivered_events_per_s: f64,
    backlog_at_end: i64,
    arrival_p50_ms: Option<f64>,
    arrival_p99_ms: Option<f64>,
}

#[derive(Serialize)]
struct Usage {
    process: &'static str,
    peak_rss_mib: Option<f64>,
    cpu_seconds: Option<f64>,
}

#[derive(Serialize)]
struct Report {
    date: String,
    machine: String,
    quick: bool,
    raw_postgres: RawRate,
    raw_rabbitmq: RawRate,
    phases: Vec<Phase>,
    drain_events_per_s: Option<f64>,
    drained_events: i64,
    end_to_end: EndToEnd,
    usage: Vec<Usage>,
    /// The write path's targets against this run's figures.
    targets: Vec<TargetCheck>,
}

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(str::to_owned))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map(|kib| format!("{:.0} GiB", kib / 1024.0 / 1024.0))
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    format!("{cores} cores, {memory}, {cpu}")
}

async fn get_json(client: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    client.get(url).send().await.ok()?.json().await.ok()
}

async fn wait_ready(client: &reqwest::Client, url: &str, process: &mut Proc) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        anyhow::ensure!(
            process.alive(),
            "{} exited during start-up (see its log)",
            process.name
        );
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} not ready after 60 s",
            process.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // reqwest's TLS needs a process-wide crypto provider (see interaction-runtime).
    interaction_runtime::install_tls_provider();
    if let Some(addr) = args.load_only {
        return load_only(addr, &args).await;
    }
    let plan = if args.quick {
        Plan {
            phase: Duration::from_secs(2),
            batch_levels: vec![32],
            single_levels: vec![32],
            e2e: Duration::from_secs(5),
            drain_cap: Duration::from_secs(15),
            raw: Duration::from_secs(2),
        }
    } else {
        Plan {
            phase: Duration::from_secs(8),
            batch_levels: vec![8, 32, 64],
            single_levels: vec![32, 256],
            e2e: Duration::from_secs(20),
            drain_cap: Duration::from_secs(90),
            raw: Duration::from_secs(6),
        }
    };
    let amqp_url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let bin = procs::bin_dir()?;
    let batch = events(100);
    let stamp = chrono::Utc::now().format("%Y-%m-%d-%H%M").to_string();
    let workdir = std::env::temp_dir().join(format!("bench-{stamp}-{}", std::process::id()));
    std::fs::create_dir_all(&workdir)?;
    eprintln!("bench: logs in {}", workdir.display());

    // 1. The limits, with the machine to themselves.
    eprintln!("bench: raw PostgreSQL inserts ({:?})", plan.raw);
    let (raw_db, raw_store) = TestDatabase::migrated().await;
    let raw_postgres = raw::postgres(&raw_store, &batch, 8, plan.raw).await?;
    drop(raw_store);
    drop(raw_db);
    eprintln!("bench: raw RabbitMQ confirmed publishes ({:?})", plan.raw);
    let raw_rabbitmq = raw::rabbitmq(&amqp_url, &batch, 64, plan.raw).await?;

    // 2. The pipeline.
    let db = TestDatabase::create().await;
    let prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let (ingest_port, admin_port, mock_port) = (free_port(), free_port(), free_port());
    let env = |extra: &[(&str, String)]| -> Vec<(String, String)> {
        [
            ("DATABASE_URL", db.url.clone()),
            ("AMQP_URL", amqp_url.clone()),
            ("AMQP_PREFIX", prefix.clone()),
            ("RUST_LOG", "warn".to_owned()),
            ("NCANTO_API_KEY", "bench-ncanto-key".to_owned()),
        ]
        .iter()
        .cloned()
        .chain(extra.iter().cloned())
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .tcp_nodelay(true)
        .build()?;
    let mut mock = Proc::spawn(
        &bin,
        "ncanto-mock",
        &env(&[
            ("NCANTO_MOCK_ADDR", format!("127.0.0.1:{mock_port}")),
            ("NCANTO_MOCK_ADMIN_ADDR", "none".into()),
            ("NCANTO_MOCK_RECORD_EVENTS", "false".into()),
            ("NCANTO_MOCK_WORKERS", "1".into()),
        ]),
        &workdir,
        &workdir.join("ncanto-mock.log"),
    )?;
    let mut ingest = Proc::spawn(
        &bin,
        "ingest-api",
        &env(&[
            ("INGEST_ADDR", format!("127.0.0.1:{ingest_port}")),
            ("INGEST_ADMIN_ADDR", format!("127.0.0.1:{}", free_port())),
            // The default configuration of one tenant otherwise: rate limits included.
            ("API_KEYS", format!("bench:{API_KEY}")),
        ]),
        &workdir,
        &workdir.join("ingest-api.log"),
    )?;
    let ingest_url = format!("http://127.0.0.1:{ingest_port}");
    let mock_url = format!("http://127.0.0.1:{mock_port}");
    wait_ready(&client, &format!("{mock_url}/health"), &mut mock).await?;
    wait_ready(&client, &format!("{ingest_url}/readyz"), &mut ingest).await?;

    let ingest_addr: std::net::SocketAddr = format!("127.0.0.1:{ingest_port}").parse()?;
    let batch_target = target_for(&client, ingest_addr, &batch)?;
    let single_target = target_for(&client, ingest_addr, &batch[..1])?;
    let ceiling_target = target_for(&client, ingest_addr, &[])?;

    // 3. Ingest alone.
    let mut phases = Vec::new();
    for &c in &plan.batch_levels {
        eprintln!("bench: ingest, 100 events per request, {c} clients");
        let result = load::closed_loop(&batch_target, c, plan.phase).await;
        phases.push(Phase {
            name: "ingest 100/request".into(),
            concurrency: Some(c),
            result,
        });
    }
    for &c in &plan.single_levels {
        eprintln!("bench: HTTP ceiling, GET /livez, {c} clients");
        let result = load::closed_loop(&ceiling_target, c, plan.phase).await;
        phases.push(Phase {
            name: CEILING.into(),
            concurrency: Some(c),
            result,
        });
        eprintln!("bench: ingest, 1 event per request, {c} clients");
        let result = load::closed_loop(&single_target, c, plan.phase).await;
        phases.push(Phase {
            name: SINGLE.into(),
            concurrency: Some(c),
            result,
        });
    }
    let peak_rps = phases
        .iter()
        .filter(|p| p.name == "ingest 100/request")
        .map(|p| p.result.requests_per_s)
        .fold(0.0, f64::max);
    eprintln!(
        "bench: open loop at half of peak ({:.0} requests/s)",
        peak_rps / 2.0
    );
    let result = load::open_loop(
        &batch_target,
        (peak_rps / 2.0).max(1.0),
        plan.phase,
        Arc::new(Progress::default()),
    )
    .await;
    phases.push(Phase {
        name: "ingest 100/request, open loop at ½ peak".into(),
        concurrency: None,
        result,
    });

    // 4. The forwarder drains what built up.
    let pending = |client: reqwest::Client, url: String| async move {
        get_json(&client, &format!("{url}/health"))
            .await
            .and_then(|h| h["pending_interactions"].as_i64())
    };
    let backlog = pending(client.clone(), ingest_url.clone())
        .await
        .unwrap_or(0);
    eprintln!(
        "bench: forwarder draining a backlog of {backlog} events (at most {:?})",
        plan.drain_cap
    );
    let mut forwarder = Proc::spawn(
        &bin,
        "forwarder",
        &env(&[
            ("FORWARDER_ADMIN_ADDR", format!("127.0.0.1:{admin_port}")),
            ("NCANTO_API_URL", mock_url.clone()),
            ("PREFETCH", "32".into()),
        ]),
        &workdir,
        &workdir.join("forwarder.log"),
    )?;
    let received_before_drain = get_json(&client, &format!("{mock_url}/stats"))
        .await
        .and_then(|s| s["received"].as_u64())
        .unwrap_or(0);
    let drain_started = Instant::now();
    wait_ready(
        &client,
        &format!("http://127.0.0.1:{admin_port}/readyz"),
        &mut forwarder,
    )
    .await?;
    let mut drained_events = 0;
    let mut drain_events_per_s = None;
    while drain_started.elapsed() < plan.drain_cap {
        let left = pending(client.clone(), ingest_url.clone())
            .await
            .unwrap_or(backlog);
        drained_events = backlog - left;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Counted where it matters: events the mock received, not just chunks marked forwarded.
    let arrived = get_json(&client, &format!("{mock_url}/stats"))
        .await
        .and_then(|s| s["received"].as_u64())
        .unwrap_or(0)
        .saturating_sub(received_before_drain);
    let drain_seconds = drain_started.elapsed().as_secs_f64();
    if arrived > 0 {
        drain_events_per_s = Some(arrived as f64 / drain_seconds);
    }
    eprintln!(
        "bench: drain: {drained_events} events marked forwarded, {arrived} received by the mock in {drain_seconds:.1} s"
    );
    let drained_events = arrived as i64;
    // Let a cut-short drain finish before the end-to-end phase measures its own events.
    while pending(client.clone(), ingest_url.clone())
        .await
        .unwrap_or(0)
        > 0
        && drain_started.elapsed() < plan.drain_cap * 2
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 5. Ingest and forwarding at once.
    eprintln!(
        "bench: end to end at {:.0} events/s for {:?}",
        args.e2e_rate, plan.e2e
    );
    let received = |client: reqwest::Client, url: String| async move {
        get_json(&client, &format!("{url}/stats"))
            .await
            .and_then(|s| s["received"].as_u64())
            .unwrap_or(0)
    };
    let base = received(client.clone(), mock_url.clone()).await;
    let progress = Arc::new(Progress::default());
    let sampling = {
        let (client, mock_url, progress) = (client.clone(), mock_url.clone(), progress.clone());
        let window = plan.e2e;
        tokio::spawn(async move {
            let started = Instant::now();
            let mut samples: Vec<(f64, u64, u64)> = Vec::new();
            loop {
                let acked = progress.acked_events.load(Ordering::Relaxed);
                let got = received(client.clone(), mock_url.clone())
                    .await
                    .saturating_sub(base);
                let t = started.elapsed().as_secs_f64();
                samples.push((t, acked, got));
                if t > window.as_secs_f64() + 1.0
                    && (got >= acked || t > window.as_secs_f64() + 60.0)
                {
                    return samples;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let e2e_result = load::open_loop(
        &batch_target,
        args.e2e_rate / 100.0,
        plan.e2e,
        progress.clone(),
    )
    .await;
    let samples = sampling.await?;
    let end_of_load = samples
        .iter()
        .rev()
        .find(|s| s.0 <= plan.e2e.as_secs_f64())
        .copied()
        .unwrap_or((0.0, 0, 0));
    // Time from 202 to arrival, read off the two curves (events arrive in order, per sample).
    let mut delays: Vec<f64> = samples
        .iter()
        .filter(|s| s.1 > 0 && s.0 <= plan.e2e.as_secs_f64())
        .filter_map(|s| {
            samples
                .iter()
                .find(|later| later.0 >= s.0 && later.2 >= s.1)
                .map(|later| (later.0 - s.0) * 1000.0)
        })
        .collect();
    delays.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        delays
            .get(((delays.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    let end_to_end = EndToEnd {
        offered_events_per_s: args.e2e_rate,
        accepted_events_per_s: e2e_result.events_per_s,
        delivered_events_per_s: end_of_load.2 as f64 / plan.e2e.as_secs_f64(),
        backlog_at_end: end_of_load.1 as i64 - end_of_load.2 as i64,
        arrival_p50_ms: quantile(0.5),
        arrival_p99_ms: quantile(0.99),
    };
    phases.push(Phase {
        name: "end to end (ingest side)".into(),
        concurrency: None,
        result: e2e_result,
    });

    let usage = [&ingest, &forwarder, &mock]
        .iter()
        .map(|p| Usage {
            process: p.name,
            peak_rss_mib: p.peak_rss_mib(),
            cpu_seconds: p.cpu_seconds(),
        })
        .collect();
    for process in [forwarder, ingest, mock] {
        process.stop(Duration::from_secs(25)).await;
    }
    if let Ok(connection) = interaction_bus::connect(&amqp_url.as_str().into(), None).await
        && let Ok(channel) = connection.create_channel().await
    {
        let _ = interaction_bus::delete_topology(
            &channel,
            &interaction_bus::Topology::new(prefix.clone()),
        )
        .await;
        let _ = connection.close(200, "bench done".into()).await;
    }
    drop(db);

    let report = Report {
        date: chrono::Utc::now().to_rfc3339(),
        machine: machine(),
        quick: args.quick,
        raw_postgres,
        raw_rabbitmq,
        phases,
        drain_events_per_s,
        drained_events,
        end_to_end,
        usage,
        targets: Vec::new(),
    };
    let mut report = report;
    report.targets = targets(&report);
    print_table(&report);
    std::fs::create_dir_all(&args.out)?;
    let path = args.out.join(format!(
        "{stamp}{}.json",
        if args.quick { "-quick" } else { "" }
    ));
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    let _ = std::fs::remove_dir_all(&workdir);
    eprintln!("bench: report written to {}", path.display());
    Ok(())
}

/// Each single-event phase with the ceiling measured at the same concurrency.
fn ceiling_pairs(report: &Report) -> Vec<(usize, &LoadResult, &LoadResult)> {
    report
        .phases
        .iter()
        .filter(|p| p.name == SINGLE)
        .filter_map(|single| {
            let clients = single.concurrency?;
            let ceiling = report
                .phases
                .iter()
                .find(|p| p.name == CEILING && p.concurrency == Some(clients))?;
            Some((clients, &ceiling.result, &single.result))
        })
        .collect()
}

/// A target of the write path, and whether this run met it.
#[derive(Serialize)]
struct TargetCheck {
    what: String,
    measured: String,
    met: bool,
}

/// The write path's targets, checked against this run (reported, never enforced).
fn targets(report: &Report) -> Vec<TargetCheck> {
    let mut checks = Vec::new();
    for (clients, ceiling, single) in ceiling_pairs(report) {
        let fraction = single.events_per_s / ceiling.requests_per_s.max(1.0);
        let (want, p99) = match clients {
            32 => (0.40, Some(5.0)),
            256 => (0.50, None),
            _ => continue,
        };
        checks.push(TargetCheck {
            what: format!(
                "single events, {clients} clients: ≥ {:.0}% of the ceiling{}, 0 errors",
                want * 100.0,
                p99.map(|ms| format!(", p99 ≤ {ms} ms")).unwrap_or_default()
            ),
            measured: format!(
                "{:.0}%, p99 {:.2} ms, {} errors",
                fraction * 100.0,
                single.p99_ms,
                single.errors
            ),
            met: fraction >= want && p99.is_none_or(|ms| single.p99_ms <= ms) && single.errors == 0,
        });
    }
    if let Some(batch) = report
        .phases
        .iter()
        .find(|p| p.name == "ingest 100/request" && p.concurrency == Some(32))
    {
        let raw = report.raw_postgres.events_per_s;
        checks.push(TargetCheck {
            what: "100 events/request, 32 clients: ≥ the raw PostgreSQL insert rate".into(),
            measured: format!(
                "{} vs {} events/s ({:.0}%)",
                thousands(batch.result.events_per_s),
                thousands(raw),
                batch.result.events_per_s / raw.max(1.0) * 100.0
            ),
            met: batch.result.events_per_s >= raw && batch.result.errors == 0,
        });
    }
    checks
}

fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn print_table(report: &Report) {
    let pg = report.raw_postgres.events_per_s;
    let amqp = report.raw_rabbitmq.events_per_s;
    println!();
    println!(
        "Machine: {}{}",
        report.machine,
        if report.quick { " (quick run)" } else { "" }
    );
    println!();
    println!(
        "| measure | events/s | requests/s | p50 ms | p90 ms | p99 ms | max ms | errors | vs raw PostgreSQL |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| raw PostgreSQL insert, 100 rows/statement, 8 connections | {} | {} stmts | | | | | | 100% |",
        thousands(pg),
        thousands(report.raw_postgres.units_per_s)
    );
    println!(
        "| raw RabbitMQ publish + confirm, 100 events/message, 64 in flight | {} | {} msgs | | | | | | {:.0}% |",
        thousands(amqp),
        thousands(report.raw_rabbitmq.units_per_s),
        amqp / pg * 100.0
    );
    for phase in &report.phases {
        let r = &phase.result;
        let name = match phase.concurrency {
            Some(c) => format!("{}, {c} clients", phase.name),
            None => phase.name.clone(),
        };
        println!(
            "| {name} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.0}% |",
            thousands(r.events_per_s),
            thousands(r.requests_per_s),
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.max_ms,
            r.errors,
            r.events_per_s / pg * 100.0
        );
    }
    if let Some(rate) = report.drain_events_per_s {
        println!(
            "| forwarder drain of a {}-event backlog | {} | | | | | | | {:.0}% |",
            thousands(report.drained_events as f64),
            thousands(rate),
            rate / pg * 100.0
        );
    }
    let e = &report.end_to_end;
    println!(
        "| end to end: offered {} ev/s → delivered to Ncanto | {} | | {} | | {} | | backlog {} | {:.0}% |",
        thousands(e.offered_events_per_s),
        thousands(e.delivered_events_per_s),
        e.arrival_p50_ms
            .map(|v| format!("{v:.0}"))
            .unwrap_or_else(|| "–".into()),
        e.arrival_p99_ms
            .map(|v| format!("{v:.0}"))
            .unwrap_or_else(|| "–".into()),
        e.backlog_at_end,
        e.delivered_events_per_s / pg * 100.0
    );
    println!();
    println!("Single events against the HTTP ceiling (same generator, same run):");
    println!();
    println!(
        "| clients | ceiling requests/s | single events/s | of the ceiling | p50 ms | p99 ms | errors |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (clients, ceiling, single) in ceiling_pairs(report) {
        println!(
            "| {clients} | {} | {} | {:.0}% | {:.2} | {:.2} | {} |",
            thousands(ceiling.requests_per_s),
            thousands(single.events_per_s),
            single.events_per_s / ceiling.requests_per_s.max(1.0) * 100.0,
            single.p50_ms,
            single.p99_ms,
            single.errors
        );
    }
    println!();
    println!("| target (issue 13) | measured | met |");
    println!("|---|---|:-:|");
    for target in &report.targets {
        println!(
            "| {} | {} | {} |",
            target.what,
            target.measured,
            if target.met { "yes" } else { "**no**" }
        );
    }
    println!();
    println!("| process | peak RSS MiB | CPU s |");
    println!("|---|---:|---:|");
    for u in &report.usage {
        println!(
            "| {} | {} | {} |",
            u.process,
            u.peak_rss_mib
                .map(|v| format!("{v:.1}"))
                .unwrap_or_else(|| "–".into()),
            u.cpu_seconds
                .map(|v| format!("{v:.1}"))
                .unwrap_or_else(|| "–".into())
        );
    }
    println!();
    println!(
        "(end-to-end p50/p99 are the time from 202 to arrival at the mock, read off the accepted and delivered curves sampled every 20 ms)"
    );
}
