//! `forwarder`: serve (the default), or run an operator command.
#![allow(clippy::print_stdout)] // command reports are the command's output

use clap::Parser;
use forwarder::app::{ncanto, policy, publisher};
use forwarder::{Cli, Command, Forwarder};
use interaction_bus::Topology;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A missing .env is normal outside local runs.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    let config = cli.config;
    interaction_runtime::init_logging(config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let forwarder = Forwarder::build(config).await?;
            log::info!("forwarder admin port {}", forwarder.admin_port());
            forwarder.run_until_stopped().await?;
        }
        Command::Migrate => {
            let applied = config.connections.store()?.migrate().await?;
            println!(
                "applied {} migrations: {}",
                applied.len(),
                applied.join(", ")
            );
        }
        Command::Redrive(args) => {
            let publisher = publisher(&config)?;
            let report = forwarder::redrive::redrive(
                &config.connections.amqp_url,
                config.connections.amqp_ca_file.as_deref(),
                &Topology::new(config.connections.amqp_prefix.clone()),
                &publisher,
                &forwarder::redrive::RedriveFilter {
                    chunks: args.chunks,
                    tenant: args.tenant,
                    limit: args.limit,
                    dry_run: args.dry_run,
                },
            )
            .await?;
            publisher.close().await;
            for (chunk, reason) in &report.selected {
                println!("chunk {chunk}: {reason}");
            }
            let verb = if args.dry_run { "would move" } else { "moved" };
            println!(
                "{verb} {} messages ({} events; {} dead-lettered by RabbitMQ) of {} examined; \
                 {} undecodable left parked",
                report.moved,
                report.events,
                report.dead_lettered,
                report.examined,
                report.undecodable
            );
        }
        Command::Replay(args) => {
            let report = forwarder::replay::replay(
                &config.connections.store()?,
                &ncanto(&config)?,
                &policy(&config),
                &forwarder::replay::ReplayRequest {
                    tenant: args.tenant,
                    since: args.since,
                    until: args.until.unwrap_or_else(chrono::Utc::now),
                    dry_run: args.dry_run,
                    rate: args.rate,
                    after_id: args.after_id,
                },
            )
            .await?;
            if args.dry_run {
                println!(
                    "would replay {} events; each page is read as {}",
                    report.total, report.plan
                );
            } else {
                println!(
                    "replayed {} of {} events; {} refused{}",
                    report.sent,
                    report.total,
                    report.refused,
                    report
                        .first_refusal
                        .map(|r| format!(" (first: {r})"))
                        .unwrap_or_default()
                );
            }
        }
        Command::Trace(args) => {
            let query = args.query(chrono::Utc::now())?;
            let report = forwarder::trace::trace(&config.connections.store()?, &query).await?;
            let rendered = forwarder::trace::render(&report, args.format())?;
            println!("{}", rendered.trim_end());
        }
        Command::Purge(args) => {
            let store = config.connections.store()?;
            if args.dry_run {
                let plan = forwarder::purge::plan(&store, args.older_than).await?;
                if plan.is_empty() {
                    println!("no partition is old enough to drop");
                }
                for (name, rows, unfinished) in plan {
                    if unfinished > 0 {
                        println!(
                            "would keep {name} (~{rows} events): {unfinished} chunks unfinished"
                        );
                    } else {
                        println!("would drop {name} (~{rows} events)");
                    }
                }
            } else {
                let retention = forwarder::purge::Retention {
                    older_than: args.older_than,
                    dedup_window: config.dedup_window,
                    failures_older_than: config.purge_failures_older_than,
                    batch: config.purge_batch,
                };
                let Some(total) = forwarder::purge::purge(&store, retention).await? else {
                    anyhow::bail!(
                        "another forwarder is applying retention right now (it holds the \
                         retention lock); nothing was deleted — run this again when it is done"
                    );
                };
                println!(
                    "dropped {} partitions (~{} events){}, deleted {} chunks and {} failure \
                     rows, expired {} keys",
                    total.dropped.len(),
                    total.events,
                    if total.dropped.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", total.dropped.join(", "))
                    },
                    total.chunks,
                    total.failures,
                    total.keys
                );
                for (name, unfinished) in total.held {
                    println!(
                        "kept {name}: {unfinished} chunks unfinished (0: table busy, next run)"
                    );
                }
            }
        }
    }
    Ok(())
}
