//! `ingest-api`: serve the HTTP API, or `ingest-api migrate`.

use clap::Parser;
use ingest_api::{Application, Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A missing .env is normal outside local runs.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    interaction_runtime::init_logging(cli.config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            let applied = cli.config.connections.store()?.migrate().await?;
            log::info!(
                "applied {} migrations: {}",
                applied.len(),
                applied.join(", ")
            );
        }
        Command::Serve => {
            let app = Application::build(cli.config).await?;
            log::info!("ingest-api listening on port {}", app.port());
            app.run_until_stopped().await?;
        }
    }
    Ok(())
}
