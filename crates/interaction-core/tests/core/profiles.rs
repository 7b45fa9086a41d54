//! Every row of the spec's two rating tables, as actions and as default ratings.

use interaction_core::{InteractionType, RatingMap};
use serde_json::json;

use crate::common::{normalize, with};

/// `(action, extra fields, interaction, rating)` — one line per table row, in table order.
type Row = (&'static str, serde_json::Value, &'static str, f64);

fn video_table() -> Vec<Row> {
    vec![
        (
            "view_recommendation",
            json!({}),
            "recommendationImpression",
            0.0,
        ),
        ("click", json!({}), "select", 0.25),
        ("play", json!({}), "play", 0.25),
        ("watch", json!({"progress": 0.9}), "play_complete", 0.5),
        ("like", json!({}), "rate", 1.0),
        ("dislike", json!({}), "rate", -1.0),
        ("add_to_watchlist", json!({}), "select", 1.0),
        ("add_to_favorites", json!({}), "select", 1.0),
        ("remove_from_watchlist", json!({}), "deselect", -1.0),
        ("share", json!({}), "share", 0.75),
    ]
}

fn ecommerce_table() -> Vec<Row> {
    vec![
        ("view_product", json!({}), "recommendationImpression", 0.0),
        ("click_product", json!({}), "select", 0.25),
        ("add_to_cart", json!({}), "add_to_cart", 0.5),
        ("purchase", json!({}), "purchase", 0.75),
        ("add_to_wishlist", json!({}), "select", 1.0),
        ("remove_from_wishlist", json!({}), "deselect", -1.0),
        ("review", json!({"stars": 5}), "rate", 1.0),
        ("review", json!({"stars": 4}), "rate", 1.0),
        ("review", json!({"stars": 2}), "rate", -1.0),
        ("review", json!({"stars": 1}), "rate", -1.0),
        ("share_product", json!({}), "share", 0.75),
    ]
}

fn action_event(action: &str, extra: &serde_json::Value) -> serde_json::Value {
    let mut event = with(
        json!({"action": action}),
        &["interaction", "ratingEquivalent"],
    );
    for (key, value) in extra.as_object().unwrap() {
        event[key] = value.clone();
    }
    event
}

fn check_table(profile: &str, rows: Vec<Row>) {
    for (action, extra, interaction, rating) in rows {
        let event = normalize(profile, &action_event(action, &extra))
            .unwrap_or_else(|e| panic!("{profile}/{action} {extra}: {e:?}"));
        assert_eq!(
            (
                event.interaction.interaction.as_str(),
                event.interaction.rating_equivalent
            ),
            (interaction, rating),
            "{profile}/{action} {extra}"
        );
    }
}

#[test]
fn every_row_of_the_video_table_maps_to_its_interaction_and_rating() {
    check_table("video", video_table());
}

#[test]
fn every_row_of_the_ecommerce_table_maps_to_its_interaction_and_rating() {
    check_table("ecommerce", ecommerce_table());
}

#[test]
fn aliases_and_edge_cases_of_actions() {
    check_table(
        "video",
        vec![
            ("watch", json!({"progress": 0.8}), "play", 0.25),
            ("watch", json!({"progress": 0.81}), "play_complete", 0.5),
            ("watch", json!({"progress": 0}), "play", 0.25),
            ("watch", json!({"progress": 1}), "play_complete", 0.5),
            ("watch_complete", json!({}), "play_complete", 0.5),
            ("impression", json!({}), "recommendationImpression", 0.0),
            ("remove_from_favorites", json!({}), "deselect", -1.0),
            ("LIKE", json!({}), "rate", 1.0),
        ],
    );
    check_table(
        "ecommerce",
        vec![
            ("review", json!({"stars": 3}), "rate", 0.0),
            ("review", json!({"stars": 4.0}), "rate", 1.0),
            ("click", json!({}), "select", 0.25),
            (
                "view_recommendation",
                json!({}),
                "recommendationImpression",
                0.0,
            ),
            ("like", json!({}), "rate", 1.0),
            ("dislike", json!({}), "rate", -1.0),
            ("share", json!({}), "share", 0.75),
        ],
    );
}

#[test]
fn action_inputs_are_checked() {
    let cases = [
        (
            "video",
            "watch",
            json!({}),
            "progress",
            "is required for action watch",
        ),
        (
            "video",
            "watch",
            json!({"progress": 1.5}),
            "progress",
            "0.0 to 1.0, got 1.5",
        ),
        (
            "video",
            "watch",
            json!({"progress": "90%"}),
            "progress",
            "got a string",
        ),
        (
            "video",
            "watch",
            json!({"progress": 0.9, "stars": 3}),
            "stars",
            "only used with review-like",
        ),
        (
            "ecommerce",
            "review",
            json!({}),
            "stars",
            "is required for action review",
        ),
        (
            "ecommerce",
            "review",
            json!({"stars": 0}),
            "stars",
            "whole number 1 to 5, got 0",
        ),
        ("ecommerce", "review", json!({"stars": 6}), "stars", "got 6"),
        (
            "ecommerce",
            "review",
            json!({"stars": 4.5}),
            "stars",
            "got 4.5",
        ),
        (
            "ecommerce",
            "review",
            json!({"stars": "5"}),
            "stars",
            "got a string",
        ),
        (
            "video",
            "add_to_wishlist",
            json!({}),
            "action",
            "is not an action of profile video; expected one of view_recommendation",
        ),
        (
            "ecommerce",
            "add_to_watchlist",
            json!({}),
            "action",
            "not an action of profile ecommerce",
        ),
        ("video", "", json!({}), "action", "\"\" is not an action"),
    ];
    for (profile, action, extra, field, text) in cases {
        let errors = normalize(profile, &action_event(action, &extra)).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.field == field && e.message.contains(text)),
            "{profile}/{action} {extra}: wanted {field}: {text:?}, got {errors:?}"
        );
    }
    let errors = normalize(
        "video",
        &with(json!({"action": 5}), &["interaction", "ratingEquivalent"]),
    )
    .unwrap_err();
    assert_eq!(errors[0].field, "action");
    assert!(errors[0].message.contains("must be a string, got a number"));
}

#[test]
fn an_omitted_rating_takes_the_profile_default() {
    // The tables' ratings for the plain interaction, with the intent scale where a table has
    // no row (purchase in video, play in ecommerce); impressions are 0.0 as in the tables.
    let expected = [
        ("recommendationImpression", Some(0.0)),
        ("select", Some(0.25)),
        ("play", Some(0.25)),
        ("play_complete", Some(0.5)),
        ("rate", None),
        ("deselect", Some(-1.0)),
        ("share", Some(0.75)),
        ("add_to_cart", Some(0.5)),
        ("purchase", Some(0.75)),
    ];
    assert_eq!(expected.len(), InteractionType::ALL.len());
    for profile in ["video", "ecommerce"] {
        for (interaction, rating) in expected {
            let input = with(json!({"interaction": interaction}), &["ratingEquivalent"]);
            match (normalize(profile, &input), rating) {
                (Ok(event), Some(rating)) => {
                    assert_eq!(event.interaction.rating_equivalent, rating, "{profile}/{interaction}")
                }
                (Err(errors), None) => assert!(
                    errors[0].field == "ratingEquivalent"
                        && errors[0].message.contains(&format!(
                            "is required for interaction {interaction}: profile {profile} has no default"
                        )),
                    "{errors:?}"
                ),
                (result, _) => panic!("{profile}/{interaction}: {result:?}"),
            }
        }
    }
}

#[test]
fn a_sent_rating_wins_over_the_default() {
    let event = normalize(
        "video",
        &with(
            json!({"interaction": "rate", "ratingEquivalent": -0.5}),
            &[],
        ),
    )
    .unwrap();
    assert_eq!(event.interaction.rating_equivalent, -0.5);
}

#[test]
fn tenants_use_the_default_profile_unless_assigned() {
    let map = RatingMap::builtin();
    assert_eq!(map.profile_for_tenant("anyone").name(), "video");
    let names: Vec<&str> = map.profiles().map(|p| p.name()).collect();
    assert_eq!(names, ["ecommerce", "video"]);
}

/// The web SDK's typed helpers come from its `ACTIONS` list (`sdk/web/src/actions.ts`): it
/// must name exactly the built-in profiles' actions, so a helper can neither send an action
/// the server does not know nor miss one it does.
#[test]
fn the_web_sdk_names_exactly_the_builtin_actions() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sdk/web/src/actions.ts");
    let source = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let list = source
        .split_once("export const ACTIONS = [")
        .and_then(|(_, rest)| rest.split_once("] as const;"))
        .map(|(list, _)| list)
        .unwrap_or_else(|| panic!("{path}: no `export const ACTIONS = [ … ] as const;`"));
    let mut sdk: Vec<&str> = list
        .split(',')
        .map(|item| item.trim().trim_matches('\''))
        .filter(|item| !item.is_empty())
        .collect();
    let count = sdk.len();
    sdk.sort_unstable();
    sdk.dedup();
    assert_eq!(sdk.len(), count, "{path}: an action is listed twice");
    let map = RatingMap::builtin();
    let mut server: Vec<&str> = map
        .profiles()
        .flat_map(|profile| profile.actions().iter().map(|action| action.name.as_str()))
        .collect();
    server.sort_unstable();
    server.dedup();
    assert_eq!(
        sdk, server,
        "sdk/web/src/actions.ts against the built-in profiles"
    );
}
