//! Runs one attempt of a module: enforces the node's timeout and stops the module when the
//! attempt is cancelled. Knows nothing about the broker.

use crate::module::{Module, ModuleError};
use futures_util::FutureExt;
use renderfleet_shared::wire::{ErrorKind, Outcome, TaskError, TaskMessage};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How an attempt ended on this worker.
pub(crate) enum Executed {
    /// A result to report (success, module error, timeout, run cancelled), and what it says
    /// about this host.
    Report(Outcome, Verdict),
    /// Stopped for a reason that is not the task's fault (shutdown past the grace period,
    /// lost broker link): hand the task back to the queue without a result.
    Requeue,
}

/// What an attempt's end says about this host, for the quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It worked here.
    Succeeded,
    /// It failed for a reason about this host ([`ModuleError::Host`]).
    HostFault(String),
    /// Nothing about the host: the input, a flaky tool, a timeout, a cancellation.
    Neutral,
}

/// Why a running attempt's token was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    RunCancelled,
    Requeue,
}

pub(crate) async fn execute(
    module: &dyn Module,
    task: &TaskMessage,
    cancel: &CancellationToken,
    reason: impl Fn() -> StopReason,
) -> Executed {
    let timeout = Duration::from_millis(task.timeout_ms.max(1));
    // A panic in a module fails the attempt instead of unwinding through the consumer, which
    // would leave the delivery unacked and the node running forever.
    let run = std::panic::AssertUnwindSafe(module.run(task)).catch_unwind();
    let result = tokio::select! {
        r = tokio::time::timeout(timeout, run) => r.map(|r| r.unwrap_or_else(|panic| Err(panicked(&*panic)))),
        _ = cancel.cancelled() => {
            return match reason() {
                StopReason::Requeue => Executed::Requeue,
                StopReason::RunCancelled => Executed::Report(failed(ErrorKind::Cancelled, "the run was cancelled; the attempt was stopped".into(), false, None), Verdict::Neutral),
            };
        }
    };
    match result {
        Ok(Ok(outputs)) => Executed::Report(Outcome::Succeeded { outputs }, Verdict::Succeeded),
        Ok(Err(e)) => {
            let retryable = e.retryable();
            let tail = e.log_tail();
            let (message, health) = match e {
                ModuleError::Host { message, .. } => (message.clone(), Verdict::HostFault(message)),
                ModuleError::Retryable { message, .. } | ModuleError::Fatal { message, .. } => (message, Verdict::Neutral),
            };
            Executed::Report(failed(ErrorKind::Module, message, retryable, tail), health)
        }
        Err(_) => Executed::Report(
            failed(
                ErrorKind::Timeout,
                format!(
                    "the attempt ran past the node's timeout of {} and was stopped; raise the node's `timeout` if the work needs longer",
                    humantime_fmt(timeout)
                ),
                true,
                None,
            ),
            Verdict::Neutral,
        ),
    }
}

fn panicked(panic: &(dyn std::any::Any + Send)) -> ModuleError {
    let what = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
    ModuleError::Fatal { message: format!("the module panicked: {what}; this is a bug in the module, please report it"), log_tail: None }
}

fn failed(kind: ErrorKind, message: String, retryable: bool, log_tail: Option<String>) -> Outcome {
    Outcome::Failed { error: TaskError { kind, message, retryable, log_tail } }
}

fn humantime_fmt(d: Duration) -> String {
    if d.as_millis() % 1000 == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
