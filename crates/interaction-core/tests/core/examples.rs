//! The spec's example payloads, and the canonical JSON they must become.

use interaction_core::{BodyShape, Limits, Normalizer, RatingMap};

use crate::common::now;

const PLAY_COMPLETE: &str = r#"{
"timestamp": "2025-07-09T10:15:00Z",
"subscriber": "viusasa_user_12345",
"assetId": "viusasa_episode_67890",
"interaction": "play_complete",
"ratingEquivalent": 0.5,
"comment": "User watched 90% of the episode.",
"contextId": "viusasa_player_context",
"setting": {
"device": "android_app"
}
}"#;

const ADD_TO_CART: &str = r#"{
"timestamp": "2025-07-09T11:05:20Z",
"subscriber": "duka_user_54321",
"assetId": "duka_product_abcde",
"interaction": "add_to_cart",
"ratingEquivalent": 0.5,
"comment": "User added product to cart from product detail page.",
"contextId": "duka_pdp_context",
"setting": {
"device": "web"
}
}"#;

const BATCH: &str = r#"[
{
"timestamp": "2025-07-09T09:30:00Z",
"subscriber": "citizen_user_12345",
"assetId": "citizen_article_67890",
"interaction": "select",
"ratingEquivalent": 0.25,
"setting": {
"device": "web"
}
},
{
"timestamp": "2025-07-09T09:31:00Z",
"subscriber": "citizen_user_12345",
"assetId": "citizen_article_67890",
"interaction": "share",
"ratingEquivalent": 0.75,
"setting": {
"device": "web"
}
}
]"#;

fn canonical(body: &str) -> (BodyShape, Vec<String>) {
    let map = RatingMap::builtin();
    let limits = Limits::default();
    let normalizer = Normalizer::new(map.profile_for_tenant("spec"), &limits, now());
    let batch = normalizer.parse_body(body.as_bytes()).unwrap();
    assert!(batch.errors.is_empty(), "{:?}", batch.errors);
    let events = batch
        .events
        .iter()
        .map(|e| serde_json::to_string(&e.event.interaction).unwrap())
        .collect();
    (batch.shape, events)
}

#[test]
fn the_play_complete_example_becomes_canonical_json() {
    assert_eq!(
        canonical(PLAY_COMPLETE),
        (
            BodyShape::Object,
            vec![
                concat!(
                    r#"{"timestamp":"2025-07-09T10:15:00Z","subscriber":"viusasa_user_12345","#,
                    r#""assetId":"viusasa_episode_67890","interaction":"play_complete","#,
                    r#""ratingEquivalent":0.5,"comment":"User watched 90% of the episode.","#,
                    r#""contextId":"viusasa_player_context","setting":{"device":"android_app"}}"#
                )
                .to_owned()
            ]
        )
    );
}

#[test]
fn the_add_to_cart_example_becomes_canonical_json() {
    assert_eq!(
        canonical(ADD_TO_CART).1,
        vec![concat!(
            r#"{"timestamp":"2025-07-09T11:05:20Z","subscriber":"duka_user_54321","#,
            r#""assetId":"duka_product_abcde","interaction":"add_to_cart","ratingEquivalent":0.5,"#,
            r#""comment":"User added product to cart from product detail page.","#,
            r#""contextId":"duka_pdp_context","setting":{"device":"web"}}"#
        )]
    );
}

#[test]
fn the_batch_example_becomes_canonical_json_without_optional_fields() {
    assert_eq!(
        canonical(BATCH),
        (
            BodyShape::Array,
            vec![
                concat!(
                    r#"{"timestamp":"2025-07-09T09:30:00Z","subscriber":"citizen_user_12345","#,
                    r#""assetId":"citizen_article_67890","interaction":"select","#,
                    r#""ratingEquivalent":0.25,"setting":{"device":"web"}}"#
                )
                .to_owned(),
                concat!(
                    r#"{"timestamp":"2025-07-09T09:31:00Z","subscriber":"citizen_user_12345","#,
                    r#""assetId":"citizen_article_67890","interaction":"share","#,
                    r#""ratingEquivalent":0.75,"setting":{"device":"web"}}"#
                )
                .to_owned(),
            ]
        )
    );
}

#[test]
fn canonical_json_reads_back_as_the_same_interaction() {
    for body in [PLAY_COMPLETE, ADD_TO_CART] {
        let json = &canonical(body).1[0];
        let back: interaction_core::Interaction = serde_json::from_str(json).unwrap();
        assert_eq!(&serde_json::to_string(&back).unwrap(), json);
    }
}
