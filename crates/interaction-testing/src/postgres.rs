//! A throwaway PostgreSQL server for tests that must not touch the machine's shared one: its
//! own cluster in a temporary directory, on a free port, with TLS from a test CA. Stopped and
//! removed on drop.
//!
//! Started with the machine's PostgreSQL binaries (`/usr/lib/postgresql/<version>/bin`), as
//! the `postgres` user when the tests run as root (PostgreSQL refuses to run as root).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::tls::TestCa;

/// A running private PostgreSQL server.
pub struct TestPostgres {
    root: PathBuf,
    bin: PathBuf,
    data: PathBuf,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
}

impl TestPostgres {
    /// Starts a server whose TLS certificate is issued by `ca` for `names` (e.g.
    /// `["localhost"]`), with trust authentication for user `postgres` on 127.0.0.1 and TLS
    /// on. Returns `None` when the machine has no PostgreSQL server binaries (the caller
    /// says so and skips).
    pub fn start_tls(ca: &TestCa, names: &[&str]) -> Option<Self> {
        let bin = server_bin()?;
        let port = free_port();
        let root = std::env::temp_dir().join(format!("ilog-pg-{}", uuid_like()));
        let data = root.join("data");
        std::fs::create_dir_all(&root).expect("create the server's directory");
        let server = ca.server_cert("postgres", names);
        // The server reads its key as its own user, and insists the key is private.
        std::fs::copy(&server.cert_file, root.join("server.crt")).expect("copy the certificate");
        std::fs::copy(&server.key_file, root.join("server.key")).expect("copy the key");
        let as_root = is_root();
        if as_root {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&root));
        }
        let this = Self {
            root,
            bin,
            data,
            port,
        };
        this.pg(
            "initdb",
            &[
                "-D",
                path_str(&this.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{root}'\n\
             ssl = on\nssl_cert_file = '{root}/server.crt'\nssl_key_file = '{root}/server.key'\n\
             fsync = off\nmax_connections = 40\nshared_buffers = 16MB\n",
            root = this.root.display()
        );
        let conf_path = this.data.join("postgresql.auto.conf");
        let mut existing = std::fs::read_to_string(&conf_path).unwrap_or_default();
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing).expect("configure the server");
        this.pg(
            "pg_ctl",
            &[
                "-D",
                path_str(&this.data),
                "-l",
                path_str(&this.root.join("server.log")),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the test PostgreSQL never listened"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(this)
    }

    /// A URL for database `postgres` as user `postgres` at `host` (which must resolve to
    /// 127.0.0.1), with `query` appended (`sslmode=…&sslrootcert=…`).
    pub fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
    }

    /// The server's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
    }

    fn pg(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        command.args(args);
        run(&mut command);
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let program = self.bin.join("pg_ctl");
        let data = self.data.clone();
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        let _ = command
            .args(["-D", path_str(&data), "-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The newest installed PostgreSQL server's `bin` directory.
fn server_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn run(command: &mut Command) {
    let output = command.output().expect("run a PostgreSQL tool");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

fn is_root() -> bool {
    // SAFETY-free: `id -u` rather than libc, to keep this crate dependency-light.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}-{nanos}", std::process::id())
}
