//! The pipeline over `amqps://` and PostgreSQL with `sslmode=require`: ingest-api and forwarder
//! against a TLS RabbitMQ node of the test's own (a private CA, a user with a password) and the
//! machine's PostgreSQL over TLS (checked in `pg_stat_ssl`), and a check of everything they print —
//! at debug level, on the happy path and on connection errors — for secrets (DESIGN.md
//! invariant 6).

use std::time::Duration;

use interaction_testing::{rabbit::TlsRabbit, tls::TestCa};
use serde_json::{Value, json};

use crate::pipeline::{API_KEY, Layout, NCANTO_KEY, Pipeline, Service};

fn event(subscriber: &str) -> Value {
    let at = (chrono::Utc::now() - chrono::TimeDelta::seconds(5))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    json!({"timestamp": at, "subscriber": subscriber, "assetId": "asset",
           "interaction": "play", "ratingEquivalent": 0.25, "setting": {"device": "web"}})
}

/// `env` without the variables in `remove`, then with `add` (replacing same-named ones).
fn env_with(
    env: &[(String, String)],
    remove: &[&str],
    add: &[(&str, &str)],
) -> Vec<(String, String)> {
    env.iter()
        .filter(|(k, _)| !remove.contains(&k.as_str()) && !add.iter().any(|(a, _)| a == k))
        .cloned()
        .chain(add.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
        .collect()
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_events_reach_ncanto_over_amqps_and_no_secret_is_ever_printed() {
    let ca = TestCa::new("e2e private CA");
    let unrelated_ca = TestCa::new("e2e unrelated CA");
    // Blocks this worker thread while the node boots; nothing else runs yet.
    let rabbit = TlsRabbit::start(&ca);
    let amqp_password = format!("amqp-pw-{}", uuid::Uuid::new_v4().simple());
    let database_password = format!("pg-pw-{}", uuid::Uuid::new_v4().simple());
    rabbit.add_user("il-e2e", &amqp_password);
    let amqp_url = rabbit.amqps_url_as("il-e2e", &amqp_password);
    let ca_file = ca.ca_file.display().to_string();
    let pipeline = Pipeline::start_with(
        Layout {
            capture_output: true,
            database_password: Some(database_password.clone()),
            // The machine's PostgreSQL has TLS on (Debian's self-signed certificate).
            database_parameters: Some("sslmode=require"),
            ..Layout::default()
        },
        &[
            ("AMQP_URL", &amqp_url),
            ("AMQP_CA_FILE", &ca_file),
            ("RUST_LOG", "debug"),
        ],
    )
    .await;

    // The happy path: accepted events reach Ncanto through the TLS broker.
    let body = json!([event("tls-a"), event("tls-b"), event("tls-c")]);
    assert_eq!(pipeline.post("/api/v1/logs", &body).await.status(), 202);
    pipeline.wait_for_unique(3, Duration::from_secs(30)).await;
    // …and through OUR node, as our user: ingest-api's publisher, the forwarder's consumer
    // and its publisher.
    let connections = rabbit.ctl(&["list_connections", "user"]).unwrap();
    let ours = connections.lines().filter(|l| l.trim() == "il-e2e").count();
    assert!(ours >= 3, "connections on the TLS node:\n{connections}");

    // Every session ingest-api and forwarder hold on their database is encrypted, as the
    // server sees it.
    let sessions = pipeline.database_sessions().await;
    assert!(
        sessions.total >= 2,
        "both services are connected: {sessions:?}"
    );
    assert_eq!(sessions.encrypted, sessions.total, "{sessions:?}");

    // Error paths, with the same settings otherwise.
    let ingest_env = pipeline.env(Service::Ingest(0)).to_vec();
    let forwarder_env = pipeline.env(Service::Forwarder(0)).to_vec();
    // ingest-api with a CA file that is not there: stops at start-up, naming the file.
    let missing = "/nonexistent/interaction-logger/amqp-ca.pem";
    let bad_file = pipeline
        .run_command(
            "ingest-api",
            &[],
            &env_with(
                &ingest_env,
                &[],
                &[
                    ("AMQP_CA_FILE", missing),
                    ("INGEST_ADDR", "127.0.0.1:0"),
                    ("INGEST_ADMIN_ADDR", "127.0.0.1:0"),
                ],
            ),
        )
        .await;
    assert!(!bad_file.status.success());
    let bad_file = text(&bad_file);
    assert!(bad_file.contains(missing), "{bad_file}");
    // An operator command without the private CA: refused as a certificate problem.
    let no_ca = pipeline
        .run_command(
            "forwarder",
            &["redrive", "--dry-run"],
            &env_with(&forwarder_env, &["AMQP_CA_FILE"], &[]),
        )
        .await;
    assert!(!no_ca.status.success());
    let no_ca = text(&no_ca);
    assert!(no_ca.contains("TLS certificate"), "{no_ca}");
    assert!(no_ca.contains("il-e2e:***@localhost"), "{no_ca}");
    // A serving forwarder without the private CA keeps logging why it cannot connect.
    let serving_env = env_with(
        &forwarder_env,
        &["AMQP_CA_FILE"],
        &[("FORWARDER_ADMIN_ADDR", "127.0.0.1:0")],
    );
    let _serving = pipeline.start_command("forwarder", &[], &serving_env, "forwarder-no-ca");
    let serving = pipeline
        .wait_for(
            "the forwarder without the CA to log a certificate error",
            Duration::from_secs(30),
            async || {
                let out = pipeline.output_of("forwarder-no-ca");
                out.contains("TLS certificate").then_some(out)
            },
        )
        .await;

    // AMQP_CA_FILE adds to the system roots: with our CA as the only "system" root
    // (SSL_CERT_FILE) and an unrelated CA in the file, the broker is still trusted.
    let unrelated = unrelated_ca.ca_file.display().to_string();
    let roots_env = env_with(
        &forwarder_env,
        &[],
        &[("SSL_CERT_FILE", &ca_file), ("AMQP_CA_FILE", &unrelated)],
    );
    let roots = pipeline
        .run_command("forwarder", &["redrive", "--dry-run"], &roots_env)
        .await;
    assert!(roots.status.success(), "{}", text(&roots));

    // Nothing any of them printed holds a secret.
    let outputs = [
        ("ingest-api", pipeline.output(Service::Ingest(0))),
        ("forwarder", pipeline.output(Service::Forwarder(0))),
        ("ingest-api with a missing CA file", bad_file),
        ("forwarder redrive without the CA", no_ca),
        ("forwarder without the CA", serving),
        ("forwarder redrive, CA via the roots", text(&roots)),
    ];
    // The check is only worth something if debug logging was on and the URLs were logged.
    assert!(outputs[0].1.contains(" DEBUG "), "{}", outputs[0].1);
    let secrets = [
        ("the AMQP password", amqp_password.as_str()),
        ("the DATABASE_URL password", database_password.as_str()),
        ("NCANTO_API_KEY", NCANTO_KEY),
        ("the ingest API key", API_KEY),
    ];
    let mut leaks = Vec::new();
    for (source, output) in &outputs {
        for line in output.lines() {
            for (secret, value) in secrets {
                if line.contains(value) {
                    leaks.push(format!("{source} printed {secret}: {line}"));
                }
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "secrets in the output:\n{}",
        leaks.join("\n")
    );
}
