//! `ncanto-mock`: serve the fake Ncanto until SIGTERM/SIGINT.

use clap::Parser;
use ncanto_mock::{Config, MockServer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A missing .env is normal outside local runs.
    let _ = dotenvy::dotenv();
    let config = Config::parse();
    interaction_runtime::init_logging(config.log_format);
    let mock = MockServer::start(config.mock_config()?).await?;
    match mock.admin_url() {
        Some(admin) => log::info!("ncanto-mock listening on {} (admin {admin})", mock.url()),
        None => log::info!("ncanto-mock listening on {}", mock.url()),
    }
    log::info!("faults: {:?}", mock.faults());
    mock.run_until_stopped(config.stats_log_every()).await;
    Ok(())
}
