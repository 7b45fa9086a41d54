//! Rating profiles: how an `interaction` without a `ratingEquivalent`, or an app-level
//! `action`, becomes an interaction type and a rating.
//!
//! The built-in profiles `video` and `ecommerce` are the spec's two tables; where a table has
//! no row for an interaction type, the spec's intent scale fills the default (so `purchase`
//! defaults to 0.75 in `video` too). Where the spec contradicts itself (impressions are 0.0 in
//! the tables and 0.1 in the intent scale) the tables win; a rating-map file can change that.
//!
//! A rating-map file (TOML, see `config/rating-map.example.toml`) overrides or adds defaults,
//! actions, whole profiles and the tenant → profile assignment, so rating policy changes need
//! no app release. It is validated as a whole when loaded; every problem is reported at once.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use thiserror::Error;

use crate::interaction::InteractionType;

/// Name of the profile used for tenants the rating map does not assign.
pub const DEFAULT_PROFILE: &str = "video";

/// What an action resolves to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// The interaction type sent to Ncanto.
    pub interaction: InteractionType,
    /// The rating sent to Ncanto.
    pub rating: f64,
}

/// How an action turns into an [`Outcome`].
#[derive(Debug, Clone, PartialEq)]
pub enum ActionRule {
    /// Always the same outcome.
    Fixed(Outcome),
    /// A review: the event carries `stars` 1–5, which pick the rating.
    Stars {
        /// The interaction type sent.
        interaction: InteractionType,
        /// Rating for 1, 2, 3, 4 and 5 stars.
        ratings: [f64; 5],
    },
    /// Watching: the event carries `progress` in 0..=1; strictly above `threshold` counts as
    /// `above` (the spec's "watch > 80%"), anything else as `otherwise`.
    Progress {
        /// The fraction that must be exceeded.
        threshold: f64,
        /// Outcome when `progress > threshold`.
        above: Outcome,
        /// Outcome when `progress <= threshold`.
        otherwise: Outcome,
    },
}

/// A named app-level action.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    /// The name clients send in `action`, matched ignoring ASCII case.
    pub name: String,
    /// What it resolves to.
    pub rule: ActionRule,
}

/// One profile: default ratings per interaction type and the actions it knows.
#[derive(Debug, Clone, PartialEq)]
pub struct RatingProfile {
    name: String,
    defaults: [Option<f64>; InteractionType::ALL.len()],
    actions: Vec<Action>,
}

impl RatingProfile {
    /// The profile's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rating used when an event names `interaction` but sends no `ratingEquivalent`;
    /// `None` where that is ambiguous (e.g. `rate`: a like or a dislike?).
    pub fn default_rating(&self, interaction: InteractionType) -> Option<f64> {
        self.defaults[interaction.index()]
    }

    /// Looks an action up by name, ignoring ASCII case.
    pub fn action(&self, name: &str) -> Option<&Action> {
        self.actions
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// Every action, in definition order.
    pub fn actions(&self) -> &[Action] {
        &self.actions
    }

    /// The action names, comma-separated, for error messages.
    pub fn action_names(&self) -> String {
        let names: Vec<&str> = self.actions.iter().map(|a| a.name.as_str()).collect();
        names.join(", ")
    }

    fn set_action(&mut self, action: Action) {
        match self
            .actions
            .iter_mut()
            .find(|a| a.name.eq_ignore_ascii_case(&action.name))
        {
            Some(existing) => *existing = action,
            None => self.actions.push(action),
        }
    }
}

use InteractionType as T;

const fn fixed(interaction: InteractionType, rating: f64) -> ActionRule {
    ActionRule::Fixed(Outcome {
        interaction,
        rating,
    })
}

fn profile(name: &str, actions: Vec<(&str, ActionRule)>) -> RatingProfile {
    // The intent scale's defaults, with the tables' 0.0 for impressions; `rate` has rows of
    // both +1.0 and -1.0, so it has no default. Both tables agree on every other type.
    let mut defaults = [None; InteractionType::ALL.len()];
    for (interaction, rating) in [
        (T::RecommendationImpression, 0.0),
        (T::Select, 0.25),
        (T::Play, 0.25),
        (T::PlayComplete, 0.5),
        (T::Deselect, -1.0),
        (T::Share, 0.75),
        (T::AddToCart, 0.5),
        (T::Purchase, 0.75),
    ] {
        defaults[interaction.index()] = Some(rating);
    }
    RatingProfile {
        name: name.to_owned(),
        defaults,
        actions: actions
            .into_iter()
            .map(|(name, rule)| Action {
                name: name.to_owned(),
                rule,
            })
            .collect(),
    }
}

/// The spec's video table, row by row, plus common aliases.
pub fn video_profile() -> RatingProfile {
    profile(
        "video",
        vec![
            (
                "view_recommendation",
                fixed(T::RecommendationImpression, 0.0),
            ),
            ("impression", fixed(T::RecommendationImpression, 0.0)),
            ("click", fixed(T::Select, 0.25)),
            ("play", fixed(T::Play, 0.25)),
            (
                "watch",
                ActionRule::Progress {
                    threshold: 0.8,
                    above: Outcome {
                        interaction: T::PlayComplete,
                        rating: 0.5,
                    },
                    otherwise: Outcome {
                        interaction: T::Play,
                        rating: 0.25,
                    },
                },
            ),
            ("watch_complete", fixed(T::PlayComplete, 0.5)),
            ("like", fixed(T::Rate, 1.0)),
            ("dislike", fixed(T::Rate, -1.0)),
            ("add_to_watchlist", fixed(T::Select, 1.0)),
            ("add_to_favorites", fixed(T::Select, 1.0)),
            ("remove_from_watchlist", fixed(T::Deselect, -1.0)),
            ("remove_from_favorites", fixed(T::Deselect, -1.0)),
            ("share", fixed(T::Share, 0.75)),
        ],
    )
}

/// The spec's e-commerce table, row by row, plus common aliases. A 3-star review, which the
/// table leaves out, is neutral (0.0).
pub fn ecommerce_profile() -> RatingProfile {
    profile(
        "ecommerce",
        vec![
            ("view_product", fixed(T::RecommendationImpression, 0.0)),
            (
                "view_recommendation",
                fixed(T::RecommendationImpression, 0.0),
            ),
            ("click", fixed(T::Select, 0.25)),
            ("click_product", fixed(T::Select, 0.25)),
            ("add_to_cart", fixed(T::AddToCart, 0.5)),
            ("purchase", fixed(T::Purchase, 0.75)),
            ("add_to_wishlist", fixed(T::Select, 1.0)),
            ("remove_from_wishlist", fixed(T::Deselect, -1.0)),
            (
                "review",
                ActionRule::Stars {
                    interaction: T::Rate,
                    ratings: [-1.0, -1.0, 0.0, 1.0, 1.0],
                },
            ),
            ("like", fixed(T::Rate, 1.0)),
            ("dislike", fixed(T::Rate, -1.0)),
            ("share", fixed(T::Share, 0.75)),
            ("share_product", fixed(T::Share, 0.75)),
        ],
    )
}

/// Every profile, and which tenant uses which.
#[derive(Debug, Clone, PartialEq)]
pub struct RatingMap {
    profiles: BTreeMap<String, RatingProfile>,
    default_profile: String,
    tenants: BTreeMap<String, String>,
}

impl Default for RatingMap {
    fn default() -> Self {
        Self::builtin()
    }
}

impl RatingMap {
    /// The built-in profiles; every tenant uses [`DEFAULT_PROFILE`].
    pub fn builtin() -> Self {
        let profiles = [video_profile(), ecommerce_profile()]
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        Self {
            profiles,
            default_profile: DEFAULT_PROFILE.to_owned(),
            tenants: BTreeMap::new(),
        }
    }

    /// The built-in profiles with a rating-map file's contents applied on top.
    pub fn from_toml(text: &str) -> Result<Self, RatingMapError> {
        let file: FileSpec = toml::from_str(text).map_err(|e| RatingMapError {
            problems: vec![Problem::Syntax(e.to_string().trim_end().to_owned())],
        })?;
        let mut map = Self::builtin();
        let mut problems = Vec::new();
        map.apply(file, &mut problems);
        if problems.is_empty() {
            Ok(map)
        } else {
            Err(RatingMapError { problems })
        }
    }

    /// A profile by name.
    pub fn profile(&self, name: &str) -> Option<&RatingProfile> {
        self.profiles.get(name)
    }

    /// Every profile, by name.
    pub fn profiles(&self) -> impl Iterator<Item = &RatingProfile> {
        self.profiles.values()
    }

    /// The profile a tenant's events are rated with.
    pub fn profile_for_tenant(&self, tenant: &str) -> &RatingProfile {
        let name = self.tenants.get(tenant).unwrap_or(&self.default_profile);
        // `apply` only lets names of existing profiles into `tenants` and `default_profile`,
        // and profiles are never removed; the fallback keeps this total all the same.
        self.profiles
            .get(name)
            .or_else(|| self.profiles.values().next())
            .unwrap_or_else(|| unreachable_profile())
    }

    fn apply(&mut self, file: FileSpec, problems: &mut Vec<Problem>) {
        // New profiles first, so `extends`, `tenants` and `default_profile` may name them.
        for (name, spec) in &file.profiles {
            if !self.profiles.contains_key(name) {
                if let Err(reason) = check_name(name) {
                    problems.push(Problem::InvalidName {
                        what: "profile",
                        name: name.clone(),
                        reason,
                    });
                    continue;
                }
                let base = match &spec.extends {
                    None => RatingProfile {
                        name: name.clone(),
                        defaults: [None; InteractionType::ALL.len()],
                        actions: Vec::new(),
                    },
                    Some(base) => match self.profiles.get(base) {
                        Some(base) => RatingProfile {
                            name: name.clone(),
                            ..base.clone()
                        },
                        None => {
                            problems.push(Problem::UnknownProfile {
                                name: base.clone(),
                                context: format!("profiles.{name}.extends"),
                            });
                            continue;
                        }
                    },
                };
                self.profiles.insert(name.clone(), base);
            } else if spec.extends.is_some() {
                problems.push(Problem::InvalidAction {
                    profile: name.clone(),
                    action: "extends".to_owned(),
                    reason: "only a new profile can extend another; this one already exists"
                        .to_owned(),
                });
            }
        }
        for (name, spec) in file.profiles {
            if let Some(profile) = self.profiles.get_mut(&name) {
                apply_profile(profile, spec, problems);
            }
        }
        if let Some(name) = file.default_profile {
            if self.profiles.contains_key(&name) {
                self.default_profile = name;
            } else {
                problems.push(Problem::UnknownProfile {
                    name,
                    context: "default_profile".to_owned(),
                });
            }
        }
        for (tenant, name) in file.tenants {
            if self.profiles.contains_key(&name) {
                self.tenants.insert(tenant, name);
            } else {
                problems.push(Problem::UnknownProfile {
                    name,
                    context: format!("tenants.{tenant}"),
                });
            }
        }
    }
}

#[cold]
fn unreachable_profile() -> &'static RatingProfile {
    // Only reachable if a map had no profile at all, which `builtin` makes impossible.
    static EMPTY: std::sync::OnceLock<RatingProfile> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| profile("empty", Vec::new()))
}

fn apply_profile(profile: &mut RatingProfile, spec: ProfileSpec, problems: &mut Vec<Problem>) {
    let name = profile.name.clone();
    for (interaction, value) in spec.defaults {
        let Some(interaction) = parse_interaction(&name, "defaults", &interaction, problems) else {
            continue;
        };
        profile.defaults[interaction.index()] = match value {
            DefaultSpec::Rating(rating) => {
                check_rating(&name, &format!("defaults.{interaction}"), rating, problems);
                Some(rating)
            }
            DefaultSpec::Keyword(word) if word == "required" => None,
            DefaultSpec::Keyword(word) => {
                problems.push(Problem::InvalidAction {
                    profile: name.clone(),
                    action: format!("defaults.{interaction}"),
                    reason: format!("must be a rating or \"required\", got {word:?}"),
                });
                continue;
            }
        };
    }
    let mut seen: Vec<String> = Vec::new();
    for action in spec.actions {
        if seen.iter().any(|s| s.eq_ignore_ascii_case(&action.name)) {
            problems.push(Problem::DuplicateAction {
                profile: name.clone(),
                action: action.name,
            });
            continue;
        }
        seen.push(action.name.clone());
        if let Some(action) = build_action(&name, action, problems) {
            profile.set_action(action);
        }
    }
}

fn build_action(profile: &str, spec: ActionSpec, problems: &mut Vec<Problem>) -> Option<Action> {
    let before = problems.len();
    let invalid = |reason: &str| Problem::InvalidAction {
        profile: profile.to_owned(),
        action: spec.name.clone(),
        reason: reason.to_owned(),
    };
    if let Err(reason) = check_name(&spec.name) {
        problems.push(Problem::InvalidName {
            what: "action",
            name: spec.name.clone(),
            reason,
        });
        return None;
    }
    let context = format!("action {}", spec.name);
    let outcome = |o: &OutcomeSpec, part: &str, problems: &mut Vec<Problem>| {
        let interaction = parse_interaction(profile, &context, &o.interaction, problems)?;
        check_rating(profile, &format!("{context} {part}"), o.rating, problems);
        Some(Outcome {
            interaction,
            rating: o.rating,
        })
    };
    let rule = if let Some(threshold) = spec.progress_above {
        if spec.interaction.is_some() || spec.rating.is_some() || spec.stars.is_some() {
            problems.push(invalid(
                "a progress action takes progress_above, above and otherwise only",
            ));
            return None;
        }
        if !(threshold.is_finite() && (0.0..1.0).contains(&threshold)) {
            problems.push(invalid("progress_above must be at least 0.0 and below 1.0"));
        }
        let (Some(above), Some(otherwise)) = (&spec.above, &spec.otherwise) else {
            problems.push(invalid(
                "a progress action needs both above and otherwise outcomes",
            ));
            return None;
        };
        let above = outcome(above, "above", problems);
        let otherwise = outcome(otherwise, "otherwise", problems);
        ActionRule::Progress {
            threshold,
            above: above?,
            otherwise: otherwise?,
        }
    } else {
        if spec.above.is_some() || spec.otherwise.is_some() {
            problems.push(invalid("above and otherwise need progress_above"));
            return None;
        }
        let Some(interaction) = &spec.interaction else {
            problems.push(invalid("needs an interaction"));
            return None;
        };
        let interaction = parse_interaction(profile, &context, interaction, problems)?;
        match (&spec.stars, spec.rating) {
            (Some(_), Some(_)) => {
                problems.push(invalid("takes either rating or stars, not both"));
                return None;
            }
            (None, None) => {
                problems.push(invalid("needs a rating (or stars for a review)"));
                return None;
            }
            (None, Some(rating)) => {
                check_rating(profile, &context, rating, problems);
                ActionRule::Fixed(Outcome {
                    interaction,
                    rating,
                })
            }
            (Some(stars), None) => {
                let Ok(ratings) = <[f64; 5]>::try_from(stars.as_slice()) else {
                    problems.push(invalid(
                        "stars must list exactly 5 ratings, for 1 to 5 stars",
                    ));
                    return None;
                };
                for (i, rating) in ratings.iter().enumerate() {
                    check_rating(
                        profile,
                        &format!("{context} stars[{}]", i + 1),
                        *rating,
                        problems,
                    );
                }
                ActionRule::Stars {
                    interaction,
                    ratings,
                }
            }
        }
    };
    (problems.len() == before).then_some(Action {
        name: spec.name,
        rule,
    })
}

fn parse_interaction(
    profile: &str,
    context: &str,
    name: &str,
    problems: &mut Vec<Problem>,
) -> Option<InteractionType> {
    let parsed = InteractionType::parse(name);
    if parsed.is_none() {
        problems.push(Problem::UnknownInteraction {
            profile: profile.to_owned(),
            context: context.to_owned(),
            name: name.to_owned(),
        });
    }
    parsed
}

fn check_rating(profile: &str, context: &str, rating: f64, problems: &mut Vec<Problem>) {
    if !crate::normalize::rating_in_range(rating) {
        problems.push(Problem::RatingOutOfRange {
            profile: profile.to_owned(),
            context: context.to_owned(),
            rating,
        });
    }
}

fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return Err("may contain only ASCII letters, digits, '_', '-' and '.'");
    }
    Ok(())
}

/// Everything wrong with a rating-map file.
#[derive(Debug, Clone, PartialEq, Error)]
pub struct RatingMapError {
    /// Each problem found; never empty.
    pub problems: Vec<Problem>,
}

impl fmt::Display for RatingMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid rating map:")?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

/// One problem in a rating-map file.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Problem {
    /// Not TOML, or not of the expected shape (unknown key, wrong type); with line and column.
    #[error("{0}")]
    Syntax(String),
    /// An interaction type that is not one of the spec's.
    #[error(
        "profile {profile:?}, {context}: unknown interaction type {name:?}; expected one of {}",
        InteractionType::allowed()
    )]
    UnknownInteraction {
        /// The profile.
        profile: String,
        /// Where in it.
        context: String,
        /// The unknown name.
        name: String,
    },
    /// A rating outside -1.0..=1.0.
    #[error("profile {profile:?}, {context}: rating {rating} is outside -1.0..=1.0")]
    RatingOutOfRange {
        /// The profile.
        profile: String,
        /// Where in it.
        context: String,
        /// The rating given.
        rating: f64,
    },
    /// The same action twice in one profile (names compare ignoring ASCII case).
    #[error("profile {profile:?}: action {action:?} is defined more than once")]
    DuplicateAction {
        /// The profile.
        profile: String,
        /// The repeated name.
        action: String,
    },
    /// A reference to a profile that does not exist.
    #[error("{context}: unknown profile {name:?}")]
    UnknownProfile {
        /// The missing profile's name.
        name: String,
        /// Where it was named.
        context: String,
    },
    /// An action (or setting) whose fields do not fit together.
    #[error("profile {profile:?}, {action}: {reason}")]
    InvalidAction {
        /// The profile.
        profile: String,
        /// The action or setting.
        action: String,
        /// What is wrong.
        reason: String,
    },
    /// A profile or action name that is empty, too long or has odd characters.
    #[error("{what} name {name:?} {reason}")]
    InvalidName {
        /// `profile` or `action`.
        what: &'static str,
        /// The name.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
}

// The file format. `deny_unknown_fields` turns typos into errors with a line number.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    default_profile: Option<String>,
    #[serde(default)]
    tenants: BTreeMap<String, String>,
    #[serde(default)]
    profiles: BTreeMap<String, ProfileSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileSpec {
    extends: Option<String>,
    #[serde(default)]
    defaults: BTreeMap<String, DefaultSpec>,
    #[serde(default)]
    actions: Vec<ActionSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DefaultSpec {
    Rating(f64),
    Keyword(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionSpec {
    name: String,
    interaction: Option<String>,
    rating: Option<f64>,
    stars: Option<Vec<f64>>,
    progress_above: Option<f64>,
    above: Option<OutcomeSpec>,
    otherwise: Option<OutcomeSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutcomeSpec {
    interaction: String,
    rating: f64,
}
