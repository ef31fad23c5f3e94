//! Black-hole protection: a host with a broken tool or a full disk fails fast, so it would
//! take the next task sooner and fail that too. A module that fails `after` tasks in a row
//! for reasons not about their input is quarantined: the worker stops consuming its queue,
//! says so in its heartbeat, and takes it up again after the cool-down or on an operator's
//! word (a `Release` control message). Failures about the input (bad params, a broken STEP
//! file), timeouts and cancellations neither count nor break the streak; a success does.

use renderfleet_shared::config::QuarantineConfig;
use renderfleet_shared::wire::{ErrorKind, Outcome, Quarantined};
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

/// Whether an attempt's outcome says something about this host.
fn host_failure(outcome: &Outcome) -> Option<&str> {
    match outcome {
        // A retryable module error is a tool that could not start or was killed, a write that
        // failed, a store that was not there: the host, not the input.
        Outcome::Failed { error } if error.kind == ErrorKind::Module && error.retryable => Some(&error.message),
        _ => None,
    }
}

impl Health {
    pub(crate) fn new(config: QuarantineConfig) -> Self {
        Self { config, modules: Mutex::default(), changed: Notify::new() }
    }

    /// Counts an attempt's outcome; true when it put `module` into quarantine.
    pub(crate) fn record(&self, module: &str, outcome: &Outcome, now_us: i64) -> bool {
        let mut modules = self.modules.lock().expect("health");
        let h = modules.entry(module.to_string()).or_default();
        match (outcome, host_failure(outcome)) {
            (Outcome::Succeeded { .. }, _) => h.streak = 0,
            (_, Some(message)) => {
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
            _ => {}
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
    use renderfleet_shared::wire::TaskError;
    use std::time::Duration;

    fn failed(kind: ErrorKind, retryable: bool) -> Outcome {
        Outcome::Failed { error: TaskError { kind, message: "`blender` cannot start".into(), retryable, log_tail: None } }
    }

    fn health(after: u32) -> Health {
        Health::new(QuarantineConfig { after, cool_down: Duration::from_secs(60) })
    }

    #[test]
    fn host_failures_in_a_row_quarantine_and_the_cool_down_releases() {
        let h = health(3);
        let host = failed(ErrorKind::Module, true);
        assert!(!h.record("blender.still", &host, 0));
        assert!(!h.record("blender.still", &host, 1));
        assert!(h.record("blender.still", &host, 2), "the third in a row quarantines");
        assert!(h.is_quarantined("blender.still") && !h.is_quarantined("noop"));
        let q = &h.quarantined()[0];
        assert_eq!((q.failures, q.since_us, q.until_us), (3, 2, 2 + 60_000_000));
        assert!(h.release_expired(2 + 59_000_000).is_empty(), "not before the cool-down ends");
        assert_eq!(h.release_expired(2 + 60_000_000), vec!["blender.still".to_string()]);
        assert!(!h.is_quarantined("blender.still"));
        assert!(!h.record("blender.still", &host, 3), "a released module starts a new streak");
    }

    #[test]
    fn input_errors_timeouts_and_successes_do_not_make_a_black_hole() {
        let h = health(2);
        let host = failed(ErrorKind::Module, true);
        for other in [failed(ErrorKind::Module, false), failed(ErrorKind::Timeout, true), failed(ErrorKind::Cancelled, false)] {
            h.record("m", &host, 0);
            assert!(!h.record("m", &other, 0), "{other:?} does not count");
            h.record("m", &Outcome::Succeeded { outputs: serde_json::Value::Null }, 0);
        }
        assert!(!h.is_quarantined("m"));
        assert!(!health(0).record("m", &host, 0), "after = 0 never quarantines");
        h.record("m", &host, 0);
        assert!(h.record("m", &host, 0));
        assert_eq!(h.release(Some("other")), Vec::<String>::new());
        assert_eq!(h.release(None), vec!["m".to_string()], "an operator's word releases at once");
    }
}
