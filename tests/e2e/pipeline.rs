//! Starting, stopping and killing the pipeline's processes.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use interaction_bus::Topology;
use interaction_store::testing::TestDatabase;
use serde_json::Value;

pub(crate) const API_KEY: &str = "e2e-key-0123456789";
pub(crate) const NCANTO_KEY: &str = "e2e-ncanto-key";

fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Where cargo put the workspace's binaries: next to this test's `deps/` folder.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --bins`; `make test` does)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One of the three services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Service {
    Mock,
    Ingest,
    Forwarder,
}

/// The running pipeline of one test.
pub(crate) struct Pipeline {
    pub(crate) client: reqwest::Client,
    pub(crate) ingest: String,
    pub(crate) forwarder_admin: String,
    pub(crate) mock: String,
    children: HashMap<Service, Child>,
    envs: HashMap<Service, Vec<(String, String)>>,
    workdir: PathBuf,
    topology: Topology,
    _db: TestDatabase,
}

impl Pipeline {
    /// Starts mock, ingest-api and forwarder; `extra` adds or overrides environment variables
    /// of ingest-api and forwarder.
    pub(crate) async fn start(extra: &[(&str, &str)]) -> Self {
        let db = TestDatabase::create().await;
        let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
        let (ingest_port, admin_port, mock_port) = (free_port(), free_port(), free_port());
        // An empty working directory: the binaries must not pick up a developer's `.env`.
        let workdir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&workdir).unwrap();
        let common = [
            ("DATABASE_URL", db.url.clone()),
            ("AMQP_URL", amqp_url()),
            ("AMQP_PREFIX", prefix.clone()),
            ("RUST_LOG", "warn".to_owned()),
            ("NCANTO_API_KEY", NCANTO_KEY.to_owned()),
        ];
        let mut envs: HashMap<Service, Vec<(String, String)>> = HashMap::new();
        let own = |pairs: &[(&str, String)]| -> Vec<(String, String)> {
            common
                .iter()
                .chain(pairs)
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect()
        };
        envs.insert(
            Service::Mock,
            own(&[
                ("NCANTO_MOCK_ADDR", format!("127.0.0.1:{mock_port}")),
                ("NCANTO_MOCK_ADMIN_ADDR", "none".into()),
                ("NCANTO_MOCK_WORKERS", "2".into()),
            ]),
        );
        let mut ingest = own(&[
            ("INGEST_ADDR", format!("127.0.0.1:{ingest_port}")),
            ("API_KEYS", format!("e2e:{API_KEY}")),
            ("HTTP_WORKERS", "2".into()),
            ("RELAY_INTERVAL", "200ms".into()),
            ("RELAY_AFTER", "1s".into()),
        ]);
        let mut forwarder = own(&[
            ("FORWARDER_ADMIN_ADDR", format!("127.0.0.1:{admin_port}")),
            ("NCANTO_API_URL", format!("http://127.0.0.1:{mock_port}")),
            ("RETRY_BASE", "20ms".into()),
        ]);
        for (k, v) in extra {
            ingest.push(((*k).to_owned(), (*v).to_owned()));
            forwarder.push(((*k).to_owned(), (*v).to_owned()));
        }
        envs.insert(Service::Ingest, ingest);
        envs.insert(Service::Forwarder, forwarder);
        let mut pipeline = Self {
            client: reqwest::Client::new(),
            ingest: format!("http://127.0.0.1:{ingest_port}"),
            forwarder_admin: format!("http://127.0.0.1:{admin_port}"),
            mock: format!("http://127.0.0.1:{mock_port}"),
            children: HashMap::new(),
            envs,
            workdir,
            topology: Topology::new(prefix),
            _db: db,
        };
        for service in [Service::Mock, Service::Ingest, Service::Forwarder] {
            pipeline.spawn(service);
        }
        for service in [Service::Mock, Service::Ingest, Service::Forwarder] {
            pipeline.wait_ready(service).await;
        }
        pipeline
    }

    /// Starts (or restarts) one service.
    pub(crate) fn spawn(&mut self, service: Service) {
        let name = match service {
            Service::Mock => "ncanto-mock",
            Service::Ingest => "ingest-api",
            Service::Forwarder => "forwarder",
        };
        let child = Command::new(binary(name))
            .current_dir(&self.workdir)
            .env_clear()
            .envs(self.envs[&service].iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.children.insert(service, child);
    }

    fn ready_url(&self, service: Service) -> String {
        match service {
            Service::Mock => format!("{}/health", self.mock),
            Service::Ingest => format!("{}/readyz", self.ingest),
            Service::Forwarder => format!("{}/readyz", self.forwarder_admin),
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
                panic!("{service:?} exited during start-up: {status}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{service:?} not ready in 30 s"
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

    /// POSTs JSON to ingest-api.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.ingest))
            .header("content-type", "application/json")
            .header("x-api-key", API_KEY)
            .json(body)
            .send()
            .await
            .unwrap()
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
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
        let topology = self.topology.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let connection = interaction_bus::connect(&amqp_url()).await.ok()?;
                let channel = connection.create_channel().await.ok()?;
                interaction_bus::delete_topology(&channel, &topology)
                    .await
                    .ok()?;
                connection.close(200, "cleanup".into()).await.ok()
            })
        })
        .join();
    }
}
