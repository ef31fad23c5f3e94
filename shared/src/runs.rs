//! The words a run is described with, as types: its status, its pipeline and its role in
//! its render request. Their serde and SQL spellings are the same snake_case words the
//! `runs` table's CHECK constraints allow (migrations V1, V4).

use serde::{Deserialize, Serialize};

macro_rules! words {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word as stored and sent.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }

            /// The value a stored word names; `None` for a word this build does not know.
            pub fn parse(word: &str) -> Option<Self> {
                match word {
                    $($word => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

words!(
    /// Where a run stands.
    RunStatus {
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

words!(
    /// Which pipeline a run belongs to.
    Pipeline {
        /// The workflow graph bound to the output type.
        Graph => "graph",
        /// The fixed legacy pipeline.
        Legacy => "legacy",
    }
);

words!(
    /// What a run is to its render request.
    RunRole {
        /// It answers the request.
        Authoritative => "authoritative",
        /// It is compared with the answer and never seen by the order system.
        Shadow => "shadow",
        /// The legacy run that answers when the authoritative graph run failed.
        Fallback => "fallback",
        /// A shadow comparison's `compare` task.
        Comparison => "comparison",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_through_their_spellings() {
        for s in RunStatus::ALL {
            assert_eq!(RunStatus::parse(s.as_str()), Some(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::json!(s.as_str()));
        }
        for p in Pipeline::ALL {
            assert_eq!(Pipeline::parse(p.as_str()), Some(*p));
        }
        for r in RunRole::ALL {
            assert_eq!(serde_json::from_value::<RunRole>(serde_json::json!(r.as_str())).unwrap(), *r);
        }
        assert_eq!(RunStatus::parse("queued"), None);
    }
}
