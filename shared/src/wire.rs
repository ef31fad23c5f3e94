//! Messages on the broker: MessagePack (`rmp-serde`, maps with field names so fields can be
//! added), content type `application/msgpack`, each with a schema version `v`.
//! Large data never travels here: messages carry references.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use uuid::Uuid;

pub const CONTENT_TYPE: &str = "application/msgpack";
/// Bumped on an incompatible change; a reader refuses versions it does not know.
pub const WIRE_VERSION: u16 = 1;

/// A node attempt to run, published by the coordinator's outbox to `tasks.<module_key>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskMessage {
    pub v: u16,
    pub run_id: Uuid,
    pub node_run_id: Uuid,
    pub node_id: String,
    pub module_key: String,
    /// 1-based; results are applied only for the node's current attempt.
    pub attempt: u32,
    pub params: Value,
    pub timeout_ms: u64,
    /// What the node's inputs resolved to when the task was built: an upstream output (an
    /// artifact reference) per input port, and the run's contexts (`subject`,
    /// `product_materials`). Empty for nodes that take nothing.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub inputs: serde_json::Map<String, Value>,
    /// Set when the node's result may be stored in the node result cache: the key the
    /// coordinator computed and the fleet fingerprint it computed it with. A worker reports
    /// the key back ([`Finished::cache`]) only if its own fingerprint is that one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheHint>,
    /// Workers that failed an earlier attempt of this node, set only while another worker
    /// of the module is live: a worker named here hands the task back for another to take
    /// (a black-hole host must not eat every retry of a node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub avoid: Vec<String>,
}

/// See [`TaskMessage::cache`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheHint {
    pub key: String,
    pub fingerprint: String,
}

impl TaskMessage {
    /// `message_id` on the broker: one per node attempt.
    pub fn message_id(&self) -> String {
        format!("{}:{}", self.node_run_id, self.attempt)
    }
}

/// Everything workers send to the results exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultMessage {
    pub v: u16,
    pub body: ResultBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ResultBody {
    Started(Started),
    Finished(Finished),
    /// Several ends at once: a busy worker coalesces the results that are ready together
    /// into one message (one publish, one confirm), so the broker moves fewer messages.
    FinishedBatch(Vec<Finished>),
    Heartbeat(WorkerHeartbeat),
}

impl ResultBody {
    /// The workers this body speaks for.
    pub fn worker_ids(&self) -> impl Iterator<Item = &str> {
        let heartbeat = match self {
            ResultBody::Heartbeat(h) => Some(h.worker_id.as_str()),
            _ => None,
        };
        let started = match self {
            ResultBody::Started(s) => Some(s.worker_id.as_str()),
            _ => None,
        };
        heartbeat.into_iter().chain(started).chain(self.finished().iter().map(|f| f.worker_id.as_str()))
    }

    /// The attempt ends this body carries.
    pub fn finished(&self) -> &[Finished] {
        match self {
            ResultBody::Finished(f) => std::slice::from_ref(f),
            ResultBody::FinishedBatch(fs) => fs,
            ResultBody::Started(_) | ResultBody::Heartbeat(_) => &[],
        }
    }
}

/// A task is still running after the worker's `report_start_after` (shorter tasks send only
/// their [`Finished`], which carries the start); may arrive again on redelivery, and may
/// arrive after the end it precedes (it travels on an unconfirmed channel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Started {
    pub node_run_id: Uuid,
    pub attempt: u32,
    pub worker_id: String,
    /// Unix time in microseconds, worker clock.
    pub at_us: i64,
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    pub node_run_id: Uuid,
    pub attempt: u32,
    pub worker_id: String,
    pub started_at_us: i64,
    pub finished_at_us: i64,
    pub outcome: Outcome,
    /// How the success relates to the node result cache; `None` for anything not cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheEnd>,
}

/// See [`Finished::cache`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheEnd {
    /// A worker ran the task with the fingerprint its key was computed for: store the
    /// outputs under `key`.
    Store { key: String },
    /// The coordinator served the outputs from the cache entry `key`, which node_run `from`
    /// produced; no worker ran.
    Hit { key: String, from: Uuid },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Succeeded { outputs: Value },
    Failed { error: TaskError },
}

/// Why an attempt failed, as shown to users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskError {
    pub kind: ErrorKind,
    pub message: String,
    /// False when another attempt cannot help (bad params, cancelled).
    pub retryable: bool,
    /// Last lines of the tool's stderr, when a tool ran.
    #[serde(default)]
    pub log_tail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The module reported an error.
    Module,
    /// The attempt ran past the node's timeout and was killed.
    Timeout,
    /// The run was cancelled.
    Cancelled,
    /// The worker stopped heartbeating (set by the coordinator).
    Lost,
    /// This worker cannot run the task (unknown module, bad message).
    Unsupported,
    /// The task was delivered `max_deliveries` times and no worker that took it lived to
    /// report (set by the worker that refuses it).
    Poison,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Module => "module",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Lost => "lost",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Poison => "poison",
        }
    }
}

/// Sent by every worker at start, every heartbeat interval and at stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerHeartbeat {
    pub worker_id: String,
    pub host: String,
    pub version: String,
    pub modules: Vec<String>,
    pub concurrency: u32,
    /// Attempts in hand: their `heartbeat_at` is refreshed.
    pub running: Vec<TaskRef>,
    pub status: WorkerStatus,
    pub at_us: i64,
    /// Versions of the external tools its modules use (`blender`, `cascadio`, `ffmpeg`).
    #[serde(default)]
    pub tools: BTreeMap<String, String>,
    /// Per module, the fingerprint of its build (`cache::fingerprint`): what the node result
    /// cache keys on, so that a fleet upgrading a tool never serves one build's output for
    /// another's.
    #[serde(default)]
    pub fingerprints: BTreeMap<String, String>,
    /// Modules this worker has stopped taking after failing tasks in a row for reasons not
    /// about their input (a broken tool, a full disk); they are not in `modules` meanwhile.
    #[serde(default)]
    pub quarantined: Vec<Quarantined>,
}

/// A module a worker has stopped taking, why, and until when (then it tries again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    pub module: String,
    /// Failed tasks in a row that put it there.
    pub failures: u32,
    pub last_error: String,
    pub since_us: i64,
    pub until_us: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskRef {
    pub node_run_id: Uuid,
    pub attempt: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerStatus {
    Running,
    Draining,
    Stopped,
}

impl WorkerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::Running => "running",
            WorkerStatus::Draining => "draining",
            WorkerStatus::Stopped => "stopped",
        }
    }
}

/// Fanned out to every worker on the control exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlMessage {
    pub v: u16,
    pub body: ControlBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlBody {
    /// Stop every task of this run, and never start `withdrawn`: the attempts the cancel
    /// found queued, whose messages may still wait in a task queue. (Named attempts, not the
    /// run: a retried run's new attempts must run.)
    CancelRun {
        run_id: Uuid,
        #[serde(default)]
        withdrawn: Vec<TaskRef>,
    },
    /// An operator's word: worker `worker_id` takes up its quarantined `module` again (none:
    /// every one) before its cool-down ends.
    Release { worker_id: String, module: Option<String> },
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("not a renderfleet message (MessagePack decoding failed: {0})")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("message schema version {got} is not supported (this build reads version {WIRE_VERSION}); upgrade this binary")]
    Version { got: u16 },
}

/// Encodes any message as MessagePack with field names.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(msg).expect("wire messages always serialize")
}

/// Anything with a schema version.
pub trait Versioned {
    fn version(&self) -> u16;
}
impl Versioned for TaskMessage {
    fn version(&self) -> u16 {
        self.v
    }
}
impl Versioned for ResultMessage {
    fn version(&self) -> u16 {
        self.v
    }
}
impl Versioned for ControlMessage {
    fn version(&self) -> u16 {
        self.v
    }
}

/// The attempt a task message is about, read leniently (any version, extra fields ignored),
/// so that a worker that cannot run a task can still fail its attempt instead of leaving the
/// node waiting. `None` for bytes that are not a task at all.
pub fn peek_task_ref(bytes: &[u8]) -> Option<TaskRef> {
    rmp_serde::from_slice(bytes).ok()
}

/// Decodes and checks the schema version.
pub fn decode<T: DeserializeOwned + Versioned>(bytes: &[u8]) -> Result<T, WireError> {
    let msg: T = rmp_serde::from_slice(bytes)?;
    match msg.version() {
        WIRE_VERSION => Ok(msg),
        got => Err(WireError::Version { got }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn task_round_trips_with_json_params() {
        let t = TaskMessage {
            avoid: Vec::new(),
            cache: None,
            v: WIRE_VERSION,
            run_id: Uuid::now_v7(),
            node_run_id: Uuid::now_v7(),
            node_id: "b".into(),
            module_key: "sleep".into(),
            attempt: 2,
            params: json!({"ms": 5, "nested": {"a": [1, 2.5, null, "x"]}}),
            timeout_ms: 1000,
            inputs: Default::default(),
        };
        assert_eq!(decode::<TaskMessage>(&encode(&t)).unwrap(), t);
    }

    #[test]
    fn result_round_trips() {
        let m = ResultMessage {
            v: WIRE_VERSION,
            body: ResultBody::Finished(Finished {
                cache: None,
                node_run_id: Uuid::now_v7(),
                attempt: 1,
                worker_id: "w1".into(),
                started_at_us: 1,
                finished_at_us: 2,
                outcome: Outcome::Failed {
                    error: TaskError { kind: ErrorKind::Timeout, message: "x".into(), retryable: true, log_tail: None },
                },
            }),
        };
        assert_eq!(decode::<ResultMessage>(&encode(&m)).unwrap(), m);
    }

    #[test]
    fn a_future_task_still_names_its_attempt() {
        #[derive(Serialize)]
        struct FutureTask {
            v: u16,
            node_run_id: Uuid,
            attempt: u32,
            new_field: Vec<u8>,
        }
        let id = Uuid::now_v7();
        let future = encode(&FutureTask { v: 9, node_run_id: id, attempt: 2, new_field: vec![1] });
        assert!(decode::<TaskMessage>(&future).is_err());
        assert_eq!(peek_task_ref(&future), Some(TaskRef { node_run_id: id, attempt: 2 }));
        assert_eq!(peek_task_ref(b"\xc1garbage"), None);
    }

    #[test]
    fn garbage_and_future_versions_are_refused() {
        assert!(matches!(decode::<TaskMessage>(b"\xc1not msgpack"), Err(WireError::Decode(_))));
        let future = ControlMessage { v: WIRE_VERSION + 1, body: ControlBody::CancelRun { run_id: Uuid::nil(), withdrawn: vec![] } };
        assert!(matches!(decode::<ControlMessage>(&encode(&future)), Err(WireError::Version { got }) if got == WIRE_VERSION + 1));
    }
}
