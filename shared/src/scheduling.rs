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

/// Most tasks a window holds, however fast the workers take them.
pub const MAX_WINDOW: u32 = 10_000;

/// How many tasks of a module may wait in its broker queue: `per_slot` per live worker slot
/// of the module, at least `min`, and at least `cover` (what keeps fast workers from running
/// dry while the queue is refilled, see [`Uptake`]). A queue that shallow is what lets a rush
/// task, or another submitter's, start about one task duration after it is ready:
/// everything past the window waits in the outbox, ordered there.
pub fn window(live_slots: u32, per_slot: f64, min: u32, cover: u32) -> u32 {
    ((live_slots as f64 * per_slot).ceil() as u32).max(min).max(cover).clamp(1, MAX_WINDOW)
}

/// How fast a module's workers take tasks from its queue, and how long the publisher takes
/// to put more in: for tasks of a few milliseconds, one per slot is gone before the
/// publisher is back, so the window must cover what the workers take in a few refills.
/// For render tasks (seconds) that is far below one per slot and changes nothing. A
/// newcomer then waits a few refills (tens of milliseconds) for such tasks, and about one
/// task for slow ones.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Uptake {
    /// Tasks per second (moving average).
    rate: f64,
}

/// The shortest refill [`Uptake::cover`] assumes.
const MIN_REFILL_SECS: f64 = 0.02;

/// Weight of a new observation in the moving averages.
const ALPHA: f64 = 0.3;

impl Uptake {
    /// `taken` tasks left the queue in `secs` while tasks were held back for it.
    pub fn observe(&mut self, taken: u32, secs: f64) {
        if secs > 0.0 && secs.is_finite() {
            let now = taken as f64 / secs;
            self.rate = if self.rate == 0.0 { now } else { self.rate + ALPHA * (now - self.rate) };
        }
    }

    /// Tasks per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// What the queue must hold while the publisher takes `refill_secs` to refill it: four
    /// refills' worth (at least 20 ms), so that each pass sends a batch rather than the few
    /// tasks taken since the last one, whose fixed cost (a transaction, a broker round
    /// trip) would then bound the rate.
    pub fn cover(&self, refill_secs: f64) -> u32 {
        (self.rate * refill_secs.max(MIN_REFILL_SECS) * 4.0).ceil().min(MAX_WINDOW as f64) as u32
    }
}

/// A moving average of the publisher's pass time, the `refill_secs` of [`Uptake::cover`].
pub fn average(previous: f64, now: f64) -> f64 {
    if previous == 0.0 {
        now
    } else {
        previous + ALPHA * (now - previous)
    }
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
    fn the_window_follows_the_slots_and_what_fast_workers_take() {
        assert_eq!(window(0, 1.0, 2, 0), 2);
        assert_eq!(window(2, 1.0, 2, 0), 2);
        assert_eq!(window(128, 1.0, 2, 0), 128);
        assert_eq!(window(3, 1.5, 0, 0), 5);
        assert_eq!(window(64, 1.0, 2, 300), 300);
        assert_eq!(window(64, 1.0, 2, u32::MAX), MAX_WINDOW);
        // Render tasks: 2 slots of 200 ms take 10 per second; four 20 ms refills need 1.
        let mut slow = Uptake::default();
        slow.observe(2, 0.2);
        assert_eq!(slow.cover(0.005), 1);
        assert_eq!(window(2, 1.0, 2, slow.cover(0.005)), 2);
        // No-op tasks: 7,000 a second over four 25 ms refills need 700 waiting.
        let mut fast = Uptake::default();
        fast.observe(70, 0.01);
        assert_eq!(fast.cover(0.025), 700);
        assert_eq!(fast.cover(0.001), 560, "at least 20 ms");
        // The average moves towards new observations.
        fast.observe(0, 0.01);
        assert!((fast.rate() - 4_900.0).abs() < 1e-6, "{}", fast.rate());
        assert_eq!(average(0.0, 0.01), 0.01);
        assert!((average(0.01, 0.02) - 0.013).abs() < 1e-9);
    }
}
