//! `amqps://` against a real TLS listener: a RabbitMQ node of the test's own (TLS only, its
//! certificate signed by a private CA and issued for `localhost` only), never the shared
//! broker. Each test boots its node (5–20 s) and removes it when it ends.

use crate::common::envelope;
use futures_util::StreamExt;
use interaction_bus::{
    BusConfig, BusError, DEFAULT_HEARTBEAT_SECS, Envelope, PublishError, Publisher, Topology,
    connect,
    lapin::{
        Connection,
        options::{BasicAckOptions, BasicConsumeOptions},
        types::FieldTable,
    },
};
use interaction_testing::{rabbit::TlsRabbit, tls::TestCa};
use secrecy::SecretString;
use std::{path::Path, time::Duration};

const CONNECT: Duration = Duration::from_secs(20);

fn secret(url: &str) -> SecretString {
    SecretString::from(url)
}

fn config(url: &str, ca_file: Option<&Path>) -> BusConfig {
    BusConfig {
        ca_file: ca_file.map(Path::to_owned),
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_secs(1),
        ..BusConfig::new(url, format!("test-{}", uuid::Uuid::new_v4()))
    }
}

async fn close(connection: Connection) {
    let _ = connection.close(200, "test done".into()).await;
}

#[tokio::test]
async fn tls_a_confirmed_publish_is_consumed_over_amqps_trusting_the_private_ca() {
    let ca = TestCa::new("interaction-bus TLS test CA");
    let rabbit = TlsRabbit::start(&ca);
    let url = rabbit.amqps_url();
    let config = config(&url, Some(&ca.ca_file));
    let topology = Topology::new(config.prefix.clone());

    let publisher = Publisher::start(config.clone());
    assert!(
        publisher.wait_connected(CONNECT).await,
        "the publisher connects over TLS:\n{}",
        rabbit.output_tail()
    );
    let sent = envelope(7, 3);
    publisher.publish(&sent).await.unwrap();

    let connection = connect(&config.url, config.ca_file.as_deref())
        .await
        .unwrap();
    // Liveness: unless the URL says otherwise we ask for a 20 s heartbeat, below the
    // broker's 60 s default, and the lower value wins.
    assert_eq!(
        connection.configuration().heartbeat(),
        DEFAULT_HEARTBEAT_SECS
    );
    let channel = connection.create_channel().await.unwrap();
    let mut consumer = channel
        .basic_consume(
            topology.forward_queue().as_str().into(),
            "tls-test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("a delivery within 10 s")
        .expect("the consumer is open")
        .unwrap();
    assert_eq!(Envelope::decode(&delivery.data).unwrap(), sent);
    delivery.ack(BasicAckOptions::default()).await.unwrap();

    publisher.close().await;
    close(connection).await;
}

#[tokio::test]
async fn tls_an_untrusted_certificate_or_a_wrong_host_name_is_refused_as_a_certificate_problem() {
    let ca = TestCa::new("interaction-bus TLS test CA");
    let other_ca = TestCa::new("some other private CA");
    let rabbit = TlsRabbit::start(&ca);
    let url = secret(&rabbit.amqps_url());

    // System roots only: our private CA is not among them.
    let error = connect(&url, None).await.unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, BusError::Certificate { .. }), "{text}");
    assert!(text.contains("TLS certificate"), "{text}");
    assert!(text.contains("not signed by a trusted CA"), "{text}");
    assert!(text.contains("system roots only"), "{text}");
    assert!(!text.contains("guest:guest"), "{text}");

    // Another CA in AMQP_CA_FILE does not help either.
    let error = connect(&url, Some(&other_ca.ca_file)).await.unwrap_err();
    assert!(matches!(error, BusError::Certificate { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains(&other_ca.ca_file.display().to_string()),
        "{error}"
    );

    // The right CA, but the certificate is for `localhost` and we ask for 127.0.0.1.
    let by_address = secret(&rabbit.amqps_url().replace("@localhost:", "@127.0.0.1:"));
    let error = connect(&by_address, Some(&ca.ca_file)).await.unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, BusError::Certificate { .. }), "{text}");
    assert!(text.contains("not valid for the host name"), "{text}");

    // The same broker through the right CA and name works: the refusals above were the
    // certificate checks, not a broken node.
    close(connect(&url, Some(&ca.ca_file)).await.unwrap()).await;

    // A publisher without the CA never connects, and says so on every publish.
    let publisher = Publisher::start(config(&rabbit.amqps_url(), None));
    assert!(!publisher.wait_connected(Duration::from_secs(3)).await);
    assert_eq!(
        publisher.publish(&envelope(1, 1)).await,
        Err(PublishError::NotConnected)
    );
    publisher.close().await;
}
