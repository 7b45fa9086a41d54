//! Rating-map files: overriding and adding profiles, and every load-time error.

use interaction_core::{ActionRule, InteractionType, Outcome, Problem, RatingMap};
use serde_json::json;

use crate::common::{now, with};

fn load(text: &str) -> RatingMap {
    RatingMap::from_toml(text).unwrap_or_else(|e| panic!("{e}"))
}

fn problems(text: &str) -> Vec<Problem> {
    RatingMap::from_toml(text).unwrap_err().problems
}

#[test]
fn the_example_file_shipped_in_config_loads() {
    let text = include_str!("../../../../config/rating-map.example.toml");
    let map = load(text);
    assert!(map.profile("news").is_some());
}

#[test]
fn an_empty_file_is_the_builtin_map() {
    assert_eq!(load(""), RatingMap::builtin());
}

#[test]
fn defaults_can_be_overridden_and_made_required() {
    let map = load(
        r#"
        [profiles.video.defaults]
        recommendationImpression = 0.1
        select = "required"
        "#,
    );
    let video = map.profile("video").unwrap();
    assert_eq!(
        video.default_rating(InteractionType::RecommendationImpression),
        Some(0.1)
    );
    assert_eq!(video.default_rating(InteractionType::Select), None);
    assert_eq!(video.default_rating(InteractionType::Play), Some(0.25));
    // The other profile is untouched.
    let ecommerce = map.profile("ecommerce").unwrap();
    assert_eq!(
        ecommerce.default_rating(InteractionType::RecommendationImpression),
        Some(0.0)
    );
}

#[test]
fn actions_can_be_replaced_and_added() {
    let map = load(
        r#"
        [[profiles.video.actions]]
        name = "Like"
        interaction = "rate"
        rating = 0.9

        [[profiles.video.actions]]
        name = "binge"
        interaction = "play_complete"
        rating = 0.75

        [[profiles.video.actions]]
        name = "watch"
        progress_above = 0.5
        above = { interaction = "play_complete", rating = 0.6 }
        otherwise = { interaction = "play", rating = 0.2 }

        [[profiles.ecommerce.actions]]
        name = "review"
        interaction = "rate"
        stars = [-1.0, -0.5, 0.0, 0.5, 1.0]
        "#,
    );
    let video = map.profile("video").unwrap();
    assert_eq!(
        video.action("like").unwrap().rule,
        ActionRule::Fixed(Outcome {
            interaction: InteractionType::Rate,
            rating: 0.9
        })
    );
    assert!(video.action("binge").is_some());
    assert_eq!(
        video
            .actions()
            .iter()
            .filter(|a| a.name.eq_ignore_ascii_case("like"))
            .count(),
        1,
        "replaced, not added"
    );
    let ecommerce = map.profile("ecommerce").unwrap();
    assert_eq!(
        ecommerce.action("review").unwrap().rule,
        ActionRule::Stars {
            interaction: InteractionType::Rate,
            ratings: [-1.0, -0.5, 0.0, 0.5, 1.0]
        }
    );

    // And the normalizer uses them.
    let limits = interaction_core::Limits::default();
    let normalizer = interaction_core::Normalizer::new(video, &limits, now());
    let watch = with(
        json!({"action": "watch", "progress": 0.6}),
        &["interaction", "ratingEquivalent"],
    );
    let event = normalizer.normalize_value(&watch).unwrap();
    assert_eq!(event.interaction.rating_equivalent, 0.6);
}

#[test]
fn new_profiles_start_empty_or_extend_another_and_tenants_pick_them() {
    let map = load(
        r#"
        default_profile = "ecommerce"

        [tenants]
        citizen = "news"
        viusasa = "video"

        [profiles.news]
        extends = "video"
        [profiles.news.defaults]
        share = 1.0
        [[profiles.news.actions]]
        name = "read"
        interaction = "play_complete"
        rating = 0.5

        [profiles.bare.defaults]
        select = 0.3
        "#,
    );
    assert_eq!(map.profile_for_tenant("citizen").name(), "news");
    assert_eq!(map.profile_for_tenant("viusasa").name(), "video");
    assert_eq!(map.profile_for_tenant("someone-else").name(), "ecommerce");
    let news = map.profile("news").unwrap();
    assert_eq!(news.default_rating(InteractionType::Share), Some(1.0));
    assert_eq!(
        news.default_rating(InteractionType::Play),
        Some(0.25),
        "inherited"
    );
    assert!(news.action("like").is_some() && news.action("read").is_some());
    assert!(
        map.profile("video").unwrap().action("read").is_none(),
        "base untouched"
    );
    let bare = map.profile("bare").unwrap();
    assert_eq!(bare.default_rating(InteractionType::Select), Some(0.3));
    assert_eq!(bare.default_rating(InteractionType::Play), None);
    assert!(bare.actions().is_empty());
}

#[test]
fn every_kind_of_mistake_is_reported_clearly() {
    let cases: Vec<(&str, &str)> = vec![
        (
            "[profiles.video.defaults]\nclick = 0.3",
            "profile \"video\", defaults: unknown interaction type \"click\"; expected one of recommendationImpression",
        ),
        (
            "[[profiles.video.actions]]\nname = \"x\"\ninteraction = \"watch\"\nrating = 0.1",
            "profile \"video\", action x: unknown interaction type \"watch\"",
        ),
        (
            "[profiles.video.defaults]\nplay = 1.5",
            "profile \"video\", defaults.play: rating 1.5 is outside -1.0..=1.0",
        ),
        (
            "[[profiles.video.actions]]\nname = \"x\"\ninteraction = \"rate\"\nrating = -3",
            "profile \"video\", action x: rating -3 is outside -1.0..=1.0",
        ),
        (
            "[[profiles.video.actions]]\nname = \"boo\"\ninteraction = \"rate\"\nrating = -1\n\
             [[profiles.video.actions]]\nname = \"BOO\"\ninteraction = \"rate\"\nrating = -0.5",
            "profile \"video\": action \"BOO\" is defined more than once",
        ),
        (
            "[tenants]\nacme = \"music\"",
            "tenants.acme: unknown profile \"music\"",
        ),
        (
            "default_profile = \"music\"",
            "default_profile: unknown profile \"music\"",
        ),
        (
            "[profiles.news]\nextends = \"music\"",
            "profiles.news.extends: unknown profile \"music\"",
        ),
        (
            "[profiles.video]\nextends = \"ecommerce\"",
            "only a new profile can extend another",
        ),
        (
            "[[profiles.video.actions]]\nname = \"r\"\ninteraction = \"rate\"\nstars = [1.0, 1.0]",
            "stars must list exactly 5 ratings",
        ),
        (
            "[[profiles.video.actions]]\nname = \"r\"\ninteraction = \"rate\"\nstars = [1, 1, 1, 1, 2]",
            "action r stars[5]: rating 2 is outside",
        ),
        (
            "[[profiles.video.actions]]\nname = \"r\"\ninteraction = \"rate\"\nstars = [1, 1, 1, 1, 1]\nrating = 1",
            "takes either rating or stars, not both",
        ),
        (
            "[[profiles.video.actions]]\nname = \"r\"\ninteraction = \"rate\"",
            "needs a rating (or stars for a review)",
        ),
        (
            "[[profiles.video.actions]]\nname = \"r\"\nrating = 1",
            "needs an interaction",
        ),
        (
            "[[profiles.video.actions]]\nname = \"w\"\nprogress_above = 1.0\nabove = { interaction = \"play\", rating = 1 }\notherwise = { interaction = \"play\", rating = 0 }",
            "progress_above must be at least 0.0 and below 1.0",
        ),
        (
            "[[profiles.video.actions]]\nname = \"w\"\nprogress_above = 0.5",
            "needs both above and otherwise",
        ),
        (
            "[[profiles.video.actions]]\nname = \"w\"\nabove = { interaction = \"play\", rating = 1 }",
            "above and otherwise need progress_above",
        ),
        (
            "[[profiles.video.actions]]\nname = \"w\"\nprogress_above = 0.5\ninteraction = \"play\"",
            "a progress action takes progress_above, above and otherwise only",
        ),
        (
            "[[profiles.video.actions]]\nname = \"two words\"\ninteraction = \"play\"\nrating = 1",
            "action name \"two words\" may contain only ASCII letters",
        ),
        (
            "[profiles.\"\"]",
            "profile name \"\" must be 1 to 64 characters long",
        ),
        (
            "[profiles.video.defualts]\nplay = 0.1",
            "unknown field `defualts`",
        ),
        (
            "[profiles.video.defaults]\nplay = \"maybe\"",
            "must be a rating or \"required\", got \"maybe\"",
        ),
        ("[profiles.video", "line 1"),
    ];
    for (text, expected) in cases {
        let error = RatingMap::from_toml(text).unwrap_err().to_string();
        assert!(
            error.contains(expected),
            "{text:?}\n  wanted: {expected}\n  got: {error}"
        );
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let found = problems(
        r#"
        default_profile = "nope"
        [profiles.video.defaults]
        click = 0.3
        play = 2.0
        "#,
    );
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(matches!(found[0], Problem::UnknownInteraction { .. }));
    assert!(matches!(found[1], Problem::RatingOutOfRange { .. }));
    assert!(matches!(found[2], Problem::UnknownProfile { .. }));
    let message = RatingMap::from_toml("default_profile = \"nope\"")
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with("invalid rating map:\n  - "),
        "{message}"
    );
}
