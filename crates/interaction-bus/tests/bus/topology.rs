//! declare_topology / delete_topology against the broker.

use crate::common::{TestTopology, open_channel};
use interaction_bus::{
    declare_topology, delete_topology,
    lapin::{
        Channel, ExchangeKind,
        options::{ExchangeDeclareOptions, QueueDeclareOptions},
        types::{AMQPValue, FieldTable},
    },
};

async fn passive_queue(channel: &Channel, name: &str) -> Result<(), String> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn passive_exchange(channel: &Channel, name: &str) -> Result<(), String> {
    channel
        .exchange_declare(
            name.into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())
}

/// Re-declares `name` as a plain durable classic queue: the broker refuses (406
/// PRECONDITION_FAILED) when the existing queue was declared with other arguments. Closes
/// `channel` on refusal.
async fn redeclare_as_classic(channel: &Channel, name: &str) -> Result<(), String> {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("classic".into()),
    );
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// `name → type` of the queues whose name starts with `prefix`, as rabbitmqctl lists them;
/// `None` when rabbitmqctl is not available here.
fn queue_types_from_rabbitmqctl(prefix: &str) -> Option<Vec<(String, String)>> {
    let output = std::process::Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "--quiet",
            "--no-table-headers",
            "name",
            "type",
        ])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut queues: Vec<(String, String)> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some((fields.next()?.to_owned(), fields.next()?.to_owned()))
        })
        .filter(|(name, _)| name.starts_with(prefix))
        .collect();
    queues.sort();
    Some(queues)
}

#[tokio::test]
async fn declare_topology_is_idempotent_and_creates_every_queue_as_a_quorum_queue() {
    let test = TestTopology::new();
    let topology = &test.topology;
    let (_connection, channel) = open_channel().await;

    declare_topology(&channel, topology).await.unwrap();
    declare_topology(&channel, topology).await.unwrap();

    for exchange in topology.all_exchanges() {
        passive_exchange(&channel, &exchange).await.unwrap();
    }
    for queue in topology.all_queues() {
        passive_queue(&channel, &queue).await.unwrap();
        let (_c, probe) = open_channel().await;
        let refused = redeclare_as_classic(&probe, &queue).await.unwrap_err();
        assert!(
            refused.contains("PRECONDITION_FAILED"),
            "{queue}: {refused}"
        );
    }

    // The queue type itself is only visible to the management tools.
    if let Some(types) = queue_types_from_rabbitmqctl(&test.prefix()) {
        let mut want: Vec<(String, String)> = topology
            .all_queues()
            .into_iter()
            .map(|q| (q, "quorum".to_owned()))
            .collect();
        want.sort();
        assert_eq!(types, want);
    }
}

#[tokio::test]
async fn delete_topology_removes_everything_and_may_run_twice() {
    let test = TestTopology::new();
    let topology = &test.topology;
    let (_connection, channel) = open_channel().await;
    declare_topology(&channel, topology).await.unwrap();

    delete_topology(&channel, topology).await.unwrap();
    delete_topology(&channel, topology).await.unwrap();

    for queue in topology.all_queues() {
        let (_c, probe) = open_channel().await;
        let missing = passive_queue(&probe, &queue).await.unwrap_err();
        assert!(missing.contains("NOT_FOUND"), "{queue}: {missing}");
    }
    for exchange in topology.all_exchanges() {
        let (_c, probe) = open_channel().await;
        let missing = passive_exchange(&probe, &exchange).await.unwrap_err();
        assert!(missing.contains("NOT_FOUND"), "{exchange}: {missing}");
    }
}
