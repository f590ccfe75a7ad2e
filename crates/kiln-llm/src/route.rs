//! Preferences and the `auto` rule: a request's complexity score picks the tier.

/// What a request asks for; `auto` picks a [`Tier`] from the request's complexity. The one
/// definition lives with the generation payload in `kiln-kinds`.
pub use kiln_kinds::generation::{BadPreference, Preference};

/// A concrete route name in `[llm.routes]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// `routes.fast`.
    Fast,
    /// `routes.balanced`.
    Balanced,
    /// `routes.quality`.
    Quality,
}

impl Tier {
    /// The key in `[llm.routes]`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Fast => "fast",
            Tier::Balanced => "balanced",
            Tier::Quality => "quality",
        }
    }
}

/// What a generation request involves, as far as the router cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Complexity {
    /// Lines of code in (or expected of) the workspace.
    pub lines: u64,
    /// Files in (or expected of) the workspace.
    pub files: u64,
    /// Third-party dependencies involved.
    pub dependencies: u64,
    /// The work touches an HTTP/RPC API.
    pub api: bool,
    /// The work touches a database.
    pub database: bool,
    /// The work touches authentication or authorization.
    pub auth: bool,
}

impl Complexity {
    /// Fills the API/database/auth flags from words in the prompt.
    pub fn with_prompt(mut self, prompt: &str) -> Self {
        let p = prompt.to_ascii_lowercase();
        let any = |words: &[&str]| words.iter().any(|w| p.contains(w));
        self.api |= any(&["api", "endpoint", "http", "rest", "graphql", "grpc", "route"]);
        self.database |= any(&[
            "database",
            "sql",
            "postgres",
            "mysql",
            "sqlite",
            "query",
            "migration",
        ]);
        self.auth |= any(&[
            "auth",
            "login",
            "password",
            "token",
            "oauth",
            "permission",
            "session",
        ]);
        self
    }

    /// The score: lines 0–3, files 0–3, dependencies 0–2, and 1 each for API, database, auth.
    pub fn score(&self) -> u32 {
        let lines = match self.lines {
            0..50 => 0,
            50..200 => 1,
            200..1000 => 2,
            _ => 3,
        };
        let files = match self.files {
            0..=1 => 0,
            2..=3 => 1,
            4..=9 => 2,
            _ => 3,
        };
        let deps = match self.dependencies {
            0 => 0,
            1..=2 => 1,
            _ => 2,
        };
        lines + files + deps + self.api as u32 + self.database as u32 + self.auth as u32
    }
}

/// The tier for a score: fast below 3, balanced 3–6, quality above 6.
pub fn tier_for_score(score: u32) -> Tier {
    match score {
        0..3 => Tier::Fast,
        3..=6 => Tier::Balanced,
        _ => Tier::Quality,
    }
}

/// The route a [`Preference`] takes.
pub trait RouteOf {
    /// The tier this preference routes to (`auto` scores `complexity`).
    fn tier(self, complexity: &Complexity) -> Tier;
}

impl RouteOf for Preference {
    fn tier(self, complexity: &Complexity) -> Tier {
        match self {
            Preference::Fast => Tier::Fast,
            Preference::Balanced => Tier::Balanced,
            Preference::Quality => Tier::Quality,
            Preference::Auto => tier_for_score(complexity.score()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_the_tier_by_score_boundaries() {
        assert_eq!(tier_for_score(0), Tier::Fast);
        assert_eq!(tier_for_score(2), Tier::Fast);
        assert_eq!(tier_for_score(3), Tier::Balanced);
        assert_eq!(tier_for_score(6), Tier::Balanced);
        assert_eq!(tier_for_score(7), Tier::Quality);
        let small = Complexity {
            lines: 20,
            files: 1,
            ..Default::default()
        };
        assert_eq!(Preference::Auto.tier(&small), Tier::Fast);
        let medium = Complexity {
            lines: 300,
            files: 3,
            ..Default::default()
        };
        assert_eq!(medium.score(), 3);
        assert_eq!(Preference::Auto.tier(&medium), Tier::Balanced);
        let big = Complexity {
            lines: 5000,
            files: 12,
            dependencies: 4,
            ..Default::default()
        }
        .with_prompt("add a REST endpoint storing users in Postgres behind OAuth login");
        assert_eq!(big.score(), 11);
        assert_eq!(Preference::Auto.tier(&big), Tier::Quality);
        assert_eq!(Preference::Quality.tier(&small), Tier::Quality);
    }

    #[test]
    fn preferences_parse_and_refuse_unknown_names() {
        assert_eq!("auto".parse::<Preference>().unwrap(), Preference::Auto);
        assert_eq!(Preference::default(), Preference::Balanced);
        let err = "smart".parse::<Preference>().unwrap_err();
        assert!(err.to_string().contains("\"smart\""));
    }
}
