//! Starting, reconfiguring and stopping the mock: the main listener (the fake Ncanto plus the
//! admin routes) on an already-bound socket so tests can use port 0, an optional admin
//! listener that no fault ever closes, and a supervisor that closes and re-opens the main
//! listener when a `Refuse` outage is set and cleared over HTTP.
//!
//! The main listener serves https when given a certificate and key (as the real Ncanto does
//! in production), so the forwarder's TLS and certificate handling can be tested against it.
//! TLS is rustls with the ring provider; the admin listener stays plain http.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::faults::{Dice, Faults, Outage};
use crate::routes::{self, Shared, Versioned};
use crate::stats::Stats;

/// How the mock starts.
#[derive(Debug, Clone, PartialEq)]
pub struct MockConfig {
    /// Address of the main listener (`/interactions` and the admin routes). Port 0 picks a
    /// free port. Ignored by [`MockServer::start_on`]. The default is `127.0.0.1:0`; the
    /// binary's is `127.0.0.1:8090`.
    pub addr: SocketAddr,
    /// Faults in force from the start.
    pub faults: Faults,
    /// When set, `/interactions` requires `Authorization: Bearer <key>` (else 401).
    pub expected_api_key: Option<String>,
    /// Address of a second listener serving only the admin routes, never closed by a
    /// `Refuse` outage. `None` (the default): no admin listener.
    pub admin_addr: Option<SocketAddr>,
    /// Keep every accepted event for [`MockServer::events`] (default on; benchmarks turn it
    /// off to keep memory flat).
    pub record_events: bool,
    /// HTTP worker threads of the main listener (0, the default: one per core).
    pub workers: usize,
    /// Serve https on the main listener with these files (`None`, the default: plain http).
    pub tls: Option<TlsFiles>,
}

/// The PEM files of an https listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, the server's certificate first.
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl TlsFiles {
    /// The rustls server configuration these files make (ring provider, TLS 1.2 and 1.3);
    /// errors name the file at fault.
    pub fn server_config(&self) -> anyhow::Result<rustls::ServerConfig> {
        let certs = read_certs(&self.cert_file)?;
        let key = PrivateKeyDer::from_pem_file(&self.key_file).map_err(|e| {
            anyhow::anyhow!(
                "NCANTO_MOCK_TLS_KEY {}: no usable private key: {e}",
                self.key_file.display()
            )
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .with_context(|| {
                format!(
                    "NCANTO_MOCK_TLS_CERT {} and NCANTO_MOCK_TLS_KEY {} do not make a TLS identity",
                    self.cert_file.display(),
                    self.key_file.display()
                )
            })
    }
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let name = path.display();
    let pem =
        std::fs::read(path).with_context(|| format!("reading NCANTO_MOCK_TLS_CERT {name}"))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("NCANTO_MOCK_TLS_CERT {name} is not PEM: {e}"))?;
    if certs.is_empty() {
        anyhow::bail!("NCANTO_MOCK_TLS_CERT {name} holds no PEM certificate");
    }
    Ok(certs)
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            faults: Faults::default(),
            expected_api_key: None,
            admin_addr: None,
            record_events: true,
            workers: 0,
            tls: None,
        }
    }
}

/// How long a graceful stop waits for requests in flight.
const SHUTDOWN_TIMEOUT_SECS: u64 = 2;
/// When `Refuse` arrives over HTTP, how long the supervisor lets the response go out before it
/// closes the listener (the request may have come through that very listener).
const REFUSE_GRACE: Duration = Duration::from_millis(50);
/// How long re-opening the main listener retries while the old socket finishes closing.
const REBIND_FOR: Duration = Duration::from_secs(3);
/// Most worker threads the HTTP server takes.
const MAX_WORKERS: usize = 64;

/// An actix server running on a task of the caller's runtime.
struct Running {
    handle: ServerHandle,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    fn spawn(server: Server) -> Self {
        Self {
            handle: server.handle(),
            task: tokio::spawn(server),
        }
    }

    async fn stop(self, graceful: bool) {
        self.handle.stop(graceful).await;
        let _ = self.task.await;
    }
}

/// The main listener: open or closed (during a `Refuse` outage), always on the same address.
struct MainListener {
    addr: SocketAddr,
    workers: usize,
    /// https when set; kept to serve again after a `Refuse` outage.
    tls: Option<rustls::ServerConfig>,
    shared: web::Data<Shared>,
    running: Mutex<Option<Running>>,
}

impl MainListener {
    fn serve(&self, listener: TcpListener) -> std::io::Result<Running> {
        let shared = self.shared.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .configure(routes::ncanto)
                .configure(routes::admin)
        });
        let mut server = match &self.tls {
            Some(tls) => server.listen_rustls_0_23(listener, tls.clone())?,
            None => server.listen(listener)?,
        }
        // The mock stops when its owner says so (the binary handles signals itself).
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS);
        if self.workers > 0 {
            server = server.workers(self.workers.min(MAX_WORKERS));
        }
        Ok(Running::spawn(server.run()))
    }

    /// Opens or closes the listener to match the faults now in force. Idempotent.
    async fn reconcile(&self) -> anyhow::Result<()> {
        let mut running = self.running.lock().await;
        let refuse = self.shared.faults.borrow().faults.outage == Some(Outage::Refuse);
        match (refuse, running.take()) {
            (true, Some(server)) => {
                // Not graceful: an outage drops the connections it finds, hung requests too.
                server.stop(false).await;
                log::info!("outage: refusing connections on {}", self.addr);
            }
            (false, None) => {
                let listener = rebind(self.addr).await?;
                *running = Some(self.serve(listener)?);
                log::info!("outage cleared: listening on {} again", self.addr);
            }
            (_, server) => *running = server,
        }
        Ok(())
    }
}

/// Binds `addr` again, retrying while the previous socket on it finishes closing.
async fn rebind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let started = tokio::time::Instant::now();
    loop {
        match TcpListener::bind(addr) {
            Ok(listener) => return Ok(listener),
            Err(e) if started.elapsed() < REBIND_FOR => {
                log::debug!("re-binding {addr}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("re-binding {addr}")),
        }
    }
}

/// A running fake Ncanto. Dropping it stops its servers abruptly; [`Self::stop`] is the
/// graceful way.
pub struct MockServer {
    shared: web::Data<Shared>,
    main: Arc<MainListener>,
    admin: Option<(SocketAddr, Running)>,
    supervisor: JoinHandle<()>,
}

impl MockServer {
    /// Binds `config.addr` (port 0 allowed) and starts serving.
    pub async fn start(config: MockConfig) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.addr)
            .with_context(|| format!("binding NCANTO_MOCK_ADDR {}", config.addr))?;
        Self::start_on(listener, config).await
    }

    /// Starts serving on a listener the caller bound (`config.addr` is ignored). Must be
    /// called within a Tokio runtime, which then runs the servers' control tasks.
    pub async fn start_on(listener: TcpListener, config: MockConfig) -> anyhow::Result<Self> {
        config.faults.validate().map_err(anyhow::Error::msg)?;
        let tls = config
            .tls
            .as_ref()
            .map(TlsFiles::server_config)
            .transpose()?;
        let addr = listener.local_addr()?;
        let shared = web::Data::new(Shared {
            faults: watch::Sender::new(Versioned {
                generation: 0,
                faults: config.faults.clone(),
            }),
            applied: watch::Sender::new(0),
            stopping: watch::Sender::new(false),
            recorder: crate::stats::Recorder::new(config.record_events),
            dice: Dice::from_clock(),
            expected_authorization: config
                .expected_api_key
                .as_ref()
                .map(|key| format!("Bearer {key}")),
        });
        let admin = match config.admin_addr {
            Some(admin_addr) => Some(start_admin(admin_addr, shared.clone())?),
            None => None,
        };
        let main = Arc::new(MainListener {
            addr,
            workers: config.workers,
            tls,
            shared: shared.clone(),
            running: Mutex::new(None),
        });
        if let Some(files) = &config.tls {
            log::info!("serving https on {addr} with {}", files.cert_file.display());
        }
        if config.faults.outage == Some(Outage::Refuse) {
            drop(listener);
            log::info!("outage: refusing connections on {addr}");
        } else {
            *main.running.lock().await = Some(main.serve(listener)?);
        }
        let supervisor = tokio::spawn(supervise(main.clone()));
        Ok(Self {
            shared,
            main,
            admin,
            supervisor,
        })
    }

    /// The main listener's port.
    pub fn port(&self) -> u16 {
        self.main.addr.port()
    }

    /// The main listener's base URL, `http://127.0.0.1:PORT` (`https://` when serving TLS;
    /// the bound IP when not unspecified), for `NCANTO_API_URL`.
    pub fn url(&self) -> String {
        let url = base_url(self.main.addr);
        match self.main.tls {
            Some(_) => url.replacen("http://", "https://", 1),
            None => url,
        }
    }

    /// The admin listener's port, when there is one.
    pub fn admin_port(&self) -> Option<u16> {
        self.admin.as_ref().map(|(addr, _)| addr.port())
    }

    /// The admin listener's base URL, when there is one.
    pub fn admin_url(&self) -> Option<String> {
        self.admin.as_ref().map(|(addr, _)| base_url(*addr))
    }

    /// The counts so far.
    pub fn stats(&self) -> Stats {
        self.shared.recorder.stats()
    }

    /// Resets the counts, the duplicate memory and the recorded events.
    pub fn reset_stats(&self) {
        self.shared.recorder.reset();
    }

    /// Every accepted event in arrival order (empty when `record_events` is off).
    pub fn events(&self) -> Vec<interaction_core::Interaction> {
        self.shared.recorder.events()
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// Replaces the faults for the next request. Setting `Refuse` closes the main listener
    /// before this returns; clearing it re-opens the same port. Fractions outside 0..=1 are
    /// clamped; a failure to re-open is logged (see [`Self::try_set_faults`]).
    pub async fn set_faults(&self, faults: Faults) {
        if let Err(e) = faults.validate() {
            log::warn!("set_faults: {e}; clamping");
        }
        if let Err(e) = self.try_set_faults(faults.clamped()).await {
            log::error!("set_faults: {e:#}");
        }
    }

    /// Like [`Self::set_faults`], but refuses invalid fractions and reports a failure to
    /// re-open the main listener (its port taken meanwhile).
    pub async fn try_set_faults(&self, faults: Faults) -> anyhow::Result<()> {
        faults.validate().map_err(anyhow::Error::msg)?;
        let generation = self.shared.replace_faults(faults);
        self.main.reconcile().await?;
        self.shared.applied.send_if_modified(|applied| {
            let newer = generation > *applied;
            *applied = (*applied).max(generation);
            newer
        });
        Ok(())
    }

    /// Stops gracefully: hanging requests get 503, requests in flight finish (for at most
    /// two seconds), then every listener closes.
    pub async fn stop(mut self) {
        self.supervisor.abort();
        self.shared.stopping.send_replace(true);
        let main = self.main.running.lock().await.take();
        if let Some(main) = main {
            main.stop(true).await;
        }
        if let Some((_, admin)) = self.admin.take() {
            admin.stop(true).await;
        }
    }

    /// Serves until SIGTERM or SIGINT, logging the counts every `report_every` when they
    /// changed (never when zero), then stops gracefully.
    pub async fn run_until_stopped(self, report_every: Duration) {
        let mut reports = (!report_every.is_zero()).then(|| tokio::time::interval(report_every));
        let mut last = Stats::default();
        let stopped = interaction_runtime::termination();
        tokio::pin!(stopped);
        loop {
            let tick = async {
                match reports.as_mut() {
                    Some(interval) => {
                        interval.tick().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = &mut stopped => break,
                _ = tick => {
                    let stats = self.stats();
                    if stats != last {
                        log::info!("{}", summary(&stats, &last));
                        last = stats;
                    }
                }
            }
        }
        log::info!("stopping");
        self.stop().await;
        log::info!("stopped");
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.supervisor.abort();
        // The commands are sent at once; the servers' tasks carry them out if their runtime
        // still runs.
        if let Ok(mut running) = self.main.running.try_lock()
            && let Some(main) = running.take()
        {
            drop(main.handle.stop(false));
        }
        if let Some((_, admin)) = &self.admin {
            drop(admin.handle.stop(false));
        }
    }
}

fn start_admin(
    addr: SocketAddr,
    shared: web::Data<Shared>,
) -> anyhow::Result<(SocketAddr, Running)> {
    let listener = TcpListener::bind(addr)
        .with_context(|| format!("binding NCANTO_MOCK_ADMIN_ADDR {addr}"))?;
    let bound = listener.local_addr()?;
    let server =
        HttpServer::new(move || App::new().app_data(shared.clone()).configure(routes::admin))
            .listen(listener)?
            .disable_signals()
            .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
            .workers(1)
            .run();
    Ok((bound, Running::spawn(server)))
}

/// Follows fault changes made over HTTP: closes the main listener for `Refuse`, re-opens it
/// when cleared, then marks the change applied.
async fn supervise(main: Arc<MainListener>) {
    let mut changes = main.shared.faults.subscribe();
    while changes.changed().await.is_ok() {
        let (generation, refuse) = {
            let current = changes.borrow_and_update();
            (
                current.generation,
                current.faults.outage == Some(Outage::Refuse),
            )
        };
        if refuse {
            tokio::time::sleep(REFUSE_GRACE).await;
        }
        if let Err(e) = main.reconcile().await {
            log::error!("applying faults: {e:#}");
        }
        main.shared.applied.send_if_modified(|applied| {
            let newer = generation > *applied;
            *applied = (*applied).max(generation);
            newer
        });
    }
}

fn base_url(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        addr.ip()
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// One log line of counts, with the change since the previous line.
fn summary(stats: &Stats, last: &Stats) -> String {
    format!(
        "requests {} (+{}), events received {} (+{}), unique {}, duplicates {}, \
         rejected requests {}, failed requests {}",
        stats.requests,
        stats.requests.saturating_sub(last.requests),
        stats.received,
        stats.received.saturating_sub(last.received),
        stats.unique,
        stats.duplicates,
        stats.rejected_requests,
        stats.failed_requests,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_reachable_host() {
        let table = [
            ("127.0.0.1:8090", "http://127.0.0.1:8090"),
            ("0.0.0.0:8090", "http://127.0.0.1:8090"),
            ("[::1]:9", "http://[::1]:9"),
        ];
        for (addr, url) in table {
            assert_eq!(base_url(addr.parse().unwrap()), url);
        }
    }

    #[test]
    fn summaries_show_totals_and_growth() {
        let last = Stats {
            requests: 10,
            received: 100,
            ..Stats::default()
        };
        let now = Stats {
            requests: 15,
            received: 150,
            unique: 140,
            duplicates: 10,
            ..Stats::default()
        };
        assert_eq!(
            summary(&now, &last),
            "requests 15 (+5), events received 150 (+50), unique 140, duplicates 10, \
             rejected requests 0, failed requests 0"
        );
    }
}
