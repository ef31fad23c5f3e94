//! Black-hole protection: a host with a broken tool or a full disk fails fast, so it would
//! take the next task sooner and fail that too. A module that fails `after` tasks in a row
//! for reasons not about their input is quarantined: the worker stops consuming its queue,
//! says so in its heartbeat, and takes it up again after the cool-down or on an operator's
//! word (a `Release` control message). Only host faults count ([`ModuleError::Host`]: a tool
//! that will not start or was killed, a scratch space or store that cannot be written);
//! failures about the input (bad params, a broken STEP file), flaky tools, timeouts and
//! cancellations neither count nor break the streak; a success does.
//!
//! [`ModuleError::Host`]: crate::module::ModuleError::Host

use super::executor::Verdict as Seen;
use renderfleet_shared::config::QuarantineConfig;
use renderfleet_shared::wire::Quarantined;
use std::collections::BTreeMap;
use std::sync::Mutex;
use tokio::sync::Notify;

/// Per module: the current streak of host failures, and the quarantine when there is one.
#[derive(Default)]
struct ModuleHealth {
    streak: u32,
    quarantine: Option<Quarantined>,
}

/// The worker's view of its own modules' health, kept across broker sessions.
pub(crate) struct Health {
    config: QuarantineConfig,
    modules: Mutex<BTreeMap<String, ModuleHealth>>,
    /// Wakes the session when a module enters or leaves quarantine, to cancel or resume its
    /// consumer.
    pub(crate) changed: Notify,
}

impl Health {
    pub(crate) fn new(config: QuarantineConfig) -> Self {
        Self { config, modules: Mutex::default(), changed: Notify::new() }
    }

    /// Counts what an attempt's end says about this host; true when it put `module` into
    /// quarantine.
    pub(crate) fn record(&self, module: &str, seen: &Seen, now_us: i64) -> bool {
        let mut modules = self.modules.lock().expect("health");
        let h = modules.entry(module.to_string()).or_default();
        match seen {
            Seen::Succeeded => h.streak = 0,
            Seen::HostFault(message) => {
                h.streak += 1;
                if self.config.after > 0 && h.streak >= self.config.after && h.quarantine.is_none() {
                    let until_us = now_us.saturating_add(self.config.cool_down.as_micros() as i64);
                    h.quarantine = Some(Quarantined {
                        module: module.into(),
                        failures: h.streak,
                        last_error: message.into(),
                        since_us: now_us,
                        until_us,
                    });
                    drop(modules);
                    self.changed.notify_one();
                    return true;
                }
            }
            Seen::Neutral => {}
        }
        false
    }

    pub(crate) fn is_quarantined(&self, module: &str) -> bool {
        self.modules.lock().expect("health").get(module).is_some_and(|h| h.quarantine.is_some())
    }

    /// Ends the quarantine of `module` (none: of every module); returns those released.
    pub(crate) fn release(&self, module: Option<&str>) -> Vec<String> {
        let released = self.release_where(|m, _| module.is_none_or(|want| want == m));
        if !released.is_empty() {
            self.changed.notify_one();
        }
        released
    }

    /// Ends every quarantine whose cool-down is over; returns those released.
    pub(crate) fn release_expired(&self, now_us: i64) -> Vec<String> {
        let released = self.release_where(|_, q| q.until_us <= now_us);
        if !released.is_empty() {
            self.changed.notify_one();
        }
        released
    }

    fn release_where(&self, pick: impl Fn(&str, &Quarantined) -> bool) -> Vec<String> {
        let mut modules = self.modules.lock().expect("health");
        let mut released = Vec::new();
        for (name, h) in modules.iter_mut() {
            if h.quarantine.as_ref().is_some_and(|q| pick(name, q)) {
                h.quarantine = None;
                // A fresh start: one more failure must not put it straight back.
                h.streak = 0;
                released.push(name.clone());
            }
        }
        released
    }

    /// The modules in quarantine now, for the heartbeat.
    pub(crate) fn quarantined(&self) -> Vec<Quarantined> {
        self.modules.lock().expect("health").values().filter_map(|h| h.quarantine.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn health(after: u32) -> Health {
        Health::new(QuarantineConfig { after, cool_down: Duration::from_secs(60) })
    }

    fn host() -> Seen {
        Seen::HostFault("`blender` cannot start".into())
    }

    #[test]
    fn host_faults_in_a_row_quarantine_and_the_cool_down_releases() {
        let h = health(3);
        assert!(!h.record("blender_still", &host(), 0));
        assert!(!h.record("blender_still", &host(), 1));
        assert!(h.record("blender_still", &host(), 2), "the third in a row quarantines");
        assert!(h.is_quarantined("blender_still") && !h.is_quarantined("noop"));
        let q = &h.quarantined()[0];
        assert_eq!((q.failures, q.since_us, q.until_us), (3, 2, 2 + 60_000_000));
        assert!(q.last_error.contains("cannot start"));
        assert!(h.release_expired(2 + 59_000_000).is_empty(), "not before the cool-down ends");
        assert_eq!(h.release_expired(2 + 60_000_000), vec!["blender_still".to_string()]);
        assert!(!h.is_quarantined("blender_still"));
        assert!(!h.record("blender_still", &host(), 3), "a released module starts a new streak");
    }

    #[test]
    fn other_failures_and_successes_do_not_make_a_black_hole() {
        let h = health(2);
        h.record("m", &host(), 0);
        h.record("m", &Seen::Neutral, 0);
        assert!(h.record("m", &host(), 0), "an input error between two host faults neither counts nor breaks the streak");
        assert_eq!(h.release(None), vec!["m".to_string()], "an operator's word releases at once");
        h.record("m", &host(), 0);
        h.record("m", &Seen::Succeeded, 0);
        assert!(!h.record("m", &host(), 0), "a success breaks the streak");
        assert!(!health(0).record("m", &host(), 0), "after = 0 never quarantines");
        assert_eq!(h.release(Some("other")), Vec::<String>::new());
    }
}
