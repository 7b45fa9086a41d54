//! Starting, stopping and killing the pipeline's processes.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use interaction_bus::Topology;

use interaction_store::testing::TestDatabase;
use interaction_testing::{Proxy, amqp_url};
use serde_json::Value;

pub(crate) const API_KEY: &str = "e2e-key-0123456789";
pub(crate) const NCANTO_KEY: &str = "e2e-ncanto-key";

/// Where cargo put the workspace's binaries: next to this test's `deps/` folder, or in
/// `E2E_BIN_DIR` when set (a copy of them: with a target directory shared by several
/// checkouts, another checkout's build may replace the binaries while the tests run).
pub(crate) fn binary(name: &str) -> PathBuf {
    let dir = match std::env::var_os("E2E_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().unwrap();
            exe.parent()
                .and_then(|deps| deps.parent())
                .unwrap()
                .to_owned()
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --bins`; `make test` does)",
        path.display()
    );
    path
}

/// A port for a service to listen on: one that binds now, taken below the kernel's ephemeral
/// range (32768–60999 on Linux) rather than from it (port 0). Between this check and the
/// service's own bind, an outgoing connection of a test running beside this one may take an
/// ephemeral port as its source port — seen in CI: a mock failing with "Address already in
/// use" — whereas nothing takes a port below that range unless it asks for it. Each process
/// starts at its own offset, so tests running at once do not probe the same ports in turn.
fn free_port() -> u16 {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static BASE: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = *BASE.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        (std::process::id().wrapping_mul(7_919) ^ nanos) % SPAN
    });
    for _ in 0..SPAN {
        let port = LOW + (base + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN;
        let port = u16::try_from(port).expect("below 32768");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}

/// One of the services; ingest-api and forwarder may run several instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Service {
    Mock,
    Ingest(usize),
    Forwarder(usize),
}

/// How to lay the pipeline out.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// ingest-api instances.
    pub(crate) ingest: usize,
    /// forwarder instances.
    pub(crate) forwarders: usize,
    /// Put a proxy the test can cut between the binaries and PostgreSQL.
    pub(crate) proxy_database: bool,
    /// Put a proxy the test can cut between the binaries and RabbitMQ.
    pub(crate) proxy_broker: bool,
    /// Write each service's stdout and stderr to a file ([`Pipeline::output`]) instead of the
    /// test's own output.
    pub(crate) capture_output: bool,
    /// A password in `DATABASE_URL` (the local server trusts loopback and ignores it), so a
    /// test can check that it never shows up in the services' output.
    pub(crate) database_password: Option<String>,
    /// Query parameters added to `DATABASE_URL` (e.g. `sslmode=require`).
    pub(crate) database_parameters: Option<&'static str>,
    /// The forwarders reach PostgreSQL directly even when a database proxy is set: an outage
    /// then hits ingest-api alone (so duplicates at Ncanto can only come from ingest).
    pub(crate) forwarder_direct_database: bool,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            ingest: 1,
            forwarders: 1,
            proxy_database: false,
            proxy_broker: false,
            capture_output: false,
            database_password: None,
            database_parameters: None,
            forwarder_direct_database: false,
        }
    }
}

/// The running pipeline of one test.
pub(crate) struct Pipeline {
    pub(crate) client: reqwest::Client,
    /// The first ingest-api.
    pub(crate) ingest: String,
    /// Every ingest-api.
    pub(crate) ingests: Vec<String>,
    forwarder_admins: Vec<String>,
    /// The mock's admin address (stats, events, faults).
    pub(crate) mock: String,
    /// Between the binaries and PostgreSQL, when the layout asks for it.
    pub(crate) database_proxy: Option<Proxy>,
    /// Between the binaries and RabbitMQ, when the layout asks for it.
    pub(crate) broker_proxy: Option<Proxy>,
    children: HashMap<Service, Child>,
    envs: HashMap<Service, Vec<(String, String)>>,
    capture_output: bool,
    workdir: PathBuf,
    topology: Topology,
    db: TestDatabase,
}

impl Pipeline {
    /// Starts mock, ingest-api and forwarder; `extra` adds or overrides environment variables
    /// of ingest-api and forwarder.
    pub(crate) async fn start(extra: &[(&str, &str)]) -> Self {
        Self::start_with(Layout::default(), extra).await
    }

    /// Starts the services of `layout`; `extra` adds or overrides environment variables of
    /// every ingest-api and forwarder.
    pub(crate) async fn start_with(layout: Layout, extra: &[(&str, &str)]) -> Self {
        let db = TestDatabase::create().await;
        let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
        let (mock_port, mock_admin_port) = (free_port(), free_port());
        // An empty working directory: the binaries must not pick up a developer's `.env`.
        let workdir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&workdir).unwrap();
        let database_proxy = if layout.proxy_database {
            Some(Proxy::start("127.0.0.1:5432").await)
        } else {
            None
        };
        let broker_proxy = if layout.proxy_broker {
            Some(Proxy::start("127.0.0.1:5672").await)
        } else {
            None
        };
        let database_url = match &database_proxy {
            Some(proxy) => db
                .url
                .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port)),
            None => db.url.clone(),
        };
        let database_url = match &layout.database_password {
            Some(password) => with_password(&database_url, password),
            None => database_url,
        };
        let database_url = match layout.database_parameters {
            Some(parameters) => format!("{database_url}?{parameters}"),
            None => database_url,
        };
        let amqp = match &broker_proxy {
            Some(proxy) => {
                amqp_url().replace("127.0.0.1:5672", &format!("127.0.0.1:{}", proxy.port))
            }
            None => amqp_url(),
        };
        let common = [
            ("DATABASE_URL", database_url),
            ("AMQP_URL", amqp),
            ("AMQP_PREFIX", prefix.clone()),
            ("RUST_LOG", "warn".to_owned()),
            ("NCANTO_API_KEY", NCANTO_KEY.to_owned()),
            ("DATABASE_TIMEOUT", "1s".to_owned()),
        ];
        let own = |pairs: &[(&str, String)]| -> Vec<(String, String)> {
            common
                .iter()
                .chain(pairs)
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .chain(
                    extra
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
                )
                .collect()
        };
        let mut envs: HashMap<Service, Vec<(String, String)>> = HashMap::new();
        envs.insert(
            Service::Mock,
            own(&[
                ("NCANTO_MOCK_ADDR", format!("127.0.0.1:{mock_port}")),
                // Admin calls go here: it stays open when a fault closes the main port.
                (
                    "NCANTO_MOCK_ADMIN_ADDR",
                    format!("127.0.0.1:{mock_admin_port}"),
                ),
                ("NCANTO_MOCK_WORKERS", "2".into()),
            ]),
        );
        let mut ingests = Vec::new();
        for i in 0..layout.ingest {
            let port = free_port();
            ingests.push(format!("http://127.0.0.1:{port}"));
            envs.insert(
                Service::Ingest(i),
                own(&[
                    ("INGEST_ADDR", format!("127.0.0.1:{port}")),
                    ("INGEST_ADMIN_ADDR", format!("127.0.0.1:{}", free_port())),
                    ("API_KEYS", format!("e2e:{API_KEY}")),
                    ("HTTP_WORKERS", "2".into()),
                    ("RELAY_INTERVAL", "200ms".into()),
                    ("RELAY_AFTER", "1s".into()),
                    ("RATE_LIMIT_EVENTS_PER_SEC", "0".into()),
                ]),
            );
        }
        let mut forwarder_admins = Vec::new();
        for i in 0..layout.forwarders {
            let port = free_port();
            forwarder_admins.push(format!("http://127.0.0.1:{port}"));
            let mut pairs = vec![
                ("FORWARDER_ADMIN_ADDR", format!("127.0.0.1:{port}")),
                ("NCANTO_API_URL", format!("http://127.0.0.1:{mock_port}")),
                ("RETRY_BASE", "20ms".into()),
            ];
            if layout.forwarder_direct_database {
                // Later entries win: this replaces the proxied URL of `common`.
                pairs.push(("DATABASE_URL", db.url.clone()));
            }
            envs.insert(Service::Forwarder(i), own(&pairs));
        }
        // reqwest's TLS needs a process-wide crypto provider (see interaction-runtime).
        interaction_runtime::install_tls_provider();
        let mut pipeline = Self {
            client: reqwest::Client::new(),
            ingest: ingests[0].clone(),
            ingests,
            forwarder_admins,
            mock: format!("http://127.0.0.1:{mock_admin_port}"),
            database_proxy,
            broker_proxy,
            children: HashMap::new(),
            envs,
            capture_output: layout.capture_output,
            workdir,
            topology: Topology::new(prefix),
            db,
        };
        let services: Vec<Service> = std::iter::once(Service::Mock)
            .chain((0..layout.ingest).map(Service::Ingest))
            .chain((0..layout.forwarders).map(Service::Forwarder))
            .collect();
        for service in &services {
            pipeline.spawn(*service);
        }
        for service in services {
            pipeline.wait_ready(service).await;
        }
        pipeline
    }

    /// Starts (or restarts) one service.
    pub(crate) fn spawn(&mut self, service: Service) {
        let name = match service {
            Service::Mock => "ncanto-mock",
            Service::Ingest(_) => "ingest-api",
            Service::Forwarder(_) => "forwarder",
        };
        let mut command = Command::new(binary(name));
        command
            .current_dir(&self.workdir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.envs[&service].iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        if self.capture_output {
            // Appended: a restarted service adds to what it wrote before.
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.output_file(service))
                .unwrap();
            command.stdout(file.try_clone().unwrap()).stderr(file);
        }
        let child = command.spawn().unwrap();
        self.children.insert(service, child);
    }

    fn output_file(&self, service: Service) -> PathBuf {
        self.workdir.join(format!("{service:?}.out"))
    }

    /// What a service wrote to stdout and stderr so far (with `capture_output`).
    pub(crate) fn output(&self, service: Service) -> String {
        self.output_of(&format!("{service:?}"))
    }

    /// The last lines of a service's captured output above debug level, for failure messages.
    fn output_tail(&self, service: Service) -> String {
        let output = self.output(service);
        let lines: Vec<&str> = output
            .lines()
            .filter(|line| !line.contains(" DEBUG ") && !line.contains(" TRACE "))
            .collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// What a process started with `label` wrote to stdout and stderr so far.
    pub(crate) fn output_of(&self, label: &str) -> String {
        std::fs::read_to_string(self.workdir.join(format!("{label}.out"))).unwrap_or_default()
    }

    /// Starts a binary besides the pipeline's services, with exactly `env`, its output
    /// captured under `label` ([`Self::output_of`]). Killed when the returned child drops.
    pub(crate) fn start_command(
        &self,
        name: &str,
        args: &[&str],
        env: &[(String, String)],
        label: &str,
    ) -> tokio::process::Child {
        let file = std::fs::File::create(self.workdir.join(format!("{label}.out"))).unwrap();
        tokio::process::Command::new(binary(name))
            .current_dir(&self.workdir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    /// The sessions the services hold on the test's database (how many, how many encrypted).
    pub(crate) async fn database_sessions(&self) -> interaction_store::testing::Sessions {
        self.db.sessions().await
    }

    /// The environment a service was started with.
    pub(crate) fn env(&self, service: Service) -> &[(String, String)] {
        &self.envs[&service]
    }

    /// Runs a binary to completion (at most 60 s) in the services' working directory with
    /// exactly `env`, e.g. an operator command such as `forwarder redrive`.
    pub(crate) async fn run_command(
        &self,
        name: &str,
        args: &[&str],
        env: &[(String, String)],
    ) -> Output {
        let mut command = tokio::process::Command::new(binary(name));
        command
            .current_dir(&self.workdir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .unwrap_or_else(|_| panic!("{name} {args:?} did not finish within 60 s"))
            .unwrap()
    }

    fn ready_url(&self, service: Service) -> String {
        match service {
            Service::Mock => format!("{}/health", self.mock),
            Service::Ingest(i) => format!("{}/readyz", self.ingests[i]),
            Service::Forwarder(i) => format!("{}/readyz", self.forwarder_admins[i]),
        }
    }

    /// Waits until a service answers its readiness check.
    pub(crate) async fn wait_ready(&mut self, service: Service) {
        let url = self.ready_url(service);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = self.client.get(&url).send().await
                && response.status().is_success()
            {
                return;
            }
            if let Some(status) = self
                .children
                .get_mut(&service)
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{service:?} exited during start-up: {status}\n{}",
                    self.output_tail(service)
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{service:?} not ready in 30 s\n{}",
                self.output_tail(service)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGTERM and waits for the process to exit by itself (it must, in time).
    pub(crate) async fn terminate(&mut self, service: Service) {
        let mut child = self.children.remove(&service).unwrap();
        signal(&child, "TERM");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "{service:?} exited with {status} after SIGTERM"
                );
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{service:?} ignored SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills a process outright (SIGKILL): no chance to finish anything.
    pub(crate) fn kill(&mut self, service: Service) {
        let mut child = self.children.remove(&service).unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// A POST to ingest-api with the JSON content type and the e2e key.
    fn post_request(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.ingest))
            .header("content-type", "application/json")
            .header("x-api-key", API_KEY)
    }

    /// POSTs JSON to ingest-api.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.post_request(path).json(body).send().await.unwrap()
    }

    /// POSTs a body exactly as given (JSON content type) to ingest-api.
    pub(crate) async fn post_text(&self, path: &str, body: &'static str) -> reqwest::Response {
        self.post_request(path).body(body).send().await.unwrap()
    }

    /// The mock's counters.
    pub(crate) async fn mock_stats(&self) -> Value {
        self.client
            .get(format!("{}/stats", self.mock))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Everything the mock accepted, in arrival order.
    pub(crate) async fn mock_events(&self) -> Vec<Value> {
        self.client
            .get(format!("{}/events", self.mock))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Sets the mock's faults.
    pub(crate) async fn mock_faults(&self, faults: Value) {
        let response = self
            .client
            .post(format!("{}/faults", self.mock))
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// Takes every message off the parked queue; returns how many there were.
    pub(crate) async fn drain_parked(&self) -> usize {
        use interaction_bus::lapin::options::BasicGetOptions;
        let connection = interaction_bus::connect(&amqp_url().into(), None)
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let mut n = 0;
        while channel
            .basic_get(
                self.topology.parked_queue().as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
            .is_some()
        {
            n += 1;
        }
        let _ = connection.close(200, "done".into()).await;
        n
    }

    /// ingest-api's `/health`.
    pub(crate) async fn health(&self) -> Value {
        self.client
            .get(format!("{}/health", self.ingest))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls `check` until it returns Some, for at most `limit`.
    pub(crate) async fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        check: impl AsyncFn() -> Option<T>,
    ) -> T {
        interaction_testing::wait_until(what, limit, check).await
    }

    /// The eventIds of every event row in the test's database, in storage order (a duplicate
    /// stored twice shows up twice).
    pub(crate) async fn stored_event_ids(&self) -> Vec<String> {
        self.db
            .texts("SELECT event_id AS value FROM events WHERE event_id IS NOT NULL ORDER BY id")
            .await
    }

    /// `asset_id interaction rating` of every event row, in storage order.
    pub(crate) async fn stored_interactions(&self) -> Vec<String> {
        self.db
            .texts("SELECT concat_ws(' ', asset_id, interaction, rating) AS value FROM events ORDER BY id")
            .await
    }

    /// Waits until the mock holds `n` distinct events.
    pub(crate) async fn wait_for_unique(&self, n: u64, limit: Duration) -> Value {
        self.wait_for(&format!("{n} events at Ncanto"), limit, async || {
            let stats = self.mock_stats().await;
            (stats["unique"].as_u64()? >= n).then_some(stats)
        })
        .await
    }
}

/// `url` with `password` for its user: `postgres://postgres@h/db` → `postgres://postgres:pw@h/db`.
fn with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (user, host) = rest.split_once('@').unwrap();
    let user = user.split_once(':').map_or(user, |(user, _)| user);
    format!("{scheme}://{user}:{password}@{host}")
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for (_, mut child) in self.children.drain() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.workdir);
        interaction_testing::delete_topology_blocking(&self.topology);
    }
}
