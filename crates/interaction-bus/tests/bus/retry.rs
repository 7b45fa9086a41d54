//! The retry queues: what expires there comes back to the forward queue.

use crate::common::{TestTopology, envelope, get_message, open_channel};
use interaction_bus::{
    Envelope, declare_topology,
    lapin::{
        BasicProperties, Confirmation,
        options::{BasicPublishOptions, ConfirmSelectOptions},
        types::AMQPValue,
    },
};
use std::time::Duration;

#[tokio::test]
async fn a_message_expired_in_a_retry_queue_comes_back_to_the_forward_queue() {
    let test = TestTopology::new();
    let topology = &test.topology;
    let (_connection, channel) = open_channel().await;
    declare_topology(&channel, topology).await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();

    // The shortest retry queue, with a per-message expiration below its TTL so the test does
    // not wait the full delay (the queue's own TTL works the same way).
    let (retry_queue, _delay) = topology.retry_queues().remove(0);
    let sent = envelope(7, 2);
    let confirmation = channel
        .basic_publish(
            "".into(),
            retry_queue.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &sent.encode(),
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id("7".into())
                .with_expiration("200".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        matches!(confirmation, Confirmation::Ack(None)),
        "{confirmation:?}"
    );

    let message = get_message(&channel, &topology.forward_queue(), Duration::from_secs(15))
        .await
        .expect("the expired message is dead-lettered to the forward queue");
    assert_eq!(Envelope::decode(&message.delivery.data).unwrap(), sent);
    assert_eq!(message.delivery.routing_key.as_str(), "forward");

    // The broker's x-death header records where it came from (forwarder uses it to count
    // attempts).
    let headers = message.delivery.properties.headers().clone().unwrap();
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
        panic!("no x-death header: {headers:?}");
    };
    let Some(AMQPValue::FieldTable(death)) = deaths.as_slice().first() else {
        panic!("empty x-death: {deaths:?}");
    };
    assert_eq!(
        death.inner().get("queue"),
        Some(&AMQPValue::LongString(retry_queue.as_str().into()))
    );
    assert_eq!(
        death.inner().get("reason"),
        Some(&AMQPValue::LongString("expired".into()))
    );
}
