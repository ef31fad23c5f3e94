//! Who waits for whom: a run's priority and its submitter, and how much work the coordinator
//! lets wait in a module's broker queue (the rest waits in the outbox, where priority and
//! fair share decide what goes next). See the README, "Priorities and fair share".

use serde::{Deserialize, Serialize};

/// How urgent a run is. Higher priorities start first wherever work waits; within one,
/// submitters share the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Catalogue re-renders and other work nobody waits for.
    Bulk,
    /// An order line.
    #[default]
    Normal,
    /// An order line someone is waiting for (a rush order).
    Rush,
    /// A person at a screen (a preview in the editor).
    Interactive,
}

impl Priority {
    pub const ALL: [Priority; 4] = [Priority::Bulk, Priority::Normal, Priority::Rush, Priority::Interactive];

    /// Its value in `runs.priority` and `outbox.priority` (migration V11): higher goes first.
    pub fn rank(self) -> i16 {
        self as i16
    }

    pub fn from_rank(rank: i16) -> Option<Priority> {
        Self::ALL.get(usize::try_from(rank).ok()?).copied()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Bulk => "bulk",
            Priority::Normal => "normal",
            Priority::Rush => "rush",
            Priority::Interactive => "interactive",
        }
    }

    pub fn parse(s: &str) -> Option<Priority> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The submitter of work sent without a token (an open development coordinator).
pub const ANONYMOUS: &str = "anonymous";

/// Longest `tenant` a request may name.
pub const MAX_TENANT_LEN: usize = 64;

/// Who a run is attributed to for fair share: the request's `tenant` when it names one (an
/// order system submitting for many shops), else the API token's name.
pub fn submitter(tenant: Option<&str>, token_name: Option<&str>) -> Result<String, String> {
    match tenant.map(str::trim) {
        Some("") => Err("`tenant` is blank: leave it out to be counted under your token's name, or name the tenant".into()),
        Some(t) if t.len() > MAX_TENANT_LEN || t.chars().any(char::is_control) => {
            Err(format!("`tenant` must be at most {MAX_TENANT_LEN} printable characters"))
        }
        Some(t) => Ok(t.to_string()),
        None => Ok(token_name.unwrap_or(ANONYMOUS).to_string()),
    }
}

/// How many tasks of a module may wait in its broker queue: `per_slot` per live worker slot
/// of the module, at least `min`. A shallow queue is what lets a rush task, or another
/// submitter's, start within about one task duration: everything past the window waits in
/// the outbox, ordered there.
pub fn window(live_slots: u32, per_slot: f64, min: u32) -> u32 {
    ((live_slots as f64 * per_slot).ceil() as u32).max(min).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_order_priorities_and_round_trip() {
        for p in Priority::ALL {
            assert_eq!(Priority::from_rank(p.rank()), Some(p));
            assert_eq!(Priority::parse(p.as_str()), Some(p));
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        assert!(Priority::Rush.rank() > Priority::Normal.rank() && Priority::Normal.rank() > Priority::Bulk.rank());
        assert_eq!((Priority::from_rank(4), Priority::from_rank(-1), Priority::parse("urgent")), (None, None, None));
    }

    #[test]
    fn the_submitter_is_the_tenant_or_the_token() {
        assert_eq!(submitter(Some("shop-7"), Some("order-system")).unwrap(), "shop-7");
        assert_eq!(submitter(None, Some("order-system")).unwrap(), "order-system");
        assert_eq!(submitter(None, None).unwrap(), ANONYMOUS);
        assert!(submitter(Some("  "), None).unwrap_err().contains("blank"));
        assert!(submitter(Some(&"x".repeat(65)), None).unwrap_err().contains("at most 64"));
    }

    #[test]
    fn the_window_follows_the_slots() {
        assert_eq!(window(0, 1.0, 2), 2);
        assert_eq!(window(2, 1.0, 2), 2);
        assert_eq!(window(128, 1.0, 2), 128);
        assert_eq!(window(3, 1.5, 0), 5);
    }
}
