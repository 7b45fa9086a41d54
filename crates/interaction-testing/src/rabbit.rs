//! A RabbitMQ node of a test's own, listening on TLS only, for the `amqps://` tests.
//!
//! The machine's RabbitMQ (`rabbit@localhost`) is shared and must never be reconfigured, so a
//! TLS test starts a second node next to it: its own node name, free ports, data, log and
//! config files in a temporary directory, no plugins (the management plugin would fight over
//! port 15672), and its own Erlang cookie (`HOME` points into the temporary directory, so the
//! user's `~/.erlang.cookie` is neither read nor created). It shares only the machine's epmd,
//! where it registers under its unique name. The node runs in the foreground as a child
//! process in a process group of its own; dropping the [`TlsRabbit`] stops it (`rabbitmqctl
//! stop`, then a kill of the group) and removes the directory, also when the test panicked.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::tls::TestCa;

/// How long a node may take to boot. Usually 3–20 s on a busy 2-core machine.
const BOOT_LIMIT: Duration = Duration::from_secs(90);
/// How long one `rabbitmqctl` command may take (each starts an Erlang VM of its own).
const CTL_LIMIT: Duration = Duration::from_secs(60);
/// How long a graceful stop may take before the node is killed.
const STOP_LIMIT: Duration = Duration::from_secs(15);

/// A running RabbitMQ node with a TLS listener on `localhost:<port>` (127.0.0.1 only), its
/// server certificate signed by the [`TestCa`] it was started with and valid for the DNS name
/// `localhost` only — not for `127.0.0.1`, so that connecting by IP address exercises the host
/// name check. No plain-TCP listener. The default `guest`/`guest` user exists (it may log in
/// from loopback); [`TlsRabbit::add_user`] adds others.
pub struct TlsRabbit {
    node: String,
    port: u16,
    sbin: PathBuf,
    child: Child,
    /// Holds the config, data, logs and the Erlang cookie; removed last.
    dir: tempfile::TempDir,
}

impl TlsRabbit {
    /// Starts a node with a certificate for `localhost` signed by `ca` and waits (at most
    /// 90 s) until it accepts TLS connections. Panics, with the end of the node's output,
    /// when it does not boot. Blocks the calling thread: call it before starting work that
    /// needs the runtime, or from `spawn_blocking`.
    pub fn start(ca: &TestCa) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory for the node");
        let node = unique_node_name();
        let port = free_port();
        let dist_port = std::iter::repeat_with(free_port)
            .find(|&other| other != port)
            .expect("a second free port");
        let cert = ca.server_cert(&format!("{}-rabbit", dir_stem(dir.path())), &["localhost"]);
        let path = |name: &str| dir.path().join(name);
        for sub in ["mnesia", "log", "home"] {
            std::fs::create_dir(path(sub)).expect("a node directory");
        }
        // RabbitMQ's new-style config; TLS only, on loopback only. The broker does not ask
        // for client certificates: clients authenticate with a user name and password.
        let config = format!(
            "listeners.tcp = none\n\
             listeners.ssl.default = 127.0.0.1:{port}\n\
             ssl_options.cacertfile = {ca}\n\
             ssl_options.certfile = {cert}\n\
             ssl_options.keyfile = {key}\n\
             ssl_options.verify = verify_none\n\
             ssl_options.fail_if_no_peer_cert = false\n",
            ca = ca.ca_file.display(),
            cert = cert.cert_file.display(),
            key = cert.key_file.display(),
        );
        std::fs::write(path("rabbitmq.conf"), config).expect("write rabbitmq.conf");
        std::fs::write(path("enabled_plugins"), "[].\n").expect("write enabled_plugins");
        // Replaces /etc/rabbitmq/rabbitmq-env.conf, which names the shared node.
        std::fs::write(path("rabbitmq-env.conf"), "").expect("write rabbitmq-env.conf");
        write_cookie(&path("home"));

        let sbin = sbin_dir();
        let output = std::fs::File::create(path("server.out")).expect("the node's output file");
        let errors = output.try_clone().expect("the node's output file");
        let mut command = Command::new(sbin.join("rabbitmq-server"));
        node_env(&mut command, dir.path(), &node);
        command
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", path("mnesia"))
            .env("RABBITMQ_LOG_BASE", path("log"))
            .env("RABBITMQ_CONFIG_FILE", path("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", path("advanced.config"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins"))
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors);
        // A group of its own: Drop can end the node and every helper process Erlang started.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} (is RabbitMQ installed? TEST_RABBITMQ_SBIN names its sbin \
                 directory): {e}",
                sbin.join("rabbitmq-server").display()
            )
        });
        let mut rabbit = Self {
            node,
            port,
            sbin,
            child,
            dir,
        };
        // From here on a panic drops `rabbit`, which stops the node.
        rabbit.wait_until_booted();
        rabbit
    }

    /// `amqps://guest:guest@localhost:<port>/%2f`.
    pub fn amqps_url(&self) -> String {
        self.amqps_url_as("guest", "guest")
    }

    /// The node's URL with other credentials (percent-encode them if they need it).
    pub fn amqps_url_as(&self, user: &str, password: &str) -> String {
        format!("amqps://{user}:{password}@localhost:{}/%2f", self.port)
    }

    /// The TLS port (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The node name, e.g. `tls-1234-0-1a2b3c@localhost`.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Runs `rabbitmqctl -n <node> <args…>` (at most 60 s) and returns its standard output,
    /// or a description of the failure with its output.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let mut command = Command::new(self.sbin.join("rabbitmqctl"));
        node_env(&mut command, self.dir.path(), &self.node);
        command.arg("-n").arg(&self.node).args(args);
        let output = run_bounded(command, CTL_LIMIT)?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "rabbitmqctl {args:?} failed ({}): {stdout}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// Adds a user with full permissions on the default virtual host `/`. Panics on failure.
    pub fn add_user(&self, user: &str, password: &str) {
        self.ctl(&["add_user", user, password])
            .unwrap_or_else(|e| panic!("add_user {user}: {e}"));
        self.ctl(&["set_permissions", "-p", "/", user, ".*", ".*", ".*"])
            .unwrap_or_else(|e| panic!("set_permissions {user}: {e}"));
    }

    /// The last lines the node wrote to its output and its log file, for failure messages.
    pub fn output_tail(&self) -> String {
        let mut text = String::new();
        let log = self
            .dir
            .path()
            .join("log")
            .join(format!("{}.log", self.node));
        for file in [self.dir.path().join("server.out"), log] {
            let mut content = String::new();
            if let Ok(mut f) = std::fs::File::open(&file) {
                let _ = f.read_to_string(&mut content);
            }
            let lines: Vec<&str> = content.lines().collect();
            let from = lines.len().saturating_sub(30);
            text.push_str(&format!(
                "--- {}\n{}\n",
                file.display(),
                lines[from..].join("\n")
            ));
        }
        text
    }

    /// Polls the TLS port (cheap) until it accepts connections, then asks the node itself
    /// whether it finished booting. Panics after [`BOOT_LIMIT`] or if the node exits.
    fn wait_until_booted(&mut self) {
        let deadline = Instant::now() + BOOT_LIMIT;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "RabbitMQ node {} exited while booting ({status}):\n{}",
                    self.node,
                    self.output_tail()
                );
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "RabbitMQ node {} did not open its TLS port {} within {BOOT_LIMIT:?}:\n{}",
                self.node,
                self.port,
                self.output_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Err(e) = self.ctl(&["await_startup", "--timeout", "60"]) {
            panic!("RabbitMQ node {} did not finish booting: {e}", self.node);
        }
    }
}

impl Drop for TlsRabbit {
    fn drop(&mut self) {
        // Graceful first (the node unregisters from epmd and flushes its log), then make sure.
        let _ = self.ctl(&["stop"]);
        let deadline = Instant::now() + STOP_LIMIT;
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        // The group holds the node and what Erlang started for it (erl_child_setup, …); its
        // id is the child's pid (process_group(0)).
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg("--")
            .arg(format!("-{}", self.child.id()))
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // `dir` is removed when the fields drop, after the node is gone.
    }
}

/// The environment every command for this node needs: its name, its env file (not the
/// system's) and its own Erlang cookie (`HOME`).
fn node_env(command: &mut Command, dir: &Path, node: &str) {
    command
        .env("HOME", dir.join("home"))
        .env("RABBITMQ_NODENAME", node)
        .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
        .env("ERL_EPMD_ADDRESS", "127.0.0.1");
}

/// Runs `command`, killing it after `limit`.
fn run_bounded(mut command: Command, limit: Duration) -> Result<Output, String> {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    let pid = child.id();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(limit) {
        Ok(output) => output.map_err(|e| e.to_string()),
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            Err(format!("{command:?} did not finish within {limit:?}"))
        }
    }
}

/// Where `rabbitmq-server` and `rabbitmqctl` are: `TEST_RABBITMQ_SBIN`, else the Debian
/// package's own directory (its /usr/sbin wrappers switch to the `rabbitmq` user and that
/// user's cookie, which our node does not share), else whatever `PATH` finds.
fn sbin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TEST_RABBITMQ_SBIN") {
        return dir.into();
    }
    let debian = Path::new("/usr/lib/rabbitmq/bin");
    if debian.join("rabbitmq-server").exists() {
        debian.to_owned()
    } else {
        PathBuf::new()
    }
}

/// A name no other node on this machine has (never `rabbit`, the shared node's).
fn unique_node_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "tls-{}-{}-{nanos:x}@localhost",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A port free right now on 127.0.0.1 (the node binds it a moment later; a clash is possible
/// but rare, and shows as a boot failure naming the port).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A file-name-safe stem unique to this node's directory (a CA may serve several nodes).
fn dir_stem(dir: &Path) -> String {
    dir.file_name()
        .map(|name| name.to_string_lossy().replace('.', "-"))
        .unwrap_or_default()
}

/// The node's and its `rabbitmqctl`'s shared secret; Erlang insists on owner-only access.
fn write_cookie(home: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let cookie = home.join(".erlang.cookie");
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::fs::write(&cookie, format!("TLSRABBIT{nanos}X{}", std::process::id()))
        .expect("write the Erlang cookie");
    std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400))
        .expect("restrict the Erlang cookie");
}
